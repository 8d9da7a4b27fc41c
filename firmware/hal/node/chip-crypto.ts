// The secure controller's crypto engine for the phones of a fleet (issue 15, the phone side):
// the chip's hardware block, modelled on node:crypto (OpenSSL). A real secure element computes
// HMAC, AEAD, SHA-256 and Ed25519 in its own silicon, in parallel on every device; a fleet of
// simulated phones in one process spent most of its CPU doing the same in pure TypeScript
// (noble: an Ed25519 verify about 1 ms, SHA-256 of the boot files at every measurement).
//
// Same bytes and the same verdicts as the reference (protocol/crypto-engine.ts nobleEngine),
// checked on vectors, random inputs and altered inputs by chip-crypto.test.ts. The firmware's
// code stays free of node:*: it calls the protocol's engine functions (cryptoEngine(),
// sha256Of, ed25519Verify), and only this HAL module, the node HAL, knows OpenSSL. The fleet
// installs it (sim/fleet.ts); the tests keep noble, and `usbphone simulate` runs its seeds on the
// servers' engine (server-kit/native-crypto.ts: HMAC, HKDF, AEAD; Ed25519 and SHA-256 on noble).
//
// Where keys stay: in this process's memory exactly as with noble (the model's secure
// controller holds them); the KeyObjects made for a public key are cached (public), a secret
// key's KeyObject is made per signature and not kept.
import { createHash, createHmac, createCipheriv, createDecipheriv, createPrivateKey, createPublicKey, sign as nodeSign, verify as nodeVerify, type KeyObject } from 'node:crypto';
import { hchacha } from '@noble/ciphers/chacha.js';
import { useCryptoEngine, ed25519KeyUsable, type CryptoEngine } from '../../../protocol/crypto-engine.ts';

const TAG = 16;
/** A plain Uint8Array copy (callers keep and wipe it; a Buffer may share node's pool). */
const own = (b: Buffer) => new Uint8Array(b);

function chachaSeal(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, pt: Uint8Array): Uint8Array {
  if (key.length !== 32) throw new RangeError(`key: 32 bytes expected, got ${key.length}`);
  if (nonce.length !== 12) throw new RangeError(`nonce: 12 bytes expected, got ${nonce.length}`);
  const c = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG });
  c.setAAD(aad, { plaintextLength: pt.length });
  const out = new Uint8Array(pt.length + TAG);
  out.set(c.update(pt));
  c.final();
  out.set(c.getAuthTag(), pt.length);
  return out;
}

function chachaOpen(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, sealed: Uint8Array): Uint8Array | null {
  if (key.length !== 32) throw new RangeError(`key: 32 bytes expected, got ${key.length}`);
  if (nonce.length !== 12) throw new RangeError(`nonce: 12 bytes expected, got ${nonce.length}`);
  if (sealed.length < TAG) return null;
  const n = sealed.length - TAG;
  const d = createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG });
  d.setAAD(aad, { plaintextLength: n });
  d.setAuthTag(sealed.subarray(n));
  const pt = d.update(sealed.subarray(0, n));
  try {
    d.final(); // the tag is checked here; the plaintext is not handed out unless it verifies
  } catch {
    pt.fill(0);
    return null;
  }
  const out = own(pt);
  pt.fill(0);
  return out;
}

// XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha §2.3), which OpenSSL lacks: HChaCha20 in
// TypeScript for the subkey, then the native ChaCha20-Poly1305 with nonce 0^4 || nonce[16..24].
const SIGMA = new Uint32Array([0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]);
function le32(b: Uint8Array, n: number): Uint32Array {
  const w = new Uint32Array(n);
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  for (let i = 0; i < n; i++) w[i] = dv.getUint32(4 * i, true);
  return w;
}
function xkey(key: Uint8Array, nonce: Uint8Array): { k: Uint8Array; n: Uint8Array } {
  if (key.length !== 32) throw new RangeError(`key: 32 bytes expected, got ${key.length}`);
  if (nonce.length !== 24) throw new RangeError(`nonce: 24 bytes expected, got ${nonce.length}`);
  const kw = le32(key, 8);
  const out = new Uint32Array(8);
  hchacha(SIGMA, kw, le32(nonce, 4), out);
  kw.fill(0);
  const k = new Uint8Array(32);
  const dv = new DataView(k.buffer);
  for (let i = 0; i < 8; i++) dv.setUint32(4 * i, out[i]!, true);
  out.fill(0);
  const n = new Uint8Array(12);
  n.set(nonce.subarray(16, 24), 4);
  return { k, n };
}

