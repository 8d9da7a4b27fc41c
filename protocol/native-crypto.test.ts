// node:crypto's engine against the noble reference (protocol/crypto-engine.ts): the same
// bytes on published vectors and on random inputs (fast-check), the same refusals, and the
// protocol's HKDF (protocol/keys.ts, on the engine's HMAC) against noble's hkdf on both.
// Rerun a failure with FC_SEED.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex as hex, hexToBytes as unhex } from '@noble/hashes/utils.js';
import { nobleEngine, useCryptoEngine, cryptoEngine, type CryptoEngine } from './crypto-engine.ts';
import { kdf, kdfExtract, kdfExpand, mac } from './keys.ts';
import { nodeEngine } from './native-crypto.ts';

if (process.env.FC_SEED) fc.configureGlobal({ seed: Number(process.env.FC_SEED) });
const ENGINES: CryptoEngine[] = [nobleEngine, nodeEngine];
const bytes = (n: number) => fc.uint8Array({ minLength: n, maxLength: n });
const any = (max: number) => fc.uint8Array({ maxLength: max });

test('RFC 4231 §4.2 HMAC-SHA256 test case 1, on both engines', () => {
  for (const e of ENGINES) {
    const m = e.hmacSha256(new Uint8Array(20).fill(0x0b), [new TextEncoder().encode('Hi '), new TextEncoder().encode('There')]);
    assert.is(hex(m), 'b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7', e.name);
  }
});

test('RFC 8439 §2.8.2 ChaCha20-Poly1305 vector, on both engines, both ways', () => {
  const key = unhex('808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f');
  const nonce = unhex('070000004041424344454647');
  const aad = unhex('50515253c0c1c2c3c4c5c6c7');
  const pt = new TextEncoder().encode("Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.");
  for (const e of ENGINES) {
    const ct = e.chachaSeal(key, nonce, aad, pt);
    assert.is(hex(ct.subarray(0, 16)), 'd31a8d34648e60db7b86afbc53ef7ec2', e.name);
    assert.is(hex(ct.subarray(ct.length - 16)), '1ae10b594f09e26a7e902ecbd0600691', e.name);
    assert.equal(e.chachaOpen(key, nonce, aad, ct), pt, e.name);
  }
});

test('draft-irtf-cfrg-xchacha A.3.1 XChaCha20-Poly1305 vector, on both engines, both ways', () => {
  const key = unhex('808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f');
  const nonce = unhex('404142434445464748494a4b4c4d4e4f5051525354555657');
  const aad = unhex('50515253c0c1c2c3c4c5c6c7');
  const pt = new TextEncoder().encode("Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.");
  for (const e of ENGINES) {
    const ct = e.xchachaSeal(key, nonce, aad, pt);
    assert.is(hex(ct.subarray(0, 16)), 'bd6d179d3e83d43b9576579493c0e939', e.name);
    assert.is(hex(ct.subarray(ct.length - 16)), 'c0875924c1c7987947deafd8780acf49', e.name);
    assert.equal(e.xchachaOpen(key, nonce, aad, ct), pt, e.name);
  }
});

test("random inputs: the same HMAC, the same sealed bytes, each opens the other's", () => {
  fc.assert(fc.property(any(80), fc.array(any(200), { maxLength: 4 }), (k, parts) => hex(nodeEngine.hmacSha256(k, parts)) === hex(nobleEngine.hmacSha256(k, parts))));
  fc.assert(fc.property(bytes(32), bytes(12), any(64), any(300), (k, n, aad, pt) => {
    const a = nobleEngine.chachaSeal(k, n, aad, pt);
    assert.is(hex(nodeEngine.chachaSeal(k, n, aad, pt)), hex(a));
    assert.equal(nodeEngine.chachaOpen(k, n, aad, a), pt);
    assert.equal(nobleEngine.chachaOpen(k, n, aad, nodeEngine.chachaSeal(k, n, aad, pt)), pt);
  }));
  fc.assert(fc.property(bytes(32), bytes(24), any(64), any(300), (k, n, aad, pt) => {
    const a = nobleEngine.xchachaSeal(k, n, aad, pt);
    assert.is(hex(nodeEngine.xchachaSeal(k, n, aad, pt)), hex(a));
    assert.equal(nodeEngine.xchachaOpen(k, n, aad, a), pt);
    assert.equal(nobleEngine.xchachaOpen(k, n, aad, nodeEngine.xchachaSeal(k, n, aad, pt)), pt);
  }));
});

