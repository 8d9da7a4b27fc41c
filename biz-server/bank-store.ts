// The bank's tables (S4.1, S4.3, S4.4, S4.7, S4.8), in the business store's SQLite file
// (schema 4 of biz-server/store.ts). A bank account is the person's, with the bank's own
// account number (`account_no`: 15 digits, Luhn-checked; not the S0 `accounts.account`,
// which names a device's business login) and the person's login name and password verifier
// (biz-server/password-verifier.ts: the only place the verifier is ever written). A binding
// ties one line identifier (iccid, imsi, msisdn, or a bank card's id) to one account and
// records the device (its S0 user) that registered it, and when (`bound_at`). Every
// multi-row change is one IMMEDIATE transaction; every row read back is validated.
import { createHash } from 'node:crypto';
import { corrupt, type Db } from '../server-kit/sqlite.ts';
import { USER_RE } from '../protocol/messages.ts';
import { BANK_NAME_RE, ACCOUNT_RE, type BankMode } from '../protocol/bank-messages.ts';

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

export type IdKind = 'iccid' | 'imsi' | 'msisdn' | 'card';
const ID_KINDS: readonly IdKind[] = ['iccid', 'imsi', 'msisdn', 'card'];
export interface LineId { kind: IdKind; value: string }

export interface BankAccount { accountNo: string; name: string; verifier: string; mode: BankMode | null; createdAt: number }
export interface Binding { kind: IdKind; value: string; accountNo: string; deviceUser: string; boundAt: number }

/** Last logins kept per account (what bankPage shows). */
export const LAST_LOGINS_KEPT = 8;

const isTime = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isMode = (v: unknown): v is BankMode => v === 1 || v === 2;

function accountFromRow(r: Record<string, unknown>): BankAccount {
  const what = 'bank account row';
  if (typeof r.account_no !== 'string' || !ACCOUNT_RE.test(r.account_no)) corrupt(what, 'bad account number');
  if (typeof r.name !== 'string' || !BANK_NAME_RE.test(r.name)) corrupt(what, 'bad name');
  if (typeof r.verifier !== 'string' || r.verifier.length > 200) corrupt(what, 'bad verifier');
  if (r.mode !== null && !isMode(r.mode)) corrupt(what, 'bad mode');
  if (!isTime(r.created_at)) corrupt(what, 'bad created_at');
  return { accountNo: r.account_no, name: r.name, verifier: r.verifier, mode: r.mode as BankMode | null, createdAt: r.created_at };
}

function bindingFromRow(r: Record<string, unknown>): Binding {
  const what = 'bank binding row';
  if (!ID_KINDS.includes(r.id_kind as IdKind)) corrupt(what, 'bad id kind');
  if (typeof r.id_value !== 'string' || r.id_value.length === 0 || r.id_value.length > 32) corrupt(what, 'bad id value');
  if (typeof r.account_no !== 'string' || !ACCOUNT_RE.test(r.account_no)) corrupt(what, 'bad account number');
  if (typeof r.device_user !== 'string' || !USER_RE.test(r.device_user)) corrupt(what, 'bad device user');
  if (!isTime(r.bound_at)) corrupt(what, 'bad bound_at');
  return { kind: r.id_kind as IdKind, value: r.id_value, accountNo: r.account_no, deviceUser: r.device_user, boundAt: r.bound_at };
}

export const tokenHash = (token: Uint8Array): Buffer => createHash('sha256').update(token).digest();

/** The bank's queries over the business store's database (opened and migrated by SqliteBizStore). */
export class BankStore {
  readonly #q;
  readonly #registerTx;
  readonly #rebindTx;
  readonly #recordLoginTx;

