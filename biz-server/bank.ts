// The bank (S4.1-S4.8): what the business server decides on a bank request that
// protocol/bank.ts's BankServer handed over: registration, login in mode 1 (S4.3) or mode 2
// through the operator (S4.4, S4.6, SIM swap), re-binding, and the account page. Async (scrypt,
// the operator's HTTPS API); every answer is a BankAnswer the session seals. The checks and
// their order are docs/protocol.md §6.5; the choices behind them docs/decisions.md.
//
// Three layers: the device (the S0 user of the session, proved by the chip before any of
// this runs), the line (the identifiers the phone read, bound to the account and to the device
// that registered them: a copied ICCID on another device is refused), the person (login name
// and password, verified against a scrypt verifier).
import { randomBytes, randomInt } from 'node:crypto';
import type { BankAnswer, BankRefusalCode } from '../protocol/bank.ts';
import { maskAccount, type BankEnrol, type BankLogin, type BankMode, type BankPage, type LineIds } from '../protocol/bank-messages.ts';
import { luhnDigit } from '../protocol/line-ids.ts';
import { OperatorError, type OperatorClient } from '../server-kit/operator-client.ts';
import type { Logger } from '../server-kit/log.ts';
import type { BankStore, Binding, LineId } from './bank-store.ts';
import { weakPassword, type PasswordHasher } from './password-verifier.ts';

/** What the bank asks the operator (server-kit/operator-client.ts OperatorClient). */
export type OperatorApi = Pick<OperatorClient, 'checkValidity' | 'phoneNumberOf' | 'retrieveSimSwapDate'>;

