// The main program retries, after a backoff, the logins that failed only because the business
// servers were unreachable: both are down when the phone plugs in (so registration fails too
// and the phone uses its saved copy, S0.13), they come back during the backoff, and the second
// round logs in.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startWorld, TraceHost } from './world.ts';
import { setLogSink } from '../server-kit/log.ts';

setLogSink(() => {});

test('business servers down at plug-in, back during the backoff: the second round logs in', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-retry-'));
  // Backoff between rounds is uniform in [300, 600) ms: ample for the servers to come back.
  const world = await startWorld({ stateDir: dir, gatewayPort: 0, device: { backoffBaseMs: 600, backoffCapMs: 600, loginRounds: 2, regRounds: 1 } });
  try {
    let restart: Promise<void> | null = null;
    const host = new TraceHost((e) => {
      // The first round is over when both servers have failed once.
      const failed = host.events.filter((x) => x.feature === 'S0.11' && !x.ok).length;
      if (failed === 2 && !restart) restart = Promise.all(world.stack.dests.biz.map((b) => world.stack.startBiz(b))).then(() => {});
      void e;
    });
    let { phone, ip } = await world.phone(0, host);
    assert.ok((await phone.device.plugIn()).ok);
    for (const b of world.stack.dests.biz) await world.stack.stopBiz(b);
    host.events.length = 0;
    phone = world.replug(phone, host, ip);
    const o = await phone.device.plugIn();
    assert.ok(restart, 'the first round failed on both servers');
    await restart;
    assert.ok(o.ok && o.via === 'saved', JSON.stringify(o));
    const logins = host.events.filter((x) => x.feature === 'S0.11');
    assert.equal(logins.map((x) => x.ok), [false, false, true, true], logins.map((x) => `${x.step} ${x.detail}`).join('\n'));
  } finally {
    await world.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
