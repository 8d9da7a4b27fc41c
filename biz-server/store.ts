// Business accounts and their login keys (S0.11, S0.14). The biz server never stores the
// secret a device holds, only the login key derived from it (passwordLoginKey), per
// generation: the current one and at most one pending one. A pending key is installed by
// the registration server (installPending), becomes current the first time a device logs in
// with it (promote), and stops being usable once expired while a current key exists.
// `max_gen` only grows, so a generation number is never reused for another key.
// Next to the pending key the store keeps the pending secret *sealed for the registration
// servers* (under a key derived from the master key, which the business server does not
// hold): a registration that finds a usable pending generation re-issues it instead of
// replacing it, atomically, so no race or crash can replace a secret a device may hold.
//
// Login keys are password-equivalent for the password mechanism, so the database holds them
// only wrapped: XChaCha20-Poly1305 under the business servers' storage key (`store.key`, a
// file beside the database, never in it), bound to the user and the generation (issue 9: a
// key moved to another row, or to another generation of its own row, does not open). A copy
// of the database alone logs nobody in; a blob that does not open is a corrupt row (wrong key
// or tampering). Schema 3 rewraps the keys of older files (bound to the user only) at open.
//
// The login path (loginKey) does the same work whatever it finds (issue 10): one row read,
// one row check and exactly one unwrap, of a dummy blob when the user or the generation is
// unknown, so the time it takes tells an observer nothing about which users or generations
// exist. Besides it, on a login's path only promote opens keys (it moves the pending key into the
// current column: a moved key is refused there, issue 9), and wipes them at once; installPending
// decides on the checked row (generations, expiry, which keys are present) and the session's
// confirmation reads the generations alone (issue 15: each of those unwraps was an
// XChaCha20-Poly1305 open whose key nothing used, left in memory unwiped). A blob altered in
// place is refused where a key is used (loginKey, promote), and check() opens every key.
//
// One interface, one SQLite implementation; on several machines a PostgreSQL implementation
// of the same interface replaces it (docs/architecture.md §"Stores").
import { utf8ToBytes } from '@noble/hashes/utils.js';
import { sealBox, openBox, BOX_OVERHEAD } from '../protocol/sealed-box.ts';
import { openDb, corrupt, type Db, type Migration } from '../server-kit/sqlite.ts';
import { SEALED_SECRET_MIN, SEALED_SECRET_MAX } from '../server-kit/admin-messages.ts';
import { USER_RE } from '../protocol/messages.ts';
import { ImplementationError } from '../protocol/errors.ts';
import { systemRng } from '../protocol/channel.ts';
import { BANK_SCHEMA, BANK_PERSON_SCHEMA, BANK_SIM_CHANGE_SCHEMA } from './bank-store.ts';
import { rowChecker, type Awaitable } from '../server-kit/store-choice.ts';

/** A wrapped login key: a sealed box (protocol/sealed-box.ts) of the 32-byte key, nonce (24) || ciphertext (32) || tag (16). */
export const WRAPPED_KEY_BYTES = BOX_OVERHEAD + 32;
// USER_RE has no '|', and the generation is the last field: one string per (user, gen).
const wrapAad = (user: string, gen: number) => utf8ToBytes(`usbphone/v1 login key|${user}|gen ${gen}`);
/** Schema 2 and older bound the user only; read by the schema 3 migration, never written. */
const wrapAadV2 = (user: string) => utf8ToBytes(`usbphone/v1 login key|${user}`);

/** Wraps a 32-byte login key for `user`'s generation `gen`: WRAPPED_KEY_BYTES. */
export function wrapLoginKey(storageKey: Uint8Array, user: string, gen: number, key: Uint8Array): Uint8Array {
  if (key.length !== 32) throw new ImplementationError('BIZ_BAD_INSTALL', 'a login key is 32 bytes');
  return sealBox(storageKey, key, wrapAad(user, gen), systemRng);
}

