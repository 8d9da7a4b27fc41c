// After real logins (a first boot and a password change), no secret the phone holds appears
// in clear anywhere in its flash (only sealed in the hidden zone, inside the secure
// controller's stores), nor in the trace or notices it printed: not the device key, not either
// business secret. The serial appears in clear nowhere in the flash either (S0.1). The test
// reads the secrets the way only the factory can: with the chip's fuses.
import { bytesToHex, utf8ToBytes as utf8 } from '@noble/hashes/utils.js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startWorld, TraceHost } from './world.ts';
import { formatTrace } from './trace.ts';
import { setLogSink } from '../server-kit/log.ts';
import { heldSecrets } from './held-secrets.ts';
import { deriveDeviceKey } from '../protocol/keys.ts';
import { fusesOf } from './world.ts';


setLogSink(() => {});

function contains(hay: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

test('no secret in clear in the flash, the trace or the notices after two logins', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-secrets-'));
  const world = await startWorld({ stateDir: dir, gatewayPort: 0 });
  try {
    const host = new TraceHost();
    let { phone, ip, serial } = await world.phone(0, host);
    const fuses = fusesOf(world.seed, 0);
    assert.ok((await phone.device.plugIn()).ok);
    const first = heldSecrets(phone, fuses);
    phone = world.replug(phone, host, ip);
    assert.ok((await phone.device.plugIn()).ok);
    const second = heldSecrets(phone, fuses);
    const deviceKey = deriveDeviceKey(world.stack.ring.key(world.stack.ring.current), serial);
    const secrets = [...first, ...second];
    assert.is(secrets.length, 2);
    assert.is.not(bytesToHex(secrets[0]!), bytesToHex(secrets[1]!), 'the password changed');
    const flash = phone.chip.peek(0, phone.chip.sizeBytes);
    const text = host.events.map((e) => formatTrace(e)).join('\n') + host.notices.join('\n');
    for (const [what, s] of [...secrets.map((x, i) => [`business secret ${i}`, x] as const), ['device key', deviceKey] as const]) {
      assert.not.ok(contains(flash, s), `${what} in clear in the flash`);
      assert.not.ok(text.includes(bytesToHex(s)), `${what} (hex) in the trace`);
      assert.not.ok(text.includes(Buffer.from(s).toString('base64')), `${what} (base64) in the trace`);
    }
    assert.not.ok(contains(flash, utf8(serial)), 'serial in clear in the flash');
  } finally {
    await world.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