// Ed25519 keys as OpenSSL takes them: the raw 32 bytes behind a fixed DER prefix.
const SPKI = Uint8Array.from([0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00]);
const PKCS8 = Uint8Array.from([0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20]);
const cat = (a: Uint8Array, b: Uint8Array) => {
  const o = new Uint8Array(a.length + b.length);
  o.set(a);
  o.set(b, a.length);
  return o;
};
/** Public keys seen (a fleet verifies under a handful: the vendor's, the policy server's). */
const publicKeys = new Map<string, KeyObject | null>();
const MAX_PUBLIC_KEYS = 64;
function publicKeyObject(pub: Uint8Array): KeyObject | null {
  const id = hexOf(pub);
  let k = publicKeys.get(id);
  if (k === undefined) {
    try {
      k = createPublicKey({ key: Buffer.from(cat(SPKI, pub)), format: 'der', type: 'spki' });
    } catch {
      k = null; // not a point OpenSSL decodes: every signature under it is refused
    }
    if (publicKeys.size >= MAX_PUBLIC_KEYS) publicKeys.delete(publicKeys.keys().next().value!);
    publicKeys.set(id, k);
  }
  return k;
}

function verifyNow(sig: Uint8Array, msg: Uint8Array, pub: Uint8Array): boolean {
  const k = publicKeyObject(pub);
  if (!k) return false;
  try {
    return nodeVerify(null, msg, k, sig);
  } catch {
    return false;
  }
}
const hexOf = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
/** Verdicts kept (exact key, signature and message bytes), and the longest message kept. */
const verdicts = new Map<string, boolean>();
const MAX_VERDICTS = 32;
const MAX_VERDICT_MESSAGE = 4096;

export const chipEngine: Required<CryptoEngine> = {
  name: 'chip (node:crypto)',
  hmacSha256(key, parts) {
    const h = createHmac('sha256', key);
    for (const p of parts) h.update(p);
    return own(h.digest());
  },
  chachaSeal,
  chachaOpen,
  xchachaSeal(key, nonce, aad, pt) {
    const { k, n } = xkey(key, nonce);
    try {
      return chachaSeal(k, n, aad, pt);
    } finally {
      k.fill(0);
    }
  },
  xchachaOpen(key, nonce, aad, sealed) {
    const { k, n } = xkey(key, nonce);
    try {
      return chachaOpen(k, n, aad, sealed);
    } finally {
      k.fill(0);
    }
  },
  sha256(parts) {
    const h = createHash('sha256');
    for (const p of parts) h.update(p);
    return own(h.digest());
  },
  ed25519Verify(sig, msg, pub) {
    if (!(sig instanceof Uint8Array) || !(msg instanceof Uint8Array) || !(pub instanceof Uint8Array) || sig.length !== 64 || pub.length !== 32) return false;
    // The same keys refused as the reference (small order, not canonical, not in the subgroup).
    if (!ed25519KeyUsable(pub)) return false;
    // A fleet's phones all verify the same few signed objects (the policy server's table, the
    // vendor's BOOT.SIG): the verdict is a pure function of the exact bytes, kept for the last
    // few, as a real chip would spend the time in its own silicon in parallel on each device.
    // Any other byte (key, signature, message) misses (chip-crypto.test.ts attacks it).
    if (msg.length > MAX_VERDICT_MESSAGE) return verifyNow(sig, msg, pub);
    const id = hexOf(pub) + hexOf(sig) + hexOf(msg);
    let v = verdicts.get(id);
    if (v === undefined) {
      v = verifyNow(sig, msg, pub);
      if (verdicts.size >= MAX_VERDICTS) verdicts.delete(verdicts.keys().next().value!);
      verdicts.set(id, v);
    }
    return v;
  },
  ed25519Sign(msg, secret) {
    if (!(secret instanceof Uint8Array) || secret.length !== 32) throw new RangeError('Ed25519 secret key: 32 bytes expected');
    const der = Buffer.from(cat(PKCS8, secret));
    try {
      return own(nodeSign(null, msg, createPrivateKey({ key: der, format: 'der', type: 'pkcs8' })));
    } finally {
      der.fill(0);
    }
  },
};

/**
 * Installs the chip engine for this process's phones (a fleet), returning the engine it
 * replaced (give it back to useCryptoEngine to restore).
 */
export function useChipCrypto(): CryptoEngine {
  return useCryptoEngine(chipEngine);
}