/** The login key, or null when the blob does not open under this storage key for this user and generation. */
export function unwrapLoginKey(storageKey: Uint8Array, user: string, gen: number, blob: Uint8Array): Uint8Array | null {
  if (blob.length !== WRAPPED_KEY_BYTES) return null;
  return openBox(storageKey, blob, wrapAad(user, gen));
}

export type AccountStatus = 'active' | 'disabled';

export interface Account {
  account: string;
  user: string;
  status: AccountStatus;
  currentGen: number;
  currentKey: Uint8Array | null;
  pendingGen: number | null;
  pendingKey: Uint8Array | null;
  pendingExpires: number | null;
  maxGen: number;
  confirmedGen: number | null;
  /** The pending secret sealed for the registration servers, and the rotation that made it. */
  pendingSealed: Uint8Array | null;
  pendingRotationId: Uint8Array | null;
}

export interface InstallResult {
  currentGen: number;
  pendingGen: number;
  /** false: a usable pending generation existed and was kept (re-issue it). */
  installed: boolean;
  /** The sealed secret of pendingGen and the rotation id it was sealed with. */
  sealed: Uint8Array;
  rotationId: Uint8Array;
}

/**
 * Whether a pending key can still be used: unexpired, or the account has no current key at
 * all (expiry exists to retire a secret that was never used while an older one still works;
 * it must never leave an account with nothing that logs in).
 */
export function pendingUsable(a: Account, now: number): boolean {
  return usable(a.pendingGen, a.pendingKey !== null, a.pendingExpires, a.currentKey !== null, now);
}
const usable = (pendingGen: number | null, hasPending: boolean, pendingExpires: number | null, hasCurrent: boolean, now: number) =>
  pendingGen !== null && hasPending && ((pendingExpires ?? 0) > now || !hasCurrent);

/** An account row checked, its keys not opened: whether each is present. */
export interface AccountState extends Omit<Account, 'currentKey' | 'pendingKey'> {
  hasCurrentKey: boolean;
  hasPendingKey: boolean;
}

/** An account's generations (BizStore.generations): read from a checked row, no key opened. */
export interface AccountGenerations {
  currentGen: number;
  pendingGen: number | null;
}

/** What a login may verify under (loginKey): the key, whether it is the pending generation, the account's status. */
export interface LoginKey {
  key: Uint8Array;
  pending: boolean;
  active: boolean;
}

export interface BizStore {
  /** Creates the account if missing; 'exists' when the same account/user pair is there. */
  createAccount(account: string, user: string, now?: number): Awaitable<'created' | 'exists'>;
  getByUser(user: string): Awaitable<Account | null>;
  /** The account's generations, from its checked row without opening a key (STORE_CORRUPT_ROW for a bad row); null when there is no such user. */
  generations(user: string): Awaitable<AccountGenerations | null>;
  /**
   * The login key of `user`'s generation `gen` if a login may use it now (the current one, or
   * a usable pending one), else null; the caller wipes the key. Constant work whatever the
   * answer (see the header). Throws STORE_CORRUPT_ROW for a row that fails its checks or
   * whose key of that generation does not open.
   */
  loginKey(user: string, gen: number, now: number): Awaitable<LoginKey | null>;
  setStatus(user: string, status: AccountStatus): Awaitable<boolean>;
  /**
   * In one transaction: when the account has a usable pending generation, nothing changes
   * and that generation (with its sealed secret) is returned for re-issue; otherwise `key`
   * becomes the pending generation max_gen + 1 (replacing an unusable pending one). Current is
   * never touched. Idempotent per rotationId: a retry returns the first call's result.
   */
  installPending(user: string, key: Uint8Array, sealed: Uint8Array, expiresAt: number, rotationId: Uint8Array, now?: number): Awaitable<InstallResult>;
  /** current := pending if pending is still generation `gen` (compare-and-set); false otherwise. */
  promote(user: string, gen: number, now?: number): Awaitable<boolean>;
  /** Records that the device confirmed generation `gen` (must be current). */
  confirm(user: string, gen: number, now?: number): Awaitable<boolean>;
  /** Problems found in the stored rows (empty when none): rows failing validation or whose keys do not open. */
  check(): Promise<string[]>;
  close(): Awaitable<void>;
}

