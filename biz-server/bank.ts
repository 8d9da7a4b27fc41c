// The bank (S4.1-S4.8): what the business server decides on a bank request that
// protocol/bank.ts's BankServer handed over: registration, login in mode 1 (S4.3) or mode 2
// through the operator (S4.4, S4.6, SIM swap), re-binding, and the account page. Async (scrypt,
// the operator's HTTPS API); every answer is a BankAnswer the session seals. The checks and
// their order are docs/protocol.md §6.5; the choices behind them docs/decisions.md.
//
// Three layers: the device (the S0 user of the session, proved by the chip before any of
// this runs), the line (the identifiers the phone read, bound to the account and to the device
// that registered them: a copied ICCID on another device is refused), the person (login name
// and a proof by one of the site's mechanisms, S3.3: the password against a scrypt verifier,
// a one-time code against the account's TOTP seed at this site, or a fingerprint signature
// over this session's channel binding under the account's fingerprint key at this site).
// The person's keys are provisioned at the registration (docs/protocol.md §6.5, §17): the bank
// makes the TOTP seed and wraps it for the phone's chip under the session's login key, and
// keeps the fingerprint key the chip made only if its attestation (a MAC under that login key)
// verifies.
import { randomBytes, randomInt } from 'node:crypto';
import type { BankAnswer, BankRefusalCode } from '../protocol/bank.ts';
import { maskAccount, type BankEnrol, type BankLogin, type BankMode, type BankPage, type BankRegistered, type LineIds } from '../protocol/bank-messages.ts';
import { luhnDigit } from '../protocol/line-ids.ts';
import { MECHANISMS, type Mechanism } from '../protocol/messages.ts';
import { MECH_STRENGTH } from '../protocol/attack-table.ts';
import { ed25519 } from '@noble/curves/ed25519.js';
import { wrapOtpSeed, isTotpParams, TOTP_DEFAULTS, type TotpParams } from '../protocol/person.ts';
import { systemRng } from '../protocol/channel.ts';
import { ImplementationError } from '../protocol/errors.ts';
import { OperatorError, type OperatorClient } from '../server-kit/operator-client.ts';
import type { Logger } from '../server-kit/log.ts';
import type { BankAccount, BankStore, Binding, LineId, OtpSeed, SimChange } from './bank-store.ts';
import { isTime } from './bank-store.ts';
import type { Awaitable } from '../server-kit/store-choice.ts';
import { weakPassword, type PasswordHasher, HasherBusy } from './password-verifier.ts';
import { verifyTotp, type TotpOptions } from './person/totp.ts';
import { verifyFingerprint, verifyFingerprintKey } from './person/fingerprint.ts';

/** What the bank asks the operator (server-kit/operator-client.ts OperatorClient). */
export type OperatorApi = Pick<OperatorClient, 'checkValidity' | 'phoneNumberOf' | 'retrieveSimSwapDate'>;

/** The CAMARA operations the bank calls, by their path's last segment (server-kit/operator-api.ts OperatorPaths). */
export type OperatorOp = 'check-validity' | 'retrieve-phone-number' | 'retrieve-date';

/**
 * One operator call of a bank request, as whoever watches the bank is told of it (the live
 * page, issue 17): 'ask' when the call starts, 'answer' when it settles. Names, verdicts and
 * codes only: never an identifier beyond the last 4 digits of the number the operator gave.
 *   answer   'valid' | 'invalid' (check-validity), 'number' (retrieve-phone-number),
 *            'no change' | 'changed after binding' | 'none since binding' | 'recorded at binding' (retrieve-date),
 *            'failed' (any error: `code` says which, an OperatorError code or OPERATOR_FAILED)
 *   code     the InvalidReason of an invalid card, or the failure's code
 *   tail     retrieve-phone-number: the number's last 4 digits
 *   ms       answer: how long the call took
 */
export interface OperatorCallEvent {
  phase: 'ask' | 'answer';
  op: OperatorOp;
  /** S4.6 the validity check, S4.4 the lookup and the SIM-swap date (docs/features.md). */
  feature: 'S4.4' | 'S4.6';
  /** The device user whose request made the call, and the address its session was observed at (when known). */
  deviceUser: string;
  ip?: string;
  answer?: 'valid' | 'invalid' | 'number' | 'no change' | 'changed after binding' | 'none since binding' | 'recorded at binding' | 'failed';
  code?: string;
  tail?: string;
  ms?: number;
}

