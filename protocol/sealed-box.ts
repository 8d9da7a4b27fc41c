// The one "nonce + XChaCha20-Poly1305" envelope of the project: every sealed blob at rest or
// between servers (serial token, hidden-zone records, admin API bodies, the pending secret
// sealed for the registration servers, wrapped login keys) is
//
//   box = nonce (24) || XChaCha20-Poly1305(key, nonce, aad).encrypt(plaintext)   (ct || tag(16))
//
// XChaCha20's 192-bit nonce makes random nonces safe under one long-lived key (draft-irtf-
// cfrg-xchacha §2; RFC 8439 §2.8 for the AEAD). A caller that needs reproducible bytes (the
// factory image) passes a synthetic nonce derived from what it seals (sealBoxWithNonce), so a
// nonce repeats only with the same plaintext and aad.
//
// Errors: a box that does not open (too short, altered, another key or aad) is the *data's*
// fault and is never thrown here: openBox returns null and the caller refuses with its own
// stable code (KEY_BAD_TOKEN, ADMIN_BAD_AUTH, STORE_CORRUPT_ROW, ERR_AUTH). A wrong argument
// type is our bug: TypeError; a key or nonce of the wrong length: RangeError (noble's abytes
// convention).
import { cryptoEngine } from './crypto-engine.ts';
import type { Rng } from './rng.ts';

export const BOX_KEY_BYTES = 32;
export const BOX_NONCE_BYTES = 24;
export const BOX_TAG_BYTES = 16;
/** Bytes a box adds to its plaintext: nonce + tag. */
export const BOX_OVERHEAD = BOX_NONCE_BYTES + BOX_TAG_BYTES;

function bytesArg(v: unknown, name: string, len?: number): Uint8Array {
  if (!(v instanceof Uint8Array)) throw new TypeError(`${name}: Uint8Array expected`);
  if (len !== undefined && v.length !== len) throw new RangeError(`${name}: ${len} bytes expected, got ${v.length}`);
  return v;
}

/**
 * Seals `plaintext` under `key` (32 bytes) with `aad` bound in, under a fresh nonce rng(24).
 * Returns nonce (24) || ciphertext (plaintext.length) || tag (16).
 */
export function sealBox(key: Uint8Array, plaintext: Uint8Array, aad: Uint8Array, rng: Rng): Uint8Array {
  return sealBoxWithNonce(key, bytesArg(rng(BOX_NONCE_BYTES), 'nonce from rng', BOX_NONCE_BYTES), plaintext, aad);
}

/**
 * sealBox with a caller-chosen 24-byte nonce. The caller guarantees it never repeats with
 * another (plaintext, aad) under `key`: a synthetic nonce (a MAC of aad and plaintext under a
 * separate key) does; a counter or a constant does not.
 */
export function sealBoxWithNonce(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Uint8Array {
  bytesArg(key, 'key', BOX_KEY_BYTES);
  bytesArg(nonce, 'nonce', BOX_NONCE_BYTES);
  bytesArg(plaintext, 'plaintext');
  bytesArg(aad, 'aad');
  const ct = cryptoEngine().xchachaSeal(key, nonce, aad, plaintext);
  const out = new Uint8Array(BOX_NONCE_BYTES + ct.length);
  out.set(nonce);
  out.set(ct, BOX_NONCE_BYTES);
  return out;
}

/**
 * The plaintext of a box made by sealBox/sealBoxWithNonce under the same key and aad, or null
 * when it does not open: shorter than BOX_OVERHEAD, or any byte of nonce, ciphertext or tag
 * altered, or another key or aad (Poly1305 checks the tag in constant time before decrypting).
 */
export function openBox(key: Uint8Array, box: Uint8Array, aad: Uint8Array): Uint8Array | null {
  bytesArg(key, 'key', BOX_KEY_BYTES);
  bytesArg(box, 'box');
  bytesArg(aad, 'aad');
  if (box.length < BOX_OVERHEAD) return null;
  return cryptoEngine().xchachaOpen(key, box.subarray(0, BOX_NONCE_BYTES), aad, box.subarray(BOX_NONCE_BYTES));
}
