// The person's proof end to end (S3.3), chip -> site verifier, no network: a business login
// through the chip gives both ends their channel; the phone makes the proof with
// personProof() (sensor, chip), it travels as the person-proof value (protocol/person.ts),
// and the site checks it against its own end's channel binding with biz-server/person/.
// Each mechanism: accepted, wrong proof refused, replayed proof refused.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { encode, decode } from '../protocol/cbor.ts';
import { ProtocolError, ImplementationError } from '../protocol/errors.ts';
import { keystreamRng } from '../protocol/seeded-rng.ts';
import { PERSON_BINDING_LABEL, personProofBody, parsePersonProof, wrapOtpSeed, type PersonProof, type TotpParams } from '../protocol/person.ts';
import { verifyFingerprint } from '../biz-server/person/fingerprint.ts';
import { verifyTotp } from '../biz-server/person/totp.ts';
import { SimFingerprintSensor, fingerFromSeed } from './hal/fingerprint.ts';
import { personProof } from './person-proof.ts';
import { personChip, businessSession, PAIRING_KEY, LOGIN_KEY, USER, GEN } from './secure/test-chip.ts';

const SITE = 'bank-east';
const owner = fingerFromSeed('owner');

/**
 * The proof as the site receives it: encoded and decoded as the CBOR value the bank's sealed
 * message carries (the bank's exchange, protocol/bank.ts, seals it), then validated.
 */
function asReceived(p: PersonProof): PersonProof {
  return parsePersonProof(decode(encode(personProofBody(p))));
}

function fingerprintPhone(seed = 'fp phone') {
  const c = personChip({ seed });
  const sensor = new SimFingerprintSensor({ pairingKey: PAIRING_KEY, seed, poorRate: 0 });
  sensor.place(owner);
  const ch = c.se.fpChallenge();
  assert.ok(ch.ok && c.se.fpEnroll(sensor.capture(ch.value)!).ok);
  const k = c.se.fpKey(SITE, GEN);
  assert.ok(k.ok);
  return { ...c, sensor, publicKey: k.value.publicKey };
}

test('fingerprint, end to end: accepted for its session; another finger gives no proof; a forged proof and one replayed into another session are refused (PERSON_PROOF_FAILED)', () => {
  const p = fingerprintPhone();
  const a = businessSession(p.se, 'session a');
  const bindingA = a.client.exporter(PERSON_BINDING_LABEL);
  const r = personProof(p.se, p.sensor, 'fingerprint', SITE, bindingA);
  assert.ok(r.ok, JSON.stringify(r));
  const got = asReceived(r.proof);
  assert.is(got.mech, 'fingerprint');
  // The site's challenge is its own end's exporter, not anything the phone sent.
  const siteChallengeA = a.server.exporter(PERSON_BINDING_LABEL);
  assert.equal(verifyFingerprint(p.publicKey, siteChallengeA, (got as { signature: Uint8Array }).signature), { ok: true });

  // Replayed: the same proof in session b (the same phone, the same user) is refused.
  const b = businessSession(p.se, 'session b');
  const siteChallengeB = b.server.exporter(PERSON_BINDING_LABEL);
  assert.equal(verifyFingerprint(p.publicKey, siteChallengeB, (got as { signature: Uint8Array }).signature), { ok: false, code: 'PERSON_PROOF_FAILED' });
  // Forged: altered bytes, or a signature by another key.
  const sig = Uint8Array.from((got as { signature: Uint8Array }).signature);
  sig[10]! ^= 1;
  assert.equal(verifyFingerprint(p.publicKey, siteChallengeA, sig), { ok: false, code: 'PERSON_PROOF_FAILED' });
  const other = fingerprintPhone('another phone');
  const ro = personProof(other.se, other.sensor, 'fingerprint', SITE, bindingA);
  assert.ok(ro.ok);
  assert.equal(verifyFingerprint(p.publicKey, siteChallengeA, (ro.proof as { signature: Uint8Array }).signature), { ok: false, code: 'PERSON_PROOF_FAILED' });

  // Wrong finger: the chip makes no proof at all.
  p.sensor.place(fingerFromSeed('someone else'));
  assert.equal(personProof(p.se, p.sensor, 'fingerprint', SITE, b.client.exporter(PERSON_BINDING_LABEL)), { ok: false, code: 'PERSON_FP_NO_MATCH', detail: 'the secure controller answered SW_VERIFICATION_FAILED' });
  // No finger, no sensor.
  p.sensor.place(null);
  assert.is((personProof(p.se, p.sensor, 'fingerprint', SITE, bindingA) as { code: string }).code, 'PERSON_FP_NO_FINGER');
  assert.is((personProof(p.se, undefined, 'fingerprint', SITE, bindingA) as { code: string }).code, 'PERSON_FP_NO_FINGER');
  // A site the phone has no key for.
  p.sensor.place(owner);
  assert.is((personProof(p.se, p.sensor, 'fingerprint', 'bank-other', bindingA) as { code: string }).code, 'PERSON_NOT_PROVISIONED');
  // Four more wrong fingers block it; then even the owner gets PERSON_FP_BLOCKED.
  p.sensor.place(fingerFromSeed('someone else'));
  for (let i = 0; i < 4; i++) assert.is((personProof(p.se, p.sensor, 'fingerprint', SITE, bindingA) as { code: string }).code, 'PERSON_FP_NO_MATCH');
  p.sensor.place(owner);
  assert.is((personProof(p.se, p.sensor, 'fingerprint', SITE, bindingA) as { code: string }).code, 'PERSON_FP_BLOCKED');
});

