// The bank's tables (S4.1, S4.3, S4.4, S4.7, S4.8), in the business store's SQLite file
// (schema 4 of biz-server/store.ts). A bank account is the person's, with the bank's own
// account number (`account_no`: 15 digits, Luhn-checked; not the S0 `accounts.account`,
// which names a device's business login) and the person's login name and password verifier
// (biz-server/password-verifier.ts: the only place the verifier is ever written). A binding
// ties one line identifier (iccid, imsi, msisdn, or a bank card's id) to one account and
// records the device (its S0 user) that registered it, and when (`bound_at`). Every
// multi-row change is one IMMEDIATE transaction; every row read back is validated.
//
// The person layer (S3.3, schema 5): per account and site (a business server's name: each
// has its own fingerprint key and TOTP seed in the phone's chip), the fingerprint public key
// the registration's attestation vouched for, the TOTP seed with its RFC 6238 parameters, and
// the last time step accepted. The seed is as good as the one-time code it makes, so it is kept
// only sealed under the business servers' storage key (as the login keys are, store.ts),
// bound to the account and the site: a copy of the database alone makes no code, and a seed
// moved to another row does not open.
//
// The operator's SIM-change record of a binding (schema 6, docs/decisions.md 137): a mode-2
// binding keeps the line's latest SIM change as the operator gave it when the binding was made
// (`sim_change_asked` 1, `sim_change_at` its time in the operator's clock, NULL: none known),
// so a login compares the operator's dates with the operator's dates only. Bindings of mode 1,
// and those made before schema 6, have `sim_change_asked` 0 (not asked).
import { createHash } from 'node:crypto';
import { utf8ToBytes } from '@noble/hashes/utils.js';
import { corrupt, type Db } from '../server-kit/sqlite.ts';
import { USER_RE } from '../protocol/messages.ts';
import { BANK_NAME_RE, ACCOUNT_RE, type BankMode } from '../protocol/bank-messages.ts';
import { encode } from '../protocol/cbor.ts';
import { sealBox, openBox } from '../protocol/sealed-box.ts';
import { systemRng } from '../protocol/channel.ts';
import { isSite, isTotpParams, decodeOtpSeed, OTP_SEED_MIN, OTP_SEED_MAX, FP_PUBLIC_KEY_BYTES, type TotpParams } from '../protocol/person.ts';
import { ImplementationError } from '../protocol/errors.ts';
import { rowChecker, type Awaitable } from '../server-kit/store-choice.ts';

export const BANK_SCHEMA = `
  CREATE TABLE bank_accounts (
    account_no TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    verifier TEXT NOT NULL,
    mode INTEGER,                       -- NULL: the server's mode; 1 or 2: this account's override
    created_at INTEGER NOT NULL
  );
  CREATE TABLE bank_bindings (
    id_kind TEXT NOT NULL,              -- iccid | imsi | msisdn | card
    id_value TEXT NOT NULL,
    account_no TEXT NOT NULL REFERENCES bank_accounts(account_no),
    device_user TEXT NOT NULL,          -- the S0 user of the device that registered it
    bound_at INTEGER NOT NULL,
    PRIMARY KEY (id_kind, id_value)
  );
  CREATE INDEX bank_bindings_account ON bank_bindings(account_no);
  CREATE TABLE bank_logins (
    account_no TEXT NOT NULL REFERENCES bank_accounts(account_no),
    at INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    device_user TEXT NOT NULL
  );
  CREATE INDEX bank_logins_account ON bank_logins(account_no, at);
  CREATE TABLE bank_page_tokens (
    token_sha256 BLOB PRIMARY KEY,      -- only a hash of the token: a copy of the file opens no page
    account_no TEXT NOT NULL REFERENCES bank_accounts(account_no),
    expires_at INTEGER NOT NULL
  )`;

/** Schema 5 (S3.3): the person layer's keys per account and site. */
export const BANK_PERSON_SCHEMA = `
  CREATE TABLE bank_person (
    account_no TEXT NOT NULL REFERENCES bank_accounts(account_no),
    site TEXT NOT NULL,                 -- the business server's name (the chip keeps its keys per site)
    fp_public_key BLOB,                 -- Ed25519, 32 bytes (public); NULL: no fingerprint here
    otp_seed BLOB,                      -- sealed under the storage key, never in clear; NULL: no one-time code
    otp_last_step INTEGER,              -- the last RFC 6238 time step accepted (a code is good once)
    created_at INTEGER NOT NULL,
    PRIMARY KEY (account_no, site)
  )`;

