// The secure controller's person-layer commands (S3.3), tried as the hostile host computer
// would: signing without a finger, with a replayed or forged reading, with a wrong finger
// again and again (blocked after FP_MAX_TRIES, until a new enrolment which drops every key);
// asking for codes of another time; importing seeds not wrapped for this chip; every
// instruction byte, looking for the template, a fingerprint private key or a TOTP seed in any
// response, the flash or the controller's counters. And the accepted paths, checked by the
// site's own verifiers (biz-server/person/).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ed25519 } from '@noble/curves/ed25519.js';
import { TOTP, Secret } from 'otpauth';
import { encode, decode } from '../../protocol/cbor.ts';
import { keystreamRng } from '../../protocol/seeded-rng.ts';
import { wrapOtpSeed, fingerprintMessage, type TotpParams } from '../../protocol/person.ts';
import { passwordLoginKey } from '../../protocol/channel.ts';
import { verifyTotp, totpStep } from '../../biz-server/person/totp.ts';
import { verifyFingerprint, verifyFingerprintKey } from '../../biz-server/person/fingerprint.ts';
import { SimFingerprintSensor, fingerFromSeed, sealReading, readingOf, NoiseSource, SIGMA_GOOD } from '../hal/fingerprint.ts';
import { Ins, SW, DataObject, encodeCommand, parseResponse } from './apdu.ts';
import { FP_MAX_TRIES, MAX_PERSON_SITES, Slot } from './element.ts';
import { Nvm } from './nvm.ts';
import { personChip, PAIRING_KEY, LOGIN_KEY, USER, GEN, FUSES } from './test-chip.ts';

const SITE = 'bank-east';
const owner = fingerFromSeed('owner');
const thief = fingerFromSeed('thief');
const challenge = (s: string) => keystreamRng(`challenge ${s}`)(32);

function contains(hay: Uint8Array, needle: Uint8Array, min = 8): boolean {
  const n = needle.subarray(0, Math.max(min, Math.min(needle.length, 16)));
  return Buffer.from(hay).includes(Buffer.from(n));
}

function sensor(finger = owner, seed = 'sensor') {
  const s = new SimFingerprintSensor({ pairingKey: PAIRING_KEY, seed, poorRate: 0 });
  s.place(finger);
  return s;
}

/** The state column of a slot in GET DATA slots. */
function slotState(c: { raw: { transmit(a: Uint8Array): Uint8Array } }, slot: number): string {
  const r = parseResponse(c.raw.transmit(encodeCommand({ ins: Ins.getData, p2: DataObject.slots })));
  return (decode(r.data) as [number, string, string][]).find((e) => e[0] === slot)![2];
}

/** A chip with the owner enrolled and a key for SITE. */
function enrolled() {
  const c = personChip();
  const s = sensor();
  const ch = c.se.fpChallenge();
  assert.ok(ch.ok);
  assert.equal(c.se.fpEnroll(s.capture(ch.value)!), { ok: true, value: undefined });
  const k = c.se.fpKey(SITE, GEN);
  assert.ok(k.ok);
  return { ...c, s, publicKey: k.value.publicKey, attestation: k.value.attestation };
}

/** One FP SIGN as the firmware does it: a fresh challenge, the sensor's reading for it. */
function sign(c: ReturnType<typeof enrolled>, s: SimFingerprintSensor, x: Uint8Array) {
  const ch = c.se.fpChallenge();
  if (!ch.ok) return ch;
  return c.se.fpSign(SITE, x, s.capture(ch.value)!);
}

