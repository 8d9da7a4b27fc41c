// The primitives the protocol's hot paths run on (HMAC-SHA256, ChaCha20-Poly1305,
// XChaCha20-Poly1305), behind one small interface so that a host may run them natively:
// the servers install node:crypto's engine at start-up (protocol/native-crypto.ts), a
// fleet's phones get the same plus SHA-256 and Ed25519 through their HAL (the secure
// controller's engine, as a real chip's crypto block), and everything else, the firmware's own code included, runs the pure
// TypeScript noble implementation below. The noble engine is the reference: every other
// engine is checked against it on vectors and random inputs (protocol/native-crypto.test.ts,
// firmware/hal/node/chip-crypto.test.ts).
//
// Both engines give the same bytes for the same inputs; they differ only in speed. An AEAD
// open that fails returns null, whatever the engine (the caller refuses with its own code).
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { chacha20poly1305, xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { ed25519 } from '@noble/curves/ed25519.js';

export interface CryptoEngine {
  readonly name: string;
  /** HMAC-SHA256 (RFC 2104) of the concatenation of `parts` under `key`: 32 bytes. */
  hmacSha256(key: Uint8Array, parts: readonly Uint8Array[]): Uint8Array;
  /** ChaCha20-Poly1305 (RFC 8439 §2.8), 12-byte nonce: ciphertext || tag (16). */
  chachaSeal(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Uint8Array;
  /** The plaintext, or null when the tag does not verify (or the input is shorter than a tag). */
  chachaOpen(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, sealed: Uint8Array): Uint8Array | null;
  /** XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha §2), 24-byte nonce: ciphertext || tag (16). */
  xchachaSeal(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Uint8Array;
  xchachaOpen(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, sealed: Uint8Array): Uint8Array | null;
  /**
   * Optional (issue 15, the phone side): SHA-256 of the concatenation of `parts`, and Ed25519
   * (RFC 8032) signatures. An engine without them runs noble's for these (sha256Of,
   * ed25519Verify, ed25519Sign below); the phones' hardware engine has them
   * (firmware/hal/node/chip-crypto.ts). A verify never throws: false for any bad input.
   */
  sha256?(parts: readonly Uint8Array[]): Uint8Array;
  ed25519Verify?(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean;
  ed25519Sign?(message: Uint8Array, secretKey: Uint8Array): Uint8Array;
}

function tryOpen(f: () => Uint8Array): Uint8Array | null {
  try {
    return f();
  } catch {
    return null;
  }
}

function nobleSha256(parts: readonly Uint8Array[]): Uint8Array {
  if (parts.length === 1) return sha256(parts[0]!);
  const h = sha256.create();
  for (const p of parts) h.update(p);
  return h.digest();
}

/**
 * RFC 8032 with strict decoding (zip215: false: canonical encodings only, as OpenSSL; noble's
 * default, ZIP 215, accepts some non-canonical ones), after the key check below: the reference
 * and a native engine agree on vectors, random, altered and edge inputs
 * (firmware/hal/node/chip-crypto.test.ts). They may still differ on a signature whose R has a
 * small-order component, which only the key's holder can make: noble checks the cofactored
 * equation, OpenSSL the cofactorless one (RFC 8032 allows both).
 */
function nobleVerify(sig: Uint8Array, msg: Uint8Array, pub: Uint8Array): boolean {
  try {
    return sig.length === 64 && ed25519KeyUsable(pub) && ed25519.verify(sig, msg, pub, { zip215: false });
  } catch {
    return false;
  }
}

const keyVerdicts = new Map<string, boolean>();
const MAX_KEY_VERDICTS = 64;
/**
 * Whether a 32-byte Ed25519 public key is one a signature may be checked under: the canonical
 * encoding of a point of the prime-order subgroup, not of small order. OpenSSL takes a key of
 * small order (the identity, y = 1) under which R = identity, S = 0 "signs" every message;
 * both engines refuse such keys here first, so their verdicts agree
 * (firmware/hal/node/chip-crypto.test.ts). The verdict is a pure function of the 32 bytes,
 * kept for the few keys a process verifies under (a point decode and a scalar multiplication
 * each: milliseconds in noble).
 */
export function ed25519KeyUsable(pub: Uint8Array): boolean {
  if (!(pub instanceof Uint8Array) || pub.length !== 32) return false;
  let id = '';
  for (const b of pub) id += (b < 16 ? '0' : '') + b.toString(16);
  let ok = keyVerdicts.get(id);
  if (ok === undefined) {
    try {
      const p = ed25519.Point.fromBytes(Uint8Array.from(pub), false);
      ok = !p.isSmallOrder() && p.isTorsionFree();
    } catch {
      ok = false;
    }
    if (keyVerdicts.size >= MAX_KEY_VERDICTS) keyVerdicts.delete(keyVerdicts.keys().next().value!);
    keyVerdicts.set(id, ok);
  }
  return ok;
}

/** The reference: noble-hashes, noble-ciphers and noble-curves, pure TypeScript. */
export const nobleEngine: Required<CryptoEngine> = {
  name: 'noble',
  hmacSha256(key, parts) {
    const h = hmac.create(sha256, key);
    for (const p of parts) h.update(p);
    return h.digest();
  },
  chachaSeal: (key, nonce, aad, pt) => chacha20poly1305(key, nonce, aad).encrypt(pt),
  chachaOpen: (key, nonce, aad, ct) => (ct.length < 16 ? null : tryOpen(() => chacha20poly1305(key, nonce, aad).decrypt(ct))),
  xchachaSeal: (key, nonce, aad, pt) => xchacha20poly1305(key, nonce, aad).encrypt(pt),
  xchachaOpen: (key, nonce, aad, ct) => (ct.length < 16 ? null : tryOpen(() => xchacha20poly1305(key, nonce, aad).decrypt(ct))),
  sha256: nobleSha256,
  ed25519Verify: nobleVerify,
  ed25519Sign: (msg, secret) => ed25519.sign(msg, secret),
};

let current: CryptoEngine = nobleEngine;

/** The engine in use in this process (noble unless a host installed another). */
export function cryptoEngine(): CryptoEngine {
  return current;
}

/**
 * Installs `engine` for this process: a server at start-up, a fleet for its phones' chips.
 * Returns the one it replaced (tests put it back).
 */
export function useCryptoEngine(engine: CryptoEngine): CryptoEngine {
  const was = current;
  current = engine;
  return was;
}

/** SHA-256 of the concatenation of `parts`, on the engine in use (noble's when it has none). */
export function sha256Of(...parts: Uint8Array[]): Uint8Array {
  return (current.sha256 ?? nobleSha256)(parts);
}

/** Ed25519 (RFC 8032) verification on the engine in use. Never throws: false for any bad input. */
export function ed25519Verify(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean {
  if (!(signature instanceof Uint8Array) || !(message instanceof Uint8Array) || !(publicKey instanceof Uint8Array)) return false;
  if (signature.length !== 64 || publicKey.length !== 32) return false;
  return (current.ed25519Verify ?? nobleVerify)(signature, message, publicKey);
}

/** An Ed25519 signature (64 bytes) of `message` under the 32-byte secret key, on the engine in use. */
export function ed25519Sign(message: Uint8Array, secretKey: Uint8Array): Uint8Array {
  return (current.ed25519Sign ?? nobleEngine.ed25519Sign)(message, secretKey);
}