/**
 * Schema 6 (docs/decisions.md 137): the operator's SIM-change record of each binding.
 * `sim_change_asked` 1: the operator was asked at binding, `sim_change_at` its answer (ms in the
 * operator's clock; NULL: no change known). Existing rows get 0 and NULL (not asked: the bank
 * falls back to the rule of before, the operator's date against `bound_at`, until the owner's
 * next re-binding records one). No SQL comments here: SQLite copies a column's text, comment
 * and all, into the table's stored CREATE statement.
 */
export const BANK_SIM_CHANGE_SCHEMA = `
  ALTER TABLE bank_bindings ADD COLUMN sim_change_asked INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE bank_bindings ADD COLUMN sim_change_at INTEGER;`;

/** A site's TOTP seed and its parameters. */
export interface OtpSeed { seed: Uint8Array; params: TotpParams }
/** What the bank keeps of a person at one site (S3.3). */
export interface PersonKeys { fpPublicKey: Uint8Array | null; otp: OtpSeed | null; lastStep: number | null }

const seedAad = (accountNo: string, site: string) => utf8ToBytes(`usbphone/v1 bank otp seed|${accountNo}|${site}`);

/** Seals a TOTP seed and its parameters for the row of (accountNo, site). */
export function sealOtpSeed(storageKey: Uint8Array, accountNo: string, site: string, o: OtpSeed): Uint8Array {
  if (o.seed.length < OTP_SEED_MIN || o.seed.length > OTP_SEED_MAX || !isTotpParams(o.params)) throw new ImplementationError('BANK_BAD_SEED', 'a TOTP seed of 16..64 bytes with valid parameters');
  const pt = encode([o.seed, o.params.algorithm, o.params.digits, o.params.period]);
  const box = sealBox(storageKey, pt, seedAad(accountNo, site), systemRng);
  pt.fill(0);
  return box;
}

/** Opens a sealed seed of the row (accountNo, site); null when it does not open or is malformed. */
export function openOtpSeed(storageKey: Uint8Array, accountNo: string, site: string, box: Uint8Array): OtpSeed | null {
  const pt = openBox(storageKey, box, seedAad(accountNo, site));
  return pt ? decodeOtpSeed(pt) : null;
}

export type IdKind = 'iccid' | 'imsi' | 'msisdn' | 'card';
const ID_KINDS: readonly IdKind[] = ['iccid', 'imsi', 'msisdn', 'card'];
export interface LineId { kind: IdKind; value: string }

export interface BankAccount { accountNo: string; name: string; verifier: string; mode: BankMode | null; createdAt: number }
/**
 * The operator's answer, when the binding was made, to "the line's latest SIM change"
 * (CAMARA retrieve-date): `at` in ms since the epoch by the operator's clock, null when it knew
 * of none (never changed, or before the period it monitors).
 */
export interface SimChange { at: number | null }
/**
 * One identifier bound to an account. `simChange`: the operator's SIM-change record of the
 * binding (mode 2); null when the operator was not asked (a mode-1 binding, or one made before
 * schema 6).
 */
export interface Binding { kind: IdKind; value: string; accountNo: string; deviceUser: string; boundAt: number; simChange: SimChange | null }

/** Last logins kept per account (what bankPage shows). */
export const LAST_LOGINS_KEPT = 8;

export const isTime = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isMode = (v: unknown): v is BankMode => v === 1 || v === 2;

export function accountFromRow(r: Record<string, unknown>): BankAccount {
  const what = 'bank account row';
  if (typeof r.account_no !== 'string' || !ACCOUNT_RE.test(r.account_no)) corrupt(what, 'bad account number');
  if (typeof r.name !== 'string' || !BANK_NAME_RE.test(r.name)) corrupt(what, 'bad name');
  if (typeof r.verifier !== 'string' || r.verifier.length > 200) corrupt(what, 'bad verifier');
  if (r.mode !== null && !isMode(r.mode)) corrupt(what, 'bad mode');
  if (!isTime(r.created_at)) corrupt(what, 'bad created_at');
  return { accountNo: r.account_no, name: r.name, verifier: r.verifier, mode: r.mode as BankMode | null, createdAt: r.created_at };
}

