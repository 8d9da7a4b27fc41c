import { bytesToHex } from '@noble/hashes/utils.js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { MasterKeyring, deriveDeviceKey, makeSerialToken, openSerialToken, identifyToken, kdf, kdfExtract, kdfExpand } from './keys.ts';
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

test('kdfExtract + kdfExpand give kdf()\'s bytes (RFC 5869 test case 1 and the handshake labels)', () => {
  const hexTo = (h: string) => Uint8Array.from(h.match(/../g)!.map((x) => parseInt(x, 16)));
  // RFC 5869 §A.1: IKM 22 x 0x0b, salt 000102..0c, info f0..f9, L 42.
  const ikm = new Uint8Array(22).fill(0x0b);
  const salt = hexTo('000102030405060708090a0b0c');
  const info = hexTo('f0f1f2f3f4f5f6f7f8f9');
  const prk = kdfExtract(ikm, salt);
  assert.is(bytesToHex(prk), '077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5');
  const okm = '3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865';
  assert.is(bytesToHex(kdfExpand(prk, info, 42)), okm);
  assert.is(bytesToHex(kdf(ikm, salt, info, 42)), okm);
  for (const label of ['usbphone/v1 traffic c2s', 'usbphone/v1 traffic s2c', 'enc', 'siv']) {
    for (const sl of ['usbphone/v1 seal', new Uint8Array(64).fill(5)]) {
      assert.is(bytesToHex(kdfExpand(kdfExtract(master, sl), label)), bytesToHex(kdf(master, sl, label)));
    }
  }
});

test('master key file parsing', () => {
  const r = MasterKeyring.parse(`# keys\nv1 ${'11'.repeat(32)}\nv2 ${'22'.repeat(32)}\n`);
  assert.equal(r.versions, [1, 2]);
  assert.is(r.current, 2);
  assert.throws(() => MasterKeyring.parse('nonsense'), (e: unknown) => e instanceof ImplementationError && e.code === 'KEY_BAD_MASTER');
  assert.throws(() => deriveDeviceKey(master, 'bad serial!'), (e: unknown) => e instanceof ImplementationError);
});

test('identifyToken: the genuine token names its device and key; every other token only why, for the log', () => {
  const genuine = makeSerialToken(master, 1, 'SN-7');
  const id = identifyToken(ring, genuine);
  assert.ok(id.ok);
  if (id.ok) assert.equal([id.version, id.serial, id.key], [1, 'SN-7', deriveDeviceKey(master, 'SN-7')]);
  const why = (t: Uint8Array) => {
    const r = identifyToken(ring, t);
    return r.ok ? 'ok' : r.why;
  };
  assert.is(why(makeSerialToken(new Uint8Array(32).fill(9), 1, 'SN-7')), 'KEY_BAD_TOKEN');
  assert.is(why(makeSerialToken(master, 9, 'SN-7')), 'KEY_UNKNOWN_VERSION');
  assert.is(why(genuine.subarray(0, 10)), 'KEY_BAD_TOKEN');
  const flipped = Uint8Array.from(genuine);
  flipped[flipped.length - 1]! ^= 1;
  assert.is(why(flipped), 'KEY_BAD_TOKEN');
});

// Issue 10: what an unauthenticated client can learn from the time a hello takes. Interleaved,
// medians; the bound is far below what skipping any step costs (a key derivation about 5 µs, a
// failed open's exception about 2 µs: docs/benchmarks.md).
test('identifyToken takes the same time for a genuine token, a forged one and one of a version this server does not hold', () => {
  const kinds: [string, Uint8Array][] = [
    ['genuine', makeSerialToken(master, 1, 'SN-0000001')],
    ['forged', makeSerialToken(new Uint8Array(32).fill(9), 1, 'SN-0000001')],
    ['unknown version', makeSerialToken(new Uint8Array(32).fill(9), 7, 'SN-0000001')],
  ];
  const samples = kinds.map(() => [] as number[]);
  for (let r = 0; r < 3300; r++) {
    const order = [0, 1, 2].sort(() => Math.random() - 0.5);
    for (const i of order) {
      const t0 = process.hrtime.bigint();
      identifyToken(ring, kinds[i]![1]);
      if (r >= 300) samples[i]!.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
  }
  const med = samples.map((xs) => xs.sort((a, b) => a - b)[xs.length >> 1]!);
  const spread = Math.max(...med) - Math.min(...med);
  const bound = Math.max(1.2, 0.04 * Math.min(...med));
  const report = kinds.map(([k], i) => `${k} ${med[i]!.toFixed(1)} µs`).join(', ');
  console.log(`  identifyToken medians: ${report}; spread ${spread.toFixed(2)} µs, bound ${bound.toFixed(2)} µs`);
  assert.ok(spread < bound, `medians differ by ${spread.toFixed(2)} µs (bound ${bound.toFixed(2)}): ${report}`);
});

test.run();