const PARAMS: TotpParams = { algorithm: 'SHA1', digits: 6, period: 30 };
const SEED = keystreamRng('e2e otp seed')(20);

test('one-time code, end to end: accepted once; the same code again is PERSON_OTP_REPLAYED; a wrong one PERSON_PROOF_FAILED; a phone clock 2 steps off PERSON_OTP_SKEW', () => {
  let phoneNow = 1_800_000_000_000;
  const c = personChip({ now: () => phoneNow, seed: 'otp phone' });
  // Registration: the site wraps the seed under the login key it stores; the phone imports it through the host.
  assert.ok(c.se.otpImport(SITE, GEN, wrapOtpSeed(LOGIN_KEY, SITE, USER, SEED, PARAMS, keystreamRng('site'))).ok);
  const s = businessSession(c.se, 'otp a');
  let lastStep: number | null = null;
  const r = personProof(c.se, undefined, 'otp', SITE, s.client.exporter(PERSON_BINDING_LABEL));
  assert.ok(r.ok);
  const got = asReceived(r.proof) as { mech: 'otp'; code: string };
  const siteNow = phoneNow + 4_000; // the site's clock, a little ahead
  const v = verifyTotp(SEED, PARAMS, got.code, siteNow, lastStep);
  assert.ok(v.ok);
  lastStep = v.ok ? v.step : null;
  // Replayed: the same code in a later session (a host that kept it).
  assert.equal(verifyTotp(SEED, PARAMS, got.code, siteNow + 10_000, lastStep), { ok: false, code: 'PERSON_OTP_REPLAYED' });
  // Wrong: another seed's code, or a changed digit.
  const wrong = String((Number(got.code) + 1) % 1_000_000).padStart(6, '0');
  assert.equal(verifyTotp(SEED, PARAMS, wrong, siteNow, null), { ok: false, code: 'PERSON_PROOF_FAILED' });
  // The next step's code is fresh.
  phoneNow += 30_000;
  const r2 = personProof(c.se, undefined, 'otp', SITE, new Uint8Array(32));
  assert.ok(r2.ok);
  const v2 = verifyTotp(SEED, PARAMS, (r2.proof as { code: string }).code, siteNow + 30_000, lastStep);
  assert.ok(v2.ok && v2.step === lastStep! + 1);
  // One code per step (RFC 6238 §5.2: the site takes each step once): the same step again, or a
  // clock that went back, gives no code; the phone then uses another mechanism.
  const again = personProof(c.se, undefined, 'otp', SITE, new Uint8Array(32));
  assert.equal(again.ok ? 'code' : again.code, 'PERSON_CHIP_REFUSED');
  assert.not.ok(c.se.personStatus().ok && (c.se.personStatus() as { value: { otpSites: string[] } }).value.otpSites.includes(SITE), 'the status says the step is used up');
  phoneNow -= 90_000;
  assert.not.ok(personProof(c.se, undefined, 'otp', SITE, new Uint8Array(32)).ok, 'a clock that went back gives no code');
  // A phone whose clock runs 2 steps behind the site: refused by the site, and said so.
  const behind = personChip({ now: () => siteNow + 30_000 - 60_000, seed: 'otp phone behind' });
  assert.ok(behind.se.otpImport(SITE, GEN, wrapOtpSeed(LOGIN_KEY, SITE, USER, SEED, PARAMS, keystreamRng('site 2'))).ok);
  const r3 = personProof(behind.se, undefined, 'otp', SITE, new Uint8Array(32));
  assert.ok(r3.ok);
  assert.equal(verifyTotp(SEED, PARAMS, (r3.proof as { code: string }).code, siteNow + 30_000, null), { ok: false, code: 'PERSON_OTP_SKEW' });
  // No seed for a site: no proof.
  assert.is((personProof(c.se, undefined, 'otp', 'bank-other', new Uint8Array(32)) as { code: string }).code, 'PERSON_NOT_PROVISIONED');
});