export interface BankOptions {
  store: BankStore;
  hasher: PasswordHasher;
  /** The server's mode (an account may override it: BankStore.setMode). */
  mode: BankMode;
  /** The operator's API; without it mode 2 answers BANK_OPERATOR_UNAVAILABLE. */
  operator?: OperatorApi;
  /** Deadline of each operator step of a request (the calls one step makes share it), ms (default 3000). A request takes at most two steps in mode 2 (a binding: the card lookup, then the line's latest SIM change; a login: the card lookup, then the SIM-swap check), so at most twice this: at the default, 6 s, inside the session's 10 s step timeout. */
  operatorDeadlineMs?: number;
  /** Lifetime of an account-page token, s (default 300). */
  pageTtlS?: number;
  log: Logger;
  now?: () => number;
  /** The site's name (the business server's, the dest of its sessions): what the chip's keys are made for (S3.3). */
  site?: string;
  /** The person mechanisms the site offers (S3.3; default all three, as deploy/config.ts DEFAULT_INITIAL_TABLE). */
  mechanisms?: readonly Mechanism[];
  /** The site's minimum strength (default 'password'): a bankLogin below it is BANK_MECH_BELOW_FLOOR. */
  floor?: Mechanism;
  /** RFC 6238 parameters of the seeds this site makes (default SHA1, 6 digits, 30 s). */
  totp?: TotpParams;
  /** Accepted skew, in steps either side (default 1, RFC 6238 §5.2). */
  totpSkew?: TotpOptions['skew'];
  /** Told of each operator call a request makes, as it starts and as it settles (the live page); must not throw. */
  onOperatorCall?: (e: OperatorCallEvent) => void;
}

/**
 * Who is asking, as the business login around the request proved it (S0): the device's S0
 * user, the person mechanism its login opening stated (the gateway counted the attempt under
 * it, S3.4), and the login key of the session's generation (K_login, which the phone's chip
 * holds), to wrap the TOTP seed and check the fingerprint key's attestation at registration;
 * null when the store no longer has it. The caller wipes nothing: the bank wipes what it gets.
 */
export interface BankCaller {
  deviceUser: string;
  mech: Mechanism;
  /** The address the session was observed at (what onOperatorCall events carry); optional. */
  ip?: string;
  loginKey(): Awaitable<Uint8Array | null>;
}

/** Bytes of a seed this bank makes: 20 (160 bits, RFC 4226 §4 R6's recommended length). */
export const OTP_SEED_BYTES = 20;

/** A refusal, thrown inside the bank and answered as bankRefused. */
class Refusal extends Error {
  constructor(readonly code: BankRefusalCode, readonly reason: string) {
    super(`${code}: ${reason}`);
  }
}
const refuse = (code: BankRefusalCode, reason: string): never => {
  throw new Refusal(code, reason);
};

/** The identifiers a request's line ids bind, the first identifier first (S4.2). */
export function lineIdsOf(ids: LineIds): LineId[] {
  if (ids.idKind === 'card') return [{ kind: 'card', value: ids.cardId }];
  const out: LineId[] = [{ kind: 'iccid', value: ids.iccid }, { kind: 'imsi', value: ids.imsi }];
  if (ids.msisdn) out.push({ kind: 'msisdn', value: ids.msisdn });
  return out;
}

/** The verdict on the line's latest SIM change the operator gives now (CAMARA retrieve-date), as #watched tells it. */
export type SimChangeVerdict = 'no change' | 'changed after binding' | 'none since binding' | 'recorded at binding';

/**
 * SIM swap by the operator's dates (docs/decisions.md 137): one clock only, the operator's.
 * `latest`: the operator's latest SIM change of the line now (null: none known); `bound`: the
 * binding the login found, null while a binding is being made (nothing to compare with yet).
 *   - no change known now: 'no change' (a change the binding recorded may have aged out of the
 *     operator's monitored period; a new one would be recent and known).
 *   - the binding has the operator's record: any other change than the one recorded (a later
 *     one; also an earlier one, the operator's record contradicting itself) is 'changed after
 *     binding', the recorded one 'none since binding'.
 *   - a binding without a record (mode 1, or made before schema 6): the rule of before, the
 *     operator's date against the bank's binding time (two clocks: the bound card, checked
 *     first, is what holds under skew; decision 134).
 *   - no binding yet (`bound` null: one being made): 'recorded at binding' (the live page's label).
 */
