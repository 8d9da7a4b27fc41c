// The site's verifier of one-time codes (S3.3, RFC 6238 TOTP): a pure function, so the bank's
// login, a test and the conformance suite all call the same rule. The codes are computed by
// the well-kept `otpauth` library (HOTP of RFC 4226 over the time step, RFC 6238 §4).
//
// Rule (RFC 6238 §5.2, §5.3): the code is accepted when it is the code of a time step within
// `skew` steps of the server's current step (default 1: the step before, the current one, the
// one after) AND that step is above the last step accepted for the account, so a code is
// accepted at most once and never after a later one. The caller stores the returned step as
// the account's new last step, in the same transaction that lets the login through.
import { HOTP, Secret } from 'otpauth';
import { equalBytes } from '@noble/ciphers/utils.js';
import { utf8ToBytes } from '@noble/hashes/utils.js';
import { ImplementationError } from '../../protocol/errors.ts';
import { isTotpParams, OTP_SEED_MIN, OTP_SEED_MAX, type TotpParams } from '../../protocol/person.ts';

export type TotpRefusal = 'PERSON_PROOF_FAILED' | 'PERSON_OTP_REPLAYED' | 'PERSON_OTP_SKEW';
export type TotpVerdict = { ok: true; step: number } | { ok: false; code: TotpRefusal };

export interface TotpOptions {
  /** Steps accepted either side of the current one (default 1, RFC 6238 §5.2's recommendation). */
  skew?: number;
  /**
   * Steps either side searched only to tell a late or early code (PERSON_OTP_SKEW: the phone's
   * clock is off) from a wrong one (PERSON_PROOF_FAILED); default 10. Such a code is refused all the same.
   */
  diagnoseSteps?: number;
}

/** RFC 6238 §4.2: the time step of `nowMs` (T0 = 0). */
export function totpStep(nowMs: number, period: number): number {
  return Math.floor(nowMs / 1000 / period);
}

/** The code of one time step (what the chip computes for its clock's current step). */
export function totpCode(seed: Uint8Array, params: TotpParams, step: number): string {
  return HOTP.generate({ secret: new Secret({ buffer: Uint8Array.from(seed).buffer }), algorithm: params.algorithm, digits: params.digits, counter: step });
}

/**
 * Checks `code` for an account whose seed and parameters are `seed`/`params`, at the server's
 * time `nowMs` (Unix ms), given the last step accepted for the account (`lastStep`, null when
 * none). Returns the step to store, or why it is refused:
 * - PERSON_PROOF_FAILED: not the code of any step near now (or not `digits` digits);
 * - PERSON_OTP_REPLAYED: the code of a step within the skew that is not above `lastStep`;
 * - PERSON_OTP_SKEW: the code of a step outside the skew but within `diagnoseSteps`.
 * Every step of the skew window is computed and compared (constant time) whatever matches.
 * Throws ImplementationError PERSON_BAD_ARGS for a seed, parameters, time or step the bank
 * itself got wrong.
 */
export function verifyTotp(seed: Uint8Array, params: TotpParams, code: string, nowMs: number, lastStep: number | null, opts: TotpOptions = {}): TotpVerdict {
  const skew = opts.skew ?? 1;
  const diag = opts.diagnoseSteps ?? 10;
  if (!(seed instanceof Uint8Array) || seed.length < OTP_SEED_MIN || seed.length > OTP_SEED_MAX) throw new ImplementationError('PERSON_BAD_ARGS', `seed must be ${OTP_SEED_MIN}..${OTP_SEED_MAX} bytes`);
  if (!isTotpParams(params)) throw new ImplementationError('PERSON_BAD_ARGS', 'TOTP parameters: algorithm SHA1/SHA256/SHA512, 6..8 digits, period 30 or 60 s');
  if (!Number.isFinite(nowMs) || nowMs < 0) throw new ImplementationError('PERSON_BAD_ARGS', 'nowMs must be a time since the Unix epoch');
  if (lastStep !== null && !Number.isSafeInteger(lastStep)) throw new ImplementationError('PERSON_BAD_ARGS', 'lastStep must be an integer or null');
  if (!Number.isInteger(skew) || skew < 0 || skew > 10 || !Number.isInteger(diag) || diag < skew || diag > 100) throw new ImplementationError('PERSON_BAD_ARGS', 'skew must be 0..10, diagnoseSteps skew..100');
  const ok = typeof code === 'string' && code.length === params.digits && /^[0-9]+$/.test(code);
  const given = utf8ToBytes(ok ? code : '0'.repeat(params.digits));
  const now = totpStep(nowMs, params.period);
  const same = (step: number) => step >= 0 && equalBytes(utf8ToBytes(totpCode(seed, params, step)), given);
  let accepted = -1;
  let replayed = false;
  for (let d = -skew; d <= skew; d++) {
    const step = now + d;
    if (same(step) && ok) {
      if (lastStep === null || step > lastStep) accepted = Math.max(accepted, step);
      else replayed = true;
    }
  }
  if (accepted >= 0) return { ok: true, step: accepted };
  if (replayed) return { ok: false, code: 'PERSON_OTP_REPLAYED' };
  if (ok) for (let d = skew + 1; d <= diag; d++) if (same(now - d) || same(now + d)) return { ok: false, code: 'PERSON_OTP_SKEW' };
  return { ok: false, code: 'PERSON_PROOF_FAILED' };
}
