// Failover that survives a stalled server (issue 10): the primary registration server, a
// process of its own, is stopped with SIGSTOP for longer than the business servers keep an
// idle admin connection, then resumed. Registrations right after, at the backup (never
// paused) and at the primary, are all placed: no REG_NO_BIZ_SERVER anywhere.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { testStack } from '../deploy/test-util.ts';
import { makeDevice, register } from '../server-kit/test-device.ts';
import type { Stack } from '../deploy/stack.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let stack: Stack;
test.before(async () => {
  stack = await testStack({ healthIntervalMs: 1_000 });
  await stack.stopReg('reg-primary');
  await stack.startReg('reg-primary', { process: 'child' });
});
test.after(() => stack.stop());

test('reg-primary paused (SIGSTOP) for 6.5 s and resumed: every registration at either server right after gets business servers', async () => {
  const devs = Array.from({ length: 20 }, (_, i) => makeDevice(stack.ring, `SN-PAUSE-${i}`));
  await stack.enroll(devs.map((d) => ({ serial: d.serial, keyVersion: stack.ring.current })));
  const once = async (dest: 'reg-primary' | 'reg-backup', i: number) => register(stack.urlFor(dest), dest, devs[i % devs.length]!, { localAddress: `127.1.0.${1 + (i % 200)}`, timeoutMs: 10_000 });
  // Both serve before the pause.
  for (const d of ['reg-primary', 'reg-backup'] as const) assert.is((await once(d, 0)).kind, 'cred', d);
  const pid = stack.regPid('reg-primary')!;
  assert.ok(pid);
  process.kill(pid, 'SIGSTOP');
  try {
    // Longer than the business servers' keep-alive (5 s): their admin sockets to the primary close.
    await sleep(6_500);
  } finally {
    process.kill(pid, 'SIGCONT');
  }
  const outcomes: Record<string, Record<string, number>> = { 'reg-primary': {}, 'reg-backup': {} };
  const until = Date.now() + 3_000;
  for (let i = 1; Date.now() < until && i < 400; i++) {
    for (const d of ['reg-backup', 'reg-primary'] as const) {
      const r = await once(d, i);
      const k = r.kind === 'error' ? r.code : r.kind;
      outcomes[d]![k] = (outcomes[d]![k] ?? 0) + 1;
    }
  }
  const summary = JSON.stringify(outcomes);
  assert.is(outcomes['reg-backup']!.REG_NO_BIZ_SERVER ?? 0, 0, summary);
  assert.is(outcomes['reg-primary']!.REG_NO_BIZ_SERVER ?? 0, 0, summary);
  assert.equal(Object.keys(outcomes['reg-backup']!), ['cred'], summary);
  assert.ok(outcomes['reg-backup']!.cred! >= 5, summary);
});

test.run();
