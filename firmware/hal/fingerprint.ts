// The phone's fingerprint sensor (S3.3), as the HAL shows it, and its one model.
//
// A finger is a feature template: TEMPLATE_DIM real features, each N(0, 1), fixed for that
// finger (the model stands for minutiae-derived feature vectors, as ISO/IEC 19794-2 templates
// are turned into fixed-length vectors by some matchers). A reading is the template plus
// Gaussian noise of standard deviation sigma: SIGMA_GOOD for a normal placement, SIGMA_POOR
// for a poor one (dry, partial, moved: probability `poorRate` per reading), quantised to one
// signed byte per feature (x 16, clamped to -127..127). A different finger is a different
// template. The noise is seeded: a sensor replays from its seed.
//
// The sensor never hands the host a usable reading: it is paired with the phone's secure
// controller at the factory (a key both hold, from the chip's fuses: sensorPairingKey) and
// seals each reading for the chip, bound to the chip's fresh 24-byte challenge (FP CHALLENGE,
// firmware/secure/element.ts): XChaCha20-Poly1305(K_pair, nonce = challenge, AAD =
// READING_AAD).encrypt(reading). A hostile host relays the sealed reading; it can neither read
// it (the finger's features stay private), forge one, nor replay it (the chip's challenge is
// single use). Secure biometric sensors paired with the host's TEE/TPM do the same (Windows
// Enhanced Sign-in Security; match-on-card readers with a secure channel to the sensor).
//
// Not emulated: the image, minutiae extraction, liveness detection (a gummy finger on the
// sensor is a finger to this model), the sensor's timing and its bus.
import { sealBoxWithNonce } from '../../protocol/sealed-box.ts';
import { sha256 } from '@noble/hashes/sha2.js';
import { utf8ToBytes } from '@noble/hashes/utils.js';

/** Features per template and per reading (one byte each on the wire). */
export const TEMPLATE_DIM = 128;
export const READING_BYTES = TEMPLATE_DIM;
/** Quantisation: one feature unit is 16 steps of the signed byte. */
export const FEATURE_SCALE = 16;
/** Noise of a normal placement and of a poor one, in feature units. */
export const SIGMA_GOOD = 0.35;
export const SIGMA_POOR = 1.8;
/** Default share of poor placements. */
export const POOR_RATE = 0.03;
/** The chip's challenge: the XChaCha20 nonce of the sealed reading. */
export const CHALLENGE_BYTES = 24;
/** Sealed reading: challenge (24) || ciphertext (128) || tag (16). */
export const SEALED_READING_BYTES = CHALLENGE_BYTES + READING_BYTES + 16;
export const READING_AAD = utf8ToBytes('usbphone/v1 fingerprint reading');
/** The fuse-derived label of the sensor pairing key (the factory gives the sensor the same key). */
export const SENSOR_PAIRING_LABEL = 'usbphone/v1 fingerprint sensor pairing';

/** The HAL's sensor: what the firmware (and a hostile host program) can ask of it. */
export interface FingerprintSensor {
  /**
   * Captures the finger on the sensor now and seals the reading for the chip, bound to
   * `challenge` (the chip's FP CHALLENGE, 24 bytes). null when no finger is on the sensor.
   */
  capture(challenge: Uint8Array): Uint8Array | null;
}

/** A person's finger: its template. */
export interface Finger {
  readonly features: Float64Array;
}