test('fingerprint: enrol, key for a site (attested to the site), sign after a match: the site\'s verifier accepts', () => {
  const c = enrolled();
  assert.ok(verifyFingerprintKey(LOGIN_KEY, SITE, USER, c.publicKey, c.attestation), 'the key is attested by the chip holding the business secret');
  assert.not.ok(verifyFingerprintKey(LOGIN_KEY, 'bank-west', USER, c.publicKey, c.attestation), 'for its site only');
  assert.not.ok(verifyFingerprintKey(LOGIN_KEY, SITE, USER, ed25519.getPublicKey(new Uint8Array(32).fill(1)), c.attestation), 'a substituted key fails');
  // The same site gives the same key again; another site another one.
  const again = c.se.fpKey(SITE, GEN);
  assert.ok(again.ok && Buffer.from(again.value.publicKey).equals(Buffer.from(c.publicKey)));
  const other = c.se.fpKey('bank-west', GEN);
  assert.ok(other.ok && !Buffer.from(other.value.publicKey).equals(Buffer.from(c.publicKey)));
  const x = challenge('a');
  const sig = sign(c, c.s, x);
  assert.ok(sig.ok);
  assert.equal(verifyFingerprint(c.publicKey, x, sig.value), { ok: true });
  assert.ok(ed25519.verify(sig.value, fingerprintMessage(x), c.publicKey), 'plain RFC 8032 over the domain-labelled message');
  // Signed for one challenge: worthless for another, or under another site's key.
  assert.equal(verifyFingerprint(c.publicKey, challenge('b'), sig.value), { ok: false, code: 'PERSON_PROOF_FAILED' });
  assert.equal(verifyFingerprint(other.ok ? other.value.publicKey : new Uint8Array(32), x, sig.value), { ok: false, code: 'PERSON_PROOF_FAILED' });
  // No business secret of that generation: no key (the attestation could not be made).
  assert.equal(c.se.fpKey(SITE, 9), { ok: false, status: 'SW_NOT_FOUND' });
});

test('fingerprint, hostile host: no reading, an empty or forged one, a replayed old reading, a reading for another challenge: no signature, and no try counted', () => {
  const c = enrolled();
  const x = challenge('h');
  // No challenge outstanding at all.
  const old = (() => {
    const ch = c.se.fpChallenge();
    assert.ok(ch.ok);
    return c.s.capture(ch.value)!;
  })();
  // (the challenge `old` was made for is still outstanding: consume it with a bad call)
  assert.equal(c.se.fpSign(SITE, x, new Uint8Array(0)), { ok: false, status: 'SW_SECURITY_NOT_SATISFIED' });
  // The genuine reading, replayed after its challenge was consumed: refused.
  assert.equal(c.se.fpSign(SITE, x, old), { ok: false, status: 'SW_SECURITY_NOT_SATISFIED' });
  // Replayed under a new challenge: refused (bound to the one it was taken for).
  assert.ok(c.se.fpChallenge().ok);
  assert.equal(c.se.fpSign(SITE, x, old), { ok: false, status: 'SW_SECURITY_NOT_SATISFIED' });
  // A reading the host made itself: of the owner's template even (it has none, but say it did), sealed under a guessed key.
  const ch = c.se.fpChallenge();
  assert.ok(ch.ok);
  const forged = sealReading(new Uint8Array(32).fill(0x42), ch.value, readingOf(owner, SIGMA_GOOD, new NoiseSource('forge')));
  assert.equal(c.se.fpSign(SITE, x, forged), { ok: false, status: 'SW_SECURITY_NOT_SATISFIED' });
  // Malformed arguments.
  for (const data of [[], [SITE], [SITE, x], [SITE, x.subarray(1), old], ['BAD SITE', x, old], [SITE, x, old, 1], [7, x, old]]) {
    assert.is(parseResponse(c.raw.transmit(encodeCommand({ ins: Ins.fpSign, data: encode(data as never) }))).sw, SW.wrongData, JSON.stringify(data.length));
  }
  assert.is(parseResponse(c.raw.transmit(encodeCommand({ ins: Ins.fpSign, p1: 1, data: encode([SITE, x, old]) }))).sw, SW.wrongP1P2);
  // None of these was a finger: the try counter did not move, and the owner still signs.
  assert.is(c.nvm.read(Nvm.fingerprintTries), 0);
  assert.ok(sign(c, c.s, x).ok);
  // A site without a key, and a chip with no finger enrolled.
  assert.equal(c.se.fpSign('bank-none', x, new Uint8Array(168)), { ok: false, status: 'SW_NOT_FOUND' });
  const bare = personChip({ seed: 'bare' });
  assert.equal(bare.se.fpKey(SITE, GEN), { ok: false, status: 'SW_NOT_FOUND' });
});

