// The secure controller's crypto engine for the phones of a fleet (issue 15, the phone side):
// the chip's hardware block, modelled on node:crypto (OpenSSL). A real secure element computes
// HMAC, AEAD, SHA-256 and Ed25519 in its own silicon, in parallel on every device; a fleet of
// simulated phones in one process spent most of its CPU doing the same in pure TypeScript
// (noble: an Ed25519 verify about 1 ms, SHA-256 of the boot files at every measurement).
//
// The engine is the servers' node:crypto one (protocol/native-crypto.ts: HMAC, ChaCha20- and
// XChaCha20-Poly1305, the same functions) plus what only the chip computes here: SHA-256 and
// strict Ed25519 (keys checked first, verdicts kept). Same bytes and the same verdicts as the
// reference (protocol/crypto-engine.ts nobleEngine), checked on vectors, random inputs and
// altered inputs by chip-crypto.test.ts. The firmware's code stays free of node:*: it calls
// the protocol's engine functions (cryptoEngine(), sha256Of, ed25519Verify), and only the node
// HAL (this module) reaches OpenSSL. The fleet installs it (sim/fleet.ts), and `usbphone
// simulate` for its seeds (cli/simulate.ts); the tests and the single phone keep noble.
//
// Where keys stay: in this process's memory exactly as with noble (the model's secure
// controller holds them); the KeyObjects made for a public key are cached (public), a secret
// key's KeyObject is made per signature and not kept.
import { createHash, createPrivateKey, createPublicKey, sign as nodeSign, verify as nodeVerify, type KeyObject } from 'node:crypto';
import { useCryptoEngine, ed25519KeyUsable, type CryptoEngine } from '../../../protocol/crypto-engine.ts';
import { nodeEngine } from '../../../protocol/native-crypto.ts';

/** A plain Uint8Array copy (callers keep and wipe it; a Buffer may share node's pool). */
const own = (b: Buffer) => new Uint8Array(b);

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
  // HMAC, ChaCha20-Poly1305 and XChaCha20-Poly1305: the servers' engine, the very functions.
  ...nodeEngine,
  name: 'chip (node:crypto)',
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
