// The bank's person layer (S3.3) on a real business store, no network: what a registration
// provisions (the TOTP seed wrapped for the chip under the session's login key, sealed at rest;
// the fingerprint key kept only when its attestation verifies), and each mechanism at login:
// accepted, wrong proof refused, replayed proof refused, with the PERSON_* codes; the site's
// offer and floor; the one-time step used up by a compare-and-set; schema 5's migration. The
// phone's side is played with protocol/person.ts (what the chip computes); the whole path
// through a real chip and sockets is sim/person-bank.test.ts.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { ed25519 } from '@noble/curves/ed25519.js';
import { SqliteBizStore } from './store.ts';
import { SqliteBankStore } from './bank-store.ts';
import { Bank, type BankCaller } from './bank.ts';
import { PasswordHasher } from './password-verifier.ts';
import { totpCode, totpStep } from './person/totp.ts';
import { createLogger, setLogLevel } from '../server-kit/log.ts';
import { tempDir } from '../deploy/test-util.ts';
import { unwrapOtpSeed, fingerprintKeyAttestation, fingerprintMessage, type TotpParams } from '../protocol/person.ts';
import type { BankAnswer } from '../protocol/bank.ts';
import type { LineIds, BankLogin } from '../protocol/bank-messages.ts';
import type { Mechanism } from '../protocol/messages.ts';
import { ImplementationError } from '../protocol/errors.ts';
import { keystreamRng } from '../protocol/seeded-rng.ts';

setLogLevel('error');
const SITE = 'biz-east';
const PW = 'Tr0ub4dor&3-horse';
/** The person's password, sent with a one-time code (password-verification, S3.3). */
const pw = () => new TextEncoder().encode(PW);
const T0 = Date.UTC(2026, 10, 30, 12, 0, 0);
const clock = { t: T0 };
const t = tempDir();
const storageKey = new Uint8Array(32).fill(4);
const biz = new SqliteBizStore(join(t.dir, 'biz.sqlite'), storageKey);
const store = new SqliteBankStore(biz.db, storageKey);
const hasher = new PasswordHasher({ ln: 10, r: 8, p: 1 });
const log = createLogger('biz-person-test');
const bank = new Bank({ store, hasher, mode: 1, log, now: () => clock.t, site: SITE });
const rnd = keystreamRng('bank person');
const loginKey = rnd(32);
const sim = (n: number): LineIds => ({ idKind: 'sim', iccid: `89441000000000000${String(n).padStart(2, '0')}`.slice(0, 19) + luhn(`89441000000000000${String(n).padStart(2, '0')}`.slice(0, 19)), imsi: `2341500000000${String(n).padStart(2, '0')}`, msisdn: null });
function luhn(s: string): string {
  let sum = 0;
  for (let i = 0; i < s.length; i++) {
    let d = Number(s[s.length - 1 - i]);
    if (i % 2 === 0) d *= 2;
    sum += d > 9 ? d - 9 : d;
  }
  return String((10 - (sum % 10)) % 10);
}
const who = (mech: Mechanism, deviceUser = 'dev-p', key: Uint8Array | null = loginKey): BankCaller => ({ deviceUser, mech, loginKey: () => key && Uint8Array.from(key) });
const code = (a: BankAnswer) => (a.kind === 'refused' ? a.code : a.kind);
/** What the phone's chip does with the registration (firmware/secure/element.ts): an Ed25519 key, its attestation; the seed unwrapped. */
const fpPriv = rnd(32);
const fpPub = ed25519.getPublicKey(fpPriv);
const sign = (binding: Uint8Array, priv = fpPriv) => ed25519.sign(fingerprintMessage(binding), priv);
let seed: Uint8Array;
let params: TotpParams;
const codeAt = (ms: number) => totpCode(seed, params, totpStep(ms, params.period));
const login = (l: BankLogin, binding: Uint8Array | null = null, w = who(l.mech)) => bank.login(w, l, binding);

test.after(() => {
  biz.close();
  t.remove();
});