export function bindingFromRow(r: Record<string, unknown>): Binding {
  const what = 'bank binding row';
  if (!ID_KINDS.includes(r.id_kind as IdKind)) corrupt(what, 'bad id kind');
  if (typeof r.id_value !== 'string' || r.id_value.length === 0 || r.id_value.length > 32) corrupt(what, 'bad id value');
  if (typeof r.account_no !== 'string' || !ACCOUNT_RE.test(r.account_no)) corrupt(what, 'bad account number');
  if (typeof r.device_user !== 'string' || !USER_RE.test(r.device_user)) corrupt(what, 'bad device user');
  if (!isTime(r.bound_at)) corrupt(what, 'bad bound_at');
  if (r.sim_change_asked !== 0 && r.sim_change_asked !== 1) corrupt(what, 'bad sim_change_asked');
  if (r.sim_change_at !== null && !isTime(r.sim_change_at)) corrupt(what, 'bad sim_change_at');
  if (r.sim_change_asked === 0 && r.sim_change_at !== null) corrupt(what, 'a sim_change_at without sim_change_asked');
  const simChange = r.sim_change_asked === 1 ? { at: r.sim_change_at as number | null } : null;
  return { kind: r.id_kind as IdKind, value: r.id_value, accountNo: r.account_no, deviceUser: r.device_user, boundAt: r.bound_at, simChange };
}

export const tokenHash = (token: Uint8Array): Buffer => createHash('sha256').update(token).digest();

/** What a registration writes (BankStore.register). */
export interface Registration {
  accountNo: string;
  name: string;
  verifier: string;
  ids: LineId[];
  deviceUser: string;
  now: number;
  /** The operator's SIM-change record of the line, kept with every binding (mode 2); absent or null: not asked (mode 1). */
  simChange?: SimChange | null;
  /** The person's keys at the registering site (S3.3), when it provisions any. */
  person?: { site: string; fpPublicKey: Uint8Array | null; otp: OtpSeed | null };
}

/** The bank's store (both back ends): every method may answer with a promise (PostgreSQL). */
export interface BankStore {
  register(a: Registration): Awaitable<'ok' | 'name-taken' | 'id-bound' | 'number-taken'>;
  person(accountNo: string, site: string): Awaitable<PersonKeys | null>;
  accountByName(name: string): Awaitable<BankAccount | null>;
  accountByNumber(accountNo: string): Awaitable<BankAccount | null>;
  binding(id: LineId): Awaitable<Binding | null>;
  bindingsOf(accountNo: string): Awaitable<Binding[]>;
  rebind(accountNo: string, ids: LineId[], deviceUser: string, now: number, simChange?: SimChange | null): Awaitable<'ok' | 'id-bound'>;
  recordLogin(accountNo: string, at: number, mode: BankMode, deviceUser: string, otp?: { site: string; step: number } | null): Awaitable<boolean>;
  lastLogins(accountNo: string, n?: number): Awaitable<{ at: number; mode: BankMode }[]>;
  setMode(name: string, mode: BankMode | null): Awaitable<boolean>;
  putPageToken(token: Uint8Array, accountNo: string, expiresAt: number, now: number): Awaitable<void>;
  pageToken(token: Uint8Array, now: number): Awaitable<{ accountNo: string } | 'expired' | null>;
  /** Problems found in the bank's rows (empty when none): rows failing validation, seeds that do not open. */
  check(): Promise<string[]>;
}

/** Checks a registration's person keys before anything is written (both back ends). */
export function checkRegistration(a: Registration): void {
  checkSimChange(a.simChange ?? null);
  if (a.person && !isSite(a.person.site)) throw new ImplementationError('BANK_BAD_SITE', 'a site is a business server name');
  if (a.person?.fpPublicKey && a.person.fpPublicKey.length !== FP_PUBLIC_KEY_BYTES) throw new ImplementationError('BANK_BAD_KEY', 'a fingerprint public key is 32 bytes');
}

