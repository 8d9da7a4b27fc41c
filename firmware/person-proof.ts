// The person's proof of a business login (S3.3), made on the phone through its secure
// controller: what the main program calls once the business session's channel is up, for the
// mechanism the attack table chose (S3.1). docs/protocol.md §16, docs/firmware.md.
//
// - fingerprint: a fresh challenge from the chip, the paired sensor's reading sealed for it,
//   and the chip's signature with the site's fingerprint key over the channel binding
//   (SecureChannel.exporter(PERSON_BINDING_LABEL)); the chip signs only if the finger matched.
// - otp: the chip's code for its own clock's current time step.
// Nothing secret passes through here: the reading is sealed for the chip, the signature and
// the code are what the site receives anyway.
import { ImplementationError, type ErrorCode } from '../protocol/errors.ts';
import { BINDING_BYTES, isSite, type PersonProof } from '../protocol/person.ts';
import type { PersonStatus } from './secure/client.ts';
import type { PersonChip } from './storage.ts';
import type { FingerprintSensor } from './hal/fingerprint.ts';
import type { PersonEntry } from './hal/person.ts';
import type { Mechanism } from '../protocol/messages.ts';

export type PersonMechanism = 'fingerprint' | 'otp';

/**
 * The person mechanisms this device can prove at `site` (S3.1's candidates), from what the chip
 * says it holds (`status`, GET DATA person status: nothing the host keeps, which it could
 * forge): the password whenever the person entered one; 'otp' when the chip holds a TOTP seed
 * for the site and has a clock; 'fingerprint' when it holds a fingerprint key for the site, a
 * finger is enrolled and not blocked, and the phone has a sensor (`hasSensor`). `status` null
 * (the chip could not say): the password only. The person may narrow them
 * (PersonEntry.mechanisms). Strongest last.
 */
export function personMechanisms(entry: PersonEntry, status: PersonStatus | null, site: string, hasSensor: boolean): Mechanism[] {
  const out: Mechanism[] = [];
  if (entry.password) out.push('password');
  if (status?.clock && status.otpSites.includes(site)) out.push('otp');
  if (hasSensor && status?.finger === 'set' && status.fpSites.includes(site)) out.push('fingerprint');
  return entry.mechanisms ? out.filter((m) => entry.mechanisms!.includes(m)) : out;
}

/**
 * The person's finger enrolled in the chip at first use (S3.3; docs/decisions.md): a fresh
 * challenge, the sensor's reading sealed for it, FP ENROLL. Only when the chip holds no finger
 * yet: a new enrolment drops every fingerprint key of every site. Returns the chip's status
 * word on failure, 'NO_FINGER' when nothing is on the sensor.
 */
export function enrolFinger(se: PersonChip, sensor: FingerprintSensor): { ok: true } | { ok: false; status: string } {
  const ch = se.fpChallenge();
  if (!ch.ok) return ch;
  const reading = sensor.capture(ch.value);
  if (!reading) return { ok: false, status: 'NO_FINGER' };
  const r = se.fpEnroll(reading);
  return r.ok ? { ok: true } : r;
}
export type PersonProofRefusal = Extract<ErrorCode, 'PERSON_FP_NO_MATCH' | 'PERSON_FP_BLOCKED' | 'PERSON_FP_NO_FINGER' | 'PERSON_NOT_PROVISIONED' | 'PERSON_CHIP_REFUSED'>;
export type PersonProofResult = { ok: true; proof: PersonProof } | { ok: false; code: PersonProofRefusal; detail: string };

/** What a chip status word means to the person layer. */
function refusal(status: string): PersonProofResult {
  const code: PersonProofRefusal =
    status === 'SW_VERIFICATION_FAILED' ? 'PERSON_FP_NO_MATCH'
    : status === 'SW_BLOCKED' ? 'PERSON_FP_BLOCKED'
    : status === 'SW_NOT_FOUND' ? 'PERSON_NOT_PROVISIONED'
    : 'PERSON_CHIP_REFUSED';
  return { ok: false, code, detail: `the secure controller answered ${status}` };
}

/**
 * The proof of `mech` for `site`. `binding`: this session's channel binding (32 bytes, the
 * exporter of the business channel with PERSON_BINDING_LABEL); used by fingerprint only.
 * `sensor`: the HAL's fingerprint sensor (HalBase.fingerprint), if the phone has one.
 * Returns the proof to send, or why there is none (device-local codes, docs/errors.md).
 * Throws ImplementationError PERSON_BAD_ARGS for a site or binding of the wrong shape (the
 * caller's bug).
 */
export function personProof(se: PersonChip, sensor: FingerprintSensor | undefined, mech: PersonMechanism, site: string, binding: Uint8Array): PersonProofResult {
  if (!isSite(site)) throw new ImplementationError('PERSON_BAD_ARGS', `site '${String(site)}' is not a site name`);
  if (mech === 'otp') {
    const c = se.otpCode(site);
    return c.ok ? { ok: true, proof: { mech: 'otp', code: c.value } } : refusal(c.status);
  }
  if (mech !== 'fingerprint') throw new ImplementationError('PERSON_BAD_ARGS', `mechanism '${String(mech)}' has no person proof here`);
  if (!(binding instanceof Uint8Array) || binding.length !== BINDING_BYTES) throw new ImplementationError('PERSON_BAD_ARGS', `binding must be ${BINDING_BYTES} bytes`);
  if (!sensor) return { ok: false, code: 'PERSON_FP_NO_FINGER', detail: 'this phone has no fingerprint sensor' };
  const ch = se.fpChallenge();
  if (!ch.ok) return refusal(ch.status);
  const reading = sensor.capture(ch.value);
  if (!reading) return { ok: false, code: 'PERSON_FP_NO_FINGER', detail: 'no finger on the sensor' };
  const sig = se.fpSign(site, binding, reading);
  return sig.ok ? { ok: true, proof: { mech: 'fingerprint', signature: sig.value } } : refusal(sig.status);
}
