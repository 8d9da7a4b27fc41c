// The person layer of a business login (S3.3; docs/protocol.md §17): what the chip and a site
// must agree on for the fingerprint and one-time-code mechanisms, and nothing else. The
// password mechanism's person proof is S4's (protocol/bank.ts).
//
// - The fingerprint proof is an Ed25519 signature by the site's fingerprint key (made inside
//   the chip, only after a finger matched) over FP_DOMAIN || 0x00 || the session's channel
//   binding (SecureChannel.exporter(PERSON_BINDING_LABEL), §5.4): fresh per session.
// - The one-time code is TOTP (RFC 6238) from a per-site seed held by the chip.
// - Both are provisioned at the site's registration inside a business session whose login
//   key K_login (§5.1) the chip and the site share and the host does not hold: the seed
//   travels wrapped under a key derived from K_login, and the fingerprint public key carries a
//   MAC under another, so a hostile host can neither read the seed nor substitute its own key.
import { concatBytes, utf8ToBytes } from '@noble/hashes/utils.js';
import { encode, decode, type CborValue } from './cbor.ts';
import { kdf, mac } from './keys.ts';
import { sealBox, openBox, BOX_OVERHEAD } from './sealed-box.ts';
import { ProtocolError } from './errors.ts';
import { DEST_RE, USER_RE } from './messages.ts';
import type { Rng } from './rng.ts';

/** The exporter label of the fingerprint challenge (§5.4). */
export const PERSON_BINDING_LABEL = 'person fingerprint';
/** Bytes of the channel binding the fingerprint key signs. */
export const BINDING_BYTES = 32;
/** The signature's domain: what the chip prefixes to the challenge, and the site checks. */
export const FP_DOMAIN = 'usbphone/v1 person fingerprint';
export const FP_PUBLIC_KEY_BYTES = 32;
export const FP_SIGNATURE_BYTES = 64;
export const FP_ATTEST_BYTES = 32;
/** A site is named like a destination (a business server or a service it hosts). */
export const SITE_RE = DEST_RE;

/** The message the fingerprint key signs: FP_DOMAIN || 0x00 || challenge (32 bytes). */
export function fingerprintMessage(challenge: Uint8Array): Uint8Array {
  if (!(challenge instanceof Uint8Array) || challenge.length !== BINDING_BYTES) throw new RangeError(`challenge must be ${BINDING_BYTES} bytes`);
  return concatBytes(utf8ToBytes(FP_DOMAIN), Uint8Array.of(0), challenge);
}

/**
 * The MAC that vouches, to the site, that a fingerprint public key was made by the chip that
 * holds the business secret: HMAC(HKDF(K_login, "usbphone/v1 person key-attest", site),
 * CBOR(["usbphone/v1 fingerprint key", site, user, publicKey])). 32 bytes.
 */
export function fingerprintKeyAttestation(loginKey: Uint8Array, site: string, user: string, publicKey: Uint8Array): Uint8Array {
  const k = kdf(loginKey, 'usbphone/v1 person key-attest', site);
  const m = mac(k, encode(['usbphone/v1 fingerprint key', site, user, publicKey]));
  k.fill(0);
  return m;
}

// ---- one-time codes

export const TOTP_ALGORITHMS = ['SHA1', 'SHA256', 'SHA512'] as const;
export type TotpAlgorithm = (typeof TOTP_ALGORITHMS)[number];
/** RFC 6238 parameters of a site's codes. */
export interface TotpParams {
  algorithm: TotpAlgorithm;
  /** 6..8 (RFC 4226 §5.3: at least 6). */
  digits: number;
  /** Time step X in seconds (RFC 6238 §4.1): 30 or 60. */
  period: number;
}
export const TOTP_DEFAULTS: TotpParams = { algorithm: 'SHA1', digits: 6, period: 30 };
/** Seed length bounds (RFC 4226 §4 R6: at least 128 bits; 64 bytes = one SHA-512 block's worth). */
export const OTP_SEED_MIN = 16;
export const OTP_SEED_MAX = 64;

/** Whether `p` is a TotpParams this protocol admits. */
export function isTotpParams(p: unknown): p is TotpParams {
  if (typeof p !== 'object' || p === null) return false;
  const o = p as Record<string, unknown>;
  return (TOTP_ALGORITHMS as readonly unknown[]).includes(o.algorithm) && Number.isInteger(o.digits) && (o.digits as number) >= 6 && (o.digits as number) <= 8 && (o.period === 30 || o.period === 60);
}

/**
 * Bytes of a wrapped seed (wrapOtpSeed): nonce (24) + tag (16) around CBOR([seed, algorithm,
 * digits, period]), which is 26 bytes at the least (a 16-byte seed, "SHA1"; the period takes two
 * bytes) and 77 at the most (a 64-byte seed, "SHA512").
 */
