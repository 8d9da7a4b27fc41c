// S0.8 on the device side: after a registration the phone follows the registration server's
// choice for its current address, even when another server worked last time (it moved);
// from the saved copy (S0.13) it starts with the server that last worked.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startWorld, TraceHost, phoneIp } from './world.ts';
import { setLogSink } from '../server-kit/log.ts';

setLogSink(() => {});

test('a phone that moves from region east to west logs in to the west server; with no registration server, to the last one that worked', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-region-'));
  const world = await startWorld({ stateDir: dir, gatewayPort: 0 });
  try {
    const host = new TraceHost();
    let { phone, ip } = await world.phone(0, host);
    assert.ok(ip.startsWith('127.1.'));
    const a = await phone.device.plugIn();
    assert.ok(a.ok && a.server === 'biz-east', JSON.stringify(a));
    const west = phoneIp(1);
    phone = world.replug(phone, host, west);
    const b = await phone.device.plugIn();
    assert.ok(b.ok && b.server === 'biz-west' && b.via === 'registration', JSON.stringify(b));
    // Back east, but no registration server: the saved copy says biz-west worked last.
    await world.stack.stopReg('reg-primary');
    await world.stack.stopReg('reg-backup');
    phone = world.replug(phone, host, ip);
    const c = await phone.device.plugIn();
    assert.ok(c.ok && c.server === 'biz-west' && c.via === 'saved', JSON.stringify(c));
  } finally {
    await world.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