const migrations = (storageKey: Uint8Array): Migration[] => [
  `CREATE TABLE accounts (
     account TEXT PRIMARY KEY,
     user TEXT NOT NULL UNIQUE,
     status TEXT NOT NULL DEFAULT 'active',
     current_gen INTEGER NOT NULL DEFAULT 0,
     current_key BLOB,
     pending_gen INTEGER,
     pending_key BLOB,
     pending_expires INTEGER,
     max_gen INTEGER NOT NULL DEFAULT 0,
     last_rotation_id BLOB,
     last_rotation_gen INTEGER,
     confirmed_gen INTEGER,
     created_at INTEGER NOT NULL,
     updated_at INTEGER NOT NULL
   )`,
  `ALTER TABLE accounts ADD COLUMN pending_sealed BLOB`,
  // 3: wrapped keys bound to the generation as well as the user (issue 9).
  (db) => rewrapBoundToGeneration(db, storageKey),
  // 4: the bank (S4, biz-server/bank-store.ts): accounts of people, bindings of line
  // identifiers to them and to the device that registered them, last logins, page tokens.
  BANK_SCHEMA,
  // 5: the person layer (S3.3, bank-store.ts): fingerprint keys, sealed TOTP seeds, last steps.
  BANK_PERSON_SCHEMA,
  // 6: the operator's SIM-change record of each bank binding (bank-store.ts; decision 137).
  BANK_SIM_CHANGE_SCHEMA,
];

/**
 * Schema 3: every wrapped key of a schema-2 file, opened with its old binding (the user) and
 * sealed again bound to the user and its generation, in the migration's one transaction. A key
 * that does not open refuses the whole migration (STORE_CORRUPT_ROW, nothing written, the file
 * stays at schema 2): most likely the wrong `store.key`, and migrating the other rows would
 * leave that one unreadable for good under the right key.
 */
function rewrapBoundToGeneration(db: Db, storageKey: Uint8Array): void {
  const rows = db.prepare('SELECT user, current_gen, current_key, pending_gen, pending_key FROM accounts').all() as {
    user: string; current_gen: number; current_key: Uint8Array | null; pending_gen: number | null; pending_key: Uint8Array | null;
  }[];
  const set = db.prepare('UPDATE accounts SET current_key = ?, pending_key = ? WHERE user = ?');
  for (const r of rows) {
    const rewrap = (blob: Uint8Array | null, gen: number | null, which: string): Uint8Array | null => {
      if (blob === null) return null;
      const k = blob.length === WRAPPED_KEY_BYTES && typeof gen === 'number' ? openBox(storageKey, blob, wrapAadV2(r.user)) : null;
      if (!k) corrupt(`account row ${String(r.user).slice(0, 64)}`, `${which} login key does not open under the storage key while migrating to schema 3 (another store.key, or tampered); nothing migrated`);
      const out = wrapLoginKey(storageKey, r.user, gen!, k);
      k.fill(0);
      return out;
    };
    set.run(rewrap(r.current_key, r.current_gen, 'current'), rewrap(r.pending_key, r.pending_gen, 'pending'), r.user);
  }
}

export interface Row {
  account: unknown; user: unknown; status: unknown; current_gen: unknown; current_key: unknown;
  pending_gen: unknown; pending_key: unknown; pending_expires: unknown; max_gen: unknown;
  last_rotation_id: unknown; last_rotation_gen: unknown; confirmed_gen: unknown; pending_sealed: unknown;
}

/** Bounds of a sealed secret (nonce + 32-byte secret + tag, with room for a format byte): the admin message's. */
export const SEALED_MIN = SEALED_SECRET_MIN;
export const SEALED_MAX = SEALED_SECRET_MAX;

const isGen = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isKey = (v: unknown): v is Uint8Array => v instanceof Uint8Array && v.length === WRAPPED_KEY_BYTES;

