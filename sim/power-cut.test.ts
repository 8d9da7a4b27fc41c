// Power cut at every flash operation of saving a login (S0.10 save of a new secret, S0.12 /
// S0.14 save after the login), each followed by a replug: the phone still logs in, with the
// old or the new secret. And a phone that lost its saved copy while no registration server
// answers fails with a clear reason, not a hang.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startWorld, TraceHost } from './world.ts';
import { setLogSink } from '../server-kit/log.ts';
import { zoneOf, ZoneType } from '../firmware/zones/layout.ts';
import { HIDDEN_STORES } from '../firmware/zones/hidden.ts';

setLogSink(() => {});

test('a power cut at every flash operation of the saves, then a replug: the phone logs in', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-cut-'));
  const world = await startWorld({ stateDir: dir, gatewayPort: 0 });
  try {
    const host = new TraceHost();
    let { phone, ip } = await world.phone(0, host);
    assert.ok((await phone.device.plugIn()).ok);
    // How many mutating operations a boot with a password change makes.
    let ops = 0;
    phone.chip.onOperation = () => void ops++;
    phone = world.replug(phone, host, ip);
    assert.ok((await phone.device.plugIn()).ok);
    phone.chip.onOperation = null;
    assert.ok(ops >= 4, `a boot saves twice (erase + program each), saw ${ops} operations`);
    let tried = 0;
    let cutHappened = 0;
    for (const torn of [0, 1, 37]) {
      for (let k = 0; k < ops; k++) {
        phone.chip.faults.powerCutAfterOps = k;
        phone.chip.faults.tornBytes = torn;
        phone = world.replug(phone, host, ip);
        const cut = await phone.device.plugIn();
        phone.chip.faults.clear();
        tried++;
        if (!cut.ok) {
          assert.is(cut.kind, 'power-lost', `cut at op ${k}: ${cut.kind} ${'reason' in cut ? cut.reason : ''}`);
          cutHappened++;
        }
        phone = world.replug(phone, host, ip);
        const after = await phone.device.plugIn();
        assert.ok(after.ok, `after a cut at op ${k} (torn ${torn}): ${after.ok ? '' : `${after.kind}: ${after.reason}`}`);
      }
    }
    assert.is(cutHappened, tried, 'every armed cut hit a save');
    console.log(`power cut points tried: ${tried} (${ops} operations x 3 torn-prefix lengths); every replug logged in`);
  } finally {
    await world.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('saved copy lost and both registration servers down: a clear failure, no hang', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-lost-'));
  const world = await startWorld({ stateDir: dir, gatewayPort: 0, device: { stepTimeoutMs: 2_000 } });
  try {
    const host = new TraceHost();
    let { phone, ip } = await world.phone(0, host);
    assert.ok((await phone.device.plugIn()).ok);
    // The flash loses the record store: every slot of the login store erased (e.g. a bad repair).
    const hidden = zoneOf(phone.table, ZoneType.HIDDEN);
    const store = HIDDEN_STORES.login;
    for (let s = 0; s < store.slots; s++) phone.chip.eraseSector(hidden.offset + (store.firstSector + s) * 4096);
    await world.stack.stopReg('reg-primary');
    await world.stack.stopReg('reg-backup');
    phone = world.replug(phone, host, ip);
    const t0 = Date.now();
    const o = await phone.device.plugIn();
    assert.is(o.ok, false);
    assert.is(!o.ok && o.kind, 'no-saved-login');
    assert.match(!o.ok ? o.reason : '', /no registration server answered and no saved login/);
    assert.ok(Date.now() - t0 < 10_000, 'ended well before any timeout');
  } finally {
    await world.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