export function simChangeVerdict(latest: Date | null, bound: Pick<Binding, 'boundAt' | 'simChange'> | null): SimChangeVerdict {
  if (!latest) return 'no change';
  // A binding being made: the date is recorded with it, nothing to compare with yet (found by review: shown as 'none since binding').
  if (!bound) return 'recorded at binding';
  const changed = bound.simChange ? latest.getTime() !== bound.simChange.at : latest.getTime() > bound.boundAt;
  return changed ? 'changed after binding' : 'none since binding';
}

/** Line ids as the page shows them, from an account's bindings. */
function idsFromBindings(bs: Binding[]): LineIds {
  const v = (k: string) => bs.find((b) => b.kind === k)?.value;
  const card = v('card');
  if (card) return { idKind: 'card', cardId: card };
  return { idKind: 'sim', iccid: v('iccid')!, imsi: v('imsi')!, msisdn: v('msisdn') ?? null };
}

/** A new account number: '62' (a bank's IIN range, sample) + 12 random digits + the Luhn digit (ISO/IEC 7812). */
export function newAccountNumber(): string {
  let s = '62';
  for (let i = 0; i < 12; i++) s += String(randomInt(10));
  return s + String(luhnDigit(s));
}

export class Bank {
  readonly #o: BankOptions;
  readonly #now: () => number;
  readonly #site: string;
  readonly #offered: readonly Mechanism[];
  readonly #floor: Mechanism;
  readonly #totp: TotpParams;
  /** Stand-ins for an unknown name or an account not provisioned: the verification does the same work. */
  readonly #dummyFp: Uint8Array;
  readonly #dummySeed: OtpSeed;
  /** Throws ImplementationError BANK_BAD_CONFIG for an empty or unknown offer, a floor no offered mechanism reaches, or bad TOTP parameters. */
  constructor(o: BankOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
    this.#site = o.site ?? 'bank';
    this.#offered = [...(o.mechanisms ?? MECHANISMS)];
    this.#floor = o.floor ?? 'password';
    this.#totp = o.totp ?? TOTP_DEFAULTS;
    const known = (m: unknown) => (MECHANISMS as readonly unknown[]).includes(m);
    if (this.#offered.length === 0 || !this.#offered.every(known) || !known(this.#floor)) throw new ImplementationError('BANK_BAD_CONFIG', `mechanisms must be some of ${MECHANISMS.join(', ')}, and the floor one of them`);
    if (!this.#offered.some((m) => MECH_STRENGTH[m] >= MECH_STRENGTH[this.#floor])) throw new ImplementationError('BANK_BAD_CONFIG', `no offered mechanism reaches the floor ${this.#floor}`);
    if (!isTotpParams(this.#totp)) throw new ImplementationError('BANK_BAD_CONFIG', 'TOTP parameters: SHA1/SHA256/SHA512, 6..8 digits, 30 or 60 s');
    this.#dummySeed = { seed: randomBytes(OTP_SEED_BYTES), params: this.#totp };
    // A real key nobody holds: verify() does its full work and fails.
    this.#dummyFp = ed25519.getPublicKey(randomBytes(32));
  }

  /** The mechanisms this site offers and its floor (S3.3). */
  get offer(): { mechanisms: readonly Mechanism[]; floor: Mechanism } {
    return { mechanisms: this.#offered, floor: this.#floor };
  }

  get mode(): BankMode {
    return this.#o.mode;
  }

  /**
   * bankRegister (S4.1): a new account bound to this line and this device; with the person
   * layer provisioned at this site (S3.3): a fresh TOTP seed wrapped for the chip when the site
   * offers one-time codes, and the fingerprint key the request carries, kept only when the site
   * offers fingerprints and its attestation verifies under the session's login key.
   */
  register(who: BankCaller, req: BankEnrol): Promise<BankAnswer> {
    const deviceUser = who.deviceUser;
    return this.#answer('register', deviceUser, async () => {
      const weak = weakPassword(req.password, req.name);
      if (weak) refuse('BANK_PASSWORD_WEAK', `password too weak: ${weak}`);
      const s = this.#o.store;
      if (await s.accountByName(req.name)) refuse('BANK_NAME_TAKEN', 'this login name is taken');
      const mode = req.ids.idKind === 'card' ? 1 : this.#o.mode;
      const { ids, number } = await this.#idsToBind(who, req.ids, mode);
      if ((await Promise.all(ids.map((i) => s.binding(i)))).some((b) => b !== null)) refuse('BANK_ID_BOUND', 'this line is already bound to an account');
      // Asked once the line is known free: a registration on a bound line costs the operator no date (found by review).
      const simChange = number === null ? null : await this.#simChangeAtBinding(who, number);
      const verifier = await this.#o.hasher.hash(req.password);
      const now = this.#now();
      const p = await this.#provision(who, req);
      try {
        for (let attempt = 0; attempt < 4; attempt++) {
          const accountNo = newAccountNumber();
          const r = await s.register({ accountNo, name: req.name, verifier, ids, deviceUser, now, simChange, person: { site: this.#site, fpPublicKey: p.fpPublicKey, otp: p.otp } });
          if (r === 'name-taken') refuse('BANK_NAME_TAKEN', 'this login name is taken');
          if (r === 'id-bound') refuse('BANK_ID_BOUND', 'this line is already bound to an account');
          if (r === 'ok') {
            this.#o.log.info('bank account opened', { account: maskAccount(accountNo), device: deviceUser, mode, ids: ids.map((i) => i.kind).join('+'), otp: p.otp !== null, fingerprint: p.fpPublicKey !== null });
            const registered: BankRegistered = { account: accountNo, mode, boundAt: now };
            if (this.#offers('otp') || this.#offers('fingerprint')) Object.assign(registered, { otpSeed: p.wrapped, fpKept: p.fpPublicKey !== null });
            return { kind: 'registered', registered };
          }
        }
      } finally {
        p.otp?.seed.fill(0);
      }
      throw new Error('no free account number after 4 draws');
    });
  }

  #offers(m: Mechanism): boolean {
    return this.#offered.includes(m);
  }

  /**
   * The person's keys a registration provisions at this site (S3.3): a fresh TOTP seed and its
   * wrap for the chip (under K_login of the session's generation), the fingerprint public key
   * when its attestation verifies. Without the login key (rotated away meanwhile) nothing.
   */
  async #provision(who: BankCaller, req: BankEnrol): Promise<{ otp: OtpSeed | null; wrapped: Uint8Array | null; fpPublicKey: Uint8Array | null }> {
    const none = { otp: null, wrapped: null, fpPublicKey: null };
    if (!this.#offers('otp') && !(this.#offers('fingerprint') && req.fingerprint)) return none;
    const k = await who.loginKey();
    if (!k) {
      this.#o.log.warn('person layer not provisioned', { device: who.deviceUser, why: 'no login key for the session generation' });
      return none;
    }
    try {
      let otp: OtpSeed | null = null;
      let wrapped: Uint8Array | null = null;
      if (this.#offers('otp')) {
        otp = { seed: randomBytes(OTP_SEED_BYTES), params: this.#totp };
        wrapped = wrapOtpSeed(k, this.#site, who.deviceUser, otp.seed, otp.params, systemRng);
      }
      let fpPublicKey: Uint8Array | null = null;
      const fp = req.fingerprint;
      if (fp && this.#offers('fingerprint')) {
        if (verifyFingerprintKey(k, this.#site, who.deviceUser, fp.publicKey, fp.attestation)) fpPublicKey = Uint8Array.from(fp.publicKey);
        // A key the chip did not vouch for: a hostile host's own key. Not kept; the account opens without it.
        else this.#o.log.warn('fingerprint key refused', { device: who.deviceUser, why: 'attestation does not verify under the login key' });
      }
      return { otp, wrapped, fpPublicKey };
    } finally {
      k.fill(0);
    }
  }

  /**
   * bankLogin (S4.2-S4.4, S4.7; S3.3): the account page, or the "login not allowed" notice.
   * `binding`: this end's channel binding (BankServer's login event), which a fingerprint
   * signature must cover.
   */
  login(who: BankCaller, req: BankLogin, binding: Uint8Array | null = null): Promise<BankAnswer> {
    const deviceUser = who.deviceUser;
    return this.#answer('login', deviceUser, async () => {
      try {
        // The site's offer (public), before any work: not offered, below the floor, or another
        // mechanism than the login opening stated (what the gateway counted, S3.4).
        if (!this.#offers(req.mech)) refuse('BANK_MECH_UNSUPPORTED', `this site does not offer '${req.mech}' (it offers ${this.#offered.join(', ')})`);
        if (MECH_STRENGTH[req.mech] < MECH_STRENGTH[this.#floor]) refuse('BANK_MECH_BELOW_FLOOR', `'${req.mech}' is below this site's minimum strength '${this.#floor}'`);
        if (req.mech !== who.mech) refuse('BANK_MECH_MISMATCH', `the login stated '${who.mech}', the request proves '${req.mech}'`);
        const s = this.#o.store;
        const account = await s.accountByName(req.name);
        // The person's proof is always checked (a dummy verifier, key or seed for an unknown name
        // or an account not provisioned here), alongside the line's lookup, so neither the
        // answer's code nor its time says which names exist. Both settle before any verdict: a
        // refusal of the line does not cut the scrypt short.
        const [pv, fb] = await Promise.allSettled([this.#verifyPerson(req, account, binding), this.#findBinding(who, req.ids)]);
        if (fb.status === 'rejected') throw fb.reason;
        if (pv.status === 'rejected') throw pv.reason;
        const v = pv.value;
        const found = fb.value;
        const { binding: bound, mode } = found;
        // A line bound to another device is refused whatever the name and proof say, and before
        // anything is said of them: otherwise a device with copied identifiers (or invented ones
        // bound elsewhere) could test a person's password by the code it gets back (found by review).
        if (bound.deviceUser !== deviceUser) refuse('BANK_DEVICE_MISMATCH', 'this line is bound to another device');
        if (!account || account.accountNo !== bound.accountNo || !v.ok) {
          if (req.mech === 'password') refuse('BANK_BAD_CREDENTIALS', 'login name or password is wrong');
          // A code replayed or off the clock is told only for the bound account itself.
          const code = account && account.accountNo === bound.accountNo && !v.ok ? v.code : 'PERSON_PROOF_FAILED';
          refuse(code, code === 'PERSON_OTP_REPLAYED' ? 'this one-time code was used already' : code === 'PERSON_OTP_SKEW' ? "the one-time code is not of the site's current time: the phone's clock is off" : `login name or ${req.mech === 'otp' ? 'one-time code' : 'fingerprint'} is wrong`);
        }
        if (mode === 2) {
          await this.#checkBoundCard(bound.accountNo, req.ids);
          await this.#checkSwap(who, found.number!, bound);
        }
        const now = this.#now();
        // The code's step is used up in the same transaction that lets the login through (RFC 6238 §5.2).
        const step = v.ok && v.step !== null ? { site: this.#site, step: v.step } : null;
        if (!(await s.recordLogin(account!.accountNo, now, mode, deviceUser, step))) refuse('PERSON_OTP_REPLAYED', 'this one-time code was used already');
        const token = randomBytes(32);
        const ttlS = this.#o.pageTtlS ?? 300;
        await s.putPageToken(token, account!.accountNo, now + ttlS * 1000, now);
        const bindings = await s.bindingsOf(account!.accountNo);
        const page: BankPage = {
          account: maskAccount(account!.accountNo),
          mode,
          binding: { ids: idsFromBindings(bindings), boundAt: bound.boundAt },
          lastLogins: await s.lastLogins(account!.accountNo),
          token,
          ttlS,
        };
        this.#o.log.info('bank login ok', { account: page.account, device: deviceUser, mode, mech: req.mech });
        return { kind: 'page', page };
      } finally {
        if (req.proof instanceof Uint8Array) req.proof.fill(0);
        if (req.mech === 'otp') req.password.fill(0);
      }
    });
  }

  /**
   * The person's proof against the account's verifier or keys at this site (`account` null:
   * unknown name): ok with the TOTP step to use up, or the site's PERSON_* verdict. The same
   * work whatever the account holds: a dummy verifier, seed or key where it has none.
   */
  async #verifyPerson(req: BankLogin, account: BankAccount | null, binding: Uint8Array | null): Promise<{ ok: true; step: number | null } | { ok: false; code: BankRefusalCode }> {
    if (req.mech === 'password') {
      return (await this.#o.hasher.verify(req.proof, account?.verifier ?? null)) ? { ok: true, step: null } : { ok: false, code: 'BANK_BAD_CREDENTIALS' };
    }
    const keys = account ? await this.#o.store.person(account.accountNo, this.#site) : null;
    if (req.mech === 'otp') {
      // Password-verification (S3.3): the password AND the code, both checked whatever the
      // other says (one scrypt, one TOTP check each time), one code for a wrong password, a
      // wrong code or an unknown name; replay and skew told only to the right password.
      const pwOk = await this.#o.hasher.verify(req.password, account?.verifier ?? null);
      const otp = keys?.otp ?? null;
      const v = verifyTotp((otp ?? this.#dummySeed).seed, (otp ?? this.#dummySeed).params, req.proof, this.#now(), keys?.lastStep ?? null, { skew: this.#o.totpSkew ?? 1 });
      otp?.seed.fill(0);
      if (!otp || !pwOk) return { ok: false, code: 'PERSON_PROOF_FAILED' };
      return v.ok ? { ok: true, step: v.step } : { ok: false, code: v.code };
    }
    const pk = keys?.fpPublicKey ?? null;
    if (!binding) throw new ImplementationError('BANK_NO_BINDING', 'a fingerprint login without the channel binding');
    const v = verifyFingerprint(pk ?? this.#dummyFp, binding, req.proof);
    return pk && v.ok ? { ok: true, step: null } : { ok: false, code: 'PERSON_PROOF_FAILED' };
  }

  /** bankRebind: after a SIM swap, the owner moves the binding to the new card, from the device that holds it. */
  rebind(who: BankCaller, req: BankEnrol): Promise<BankAnswer> {
    const deviceUser = who.deviceUser;
    return this.#answer('rebind', deviceUser, async () => {
      const s = this.#o.store;
      const account = await s.accountByName(req.name);
      const pwOk = await this.#o.hasher.verify(req.password, account?.verifier ?? null);
      // The device first, whatever the password: a device that does not hold the binding learns
      // nothing of the password from the answer (found by review: the order was a password oracle).
      const old = account ? await s.bindingsOf(account.accountNo) : [];
      if (old.some((b) => b.deviceUser !== deviceUser)) refuse('BANK_DEVICE_MISMATCH', 'only the device that holds the binding may re-bind it');
      if (!pwOk || !account) refuse('BANK_BAD_CREDENTIALS', 'login name or password is wrong');
      const mode = req.ids.idKind === 'card' ? 1 : (account!.mode ?? this.#o.mode);
      const { ids, number } = await this.#idsToBind(who, req.ids, mode);
      // Asked before the store finds the new line bound to another account: a re-binding is made
      // by the bound device with the account's password (checked above), so this costs the
      // operator a call only for the account's owner, and the store's check stays atomic.
      const simChange = number === null ? null : await this.#simChangeAtBinding(who, number);
      const now = this.#now();
      if ((await s.rebind(account!.accountNo, ids, deviceUser, now, simChange)) === 'id-bound') refuse('BANK_ID_BOUND', 'this line is already bound to another account');
      this.#o.log.info('bank binding moved', { account: maskAccount(account!.accountNo), device: deviceUser, mode });
      return { kind: 'registered', registered: { account: account!.accountNo, mode, boundAt: now } };
    });
  }

  /**
   * The account page of a token handed out in a bankPage: what the HTML page shows, 'expired',
   * or null (never issued).
   */
  async page(token: Uint8Array): Promise<{ account: string; ids: LineIds; boundAt: number; lastLogins: { at: number; mode: BankMode }[] } | 'expired' | null> {
    const s = this.#o.store;
    const t = await s.pageToken(token, this.#now());
    if (t === null || t === 'expired') return t;
    const bindings = await s.bindingsOf(t.accountNo);
    if (bindings.length === 0) return null;
    return { account: maskAccount(t.accountNo), ids: idsFromBindings(bindings), boundAt: Math.min(...bindings.map((b) => b.boundAt)), lastLogins: await s.lastLogins(t.accountNo) };
  }

  /** Runs a request; a Refusal becomes bankRefused (logged with its code, never the password). */
  async #answer(what: string, deviceUser: string, f: () => Promise<BankAnswer>): Promise<BankAnswer> {
    try {
      return await f();
    } catch (e) {
      if (e instanceof HasherBusy) {
        this.#o.log.warn('bank busy', { request: what, device: deviceUser });
        return { kind: 'refused', code: 'BANK_BUSY', reason: 'too many password checks at once: try again later' };
      }
      if (!(e instanceof Refusal)) throw e;
      this.#o.log.info('bank refused', { request: what, code: e.code, device: deviceUser });
      return { kind: 'refused', code: e.code, reason: e.reason };
    }
  }

  /**
   * The binding of a login's line and how it was found (docs/protocol.md §6.5): a bank card,
   * or an account in mode 1, directly by the first identifier; otherwise, when the server or
   * the account says mode 2, through the number the operator gives for the card.
   */
  async #findBinding(who: BankCaller, ids: LineIds): Promise<{ binding: Binding; mode: BankMode; number?: string }> {
    const s = this.#o.store;
    const first = lineIdsOf(ids)[0]!;
    const direct = await s.binding(first);
    if (ids.idKind === 'card') return direct ? { binding: direct, mode: 1 } : refuse('BANK_NOT_BOUND', 'this card is not bound to an account');
    const accountMode = direct ? ((await s.accountByNumber(direct.accountNo))?.mode ?? this.#o.mode) : this.#o.mode;
    if (direct && accountMode === 1) return { binding: direct, mode: 1 };
    if (accountMode === 1) refuse('BANK_NOT_BOUND', 'this card is not bound to an account');
    const number = await this.#operatorNumber(who, ids);
    const viaNumber = await s.binding({ kind: 'msisdn', value: number });
    if (!viaNumber || (direct && direct.accountNo !== viaNumber.accountNo)) refuse('BANK_NOT_BOUND', 'the line of this card is not bound to an account');
    return { binding: viaNumber!, mode: 2, number };
  }

  /**
   * The identifiers a registration or re-binding binds, and the operator's SIM-change record
   * kept with them: mode 2 adds the number the operator gives (S4.4), after the validity check
   * (S4.6), and then asks the operator for the line's latest SIM change (CAMARA retrieve-date),
   * which logins compare with the operator's later answers (#checkSwap). An operator that
   * cannot answer any of these refuses the binding (BANK_OPERATOR_UNAVAILABLE), before anything
   * is written. Mode 1 asks nothing (simChange null: not asked).
   */
  async #idsToBind(who: BankCaller, ids: LineIds, mode: BankMode): Promise<{ ids: LineId[]; number: string | null }> {
    const out = lineIdsOf(ids);
    if (mode === 1 || ids.idKind === 'card') return { ids: out, number: null };
    const number = await this.#operatorNumber(who, ids);
    return { ids: [...out.filter((i) => i.kind !== 'msisdn'), { kind: 'msisdn', value: number }], number };
  }

  /** Mode 2: the operator's latest SIM change of the line `number`, recorded with its binding (decision 137). */
  async #simChangeAtBinding(who: BankCaller, number: string): Promise<SimChange> {
    const r = await this.#operator(who, 'sim change at binding', (op) => op.retrieveSimSwapDate(number), null);
    const at = r.latestSimChange ? r.latestSimChange.getTime() : null;
    // A date the binding cannot record (before 1970, not a whole ms) is the operator's fault, told
    // as such, not a store error of ours (found by review); nothing is written.
    if (at !== null && !isTime(at)) {
      this.#o.log.warn('operator unavailable', { step: 'sim change at binding', code: 'OPERATOR_BAD_DATE' });
      refuse('BANK_OPERATOR_UNAVAILABLE', 'the operator gave a SIM-change date the bank cannot record; try again later');
    }
    return { at };
  }

  /** S4.6 + S4.4: the operator checks the card, then gives the line's number. Bounded in time. */
  async #operatorNumber(who: BankCaller, ids: Extract<LineIds, { idKind: 'sim' }>): Promise<string> {
    return this.#operator(who, 'card lookup', async (op) => {
      const q = ids.msisdn ? { iccid: ids.iccid, imsi: ids.imsi, phoneNumber: ids.msisdn } : { iccid: ids.iccid, imsi: ids.imsi };
      const [valid, info] = await Promise.all([op.checkValidity(q), op.phoneNumberOf({ iccid: ids.iccid }).catch((e: unknown) => e)]);
      if (!valid.valid) refuse('BANK_CARD_INVALID', `the operator says this card is invalid (${valid.reason ?? 'no reason given'})`);
      if (info instanceof Error) throw info;
      return (info as { phoneNumber: string }).phoneNumber;
    });
  }

  /**
   * SIM swap, by the bank's own records first: in mode 2 the binding is found through the number
   * the operator gives for the card, so a new card of the bound line finds the account too. When
   * the account is bound to a card (an ICCID binding) and the card presented is not it, the line
   * moved to another card: refused until the owner re-binds from the bound device. This needs no
   * time of anybody's. The operator's swap date (#checkSwap) once was compared with the bank's
   * binding time, and under clock skew between the two (or a swap dated before the binding) a
   * changed card passed it (found by the deterministic simulation, issue 14; decision 134); it
   * is now compared with the operator's own answer at binding (decision 137), except for
   * bindings made before that record existed.
   */
  async #checkBoundCard(accountNo: string, ids: LineIds): Promise<void> {
    if (ids.idKind !== 'sim') return;
    const cards = (await this.#o.store.bindingsOf(accountNo)).filter((b) => b.kind === 'iccid');
    if (cards.length > 0 && !cards.some((b) => b.value === ids.iccid)) refuse('BANK_SIM_SWAPPED', 'this line is bound to another card: re-bind it from the bound device');
  }

  /**
   * SIM swap (beyond the patent): a card change of the line since the binding refuses the login
   * until a re-binding. The operator's latest change now against the one it gave when the
   * binding was made (simChangeVerdict: the operator's clock only), or, for a binding without
   * that record, against the binding's time.
   */
  async #checkSwap(who: BankCaller, number: string, bound: Binding): Promise<void> {
    const r = await this.#operator(who, 'sim swap', (op) => op.retrieveSimSwapDate(number), bound);
    if (simChangeVerdict(r.latestSimChange, bound) !== 'changed after binding') return;
    const when = r.latestSimChange!.toISOString();
    if (bound.simChange) {
      const had = bound.simChange.at === null ? 'none' : new Date(bound.simChange.at).toISOString();
      refuse('BANK_SIM_SWAPPED', `the card of this line changed on ${when} (operator's time; at the binding it knew ${had}): re-bind it from the bound device`);
    }
    refuse('BANK_SIM_SWAPPED', `the card of this line changed on ${when}, after the binding: re-bind it from the bound device`);
  }

  /** One operator step under its own deadline (operatorDeadlineMs); any failure of the operator is BANK_OPERATOR_UNAVAILABLE (its code logged). */
  async #operator<T>(who: BankCaller, what: string, f: (op: OperatorApi) => Promise<T>, bound: Binding | null = null): Promise<T> {
    const real = this.#o.operator;
    if (!real) refuse('BANK_OPERATOR_UNAVAILABLE', 'no operator is configured for mode 2');
    const op = this.#o.onOperatorCall ? this.#watched(real!, who, bound) : real!;
    const ms = this.#o.operatorDeadlineMs ?? 3_000;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new OperatorError('OPERATOR_TIMEOUT', `${what}: no answer within ${ms} ms`, true)), ms);
    });
    try {
      return await Promise.race([f(op), deadline]);
    } catch (e) {
      if (e instanceof Refusal) throw e;
      const code = e instanceof OperatorError ? e.code : 'OPERATOR_FAILED';
      this.#o.log.warn('operator unavailable', { step: what, code });
      // A card the operator does not know at all is an answer about the card, not an outage.
      if (e instanceof OperatorError && (code === 'IDENTIFIER_NOT_FOUND' || code === 'NOT_FOUND')) refuse('BANK_CARD_INVALID', 'the operator does not know this card');
      return refuse('BANK_OPERATOR_UNAVAILABLE', `the operator could not be asked (${code}); try again later`);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * The operator's API with each call told to onOperatorCall, as it starts and as it settles
   * (a call still running at the deadline is told when it settles). `bound`: the binding a
   * login found, for a SIM-swap date's verdict by #checkSwap's own rule (simChangeVerdict);
   * null while a binding is being made. A listener that throws is ignored.
   */
  #watched(op: OperatorApi, who: BankCaller, bound: Binding | null): OperatorApi {
    const tell = (e: Omit<OperatorCallEvent, 'deviceUser' | 'ip'>) => {
      try {
        this.#o.onOperatorCall!({ ...e, deviceUser: who.deviceUser, ...(who.ip ? { ip: who.ip } : {}) });
      } catch {
        // the watcher's trouble, not the request's
      }
    };
    const watch = <T>(name: OperatorOp, feature: 'S4.4' | 'S4.6', p: () => Promise<T>, verdict: (r: T) => Pick<OperatorCallEvent, 'answer' | 'code' | 'tail'>): Promise<T> => {
      const t0 = performance.now();
      tell({ phase: 'ask', op: name, feature });
      const ms = () => Math.round((performance.now() - t0) * 10) / 10;
      return p().then(
        (r) => {
          tell({ phase: 'answer', op: name, feature, ms: ms(), ...verdict(r) });
          return r;
        },
        (e: unknown) => {
          tell({ phase: 'answer', op: name, feature, ms: ms(), answer: 'failed', code: e instanceof OperatorError ? e.code : 'OPERATOR_FAILED' });
          throw e;
        },
      );
    };
    return {
      checkValidity: (q) => watch('check-validity', 'S4.6', () => op.checkValidity(q), (r) => (r.valid ? { answer: 'valid' } : { answer: 'invalid', ...(r.reason ? { code: r.reason } : {}) })),
      phoneNumberOf: (card) => watch('retrieve-phone-number', 'S4.4', () => op.phoneNumberOf(card), (r) => ({ answer: 'number', tail: r.phoneNumber.slice(-4) })),
      retrieveSimSwapDate: (n) => watch('retrieve-date', 'S4.4', () => op.retrieveSimSwapDate(n), (r) => ({ answer: simChangeVerdict(r.latestSimChange, bound) })),
    };
  }
}