const rowName = (r: Row) => `account row ${typeof r.user === 'string' ? r.user.slice(0, 64) : '?'}`;

/** Validates a row before anything acts on it: STORE_CORRUPT_ROW otherwise. Opens nothing. */
function checkRow(r: Row): void {
  const what = rowName(r);
  if (typeof r.account !== 'string' || r.account.length === 0 || r.account.length > 128) corrupt(what, 'bad account');
  if (typeof r.user !== 'string' || !USER_RE.test(r.user)) corrupt(what, 'bad user');
  if (r.status !== 'active' && r.status !== 'disabled') corrupt(what, 'bad status');
  if (!isGen(r.current_gen) || !isGen(r.max_gen) || r.current_gen > r.max_gen) corrupt(what, 'bad current/max generation');
  if (r.current_gen === 0 ? r.current_key !== null : !isKey(r.current_key)) corrupt(what, 'current key does not match its generation');
  if (r.pending_gen === null) {
    if (r.pending_key !== null || r.pending_expires !== null || r.pending_sealed !== null) corrupt(what, 'pending key without a generation');
  } else if (!isGen(r.pending_gen) || r.pending_gen <= r.current_gen || r.pending_gen > r.max_gen || !isKey(r.pending_key) || !isGen(r.pending_expires)) {
    corrupt(what, 'bad pending generation');
  } else if (!(r.pending_sealed instanceof Uint8Array) || r.pending_sealed.length < SEALED_MIN || r.pending_sealed.length > SEALED_MAX || !(r.last_rotation_id instanceof Uint8Array) || r.last_rotation_id.length !== 16 || r.last_rotation_gen !== r.pending_gen) {
    corrupt(what, 'pending generation without its sealed secret');
  }
  if (r.confirmed_gen !== null && !isGen(r.confirmed_gen)) corrupt(what, 'bad confirmed generation');
}

/** A wrapped key of a checked row, opened for its row's user and generation: STORE_CORRUPT_ROW when it does not open. */
function openRowKey(r: Row, storageKey: Uint8Array, blob: unknown, gen: unknown, which: string): Uint8Array | null {
  if (blob === null) return null;
  const k = unwrapLoginKey(storageKey, r.user as string, gen as number, blob as Uint8Array);
  if (!k) corrupt(rowName(r), `${which} login key does not open under the storage key for this user and generation (another store.key, moved, or tampered)`);
  return k;
}

/**
 * Validates a row before anything acts on it (STORE_CORRUPT_ROW otherwise), and opens its
 * wrapped login keys with the storage key.
 */
export function accountFromRow(r: Row, storageKey: Uint8Array): Account {
  const { hasCurrentKey: _c, hasPendingKey: _p, ...rest } = accountStateFromRow(r);
  const currentKey = openRowKey(r, storageKey, r.current_key, r.current_gen, 'current');
  const pendingKey = openRowKey(r, storageKey, r.pending_key, r.pending_gen, 'pending');
  return { ...rest, currentKey, pendingKey };
}

/** Validates a row before anything acts on it (STORE_CORRUPT_ROW otherwise); opens no key. */
export function accountStateFromRow(r: Row): AccountState {
  checkRow(r);
  return {
    account: r.account as string,
    user: r.user as string,
    status: r.status as AccountStatus,
    currentGen: r.current_gen as number,
    hasCurrentKey: r.current_key !== null,
    pendingGen: r.pending_gen as number | null,
    hasPendingKey: r.pending_key !== null,
    pendingExpires: r.pending_expires as number | null,
    maxGen: r.max_gen as number,
    confirmedGen: r.confirmed_gen as number | null,
    pendingSealed: r.pending_sealed === null ? null : Uint8Array.from(r.pending_sealed as Uint8Array),
    pendingRotationId: r.pending_gen === null ? null : Uint8Array.from(r.last_rotation_id as Uint8Array),
  };
}