/** A small seeded generator (xoshiro128**) with Gaussian draws: the sensor's noise, not a secret. */
export class NoiseSource {
  #s: Uint32Array;
  #spare: number | null = null;
  constructor(seed: string) {
    const h = sha256(utf8ToBytes(`usbphone fingerprint noise/${seed}`));
    this.#s = new Uint32Array(h.buffer, h.byteOffset, 4).slice();
  }
  /** Uniform in [0, 1). */
  next(): number {
    const s = this.#s;
    let [a, b, c, d] = [s[0]!, s[1]!, s[2]!, s[3]!];
    const r = Math.imul(rotl(Math.imul(b, 5) >>> 0, 7), 9) >>> 0;
    const t = (b << 9) >>> 0;
    c ^= a;
    d ^= b;
    b ^= c;
    a ^= d;
    c ^= t;
    d = rotl(d >>> 0, 11);
    s[0] = a;
    s[1] = b;
    s[2] = c;
    s[3] = d;
    return r / 2 ** 32;
  }
  /** Standard normal (Box-Muller, both values used). */
  gauss(): number {
    if (this.#spare !== null) {
      const v = this.#spare;
      this.#spare = null;
      return v;
    }
    let u = 0;
    while (u === 0) u = this.next();
    const v = this.next();
    const r = Math.sqrt(-2 * Math.log(u));
    this.#spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }
}
function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** The finger named `seed` (the same seed, the same finger). */
export function fingerFromSeed(seed: string): Finger {
  const n = new NoiseSource(`finger/${seed}`);
  const features = new Float64Array(TEMPLATE_DIM);
  for (let i = 0; i < TEMPLATE_DIM; i++) features[i] = n.gauss();
  return { features };
}

/** One reading of `finger` with noise sigma, quantised (the bytes the sensor seals). */
export function readingOf(finger: Finger, sigma: number, noise: NoiseSource): Int8Array {
  const r = new Int8Array(READING_BYTES);
  for (let i = 0; i < TEMPLATE_DIM; i++) {
    const x = Math.round((finger.features[i]! + sigma * noise.gauss()) * FEATURE_SCALE);
    r[i] = Math.max(-127, Math.min(127, x));
  }
  return r;
}

/** Seals a reading for the chip (the sensor's side of the pairing). */
export function sealReading(pairingKey: Uint8Array, challenge: Uint8Array, reading: Int8Array): Uint8Array {
  if (challenge.length !== CHALLENGE_BYTES) throw new RangeError(`challenge must be ${CHALLENGE_BYTES} bytes`);
  const pt = new Uint8Array(reading.buffer, reading.byteOffset, reading.length).slice();
  const box = sealBoxWithNonce(pairingKey, challenge, pt, READING_AAD);
  pt.fill(0);
  return box;
}

/**
 * The sensor model. Throws only on bad construction (a pairing key not of 32 bytes, a
 * poorRate outside 0..1).
 */
export class SimFingerprintSensor implements FingerprintSensor {
  readonly #key: Uint8Array;
  readonly #noise: NoiseSource;
  readonly #poorRate: number;
  #finger: Finger | null = null;
  /** Readings taken, for tests. */
  captures = 0;

  constructor(o: { pairingKey: Uint8Array; seed: string | number; poorRate?: number }) {
    if (!(o.pairingKey instanceof Uint8Array) || o.pairingKey.length !== 32) throw new RangeError('SimFingerprintSensor: pairingKey must be 32 bytes');
    const p = o.poorRate ?? POOR_RATE;
    if (!(p >= 0 && p <= 1)) throw new RangeError('SimFingerprintSensor: poorRate must be in 0..1');
    this.#key = Uint8Array.from(o.pairingKey);
    this.#noise = new NoiseSource(`sensor/${o.seed}`);
    this.#poorRate = p;
  }

  /** A finger is put on the sensor (null: taken off). */
  place(finger: Finger | null): void {
    this.#finger = finger;
  }

  capture(challenge: Uint8Array): Uint8Array | null {
    if (!this.#finger) return null;
    // A model never throws at its firmware: a challenge of the wrong size gives no reading.
    if (!(challenge instanceof Uint8Array) || challenge.length !== CHALLENGE_BYTES) return null;
    this.captures++;
    const sigma = this.#noise.next() < this.#poorRate ? SIGMA_POOR : SIGMA_GOOD;
    const r = readingOf(this.#finger, sigma, this.#noise);
    const box = sealReading(this.#key, challenge, r);
    r.fill(0);
    return box;
  }
}