test("registration provisions the person layer: the seed wrapped under the session's login key (only the chip opens it), sealed at rest; the attested fingerprint key kept", async () => {
  const r = await bank.register(who('password'), { name: 'pia', password: PW, ids: sim(1), fingerprint: { publicKey: fpPub, attestation: fingerprintKeyAttestation(loginKey, SITE, 'dev-p', fpPub) } });
  assert.ok(r.kind === 'registered', code(r));
  const reg = (r as Extract<BankAnswer, { kind: 'registered' }>).registered;
  assert.is(reg.fpKept, true);
  assert.ok(reg.otpSeed instanceof Uint8Array);
  assert.is(unwrapOtpSeed(rnd(32), SITE, 'dev-p', reg.otpSeed!), null, 'another login key opens nothing');
  assert.is(unwrapOtpSeed(loginKey, 'biz-west', 'dev-p', reg.otpSeed!), null, 'nor for another site');
  const opened = unwrapOtpSeed(loginKey, SITE, 'dev-p', reg.otpSeed!)!;
  seed = opened.seed;
  params = opened.params;
  assert.equal(params, { algorithm: 'SHA1', digits: 6, period: 30 });
  assert.is(seed.length, 20);
  const p = store.person(store.accountByName('pia')!.accountNo, SITE)!;
  assert.equal(p.fpPublicKey, fpPub);
  assert.equal(p.otp!.seed, seed);
  assert.is(p.lastStep, null);
  // At rest: the seed nowhere in the database file in clear (nor its hex).
  biz.db.pragma('wal_checkpoint(TRUNCATE)');
  const file = readFileSync(join(t.dir, 'biz.sqlite')).toString('latin1');
  assert.not.ok(file.includes(Buffer.from(seed).toString('latin1')) || file.includes(Buffer.from(seed).toString('hex')), 'the seed in clear in the database');
});

test("a fingerprint key whose attestation does not verify (a hostile host's own key, or another login key) is not kept; the account opens without it", async () => {
  const evil = ed25519.getPublicKey(rnd(32));
  for (const [name, att, n] of [['quinn', fingerprintKeyAttestation(loginKey, SITE, 'dev-q', fpPub), 2], ['ria', fingerprintKeyAttestation(rnd(32), SITE, 'dev-q', evil), 3]] as const) {
    const r = await bank.register(who('password', 'dev-q'), { name, password: PW, ids: sim(n), fingerprint: { publicKey: evil, attestation: att } });
    assert.ok(r.kind === 'registered' && r.registered.fpKept === false && r.registered.otpSeed instanceof Uint8Array, code(r));
    assert.is(store.person(store.accountByName(name)!.accountNo, SITE)!.fpPublicKey, null);
  }
  // No login key for the session's generation (rotated away): the account opens, nothing provisioned.
  const r = await bank.register(who('password', 'dev-q', null), { name: 'sam', password: PW, ids: sim(4) });
  assert.ok(r.kind === 'registered' && r.registered.otpSeed === null && r.registered.fpKept === false, code(r));
  assert.is(store.person(store.accountByName('sam')!.accountNo, SITE), null);
});