test('fingerprint, hostile host: a wrong finger again and again is refused each time; the 5th blocks the keys (even for the owner) until a new enrolment, which drops them', () => {
  const c = enrolled();
  const t = sensor(thief, 'thief sensor');
  const x = challenge('w');
  for (let i = 1; i <= FP_MAX_TRIES; i++) {
    assert.equal(sign(c, t, x), { ok: false, status: 'SW_VERIFICATION_FAILED' }, `try ${i}`);
    assert.is(c.nvm.read(Nvm.fingerprintTries), i);
  }
  assert.equal(sign(c, c.s, x), { ok: false, status: 'SW_BLOCKED' }, 'blocked, even for the right finger');
  // Power cycles do not reset the count (it lives in the controller's NVM).
  c.raw.reset();
  assert.equal(sign(c, c.s, x), { ok: false, status: 'SW_BLOCKED' });
  assert.is(slotState(c, Slot.fingerprint), 'blocked');
  // A new enrolment unblocks, and drops the key the old finger guarded: the site must register again.
  const ch = c.se.fpChallenge();
  assert.ok(ch.ok);
  assert.ok(c.se.fpEnroll(c.s.capture(ch.value)!).ok);
  assert.is(c.nvm.read(Nvm.fingerprintTries), 0);
  assert.equal(sign(c, c.s, x), { ok: false, status: 'SW_NOT_FOUND' });
  const k = c.se.fpKey(SITE, GEN);
  assert.ok(k.ok && !Buffer.from(k.value.publicKey).equals(Buffer.from(c.publicKey)), 'a new key');
  const sig = sign(c, c.s, x);
  assert.ok(sig.ok && k.ok && verifyFingerprint(k.value.publicKey, x, sig.value).ok);
  // A match resets the count: mismatches are counted consecutively.
  assert.equal(sign(c, t, x), { ok: false, status: 'SW_VERIFICATION_FAILED' });
  assert.ok(sign(c, c.s, x).ok);
  assert.is(c.nvm.read(Nvm.fingerprintTries), 0);
  // Enrolment needs a fresh sealed reading too.
  assert.equal(c.se.fpEnroll(c.s.capture(new Uint8Array(24))!), { ok: false, status: 'SW_SECURITY_NOT_SATISFIED' });
});

const PARAMS: TotpParams = { algorithm: 'SHA1', digits: 6, period: 30 };
const OTP_SEED = keystreamRng('otp seed')(20);

test('one-time code: a seed wrapped by the site under the business key is imported; the code follows the chip\'s own clock and the site accepts it; the otpauth builds agree', () => {
  let now = 1_700_000_000_000;
  const c = personChip({ now: () => now });
  assert.equal(c.se.otpCode(SITE), { ok: false, status: 'SW_NOT_FOUND' });
  const wrapped = wrapOtpSeed(LOGIN_KEY, SITE, USER, OTP_SEED, PARAMS, keystreamRng('site wrap'));
  assert.equal(c.se.otpImport(SITE, GEN, wrapped), { ok: true, value: undefined });
  let last: number | null = null;
  for (let i = 0; i < 5; i++) {
    const code = c.se.otpCode(SITE);
    assert.ok(code.ok);
    // The chip's code (otpauth/slim, @noble/hashes only) equals the node build's.
    assert.is(code.value, TOTP.generate({ secret: new Secret({ buffer: Uint8Array.from(OTP_SEED).buffer }), ...PARAMS, timestamp: now }));
    const v = verifyTotp(OTP_SEED, PARAMS, code.value, now, last);
    assert.equal(v, { ok: true, step: totpStep(now, 30) });
    last = v.ok ? v.step : last;
    now += 30_000;
  }
  // The host cannot ask for another time: OTP CODE takes the site and nothing else.
  assert.is(parseResponse(c.raw.transmit(encodeCommand({ ins: Ins.otpCode, data: encode([SITE, now + 3_600_000]) }))).sw, SW.wrongData);
  // A chip without a clock gives no code.
  const noClock = personChip({ now: null, seed: 'no clock' });
  assert.ok(noClock.se.otpImport(SITE, GEN, wrapped).ok);
  assert.equal(noClock.se.otpCode(SITE), { ok: false, status: 'SW_CONDITIONS_NOT_SATISFIED' });
});