/** Checks a SIM-change record before it is written (both back ends): BANK_BAD_SIM_CHANGE. */
export function checkSimChange(c: SimChange | null): void {
  if (c !== null && (typeof c !== 'object' || (c.at !== null && !isTime(c.at)))) throw new ImplementationError('BANK_BAD_SIM_CHANGE', 'a SIM-change record is { at: ms since the epoch | null }');
}

/** The two columns of a SIM-change record: [sim_change_asked, sim_change_at]. */
export const simChangeColumns = (c: SimChange | null | undefined): [0 | 1, number | null] => (c ? [1, c.at] : [0, null]);

/** A person row of (accountNo, site), validated, its seed opened: STORE_CORRUPT_ROW otherwise. */
export function personFromRow(r: Record<string, unknown>, storageKey: Uint8Array, accountNo: string, site: string): PersonKeys {
  const what = 'bank person row';
  if (r.fp_public_key !== null && !(r.fp_public_key instanceof Uint8Array && r.fp_public_key.length === FP_PUBLIC_KEY_BYTES)) corrupt(what, 'bad fingerprint key');
  if (r.otp_seed !== null && !(r.otp_seed instanceof Uint8Array)) corrupt(what, 'bad seed');
  if (r.otp_last_step !== null && !isTime(r.otp_last_step)) corrupt(what, 'bad last step');
  let otp: OtpSeed | null = null;
  if (r.otp_seed !== null) {
    otp = openOtpSeed(storageKey, accountNo, site, r.otp_seed as Uint8Array);
    if (!otp) corrupt(what, 'the TOTP seed does not open under the storage key for this account and site (another store.key, moved, or tampered)');
  }
  return { fpPublicKey: r.fp_public_key === null ? null : Uint8Array.from(r.fp_public_key as Uint8Array), otp, lastStep: r.otp_last_step as number | null };
}

export function loginFromRow(r: Record<string, unknown>): { at: number; mode: BankMode } {
  if (!isTime(r.at) || !isMode(r.mode)) corrupt('bank login row', 'bad time or mode');
  return { at: r.at as number, mode: r.mode as BankMode };
}

export function pageTokenFromRow(r: Record<string, unknown> | undefined, now: number): { accountNo: string } | 'expired' | null {
  if (!r) return null;
  if (typeof r.account_no !== 'string' || !isTime(r.expires_at)) corrupt('bank page token row', 'bad account or expiry');
  return (r.expires_at as number) <= now ? 'expired' : { accountNo: r.account_no as string };
}

/** The integrity check of the bank's tables (both back ends). */
export function bankProblems(t: { accounts: Record<string, unknown>[]; bindings: Record<string, unknown>[]; logins: Record<string, unknown>[]; person: Record<string, unknown>[]; tokens: Record<string, unknown>[] }, storageKey: Uint8Array): string[] {
  const { each, problems: out } = rowChecker();
  each(t.accounts, accountFromRow);
  each(t.bindings, bindingFromRow);
  each(t.logins, loginFromRow);
  each(t.person, (r) => personFromRow(r, storageKey, String(r.account_no), String(r.site)).otp?.seed.fill(0));
  each(t.tokens, (r) => pageTokenFromRow(r, 0));
  return out;
}

/** The bank's queries over the business store's database (opened and migrated by SqliteBizStore). */
export class SqliteBankStore implements BankStore {
  readonly #q;
  readonly #registerTx;
  readonly #rebindTx;
  readonly #recordLoginTx;

  readonly #storageKey: Uint8Array;

