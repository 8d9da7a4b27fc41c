// The secure controller's fingerprint matcher (S3.3, match-on-chip): the rule that decides
// whether a reading is the enrolled finger. It runs only inside the controller
// (firmware/secure/element.ts); the template never leaves it.
//
// Rule: score = cosine similarity of the enrolled template e and the reading q, both as the
// signed-byte feature vectors the sensor produces (firmware/hal/fingerprint.ts):
//   score = (e . q) / (|e| |q|),  match  <=>  score >= MATCH_THRESHOLD (0.5).
// A vector of zero energy (a blank reading) scores 0. Why 0.5: two readings of one finger with
// the sensor's normal noise score about 0.89; of different fingers, the score is about
// N(0, 1/128) (sd 0.088), so 0.5 sits 5.7 sd above it (a false accept about 1e-8 per try by
// the normal tail), while a poor placement of the right finger scores about 0.42 and is
// refused. Measured over seeded trials: firmware/hal/fingerprint.test.ts, docs/firmware.md.
import { openBox } from '../../protocol/sealed-box.ts';
import { READING_BYTES, CHALLENGE_BYTES, SEALED_READING_BYTES, READING_AAD } from '../hal/fingerprint.ts';
import { equalBytes } from '@noble/ciphers/utils.js';

export const MATCH_THRESHOLD = 0.5;

/** Cosine similarity of two signed-byte feature vectors of READING_BYTES each; 0 for a blank one. */
export function matchScore(enrolled: Uint8Array, reading: Uint8Array): number {
  if (enrolled.length !== READING_BYTES || reading.length !== READING_BYTES) return 0;
  let dot = 0, ee = 0, qq = 0;
  for (let i = 0; i < READING_BYTES; i++) {
    const e = (enrolled[i]! << 24) >> 24;
    const q = (reading[i]! << 24) >> 24;
    dot += e * q;
    ee += e * e;
    qq += q * q;
  }
  if (ee === 0 || qq === 0) return 0;
  return dot / Math.sqrt(ee * qq);
}

export function matches(enrolled: Uint8Array, reading: Uint8Array): boolean {
  return matchScore(enrolled, reading) >= MATCH_THRESHOLD;
}

/**
 * Opens a sealed reading from the paired sensor, bound to `challenge` (the chip's single-use
 * nonce). null when it is not one: wrong size, another challenge (a replayed reading), not
 * sealed under the pairing key (a forged one).
 */
export function openReading(pairingKey: Uint8Array, challenge: Uint8Array, sealed: Uint8Array): Uint8Array | null {
  if (!(sealed instanceof Uint8Array) || sealed.length !== SEALED_READING_BYTES || challenge.length !== CHALLENGE_BYTES) return null;
  if (!equalBytes(sealed.subarray(0, CHALLENGE_BYTES), challenge)) return null;
  const r = openBox(pairingKey, sealed, READING_AAD);
  return r && r.length === READING_BYTES ? r : null;
}