test("one-time code (RFC 6238): accepted once; the same code again PERSON_OTP_REPLAYED; a wrong one PERSON_PROOF_FAILED; one off the clock PERSON_OTP_SKEW; the next step's accepted", async () => {
  const c = codeAt(clock.t);
  const a = await login({ name: 'pia', mech: 'otp', proof: c, password: pw(), ids: sim(1) });
  assert.ok(a.kind === 'page', code(a));
  assert.is(store.person(store.accountByName('pia')!.accountNo, SITE)!.lastStep, totpStep(clock.t, 30), 'the step stored with the login');
  assert.is(code(await login({ name: 'pia', mech: 'otp', proof: c, password: pw(), ids: sim(1) })), 'PERSON_OTP_REPLAYED');
  const wrong = String((Number(c) + 1) % 1_000_000).padStart(6, '0');
  assert.is(code(await login({ name: 'pia', mech: 'otp', proof: wrong, password: pw(), ids: sim(1) })), 'PERSON_PROOF_FAILED');
  assert.is(code(await login({ name: 'pia', mech: 'otp', proof: codeAt(clock.t + 5 * 30_000), password: pw(), ids: sim(1) })), 'PERSON_OTP_SKEW');
  // Unknown name, an account with no seed here, another account's line: the one code, as for a wrong code.
  assert.is(code(await login({ name: 'nobody', mech: 'otp', proof: codeAt(clock.t + 30_000), password: pw(), ids: sim(1) })), 'PERSON_PROOF_FAILED');
  assert.is(code(await login({ name: 'quinn', mech: 'otp', proof: codeAt(clock.t + 30_000), password: pw(), ids: sim(1) })), 'PERSON_PROOF_FAILED');
  clock.t += 30_000;
  const b = await login({ name: 'pia', mech: 'otp', proof: codeAt(clock.t), password: pw(), ids: sim(1) });
  assert.ok(b.kind === 'page' && b.page.lastLogins.length === 2, code(b));
  // A code of the step before the last used one, though within the skew, is refused.
  assert.is(code(await login({ name: 'pia', mech: 'otp', proof: codeAt(clock.t - 30_000), password: pw(), ids: sim(1) })), 'PERSON_OTP_REPLAYED');
});

test("two sessions with the same fresh code at once: one page, one PERSON_OTP_REPLAYED (the step is used up by a compare-and-set with the login)", async () => {
  clock.t += 60_000;
  const c = codeAt(clock.t);
  const r = await Promise.all([login({ name: 'pia', mech: 'otp', proof: c, password: pw(), ids: sim(1) }), login({ name: 'pia', mech: 'otp', proof: c, password: pw(), ids: sim(1) })]);
  assert.equal(r.map(code).sort(), ['PERSON_OTP_REPLAYED', 'page']);
});

test("fingerprint: the signature over this session's binding accepted; one made for another session, a forged one, another key's: PERSON_PROOF_FAILED", async () => {
  const bindingA = rnd(32);
  const a = await login({ name: 'pia', mech: 'fingerprint', proof: sign(bindingA), ids: sim(1) }, bindingA);
  assert.ok(a.kind === 'page', code(a));
  assert.is(code(await login({ name: 'pia', mech: 'fingerprint', proof: sign(bindingA), ids: sim(1) }, rnd(32))), 'PERSON_PROOF_FAILED', 'replayed into another session');
  const forged = sign(bindingA);
  forged[3]! ^= 1;
  assert.is(code(await login({ name: 'pia', mech: 'fingerprint', proof: forged, ids: sim(1) }, bindingA)), 'PERSON_PROOF_FAILED');
  assert.is(code(await login({ name: 'pia', mech: 'fingerprint', proof: sign(bindingA, rnd(32)), ids: sim(1) }, bindingA)), 'PERSON_PROOF_FAILED', 'another key');
  // An account without a fingerprint key here (its attestation failed), and an unknown name.
  assert.is(code(await login({ name: 'quinn', mech: 'fingerprint', proof: sign(bindingA), ids: sim(2) }, bindingA, who('fingerprint', 'dev-q'))), 'PERSON_PROOF_FAILED');
  assert.is(code(await login({ name: 'nobody', mech: 'fingerprint', proof: sign(bindingA), ids: sim(1) }, bindingA)), 'PERSON_PROOF_FAILED');
  // The right proof from another device of the same line: the binding names the device.
  assert.is(code(await login({ name: 'pia', mech: 'fingerprint', proof: sign(bindingA), ids: sim(1) }, bindingA, who('fingerprint', 'dev-evil'))), 'BANK_DEVICE_MISMATCH');
});