test('one-time code, hostile host: seeds wrapped for another site, user or key, altered or oversized, are refused; the table is bounded', () => {
  const c = personChip();
  const rng = keystreamRng('hostile wrap');
  const good = wrapOtpSeed(LOGIN_KEY, SITE, USER, OTP_SEED, PARAMS, rng);
  const altered = Uint8Array.from(good);
  altered[40]! ^= 1;
  const cases: [unknown[], number][] = [
    [[SITE, GEN, wrapOtpSeed(LOGIN_KEY, 'bank-west', USER, OTP_SEED, PARAMS, rng)], SW.verificationFailed],
    [[SITE, GEN, wrapOtpSeed(LOGIN_KEY, SITE, 'u-other', OTP_SEED, PARAMS, rng)], SW.verificationFailed],
    [[SITE, GEN, wrapOtpSeed(passwordLoginKey(new Uint8Array(32), USER), SITE, USER, OTP_SEED, PARAMS, rng)], SW.verificationFailed],
    [[SITE, GEN, altered], SW.verificationFailed],
    [[SITE, 9, good], SW.notFound],
    [[SITE, GEN, new Uint8Array(400)], SW.wrongData],
    [[SITE, GEN], SW.wrongData],
    [['Bad Site', GEN, good], SW.wrongData],
    [[SITE, -1, good], SW.wrongData],
  ];
  for (const [data, sw] of cases) assert.is(parseResponse(c.raw.transmit(encodeCommand({ ins: Ins.otpImport, data: encode(data as never) }))).sw, sw, JSON.stringify(data.slice(0, 2)));
  assert.equal(c.se.otpCode(SITE), { ok: false, status: 'SW_NOT_FOUND' }, 'nothing was imported');
  for (let i = 0; i < MAX_PERSON_SITES; i++) assert.ok(c.se.otpImport(`site-${i}`, GEN, wrapOtpSeed(LOGIN_KEY, `site-${i}`, USER, OTP_SEED, PARAMS, rng)).ok);
  assert.equal(c.se.otpImport('site-x', GEN, wrapOtpSeed(LOGIN_KEY, 'site-x', USER, OTP_SEED, PARAMS, rng)), { ok: false, status: 'SW_NOT_ENOUGH_MEMORY' });
  // Replacing a site's seed is not a new entry.
  assert.ok(c.se.otpImport('site-0', GEN, wrapOtpSeed(LOGIN_KEY, 'site-0', USER, OTP_SEED, PARAMS, rng)).ok);
});

test('hostile host: every instruction byte and data object, with person-layer arguments: no response holds the template, a fingerprint private key or a TOTP seed; none is in the flash', () => {
  const c = enrolled();
  const wrapped = wrapOtpSeed(LOGIN_KEY, SITE, USER, OTP_SEED, PARAMS, keystreamRng('w'));
  assert.ok(c.se.otpImport(SITE, GEN, wrapped).ok);
  const template = c.nvm.readObject('fp.template')!;
  const keysObj = c.nvm.readObject('fp.keys')!;
  assert.ok(template && keysObj, 'the chip keeps them in its NVM');
  // The private keys, read out of the NVM object (as only a test can): the 32 bytes after each site name.
  const privs = [...(function* () {
    for (let i = 0; i + 34 <= keysObj.length; i++) if (keysObj[i] === 0x58 && keysObj[i + 1] === 0x20) yield keysObj.slice(i + 2, i + 34);
  })()];
  assert.ok(privs.length >= 1 && privs.some((p) => Buffer.from(ed25519.getPublicKey(p)).equals(Buffer.from(c.publicKey))), 'found the key in the NVM');
  const secrets = [template, ...privs, OTP_SEED, PAIRING_KEY, LOGIN_KEY];
  const x = challenge('sweep');
  const payloads: (Uint8Array | undefined)[] = [undefined, new Uint8Array(0), encode([]), encode([SITE]), encode([SITE, GEN]), encode([SITE, x, new Uint8Array(168)]), encode([SITE, GEN, wrapped]), new Uint8Array(300).fill(0xff)];
  let calls = 0;
  for (let ins = 0; ins < 256; ins++) {
    for (const p1 of [0, 1, Slot.fingerprint, Slot.otpSeed]) {
      for (const p2 of [0, 1, 2, 3, 4]) {
        for (const data of payloads) {
          const out = c.raw.transmit(encodeCommand({ ins, p1, p2, data }));
          calls++;
          for (const k of secrets) assert.not.ok(contains(out, k), `INS ${ins.toString(16)} P1 ${p1} P2 ${p2}: a secret came out`);
        }
      }
    }
  }
  assert.ok(calls > 40_000);
  // The flash (every zone, the hidden one included) holds none of them, sealed or not.
  const flash = c.chip.peek(0, c.chip.sizeBytes);
  for (const k of secrets.slice(0, -2)) assert.not.ok(contains(flash, k), 'a person-layer secret in the flash');
  // The slot table says what is set, with no bytes of it.
  assert.is(slotState(c, Slot.fingerprint), 'set');
  assert.is(slotState(c, Slot.otpSeed), 'set');
  assert.is(slotState(personChip({ seed: 'empty' }), Slot.otpSeed), 'empty');
  // The fuse-derived pairing key is the chip's; the sensor got it at the factory.
  assert.ok(Buffer.from(FUSES.deriveKey('usbphone/v1 fingerprint sensor pairing')).equals(Buffer.from(PAIRING_KEY)));
});

test.run();
