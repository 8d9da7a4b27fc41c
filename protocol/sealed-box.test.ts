// The sealed box: round trip, every kind of tampering refused (null), hostile argument types
// refused as our bug (TypeError/RangeError), and the bytes checked against raw
// @noble/ciphers XChaCha20-Poly1305 both ways.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { concatBytes, bytesToHex as hex, utf8ToBytes } from '@noble/hashes/utils.js';
import { sealBox, sealBoxWithNonce, openBox, BOX_OVERHEAD, BOX_NONCE_BYTES } from './sealed-box.ts';
import { keystreamRng } from './seeded-rng.ts';

const key = keystreamRng('box key')(32);
const aad = utf8ToBytes('usbphone/v1 test aad');
const pt = utf8ToBytes('a login key, 32 bytes of secret!');
const rng = keystreamRng('box nonces');

test('round trip; the box is nonce || ciphertext || tag, a fresh nonce each time', () => {
  const a = sealBox(key, pt, aad, rng);
  const b = sealBox(key, pt, aad, rng);
  assert.is(a.length, pt.length + BOX_OVERHEAD);
  assert.is.not(hex(a.subarray(0, 24)), hex(b.subarray(0, 24)));
  assert.is(hex(openBox(key, a, aad)!), hex(pt));
  assert.is(hex(openBox(key, b, aad)!), hex(pt));
  // An empty plaintext and an empty aad are boxes too.
  const e = sealBox(key, new Uint8Array(0), new Uint8Array(0), rng);
  assert.is(e.length, BOX_OVERHEAD);
  assert.is(openBox(key, e, new Uint8Array(0))!.length, 0);
});

test('each tamper is refused: nonce, ciphertext, tag, aad, key', () => {
  const box = sealBox(key, pt, aad, rng);
  const flip = (i: number) => {
    const t = Uint8Array.from(box);
    t[i]! ^= 0x01;
    return t;
  };
  assert.is(openBox(key, flip(0), aad), null, 'nonce first byte');
  assert.is(openBox(key, flip(BOX_NONCE_BYTES - 1), aad), null, 'nonce last byte');
  assert.is(openBox(key, flip(BOX_NONCE_BYTES), aad), null, 'ciphertext first byte');
  assert.is(openBox(key, flip(BOX_NONCE_BYTES + pt.length - 1), aad), null, 'ciphertext last byte');
  assert.is(openBox(key, flip(box.length - 16), aad), null, 'tag first byte');
  assert.is(openBox(key, flip(box.length - 1), aad), null, 'tag last byte');
  for (let i = 0; i < box.length; i++) assert.is(openBox(key, flip(i), aad), null, `byte ${i}`);
  assert.is(openBox(key, box, utf8ToBytes('usbphone/v1 test aaD')), null, 'another aad');
  assert.is(openBox(key, box, new Uint8Array(0)), null, 'no aad');
  const other = Uint8Array.from(key);
  other[31]! ^= 0x80;
  assert.is(openBox(other, box, aad), null, 'another key');
});

test('wrong lengths are refused: short, truncated, extended', () => {
  const box = sealBox(key, pt, aad, rng);
  for (let n = 0; n < BOX_OVERHEAD; n++) assert.is(openBox(key, box.subarray(0, n), aad), null, `${n} bytes`);
  assert.is(openBox(key, box.subarray(0, box.length - 1), aad), null, 'one byte short');
  assert.is(openBox(key, concatBytes(box, Uint8Array.of(0)), aad), null, 'one byte more');
  assert.is(openBox(key, box.subarray(1), aad), null, 'nonce shifted');
});

test('the same bytes as raw @noble/ciphers, both ways', () => {
  const nonce = keystreamRng('box cross nonce')(24);
  const raw = concatBytes(nonce, xchacha20poly1305(key, nonce, aad).encrypt(pt));
  assert.is(hex(sealBoxWithNonce(key, nonce, pt, aad)), hex(raw));
  assert.is(hex(sealBox(key, pt, aad, () => Uint8Array.from(nonce))), hex(raw));
  // What sealBox made, raw noble opens; what raw noble made, openBox opens.
  const mine = sealBox(key, pt, aad, rng);
  assert.is(hex(xchacha20poly1305(key, mine.subarray(0, 24), aad).decrypt(mine.subarray(24))), hex(pt));
  assert.is(hex(openBox(key, raw, aad)!), hex(pt));
});

test('hostile arguments: TypeError for a wrong type, RangeError for a wrong length', () => {
  const notBytes: unknown[] = [undefined, null, 'x', 1, [1, 2], { length: 32 }, new Uint16Array(32)];
  const box = sealBox(key, pt, aad, rng);
  for (const v of notBytes) {
    assert.throws(() => sealBox(v as Uint8Array, pt, aad, rng), TypeError);
    assert.throws(() => sealBox(key, v as Uint8Array, aad, rng), TypeError);
    assert.throws(() => sealBox(key, pt, v as Uint8Array, rng), TypeError);
    assert.throws(() => openBox(v as Uint8Array, box, aad), TypeError);
    assert.throws(() => openBox(key, v as Uint8Array, aad), TypeError);
    assert.throws(() => openBox(key, box, v as Uint8Array), TypeError);
  }
  for (const n of [0, 16, 31, 33, 64]) {
    assert.throws(() => sealBox(new Uint8Array(n), pt, aad, rng), RangeError);
    assert.throws(() => openBox(new Uint8Array(n), box, aad), RangeError);
  }
  for (const n of [0, 12, 23, 25]) assert.throws(() => sealBoxWithNonce(key, new Uint8Array(n), pt, aad), RangeError);
  assert.throws(() => sealBox(key, pt, aad, () => new Uint8Array(12)), RangeError);
});

test.run();