export interface BankOptions {
  store: BankStore;
  hasher: PasswordHasher;
  /** The server's mode (an account may override it: BankStore.setMode). */
  mode: BankMode;
  /** The operator's API; without it mode 2 answers BANK_OPERATOR_UNAVAILABLE. */
  operator?: OperatorApi;
  /** Deadline of all the operator calls of one request together, ms (default 3000). */
  operatorDeadlineMs?: number;
  /** Lifetime of an account-page token, s (default 300). */
  pageTtlS?: number;
  log: Logger;
  now?: () => number;
}

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
  constructor(o: BankOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
  }

  get mode(): BankMode {
    return this.#o.mode;
  }

  /** bankRegister (S4.1): a new account bound to this line and this device. */
  register(deviceUser: string, req: BankEnrol): Promise<BankAnswer> {
    return this.#answer('register', deviceUser, async () => {
      const weak = weakPassword(req.password, req.name);
      if (weak) refuse('BANK_PASSWORD_WEAK', `password too weak: ${weak}`);
      const s = this.#o.store;
      if (s.accountByName(req.name)) refuse('BANK_NAME_TAKEN', 'this login name is taken');
      const mode = req.ids.idKind === 'card' ? 1 : this.#o.mode;
      const ids = await this.#idsToBind(req.ids, mode);
      if (ids.some((i) => s.binding(i))) refuse('BANK_ID_BOUND', 'this line is already bound to an account');
      const verifier = await this.#o.hasher.hash(req.password);
      const now = this.#now();
      for (let attempt = 0; attempt < 4; attempt++) {
        const accountNo = newAccountNumber();
        const r = s.register({ accountNo, name: req.name, verifier, ids, deviceUser, now });
        if (r === 'name-taken') refuse('BANK_NAME_TAKEN', 'this login name is taken');
        if (r === 'id-bound') refuse('BANK_ID_BOUND', 'this line is already bound to an account');
        if (r === 'ok') {
          this.#o.log.info('bank account opened', { account: maskAccount(accountNo), device: deviceUser, mode, ids: ids.map((i) => i.kind).join('+') });
          return { kind: 'registered', registered: { account: accountNo, mode, boundAt: now } };
        }
      }
      throw new Error('no free account number after 4 draws');
    });
  }

  /** bankLogin (S4.2-S4.4, S4.7): the account page, or the "login not allowed" notice. */
  login(deviceUser: string, req: BankLogin): Promise<BankAnswer> {
    return this.#answer('login', deviceUser, async () => {
      if (req.mech !== 'password') refuse('BANK_MECH_UNSUPPORTED', `mechanism '${req.mech}' is not verified by this bank yet`);
      const s = this.#o.store;
      // The person's verifier is always computed (a dummy one for an unknown name), alongside
      // the line's lookup, so neither the answer's code nor its time says which names exist.
      const account = s.accountByName(req.name);
      // Both settle before any verdict: a refusal of the line does not cut the scrypt short.
      const [pw, fb] = await Promise.allSettled([this.#o.hasher.verify(req.proof, account?.verifier ?? null), this.#findBinding(req.ids)]);
      req.proof.fill(0);
      if (fb.status === 'rejected') throw fb.reason;
      if (pw.status === 'rejected') throw pw.reason;
      const pwOk = pw.value;
      const found = fb.value;
      const { binding, mode } = found;
      if (!pwOk || !account || account.accountNo !== binding.accountNo) refuse('BANK_BAD_CREDENTIALS', 'login name or password is wrong');
      if (binding.deviceUser !== deviceUser) refuse('BANK_DEVICE_MISMATCH', 'this line is bound to another device');
      if (mode === 2) await this.#checkSwap(found.number!, binding.boundAt);
      const now = this.#now();
      s.recordLogin(account!.accountNo, now, mode, deviceUser);
      const token = randomBytes(32);
      const ttlS = this.#o.pageTtlS ?? 300;
      s.putPageToken(token, account!.accountNo, now + ttlS * 1000, now);
      const bindings = s.bindingsOf(account!.accountNo);
      const page: BankPage = {
        account: maskAccount(account!.accountNo),
        mode,
        binding: { ids: idsFromBindings(bindings), boundAt: binding.boundAt },
        lastLogins: s.lastLogins(account!.accountNo),
        token,
        ttlS,
      };
      this.#o.log.info('bank login ok', { account: page.account, device: deviceUser, mode });
      return { kind: 'page', page };
    });
  }

  /** bankRebind: after a SIM swap, the owner moves the binding to the new card, from the device that holds it. */
  rebind(deviceUser: string, req: BankEnrol): Promise<BankAnswer> {
    return this.#answer('rebind', deviceUser, async () => {
      const s = this.#o.store;
      const account = s.accountByName(req.name);
      const pwOk = await this.#o.hasher.verify(req.password, account?.verifier ?? null);
      if (!pwOk || !account) refuse('BANK_BAD_CREDENTIALS', 'login name or password is wrong');
      const old = s.bindingsOf(account!.accountNo);
      if (old.some((b) => b.deviceUser !== deviceUser)) refuse('BANK_DEVICE_MISMATCH', 'only the device that holds the binding may re-bind it');
      const mode = req.ids.idKind === 'card' ? 1 : (account!.mode ?? this.#o.mode);
      const ids = await this.#idsToBind(req.ids, mode);
      const now = this.#now();
      if (s.rebind(account!.accountNo, ids, deviceUser, now) === 'id-bound') refuse('BANK_ID_BOUND', 'this line is already bound to another account');
      this.#o.log.info('bank binding moved', { account: maskAccount(account!.accountNo), device: deviceUser, mode });
      return { kind: 'registered', registered: { account: account!.accountNo, mode, boundAt: now } };
    });
  }

  /**
   * The account page of a token handed out in a bankPage: what the HTML page shows, 'expired',
   * or null (never issued).
   */
  page(token: Uint8Array): { account: string; ids: LineIds; boundAt: number; lastLogins: { at: number; mode: BankMode }[] } | 'expired' | null {
    const s = this.#o.store;
    const t = s.pageToken(token, this.#now());
    if (t === null || t === 'expired') return t;
    const bindings = s.bindingsOf(t.accountNo);
    if (bindings.length === 0) return null;
    return { account: maskAccount(t.accountNo), ids: idsFromBindings(bindings), boundAt: Math.min(...bindings.map((b) => b.boundAt)), lastLogins: s.lastLogins(t.accountNo) };
  }

  /** Runs a request; a Refusal becomes bankRefused (logged with its code, never the password). */
  async #answer(what: string, deviceUser: string, f: () => Promise<BankAnswer>): Promise<BankAnswer> {
    try {
      return await f();
    } catch (e) {
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
  async #findBinding(ids: LineIds): Promise<{ binding: Binding; mode: BankMode; number?: string }> {
    const s = this.#o.store;
    const first = lineIdsOf(ids)[0]!;
    const direct = s.binding(first);
    if (ids.idKind === 'card') return direct ? { binding: direct, mode: 1 } : refuse('BANK_NOT_BOUND', 'this card is not bound to an account');
    const accountMode = direct ? (s.accountByNumber(direct.accountNo)?.mode ?? this.#o.mode) : this.#o.mode;
    if (direct && accountMode === 1) return { binding: direct, mode: 1 };
    if (accountMode === 1) refuse('BANK_NOT_BOUND', 'this card is not bound to an account');
    const number = await this.#operatorNumber(ids);
    const viaNumber = s.binding({ kind: 'msisdn', value: number });
    if (!viaNumber || (direct && direct.accountNo !== viaNumber.accountNo)) refuse('BANK_NOT_BOUND', 'the line of this card is not bound to an account');
    return { binding: viaNumber!, mode: 2, number };
  }

  /** The identifiers a registration or re-binding binds: mode 2 adds the number the operator gives (S4.4), after the validity check (S4.6). */
  async #idsToBind(ids: LineIds, mode: BankMode): Promise<LineId[]> {
    const out = lineIdsOf(ids);
    if (mode === 1 || ids.idKind === 'card') return out;
    const number = await this.#operatorNumber(ids);
    return [...out.filter((i) => i.kind !== 'msisdn'), { kind: 'msisdn', value: number }];
  }

  /** S4.6 + S4.4: the operator checks the card, then gives the line's number. Bounded in time. */
  async #operatorNumber(ids: Extract<LineIds, { idKind: 'sim' }>): Promise<string> {
    return this.#operator('card lookup', async (op) => {
      const q = ids.msisdn ? { iccid: ids.iccid, imsi: ids.imsi, phoneNumber: ids.msisdn } : { iccid: ids.iccid, imsi: ids.imsi };
      const [valid, info] = await Promise.all([op.checkValidity(q), op.phoneNumberOf({ iccid: ids.iccid }).catch((e: unknown) => e)]);
      if (!valid.valid) refuse('BANK_CARD_INVALID', `the operator says this card is invalid (${valid.reason ?? 'no reason given'})`);
      if (info instanceof Error) throw info;
      return (info as { phoneNumber: string }).phoneNumber;
    });
  }

  /** SIM swap (beyond the patent): a card change of the line after the binding refuses the login until a re-binding. */
  async #checkSwap(number: string, boundAt: number): Promise<void> {
    const r = await this.#operator('sim swap', (op) => op.retrieveSimSwapDate(number));
    if (r.latestSimChange && r.latestSimChange.getTime() > boundAt) {
      refuse('BANK_SIM_SWAPPED', `the card of this line changed on ${r.latestSimChange.toISOString()}, after the binding: re-bind it from the bound device`);
    }
  }

  /** One operator step with an overall deadline; any failure of the operator is BANK_OPERATOR_UNAVAILABLE (its code logged). */
  async #operator<T>(what: string, f: (op: OperatorApi) => Promise<T>): Promise<T> {
    const op = this.#o.operator;
    if (!op) refuse('BANK_OPERATOR_UNAVAILABLE', 'no operator is configured for mode 2');
    const ms = this.#o.operatorDeadlineMs ?? 3_000;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new OperatorError('OPERATOR_TIMEOUT', `${what}: no answer within ${ms} ms`, true)), ms);
    });
    try {
      return await Promise.race([f(op!), deadline]);
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
}