/** Outside USER_RE: no account can be named so. */
export const DUMMY_USER = '(none)';
/** What the login query returns: one row whether or not the user exists; slot 1 current, 2 pending, 0 the dummy blob. */
export interface LoginRow { found: unknown; status: unknown; current_gen: unknown; pending_gen: unknown; pending_expires: unknown; no_current: unknown; slot: unknown; blob: unknown }
const LOGIN_SQL = `
  SELECT a.user IS NOT NULL AS found, COALESCE(a.status, 'active') AS status, COALESCE(a.current_gen, 0) AS current_gen,
    COALESCE(a.pending_gen, 0) AS pending_gen, COALESCE(a.pending_expires, 0) AS pending_expires, a.current_key IS NULL AS no_current,
    CASE WHEN a.current_key IS NOT NULL AND a.current_gen = q.gen THEN 1 WHEN a.pending_key IS NOT NULL AND a.pending_gen = q.gen THEN 2 ELSE 0 END AS slot,
    CASE WHEN a.current_key IS NOT NULL AND a.current_gen = q.gen THEN a.current_key WHEN a.pending_key IS NOT NULL AND a.pending_gen = q.gen THEN a.pending_key ELSE q.dummy END AS blob
  FROM (SELECT ? AS user, ? AS gen, ? AS dummy) q LEFT JOIN accounts a ON a.user = q.user`;