test('Buffers as node hands them out (slices of its shared pool, as SQLite BLOBs arrive) give the same bytes as Uint8Arrays', () => {
  fc.assert(fc.property(bytes(32), bytes(24), any(40), any(100), (k, n, aad, pt) => {
    // Small Buffers share one pool: a Buffer's .buffer is the whole pool, its slice() a view.
    const pooled = (u: Uint8Array) => Buffer.concat([Buffer.from([1, 2, 3]), Buffer.from(u)]).subarray(3);
    const want = nobleEngine.xchachaSeal(k, n, aad, pt);
    for (const e of ENGINES) {
      assert.is(hex(e.xchachaSeal(pooled(k), pooled(n), pooled(aad), pooled(pt))), hex(want), e.name);
      assert.equal(e.xchachaOpen(pooled(k), pooled(n), pooled(aad), pooled(want)), pt, e.name);
      assert.is(hex(e.chachaSeal(pooled(k), pooled(n.subarray(0, 12)), pooled(aad), pooled(pt))), hex(nobleEngine.chachaSeal(k, n.subarray(0, 12), aad, pt)), e.name);
      assert.is(hex(e.hmacSha256(pooled(k), [pooled(pt)])), hex(nobleEngine.hmacSha256(k, [pt])), e.name);
    }
  }));
});

test('an altered box, tag, aad, nonce or key is refused (null) by both engines alike', () => {
  fc.assert(fc.property(bytes(32), bytes(24), any(32), fc.uint8Array({ minLength: 1, maxLength: 100 }), fc.nat(), fc.integer({ min: 1, max: 255 }), fc.constantFrom('ct', 'aad', 'nonce', 'key'), (k, n, aad, pt, at, flip, what) => {
    for (const x of [false, true]) {
      const n12 = n.subarray(0, 12);
      const sealed = x ? nobleEngine.xchachaSeal(k, n, aad, pt) : nobleEngine.chachaSeal(k, n12, aad, pt);
      const alter = (b: Uint8Array) => {
        const c = Uint8Array.from(b);
        c[at % c.length]! ^= flip;
        return c;
      };
      const args = { k, n: x ? n : n12, aad, ct: sealed };
      if (what === 'ct') args.ct = alter(sealed);
      else if (what === 'aad') {
        if (aad.length === 0) args.aad = Uint8Array.of(flip);
        else args.aad = alter(aad);
      } else if (what === 'nonce') args.n = alter(args.n);
      else args.k = alter(k);
      for (const e of ENGINES) {
        const got = x ? e.xchachaOpen(args.k, args.n, args.aad, args.ct) : e.chachaOpen(args.k, args.n, args.aad, args.ct);
        assert.is(got, null, `${e.name} ${x ? 'x' : ''}chacha opened an altered ${what}`);
      }
    }
  }));
  for (const e of ENGINES) {
    assert.is(e.chachaOpen(new Uint8Array(32), new Uint8Array(12), new Uint8Array(0), new Uint8Array(15)), null, `${e.name}: shorter than a tag`);
    assert.is(e.xchachaOpen(new Uint8Array(32), new Uint8Array(24), new Uint8Array(0), new Uint8Array(0)), null, `${e.name}: empty`);
    assert.throws(() => e.chachaSeal(new Uint8Array(31), new Uint8Array(12), new Uint8Array(0), new Uint8Array(1)), undefined, `${e.name}: short key`);
    assert.throws(() => e.xchachaSeal(new Uint8Array(32), new Uint8Array(12), new Uint8Array(0), new Uint8Array(1)), undefined, `${e.name}: 12-byte nonce for xchacha`);
  }
});

test("the protocol's HKDF and MAC give noble's bytes under either engine (RFC 5869 A.1 too)", () => {
  const was = cryptoEngine();
  try {
    for (const e of ENGINES) {
      useCryptoEngine(e);
      // RFC 5869 A.1
      const ikm = new Uint8Array(22).fill(0x0b);
      const salt = unhex('000102030405060708090a0b0c');
      const info = unhex('f0f1f2f3f4f5f6f7f8f9');
      assert.is(hex(kdf(ikm, salt, info, 42)), '3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865', e.name);
      fc.assert(fc.property(any(64), any(64), any(64), fc.integer({ min: 1, max: 200 }), (k, s, i, len) => {
        assert.is(hex(kdf(k, s, i, len)), hex(hkdf(sha256, k, s, i, len)));
        assert.is(hex(kdfExpand(kdfExtract(k, s), i, len)), hex(hkdf(sha256, k, s, i, len)));
        assert.is(hex(mac(k, s, i)), hex(nobleEngine.hmacSha256(k, [s, i])));
      }), { numRuns: 50 });
    }
  } finally {
    useCryptoEngine(was);
  }
});

test('useCryptoEngine returns the engine it replaced', () => {
  const was = useCryptoEngine(nodeEngine);
  assert.is(cryptoEngine(), nodeEngine);
  assert.is(useCryptoEngine(was), nodeEngine);
  assert.is(cryptoEngine(), was);
});

test.run();
