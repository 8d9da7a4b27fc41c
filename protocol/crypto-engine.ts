// The primitives the protocol's hot paths run on (HMAC-SHA256, ChaCha20-Poly1305,
// XChaCha20-Poly1305), behind one small interface so that a host may run them natively:
// the servers install node:crypto's engine at start-up (server-kit/native-crypto.ts), a
// fleet's phones get one through their HAL (the secure controller's engine, as a real chip's
// crypto block), and everything else, the firmware's own code included, runs the pure
// TypeScript noble implementation below. The noble engine is the reference: every other
// engine is checked against it on vectors and random inputs (server-kit/native-crypto.test.ts).
//
// Both engines give the same bytes for the same inputs; they differ only in speed. An AEAD
// open that fails returns null, whatever the engine (the caller refuses with its own code).
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { chacha20poly1305, xchacha20poly1305 } from '@noble/ciphers/chacha.js';

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
}

function tryOpen(f: () => Uint8Array): Uint8Array | null {
  try {
    return f();
  } catch {
    return null;
  }
}

/** The reference: noble-hashes and noble-ciphers, pure TypeScript. */
export const nobleEngine: CryptoEngine = {
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
