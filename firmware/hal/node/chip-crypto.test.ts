// The phones' hardware crypto engine (chip-crypto.ts, node:crypto) against the noble
// reference (protocol/crypto-engine.ts): the same bytes on published vectors and on random
// inputs (fast-check), the same refusals of altered inputs, and the same verdicts where the
// firmware uses them (the attack table's and the boot manifest's signatures). Rerun a failure
// with FC_SEED.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { sha256 } from '@noble/hashes/sha2.js';
import { ed25519 } from '@noble/curves/ed25519.js';
import { bytesToHex as hex, hexToBytes as unhex } from '@noble/hashes/utils.js';
import { nobleEngine, useCryptoEngine, cryptoEngine, sha256Of, ed25519Verify, ed25519Sign, type CryptoEngine } from '../../../protocol/crypto-engine.ts';
import { verifyTable, signTable, tablePublicKey } from '../../../protocol/attack-table.ts';
import { signManifest, verifyManifestUncached, vendorPublicKey } from '../../boot-manifest.ts';
import { nodeEngine } from '../../../protocol/native-crypto.ts';
import { chipEngine, useChipCrypto } from './chip-crypto.ts';

if (process.env.FC_SEED) fc.configureGlobal({ seed: Number(process.env.FC_SEED) });
const ENGINES: Required<CryptoEngine>[] = [nobleEngine, chipEngine];
const bytes = (n: number) => fc.uint8Array({ minLength: n, maxLength: n });
const any = (max: number) => fc.uint8Array({ maxLength: max });
const te = new TextEncoder();
const alter = (b: Uint8Array, at: number, flip: number) => {
  const c = Uint8Array.from(b);
  c[at % c.length]! ^= flip;
  return c;
};
/** Runs f with `e` installed as the process's engine, then puts the previous one back. */
function under<T>(e: CryptoEngine, f: () => T): T {
  const was = useCryptoEngine(e);
  try {
    return f();
  } finally {
    useCryptoEngine(was);
  }
}