  /** storageKey: the business servers' storage key (store.key), which the TOTP seeds are sealed under. */
  constructor(private readonly db: Db, storageKey: Uint8Array) {
    if (!(storageKey instanceof Uint8Array) || storageKey.length !== 32) throw new ImplementationError('BIZ_BAD_STORAGE_KEY', 'the storage key must be 32 bytes');
    this.#storageKey = Uint8Array.from(storageKey);
    const p = (sql: string) => db.prepare(sql);
    this.#q = {
      byName: p('SELECT * FROM bank_accounts WHERE name = ?'),
      byNo: p('SELECT * FROM bank_accounts WHERE account_no = ?'),
      binding: p('SELECT * FROM bank_bindings WHERE id_kind = ? AND id_value = ?'),
      bindingsOf: p('SELECT * FROM bank_bindings WHERE account_no = ? ORDER BY id_kind'),
      insAccount: p('INSERT INTO bank_accounts (account_no, name, verifier, mode, created_at) VALUES (?, ?, ?, NULL, ?)'),
      insBinding: p('INSERT INTO bank_bindings (id_kind, id_value, account_no, device_user, bound_at, sim_change_asked, sim_change_at) VALUES (?, ?, ?, ?, ?, ?, ?)'),
      delBindings: p('DELETE FROM bank_bindings WHERE account_no = ?'),
      insLogin: p('INSERT INTO bank_logins (account_no, at, mode, device_user) VALUES (?, ?, ?, ?)'),
      trimLogins: p(`DELETE FROM bank_logins WHERE account_no = ? AND rowid NOT IN (SELECT rowid FROM bank_logins WHERE account_no = ? ORDER BY at DESC, rowid DESC LIMIT ${LAST_LOGINS_KEPT})`),
      lastLogins: p('SELECT at, mode FROM bank_logins WHERE account_no = ? ORDER BY at DESC, rowid DESC LIMIT ?'),
      setMode: p('UPDATE bank_accounts SET mode = ? WHERE name = ?'),
      insToken: p('INSERT INTO bank_page_tokens (token_sha256, account_no, expires_at) VALUES (?, ?, ?)'),
      token: p('SELECT account_no, expires_at FROM bank_page_tokens WHERE token_sha256 = ?'),
      purgeTokens: p('DELETE FROM bank_page_tokens WHERE expires_at < ?'),
      insPerson: p('INSERT INTO bank_person (account_no, site, fp_public_key, otp_seed, otp_last_step, created_at) VALUES (?, ?, ?, ?, NULL, ?)'),
      person: p('SELECT * FROM bank_person WHERE account_no = ? AND site = ?'),
      // RFC 6238 §5.2 at the store: the step moves only forward (a compare-and-set, so two
      // sessions with the same code cannot both pass).
      useStep: p('UPDATE bank_person SET otp_last_step = ? WHERE account_no = ? AND site = ? AND otp_seed IS NOT NULL AND (otp_last_step IS NULL OR otp_last_step < ?)'),
    };
    const q = this.#q;
    this.#registerTx = db.transaction((a: Registration) => {
      if (q.byName.get(a.name)) return 'name-taken' as const;
      if (a.ids.some((i) => q.binding.get(i.kind, i.value))) return 'id-bound' as const;
      if (q.byNo.get(a.accountNo)) return 'number-taken' as const;
      q.insAccount.run(a.accountNo, a.name, a.verifier, a.now);
      for (const i of a.ids) q.insBinding.run(i.kind, i.value, a.accountNo, a.deviceUser, a.now, ...simChangeColumns(a.simChange));
      const pp = a.person;
      if (pp && (pp.fpPublicKey || pp.otp)) {
        q.insPerson.run(a.accountNo, pp.site, pp.fpPublicKey, pp.otp ? sealOtpSeed(this.#storageKey, a.accountNo, pp.site, pp.otp) : null, a.now);
      }
      return 'ok' as const;
    });
    this.#rebindTx = db.transaction((accountNo: string, ids: LineId[], deviceUser: string, now: number, simChange: SimChange | null) => {
      for (const i of ids) {
        const b = q.binding.get(i.kind, i.value) as Record<string, unknown> | undefined;
        if (b && bindingFromRow(b).accountNo !== accountNo) return 'id-bound' as const;
      }
      q.delBindings.run(accountNo);
      for (const i of ids) q.insBinding.run(i.kind, i.value, accountNo, deviceUser, now, ...simChangeColumns(simChange));
      return 'ok' as const;
    });
    this.#recordLoginTx = db.transaction((accountNo: string, at: number, mode: BankMode, deviceUser: string, otp: { site: string; step: number } | null) => {
      if (otp && q.useStep.run(otp.step, accountNo, otp.site, otp.step).changes !== 1) return false;
      q.insLogin.run(accountNo, at, mode, deviceUser);
      q.trimLogins.run(accountNo, accountNo);
      return true;
    });
  }

  /**
   * Opens an account with its bindings and, when given, the person's keys at the registering
   * site (S3.3), all or nothing; says why not (the number clash is the caller's to retry with
   * another).
   */
  register(a: Registration): 'ok' | 'name-taken' | 'id-bound' | 'number-taken' {
    checkRegistration(a);
    return this.#registerTx.immediate(a);
  }

  /**
   * The person's keys of `accountNo` at `site` (S3.3), the seed opened; null when the account
   * has none there. STORE_CORRUPT_ROW for a row that fails its checks or a seed that does not
   * open under the storage key for this account and site.
   */
  person(accountNo: string, site: string): PersonKeys | null {
    const r = this.#q.person.get(accountNo, site) as Record<string, unknown> | undefined;
    return r ? personFromRow(r, this.#storageKey, accountNo, site) : null;
  }

  accountByName(name: string): BankAccount | null {
    const r = this.#q.byName.get(name) as Record<string, unknown> | undefined;
    return r ? accountFromRow(r) : null;
  }

  accountByNumber(accountNo: string): BankAccount | null {
    const r = this.#q.byNo.get(accountNo) as Record<string, unknown> | undefined;
    return r ? accountFromRow(r) : null;
  }

  binding(id: LineId): Binding | null {
    const r = this.#q.binding.get(id.kind, id.value) as Record<string, unknown> | undefined;
    return r ? bindingFromRow(r) : null;
  }

  bindingsOf(accountNo: string): Binding[] {
    return (this.#q.bindingsOf.all(accountNo) as Record<string, unknown>[]).map(bindingFromRow);
  }

  /**
   * Replaces every binding of the account by `ids`, bound now by `deviceUser`, with the
   * operator's SIM-change record (null: not asked); 'id-bound' (nothing changed) when one
   * belongs to another account. BANK_BAD_SIM_CHANGE for a malformed record.
   */
  rebind(accountNo: string, ids: LineId[], deviceUser: string, now: number, simChange: SimChange | null = null): 'ok' | 'id-bound' {
    checkSimChange(simChange);
    return this.#rebindTx.immediate(accountNo, ids, deviceUser, now, simChange);
  }

  /**
   * Records a login that goes through. With `otp`, in the same transaction, the time step its
   * code was accepted for becomes the account's last step at that site, only if above the one
   * stored (compare-and-set): false, and nothing recorded, when another session used that step
   * (or a later one) meanwhile.
   */
  recordLogin(accountNo: string, at: number, mode: BankMode, deviceUser: string, otp: { site: string; step: number } | null = null): boolean {
    return this.#recordLoginTx.immediate(accountNo, at, mode, deviceUser, otp);
  }

  /** Newest first. */
  lastLogins(accountNo: string, n = LAST_LOGINS_KEPT): { at: number; mode: BankMode }[] {
    return (this.#q.lastLogins.all(accountNo, n) as Record<string, unknown>[]).map(loginFromRow);
  }

  /** The per-account mode override (null: the server's); false for an unknown name. */
  setMode(name: string, mode: BankMode | null): boolean {
    return this.#q.setMode.run(mode, name).changes === 1;
  }

  putPageToken(token: Uint8Array, accountNo: string, expiresAt: number, now: number): void {
    this.#q.purgeTokens.run(now);
    this.#q.insToken.run(tokenHash(token), accountNo, expiresAt);
  }

  /** The account a page token opens: its number, 'expired', or null for a token never issued. */
  pageToken(token: Uint8Array, now: number): { accountNo: string } | 'expired' | null {
    return pageTokenFromRow(this.#q.token.get(tokenHash(token)) as Record<string, unknown> | undefined, now);
  }

  async check(): Promise<string[]> {
    const all = (t: string) => this.db.prepare(`SELECT * FROM ${t}`).all() as Record<string, unknown>[];
    return bankProblems({ accounts: all('bank_accounts'), bindings: all('bank_bindings'), logins: all('bank_logins'), person: all('bank_person'), tokens: all('bank_page_tokens') }, this.#storageKey);
  }
}