  constructor(private readonly db: Db) {
    const p = (sql: string) => db.prepare(sql);
    this.#q = {
      byName: p('SELECT * FROM bank_accounts WHERE name = ?'),
      byNo: p('SELECT * FROM bank_accounts WHERE account_no = ?'),
      binding: p('SELECT * FROM bank_bindings WHERE id_kind = ? AND id_value = ?'),
      bindingsOf: p('SELECT * FROM bank_bindings WHERE account_no = ? ORDER BY id_kind'),
      insAccount: p('INSERT INTO bank_accounts (account_no, name, verifier, mode, created_at) VALUES (?, ?, ?, NULL, ?)'),
      insBinding: p('INSERT INTO bank_bindings (id_kind, id_value, account_no, device_user, bound_at) VALUES (?, ?, ?, ?, ?)'),
      delBindings: p('DELETE FROM bank_bindings WHERE account_no = ?'),
      insLogin: p('INSERT INTO bank_logins (account_no, at, mode, device_user) VALUES (?, ?, ?, ?)'),
      trimLogins: p(`DELETE FROM bank_logins WHERE account_no = ? AND rowid NOT IN (SELECT rowid FROM bank_logins WHERE account_no = ? ORDER BY at DESC, rowid DESC LIMIT ${LAST_LOGINS_KEPT})`),
      lastLogins: p('SELECT at, mode FROM bank_logins WHERE account_no = ? ORDER BY at DESC, rowid DESC LIMIT ?'),
      setMode: p('UPDATE bank_accounts SET mode = ? WHERE name = ?'),
      insToken: p('INSERT INTO bank_page_tokens (token_sha256, account_no, expires_at) VALUES (?, ?, ?)'),
      token: p('SELECT account_no, expires_at FROM bank_page_tokens WHERE token_sha256 = ?'),
      purgeTokens: p('DELETE FROM bank_page_tokens WHERE expires_at < ?'),
    };
    const q = this.#q;
    this.#registerTx = db.transaction((a: { accountNo: string; name: string; verifier: string; ids: LineId[]; deviceUser: string; now: number }) => {
      if (q.byName.get(a.name)) return 'name-taken' as const;
      if (a.ids.some((i) => q.binding.get(i.kind, i.value))) return 'id-bound' as const;
      if (q.byNo.get(a.accountNo)) return 'number-taken' as const;
      q.insAccount.run(a.accountNo, a.name, a.verifier, a.now);
      for (const i of a.ids) q.insBinding.run(i.kind, i.value, a.accountNo, a.deviceUser, a.now);
      return 'ok' as const;
    });
    this.#rebindTx = db.transaction((accountNo: string, ids: LineId[], deviceUser: string, now: number) => {
      for (const i of ids) {
        const b = q.binding.get(i.kind, i.value) as Record<string, unknown> | undefined;
        if (b && bindingFromRow(b).accountNo !== accountNo) return 'id-bound' as const;
      }
      q.delBindings.run(accountNo);
      for (const i of ids) q.insBinding.run(i.kind, i.value, accountNo, deviceUser, now);
      return 'ok' as const;
    });
    this.#recordLoginTx = db.transaction((accountNo: string, at: number, mode: BankMode, deviceUser: string) => {
      q.insLogin.run(accountNo, at, mode, deviceUser);
      q.trimLogins.run(accountNo, accountNo);
    });
  }

  /** Opens an account with its bindings, all or nothing; says why not (the number clash is the caller's to retry with another). */
  register(a: { accountNo: string; name: string; verifier: string; ids: LineId[]; deviceUser: string; now: number }): 'ok' | 'name-taken' | 'id-bound' | 'number-taken' {
    return this.#registerTx.immediate(a);
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

  /** Replaces every binding of the account by `ids`, bound now by `deviceUser`; 'id-bound' (nothing changed) when one belongs to another account. */
  rebind(accountNo: string, ids: LineId[], deviceUser: string, now: number): 'ok' | 'id-bound' {
    return this.#rebindTx.immediate(accountNo, ids, deviceUser, now);
  }

  recordLogin(accountNo: string, at: number, mode: BankMode, deviceUser: string): void {
    this.#recordLoginTx.immediate(accountNo, at, mode, deviceUser);
  }

  /** Newest first. */
  lastLogins(accountNo: string, n = LAST_LOGINS_KEPT): { at: number; mode: BankMode }[] {
    return (this.#q.lastLogins.all(accountNo, n) as Record<string, unknown>[]).map((r) => {
      if (!isTime(r.at) || !isMode(r.mode)) corrupt('bank login row', 'bad time or mode');
      return { at: r.at, mode: r.mode };
    });
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
    const r = this.#q.token.get(tokenHash(token)) as Record<string, unknown> | undefined;
    if (!r) return null;
    if (typeof r.account_no !== 'string' || !isTime(r.expires_at)) corrupt('bank page token row', 'bad account or expiry');
    return r.expires_at <= now ? 'expired' : { accountNo: r.account_no };
  }
}