test("the site's offer and floor: not offered BANK_MECH_UNSUPPORTED, below the floor BANK_MECH_BELOW_FLOOR, another than the opening stated BANK_MECH_MISMATCH; refused before any verification; a bad configuration does not start", async () => {
  const strict = new Bank({ store, hasher, mode: 1, log, now: () => clock.t, site: SITE, mechanisms: ['password', 'otp'], floor: 'otp' });
  assert.equal(strict.offer, { mechanisms: ['password', 'otp'], floor: 'otp' });
  const binding = rnd(32);
  assert.is(code(await strict.login(who('password'), { name: 'pia', mech: 'password', proof: new TextEncoder().encode(PW), ids: sim(1) })), 'BANK_MECH_BELOW_FLOOR');
  assert.is(code(await strict.login(who('fingerprint'), { name: 'pia', mech: 'fingerprint', proof: sign(binding), ids: sim(1) }, binding)), 'BANK_MECH_UNSUPPORTED');
  clock.t += 30_000;
  assert.is(code(await strict.login(who('password'), { name: 'pia', mech: 'otp', proof: codeAt(clock.t), password: pw(), ids: sim(1) })), 'BANK_MECH_MISMATCH');
  assert.is(code(await strict.login(who('otp'), { name: 'pia', mech: 'otp', proof: codeAt(clock.t), password: pw(), ids: sim(1) })), 'page', 'the code was not used up by the refusals');
  // A site offering neither: its registration provisions nothing and says nothing of it.
  const plain = new Bank({ store, hasher, mode: 1, log, now: () => clock.t, site: SITE, mechanisms: ['password'] });
  const r = await plain.register(who('password', 'dev-t'), { name: 'tom', password: PW, ids: sim(5), fingerprint: { publicKey: fpPub, attestation: fingerprintKeyAttestation(loginKey, SITE, 'dev-t', fpPub) } });
  assert.ok(r.kind === 'registered' && r.registered.otpSeed === undefined && r.registered.fpKept === undefined, JSON.stringify(r));
  for (const bad of [{ mechanisms: [] }, { mechanisms: ['pin'] }, { mechanisms: ['password'], floor: 'otp' }, { totp: { algorithm: 'MD5', digits: 6, period: 30 } }]) {
    assert.throws(() => new Bank({ store, hasher, mode: 1, log, site: SITE, ...(bad as object) }), (e: unknown) => e instanceof ImplementationError && e.code === 'BANK_BAD_CONFIG', JSON.stringify(bad));
  }
});

test("a sealed seed moved to another account's row does not open: STORE_CORRUPT_ROW, never used", async () => {
  const pia = store.accountByName('pia')!.accountNo;
  const quinn = store.accountByName('quinn')!.accountNo;
  biz.db.prepare('UPDATE bank_person SET otp_seed = (SELECT otp_seed FROM bank_person WHERE account_no = ?) WHERE account_no = ?').run(pia, quinn);
  assert.throws(() => store.person(quinn, SITE), (e: unknown) => e instanceof ImplementationError && e.code === 'STORE_CORRUPT_ROW');
  assert.ok(store.person(pia, SITE)!.otp, 'its own row still opens');
});

test("schema 5: a schema-4 file (the bank of S4) migrates at open, keeping its accounts and bindings; the person table is added", () => {
  const f = join(t.dir, 'biz-v4.sqlite');
  const s4 = new SqliteBizStore(f, storageKey);
  new SqliteBankStore(s4.db, storageKey).register({ accountNo: '620000000000123', name: 'old', verifier: '$scrypt$x', ids: [{ kind: 'iccid', value: '89441000000000000018' }], deviceUser: 'dev-o', now: T0 });
  s4.db.exec('DROP TABLE bank_person; ALTER TABLE bank_bindings DROP COLUMN sim_change_at; ALTER TABLE bank_bindings DROP COLUMN sim_change_asked; DELETE FROM schema_version WHERE version > 4');
  s4.close();
  const m = new SqliteBizStore(f, storageKey);
  try {
    assert.is((m.db.prepare('SELECT MAX(version) AS v FROM schema_version').get() as { v: number }).v, 6);
    const b = new SqliteBankStore(m.db, storageKey);
    assert.is(b.accountByName('old')!.accountNo, '620000000000123');
    assert.is(b.binding({ kind: 'iccid', value: '89441000000000000018' })!.deviceUser, 'dev-o');
    assert.is(b.person('620000000000123', SITE), null);
  } finally {
    m.close();
  }
});

test.run();