test('the person-proof value: each mechanism both ways; hostile values refused with MSG_BAD_SHAPE / MSG_BAD_FIELD; caller misuse is PERSON_BAD_ARGS', () => {
  const sig = new Uint8Array(64).fill(1);
  assert.equal(parsePersonProof(decode(encode(personProofBody({ mech: 'fingerprint', signature: sig })))), { mech: 'fingerprint', signature: sig });
  assert.equal(parsePersonProof(['otp', '12345678']), { mech: 'otp', code: '12345678' });
  const bad: [unknown, string][] = [
    [null, 'MSG_BAD_SHAPE'], ['otp', 'MSG_BAD_SHAPE'], [[], 'MSG_BAD_SHAPE'], [['otp'], 'MSG_BAD_SHAPE'], [['otp', '123456', 1], 'MSG_BAD_SHAPE'],
    [['password', 'x'], 'MSG_BAD_FIELD'], [[1, '123456'], 'MSG_BAD_FIELD'], [['otp', 123456], 'MSG_BAD_FIELD'], [['otp', '12345'], 'MSG_BAD_FIELD'],
    [['otp', '123456789'], 'MSG_BAD_FIELD'], [['otp', '12345a'], 'MSG_BAD_FIELD'], [['otp', '١٢٣٤٥٦'], 'MSG_BAD_FIELD'], [['fingerprint', new Uint8Array(63)], 'MSG_BAD_FIELD'],
    [['fingerprint', new Uint8Array(65)], 'MSG_BAD_FIELD'], [['fingerprint', 'sig'], 'MSG_BAD_FIELD'], [['FINGERPRINT', sig], 'MSG_BAD_FIELD'],
  ];
  for (const [v, code] of bad) {
    try {
      parsePersonProof(v as never);
      assert.unreachable(JSON.stringify(v));
    } catch (e) {
      assert.ok(e instanceof ProtocolError && e.code === code, `${String(e)} for ${String(v)}`);
    }
  }
  const c = personChip({ seed: 'misuse' });
  for (const f of [() => personProof(c.se, undefined, 'otp', 'Bad Site', new Uint8Array(32)), () => personProof(c.se, undefined, 'fingerprint', SITE, new Uint8Array(31)), () => personProof(c.se, undefined, 'password' as 'otp', SITE, new Uint8Array(32))]) {
    try {
      f();
      assert.unreachable();
    } catch (e) {
      assert.ok(e instanceof ImplementationError && e.code === 'PERSON_BAD_ARGS', String(e));
    }
  }
});

test.run();