export const WRAPPED_SEED_MIN = BOX_OVERHEAD + 26;
export const WRAPPED_SEED_MAX = BOX_OVERHEAD + 77;

const seedAad = (site: string, user: string) => encode(['usbphone/v1 otp-seed', site, user]);
const seedKey = (loginKey: Uint8Array, site: string) => kdf(loginKey, 'usbphone/v1 otp-seed wrap', site);

/**
 * A site's TOTP seed wrapped for the chip (the site does this at registration): sealed box
 * (protocol/sealed-box.ts, XChaCha20-Poly1305) under HKDF(K_login, "usbphone/v1 otp-seed
 * wrap", site) of CBOR([seed, algorithm, digits, period]), AAD CBOR(["usbphone/v1 otp-seed",
 * site, user]). Only the chip holding that user's business secret opens it.
 */
export function wrapOtpSeed(loginKey: Uint8Array, site: string, user: string, seed: Uint8Array, params: TotpParams, rng: Rng): Uint8Array {
  if (seed.length < OTP_SEED_MIN || seed.length > OTP_SEED_MAX) throw new RangeError(`seed must be ${OTP_SEED_MIN}..${OTP_SEED_MAX} bytes`);
  if (!isTotpParams(params)) throw new RangeError('bad TOTP parameters');
  const k = seedKey(loginKey, site);
  const pt = encode([seed, params.algorithm, params.digits, params.period]);
  const box = sealBox(k, pt, seedAad(site, user), rng);
  pt.fill(0);
  k.fill(0);
  return box;
}

/** Opens a wrapped seed (the chip does this); null when it does not open or is malformed. */
export function unwrapOtpSeed(loginKey: Uint8Array, site: string, user: string, box: Uint8Array): { seed: Uint8Array; params: TotpParams } | null {
  const k = seedKey(loginKey, site);
  const pt = openBox(k, box, seedAad(site, user));
  k.fill(0);
  return pt ? decodeOtpSeed(pt) : null;
}

/**
 * The plaintext of a sealed TOTP seed, CBOR [seed, algorithm, digits, period] (the site's wrap
 * for the chip, and the bank's own sealing at rest: biz-server/bank-store.ts): the seed and its
 * parameters, or null when malformed. Wipes `pt` in any case.
 */
export function decodeOtpSeed(pt: Uint8Array): { seed: Uint8Array; params: TotpParams } | null {
  try {
    const v = decode(pt);
    if (!Array.isArray(v) || v.length !== 4) return null;
    const [seed, algorithm, digits, period] = v;
    const params = { algorithm, digits, period };
    if (!(seed instanceof Uint8Array) || seed.length < OTP_SEED_MIN || seed.length > OTP_SEED_MAX || !isTotpParams(params)) return null;
    return { seed: Uint8Array.from(seed), params };
  } catch {
    return null;
  } finally {
    pt.fill(0);
  }
}

// ---- the proof as it travels (inside the sealed business session)

export type PersonProof = { mech: 'fingerprint'; signature: Uint8Array } | { mech: 'otp'; code: string };
const CODE_RE = /^[0-9]{6,8}$/;

/** CBOR value of a person proof (docs/protocol.md §17: person-proof). */
export function personProofBody(p: PersonProof): CborValue {
  return p.mech === 'fingerprint' ? ['fingerprint', p.signature] : ['otp', p.code];
}

/**
 * Validates a person proof received from a peer. Throws ProtocolError MSG_BAD_SHAPE (not a
 * 2-array), MSG_BAD_FIELD (unknown mechanism, a signature not of 64 bytes, a code not of 6..8
 * digits).
 */
export function parsePersonProof(v: CborValue): PersonProof {
  if (!Array.isArray(v) || v.length !== 2) throw new ProtocolError('MSG_BAD_SHAPE', 'person proof must be [mech, proof]');
  const [mech, proof] = v;
  if (mech === 'fingerprint') {
    if (!(proof instanceof Uint8Array) || proof.length !== FP_SIGNATURE_BYTES) throw new ProtocolError('MSG_BAD_FIELD', `fingerprint proof must be ${FP_SIGNATURE_BYTES} bytes`);
    return { mech, signature: Uint8Array.from(proof) };
  }
  if (mech === 'otp') {
    if (typeof proof !== 'string' || !CODE_RE.test(proof)) throw new ProtocolError('MSG_BAD_FIELD', 'one-time code must be 6..8 decimal digits');
    return { mech, code: proof };
  }
  throw new ProtocolError('MSG_BAD_FIELD', 'person proof mechanism must be fingerprint or otp');
}

/** Whether `s` names a site (SITE_RE) and `u` a user (USER_RE). */
export function isSite(s: unknown): s is string {
  return typeof s === 'string' && SITE_RE.test(s);
}
export function isUser(u: unknown): u is string {
  return typeof u === 'string' && USER_RE.test(u);
}
