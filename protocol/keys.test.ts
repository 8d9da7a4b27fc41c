import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { MasterKeyring, deriveDeviceKey, makeSerialToken, openSerialToken, bytesToHex } from './keys.ts';
import { ProtocolError, ImplementationError } from './errors.ts';

const master = new Uint8Array(32).fill(7);
const ring = new MasterKeyring([[1, master]]);

test('device keys differ per serial and per master key', () => {
  const a = deriveDeviceKey(master, 'SN-1');
  const b = deriveDeviceKey(master, 'SN-2');
  const c = deriveDeviceKey(new Uint8Array(32).fill(8), 'SN-1');
  assert.is(a.length, 32);
  assert.is.not(bytesToHex(a), bytesToHex(b));
  assert.is.not(bytesToHex(a), bytesToHex(c));
});

test('serial token round trip, reproducible, and tamper refused', () => {
  const t1 = makeSerialToken(master, 1, 'SN-0000001');
  const t2 = makeSerialToken(master, 1, 'SN-0000001');
  assert.is(bytesToHex(t1), bytesToHex(t2));
  assert.equal(openSerialToken(ring, t1), { version: 1, serial: 'SN-0000001' });
  for (let i = 0; i < t1.length; i++) {
    const bad = Uint8Array.from(t1);
    bad[i]! ^= 1;
    assert.throws(() => openSerialToken(ring, bad), (e: unknown) => e instanceof ProtocolError && (e.code === 'KEY_BAD_TOKEN' || e.code === 'KEY_UNKNOWN_VERSION'));
  }
  assert.throws(() => openSerialToken(ring, t1.subarray(0, 10)), (e: unknown) => e instanceof ProtocolError && e.code === 'KEY_BAD_TOKEN');
});

test('master key file parsing', () => {
  const r = MasterKeyring.parse(`# keys\nv1 ${'11'.repeat(32)}\nv2 ${'22'.repeat(32)}\n`);
  assert.equal(r.versions, [1, 2]);
  assert.is(r.current, 2);
  assert.throws(() => MasterKeyring.parse('nonsense'), (e: unknown) => e instanceof ImplementationError && e.code === 'KEY_BAD_MASTER');
  assert.throws(() => deriveDeviceKey(master, 'bad serial!'), (e: unknown) => e instanceof ImplementationError);
});

test.run();