// RFC 8032 §7.1, TEST 1, 2 and 3: secret key, public key, message, signature.
const RFC8032 = [
  ['9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60', 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a', '', 'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b'],
  ['4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb', '3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c', '72', '92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00'],
  ['c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7', 'fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025', 'af82', '6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a'],
] as const;

test("the chip's HMAC and AEAD are the servers' node:crypto engine's very functions (one implementation, checked here and in protocol/native-crypto.test.ts)", () => {
  for (const k of ['hmacSha256', 'chachaSeal', 'chachaOpen', 'xchachaSeal', 'xchachaOpen'] as const) assert.is(chipEngine[k], nodeEngine[k], k);
  assert.is.not(chipEngine.name, nodeEngine.name);
});

test('RFC 8032 §7.1 Ed25519 tests 1-3, on both engines: the same signature, verified', () => {
  for (const [sk, pk, msg, sig] of RFC8032) {
    for (const e of ENGINES) {
      assert.is(hex(e.ed25519Sign(unhex(msg), unhex(sk))), sig, e.name);
      assert.ok(e.ed25519Verify(unhex(sig), unhex(msg), unhex(pk)), e.name);
    }
  }
});

test('FIPS 180-2 SHA-256 ("abc", and in parts), RFC 4231 HMAC, RFC 8439 ChaCha20-Poly1305, on both engines', () => {
  for (const e of ENGINES) {
    assert.is(hex(e.sha256([te.encode('abc')])), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad', e.name);
    assert.is(hex(e.sha256([te.encode('a'), new Uint8Array(0), te.encode('bc')])), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad', e.name);
    assert.is(hex(e.hmacSha256(new Uint8Array(20).fill(0x0b), [te.encode('Hi There')])), 'b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7', e.name);
    const key = unhex('808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f');
    const ct = e.chachaSeal(key, unhex('070000004041424344454647'), unhex('50515253c0c1c2c3c4c5c6c7'), te.encode("Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it."));
    assert.is(hex(ct.subarray(ct.length - 16)), '1ae10b594f09e26a7e902ecbd0600691', e.name);
    const x = e.xchachaSeal(key, unhex('404142434445464748494a4b4c4d4e4f5051525354555657'), unhex('50515253c0c1c2c3c4c5c6c7'), te.encode("Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it."));
    assert.is(hex(x.subarray(x.length - 16)), 'c0875924c1c7987947deafd8780acf49', e.name);
  }
});

test("random inputs: the same SHA-256, HMAC, sealed bytes and signatures; each verifies and opens the other's", () => {
  fc.assert(fc.property(fc.array(any(300), { maxLength: 4 }), (parts) => {
    assert.is(hex(chipEngine.sha256(parts)), hex(nobleEngine.sha256(parts)));
    assert.is(hex(chipEngine.sha256(parts)), hex(sha256(Uint8Array.from(parts.flatMap((p) => [...p])))));
  }));
  fc.assert(fc.property(any(80), fc.array(any(200), { maxLength: 4 }), (k, parts) => hex(chipEngine.hmacSha256(k, parts)) === hex(nobleEngine.hmacSha256(k, parts))));
  fc.assert(fc.property(bytes(32), bytes(24), any(64), any(300), (k, n, aad, pt) => {
    const a = nobleEngine.xchachaSeal(k, n, aad, pt);
    assert.is(hex(chipEngine.xchachaSeal(k, n, aad, pt)), hex(a));
    assert.equal(chipEngine.xchachaOpen(k, n, aad, a), pt);
    const c = nobleEngine.chachaSeal(k, n.subarray(0, 12), aad, pt);
    assert.is(hex(chipEngine.chachaSeal(k, n.subarray(0, 12), aad, pt)), hex(c));
    assert.equal(chipEngine.chachaOpen(k, n.subarray(0, 12), aad, c), pt);
  }));
  fc.assert(fc.property(bytes(32), any(300), (sk, msg) => {
    const pk = ed25519.getPublicKey(sk);
    const s = nobleEngine.ed25519Sign(msg, sk);
    assert.is(hex(chipEngine.ed25519Sign(msg, sk)), hex(s));
    assert.ok(chipEngine.ed25519Verify(s, msg, pk));
    assert.ok(nobleEngine.ed25519Verify(s, msg, pk));
  }), { numRuns: 60 });
});

test('an altered signature, message or public key is refused by both engines alike; so are garbage and wrong lengths', () => {
  fc.assert(fc.property(bytes(32), fc.uint8Array({ minLength: 1, maxLength: 200 }), fc.nat(), fc.integer({ min: 1, max: 255 }), fc.constantFrom('sig', 'msg', 'pub'), (sk, msg, at, flip, what) => {
    const pk = ed25519.getPublicKey(sk);
    const sig = nobleEngine.ed25519Sign(msg, sk);
    const a = { sig, msg, pk };
    if (what === 'sig') a.sig = alter(sig, at, flip);
    else if (what === 'msg') a.msg = alter(msg, at, flip);
    else a.pk = alter(pk, at, flip);
    for (const e of ENGINES) assert.is(e.ed25519Verify(a.sig, a.msg, a.pk), false, `${e.name} accepted an altered ${what}`);
  }), { numRuns: 150 });
  // Random bytes as signature and key (most keys are not even points): both refuse, never throw.
  fc.assert(fc.property(bytes(64), any(40), bytes(32), (sig, msg, pk) => {
    for (const e of ENGINES) assert.is(e.ed25519Verify(sig, msg, pk), false, e.name);
  }), { numRuns: 100 });
  const [sk, pk, , sig] = RFC8032[0];
  for (const e of ENGINES) {
    assert.is(e.ed25519Verify(unhex(sig).subarray(0, 63), new Uint8Array(0), unhex(pk)), false, `${e.name}: 63-byte signature`);
    assert.is(e.ed25519Verify(unhex(sig), new Uint8Array(0), unhex(pk).subarray(0, 31)), false, `${e.name}: 31-byte key`);
    // S + L (the order of the group): the same R, a non-canonical S; RFC 8032 §5.1.7 refuses it.
    const s = unhex(sig);
    let carry = 0;
    const L = unhex('edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010');
    for (let i = 0; i < 32; i++) {
      const v = s[32 + i]! + L[i]! + carry;
      s[32 + i] = v & 0xff;
      carry = v >> 8;
    }
    assert.is(e.ed25519Verify(s, new Uint8Array(0), unhex(pk)), false, `${e.name}: S + L`);
    // A key of small order (the identity, y = 1) with R = identity and S = 0 "signs" every
    // message under a cofactored check that allowed it: both refuse.
    const id = unhex('0100000000000000000000000000000000000000000000000000000000000000');
    const forged = new Uint8Array(64);
    forged.set(id);
    assert.is(e.ed25519Verify(forged, te.encode('any message'), id), false, `${e.name}: small-order key`);
    assert.throws(() => e.ed25519Sign(new Uint8Array(1), unhex(sk).subarray(0, 31)), undefined, `${e.name}: short secret`);
  }
});

test('attack on the verdicts the chip keeps: a message, signature or key changed in place after a verdict was kept is verified anew (refused); a refusal kept does not refuse the genuine bytes', () => {
  const sk = new Uint8Array(32).fill(0x42);
  const pk = ed25519.getPublicKey(sk);
  const msg = te.encode('table v7: password 0 ppm, otp 0 ppm');
  const sig = nobleEngine.ed25519Sign(msg, sk);
  for (let round = 0; round < 2; round++) assert.ok(chipEngine.ed25519Verify(sig, msg, pk), `kept verdict, round ${round}`);
  // The very arrays the verdict was kept for, altered in place (a host rewriting its buffer).
  for (const [what, b, at] of [['message', msg, 6], ['signature', sig, 40], ['key', pk, 3]] as const) {
    b[at]! ^= 1;
    assert.is(chipEngine.ed25519Verify(sig, msg, pk), false, `${what} altered in place`);
    assert.is(nobleEngine.ed25519Verify(sig, msg, pk), false, `${what} altered in place (reference)`);
    b[at]! ^= 1;
    assert.ok(chipEngine.ed25519Verify(sig, msg, pk), `${what} restored`);
  }
  // A forged signature refused first, then the genuine one: accepted (verdicts are per exact bytes).
  const forged = nobleEngine.ed25519Sign(msg, new Uint8Array(32).fill(0x43));
  assert.is(chipEngine.ed25519Verify(forged, msg, pk), false);
  assert.is(chipEngine.ed25519Verify(forged, msg, pk), false, 'the refusal, kept');
  assert.ok(chipEngine.ed25519Verify(sig, msg, pk));
  // Messages beyond what is kept are verified each time, with the same verdicts.
  const big = new Uint8Array(5000).fill(7);
  const bigSig = nobleEngine.ed25519Sign(big, sk);
  assert.ok(chipEngine.ed25519Verify(bigSig, big, pk));
  big[4999] = 8;
  assert.is(chipEngine.ed25519Verify(bigSig, big, pk), false);
});

test('the protocol functions use the installed engine, and noble for what an engine lacks', () => {
  const [sk, pk, msg, sig] = RFC8032[1];
  let calls = 0;
  const counting: CryptoEngine = { ...chipEngine, name: 'counting', ed25519Verify: (...a) => (calls++, chipEngine.ed25519Verify(...a)), sha256: (p) => (calls++, chipEngine.sha256(p)) };
  under(counting, () => {
    assert.ok(ed25519Verify(unhex(sig), unhex(msg), unhex(pk)));
    assert.is(hex(sha256Of(te.encode('a'), te.encode('bc'))), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  });
  assert.is(calls, 2);
  // An engine with only the protocol's HMAC and AEAD (the servers' node:crypto one): noble's signatures.
  const { sha256: _s, ed25519Verify: _v, ed25519Sign: _g, ...bare } = chipEngine;
  under({ ...bare, name: 'bare' }, () => {
    assert.is(hex(ed25519Sign(unhex(msg), unhex(sk))), sig);
    assert.ok(ed25519Verify(unhex(sig), unhex(msg), unhex(pk)));
    assert.not.ok(ed25519Verify(alter(unhex(sig), 5, 1), unhex(msg), unhex(pk)));
    assert.is(hex(sha256Of(te.encode('abc'))), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  });
  const was = useChipCrypto();
  try {
    assert.is(cryptoEngine(), chipEngine);
  } finally {
    assert.is(useCryptoEngine(was), chipEngine);
  }
});

test("the firmware's verdicts are the same on either engine: the attack table's golden cases, a forged table, an altered boot manifest", () => {
  const vectors = JSON.parse(readFileSync(new URL('../../../docs/vectors/attack-table.json', import.meta.url), 'utf8')) as { publicKey: string; cases: { name: string; hex: string; now: number; have: number | null; expect: string }[] };
  assert.ok(vectors.cases.some((c) => c.expect === 'TABLE_BAD_SIGNATURE'));
  for (const e of ENGINES) {
    under(e, () => {
      for (const c of vectors.cases) {
        const r = verifyTable(unhex(c.hex), unhex(vectors.publicKey), c.now, c.have);
        assert.is(r.ok ? 'ok' : r.code, c.expect, `${e.name}: ${c.name}`);
      }
      const sk = new Uint8Array(32).fill(9);
      const t = { version: 2, issuedAt: 1, expiresAt: 2e12, sites: [] };
      assert.ok(verifyTable(signTable(t, sk), tablePublicKey(sk), 0, null).ok, e.name);
      const forged = signTable({ ...t, version: 3 }, new Uint8Array(32).fill(8));
      assert.is((verifyTable(forged, tablePublicKey(sk), 0, 2) as { code: string }).code, 'TABLE_BAD_SIGNATURE', e.name);
      const vendor = new Uint8Array(32).fill(3);
      const file = signManifest({ version: 7, entries: [{ zone: 'cdrom', name: 'UPMON.EXE', sha256: sha256(te.encode('program')) }] }, vendor);
      const good = verifyManifestUncached(file, vendorPublicKey(vendor));
      assert.ok(good.ok, e.name);
      for (let i = 0; i < file.length; i += 7) {
        const bad = verifyManifestUncached(alter(file, i, 0x20), vendorPublicKey(vendor));
        assert.not.ok(bad.ok, `${e.name}: BOOT.SIG altered at ${i} verified`);
      }
    });
  }
});

test.run();