export class SqliteBizStore implements BizStore {
  readonly db: Db;
  // Prepared once: a login runs several of these, and preparing costs more than running.
  readonly #get;
  readonly #userOfAccount;
  readonly #insert;
  readonly #setStatus;
  readonly #install;
  readonly #promote;
  readonly #confirm;
  readonly #installTx;
  readonly #promoteTx;
  readonly #storageKey: Uint8Array;
  readonly #dummyBlob: Uint8Array;
  readonly #login;
  /** storageKey: the 32-byte key login keys are wrapped under (`store.key` in the state directory). */
  constructor(file: string, storageKey: Uint8Array) {
    if (!(storageKey instanceof Uint8Array) || storageKey.length !== 32) throw new ImplementationError('BIZ_BAD_STORAGE_KEY', 'the storage key must be 32 bytes');
    this.#storageKey = Uint8Array.from(storageKey);
    this.db = openDb(file, migrations(this.#storageKey));
    // loginKey's stand-in for an unknown user or generation: a blob that opens, for a user
    // name USER_RE refuses (no real row can own it).
    this.#login = this.db.prepare(LOGIN_SQL);
    this.#dummyBlob = wrapLoginKey(this.#storageKey, DUMMY_USER, 0, systemRng(32));
    this.#get = this.db.prepare('SELECT * FROM accounts WHERE user = ?');
    this.#userOfAccount = this.db.prepare('SELECT user FROM accounts WHERE account = ?');
    this.#insert = this.db.prepare('INSERT INTO accounts (account, user, created_at, updated_at) VALUES (?, ?, ?, ?)');
    this.#setStatus = this.db.prepare('UPDATE accounts SET status = ?, updated_at = ? WHERE user = ?');
    this.#install = this.db.prepare(
      'UPDATE accounts SET pending_gen = ?, pending_key = ?, pending_sealed = ?, pending_expires = ?, max_gen = ?, last_rotation_id = ?, last_rotation_gen = ?, updated_at = ? WHERE user = ?',
    );
    this.#promote = this.db.prepare(
      'UPDATE accounts SET current_gen = pending_gen, current_key = pending_key, pending_gen = NULL, pending_key = NULL, pending_sealed = NULL, pending_expires = NULL, updated_at = ? WHERE user = ?',
    );
    this.#confirm = this.db.prepare('UPDATE accounts SET confirmed_gen = ?, updated_at = ? WHERE user = ? AND current_gen = ?');
    this.#installTx = this.db.transaction((user: string, key: Uint8Array, sealed: Uint8Array, expiresAt: number, rotationId: Uint8Array, now: number): InstallResult => {
      const d = installDecision(this.#row(user), this.#storageKey, user, key, sealed, rotationId, now);
      if (d.write) this.#install.run(d.result.pendingGen, d.write.wrapped, sealed, expiresAt, d.result.pendingGen, rotationId, d.result.pendingGen, now, user);
      return d.result;
    });
    this.#promoteTx = this.db.transaction((user: string, gen: number, now: number): boolean => {
      if (!promoteAllowed(this.#row(user), this.#storageKey, gen, now)) return false;
      this.#promote.run(now, user);
      return true;
    });
  }

  #row(user: string): Row | undefined {
    return this.#get.get(user) as Row | undefined;
  }

  createAccount(account: string, user: string, now = Date.now()): 'created' | 'exists' {
    if (!USER_RE.test(user)) throw new ImplementationError('BIZ_BAD_USER', `user name '${user}' is outside ${USER_RE.source}`);
    return this.db.transaction(() => {
      const byAcct = this.#userOfAccount.get(account) as { user: string } | undefined;
      const byUser = this.#row(user);
      if (byAcct || byUser) {
        if (byAcct?.user === user) return 'exists' as const;
        throw new ImplementationError('BIZ_ACCOUNT_CONFLICT', `account '${account}' or user '${user}' is already bound to another`);
      }
      this.#insert.run(account, user, now, now);
      return 'created' as const;
    }).immediate();
  }

  getByUser(user: string): Account | null {
    const r = this.#row(user);
    return r ? accountFromRow(r, this.#storageKey) : null;
  }

  generations(user: string): AccountGenerations | null {
    const r = this.#row(user);
    return r ? generationsOf(accountStateFromRow(r)) : null;
  }

  loginKey(user: string, gen: number, now: number): LoginKey | null {
    // No branch below skips work on what the row holds: one read of the same shape (the
    // query picks the blob to open, the dummy one for an unknown user or generation, and
    // fills an absent row's fields), one check, one unwrap; the verdict only at the end.
    return loginKeyFromRow(this.#login.get(user, gen, this.#dummyBlob) as LoginRow, this.#storageKey, user, gen, now);
  }

  setStatus(user: string, status: AccountStatus): boolean {
    return this.#setStatus.run(status, Date.now(), user).changes === 1;
  }

  installPending(user: string, key: Uint8Array, sealed: Uint8Array, expiresAt: number, rotationId: Uint8Array, now = Date.now()): InstallResult {
    checkInstallInput(sealed, rotationId);
    return this.#installTx.immediate(user, key, sealed, expiresAt, rotationId, now);
  }

  promote(user: string, gen: number, now = Date.now()): boolean {
    return this.#promoteTx.immediate(user, gen, now);
  }

  confirm(user: string, gen: number, now = Date.now()): boolean {
    return this.#confirm.run(gen, now, user, gen).changes === 1;
  }

  async check(): Promise<string[]> {
    return accountProblems(this.db.prepare('SELECT * FROM accounts').all() as Row[], this.#storageKey);
  }

  close(): void {
    this.db.close();
  }
}

/** checkInstallInput's bounds: the admin message's. */
export function checkInstallInput(sealed: Uint8Array, rotationId: Uint8Array): void {
  if (sealed.length < SEALED_MIN || sealed.length > SEALED_MAX || rotationId.length !== 16) throw new ImplementationError('BIZ_BAD_INSTALL', 'sealed secret or rotation id of the wrong size');
}

/**
 * installPending's decision on the account row (read inside the caller's transaction, locked):
 * the usable pending generation to re-issue, or the new pending generation and its wrapped key
 * for the caller to write (`write`).
 */
export function installDecision(r: Row | undefined, storageKey: Uint8Array, user: string, key: Uint8Array, sealed: Uint8Array, rotationId: Uint8Array, now: number): { result: InstallResult; write: { wrapped: Uint8Array } | null } {
  if (!r) throw new ImplementationError('BIZ_UNKNOWN_USER', `no account for user '${user}'`);
  // The decision needs the generations and which keys exist, not the keys (see the header).
  const a = accountStateFromRow(r);
  if (a.pendingGen !== null && usable(a.pendingGen, a.hasPendingKey, a.pendingExpires, a.hasCurrentKey, now)) {
    // A retry of the call that installed it gets installed: true (the caller's own secret).
    const own = Buffer.compare(a.pendingRotationId!, rotationId) === 0;
    return { result: { currentGen: a.currentGen, pendingGen: a.pendingGen, installed: own, sealed: a.pendingSealed!, rotationId: a.pendingRotationId! }, write: null };
  }
  // The rotation that installed the last generation, again, once that generation was promoted or
  // expired: never a retry of ours (the registration server makes a new rotation id after a
  // failover), but an admin request replayed to another instance (its replay cache shared through
  // Redis, which fails open): installing would make the old secret "new" again (found by review).
  if (r.last_rotation_id instanceof Uint8Array && Buffer.compare(r.last_rotation_id, rotationId) === 0) {
    throw new ImplementationError('BIZ_INSTALL_REPLAYED', 'this rotation id installed the last generation already: a replayed install is refused');
  }
  const gen = a.maxGen + 1;
  return {
    result: { currentGen: a.currentGen, pendingGen: gen, installed: true, sealed: Uint8Array.from(sealed), rotationId: Uint8Array.from(rotationId) },
    write: { wrapped: wrapLoginKey(storageKey, user, gen, key) },
  };
}

/** promote's compare-and-set on the account row (read inside the caller's transaction, locked). */
export function promoteAllowed(r: Row | undefined, storageKey: Uint8Array, gen: number, now: number): boolean {
  if (!r) return false;
  // Both keys are opened: promote moves the pending key into the current column, and a key
  // moved to another column or generation must not be acted on (issue 9). They are wiped at once.
  const a = accountFromRow(r, storageKey);
  a.currentKey?.fill(0);
  a.pendingKey?.fill(0);
  return a.pendingGen === gen && pendingUsable(a, now);
}

/** BizStore.generations on a checked row. */
export function generationsOf(a: AccountState): AccountGenerations {
  return { currentGen: a.currentGen, pendingGen: a.pendingGen };
}

/** The integrity check of the accounts table (both back ends): every row validated and its keys opened. */
export function accountProblems(rows: Row[], storageKey: Uint8Array): string[] {
  const { each, problems } = rowChecker();
  each(rows, (r) => {
    const a = accountFromRow(r, storageKey);
    a.currentKey?.fill(0);
    a.pendingKey?.fill(0);
  });
  return problems;
}

/**
 * loginKey on the row LOGIN_SQL returns (both back ends): one check, one unwrap whatever the
 * row holds (issue 10), the verdict only at the end. Booleans as 0/1.
 */
export function loginKeyFromRow(r: LoginRow, storageKey: Uint8Array, user: string, gen: number, now: number): LoginKey | null {
  const what = `account row ${user.slice(0, 64)}`;
  if (r.status !== 'active' && r.status !== 'disabled') corrupt(what, 'bad status');
  if (!isGen(r.current_gen) || !(r.slot === 0 || r.slot === 1 || r.slot === 2) || !(r.blob instanceof Uint8Array)) corrupt(what, 'bad current generation or key');
  if (r.slot === 2 && (!isGen(r.pending_gen) || r.pending_gen <= r.current_gen || !isGen(r.pending_expires))) corrupt(what, 'bad pending generation');
  const k = unwrapLoginKey(storageKey, r.slot ? user : DUMMY_USER, r.slot ? gen : 0, r.blob);
  if (!k) corrupt(what, `${r.slot === 1 ? 'current' : 'pending'} login key does not open under the storage key for this user and generation (another store.key, moved, or tampered)`);
  // pendingUsable(), on the row: unexpired, or no current key at all.
  const usable = r.slot === 1 || (r.slot === 2 && ((r.pending_expires as number) > now || r.no_current === 1));
  if (r.found !== 1 || !usable) {
    k.fill(0);
    return null;
  }
  return { key: k, pending: r.slot === 2, active: r.status === 'active' };
}
