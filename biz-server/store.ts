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
// file beside the database, never in it), bound to the user. A copy of the database alone
// logs nobody in; a blob that does not open is a corrupt row (wrong key or tampering).
//
// One interface, one SQLite implementation; on several machines a PostgreSQL implementation
// of the same interface replaces it (docs/architecture.md §"Stores").
import { utf8ToBytes } from '@noble/hashes/utils.js';
import { sealBox, openBox, BOX_OVERHEAD } from '../protocol/sealed-box.ts';
import { openDb, corrupt, type Db } from '../server-kit/sqlite.ts';
import { SEALED_SECRET_MIN, SEALED_SECRET_MAX } from '../server-kit/admin-messages.ts';
import { USER_RE } from '../protocol/messages.ts';
import { ImplementationError } from '../protocol/errors.ts';
import { systemRng } from '../protocol/channel.ts';

/** A wrapped login key: a sealed box (protocol/sealed-box.ts) of the 32-byte key, nonce (24) || ciphertext (32) || tag (16). */
export const WRAPPED_KEY_BYTES = BOX_OVERHEAD + 32;
const wrapAad = (user: string) => utf8ToBytes(`usbphone/v1 login key|${user}`);

export function wrapLoginKey(storageKey: Uint8Array, user: string, key: Uint8Array): Uint8Array {
  if (key.length !== 32) throw new ImplementationError('BIZ_BAD_INSTALL', 'a login key is 32 bytes');
  return sealBox(storageKey, key, wrapAad(user), systemRng);
}

/** The login key, or null when the blob does not open under this storage key for this user. */
export function unwrapLoginKey(storageKey: Uint8Array, user: string, blob: Uint8Array): Uint8Array | null {
  if (blob.length !== WRAPPED_KEY_BYTES) return null;
  return openBox(storageKey, blob, wrapAad(user));
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
  return a.pendingGen !== null && a.pendingKey !== null && ((a.pendingExpires ?? 0) > now || a.currentKey === null);
}

export interface BizStore {
  /** Creates the account if missing; 'exists' when the same account/user pair is there. */
  createAccount(account: string, user: string, now?: number): 'created' | 'exists';
  getByUser(user: string): Account | null;
  setStatus(user: string, status: AccountStatus): boolean;
  /**
   * In one transaction: when the account has a usable pending generation, nothing changes
   * and that generation (with its sealed secret) is returned for re-issue; otherwise `key`
   * becomes the pending generation max_gen + 1 (replacing an unusable pending one). Current is
   * never touched. Idempotent per rotationId: a retry returns the first call's result.
   */
  installPending(user: string, key: Uint8Array, sealed: Uint8Array, expiresAt: number, rotationId: Uint8Array, now?: number): InstallResult;
  /** current := pending if pending is still generation `gen` (compare-and-set); false otherwise. */
  promote(user: string, gen: number, now?: number): boolean;
  /** Records that the device confirmed generation `gen` (must be current). */
  confirm(user: string, gen: number, now?: number): boolean;
  close(): void;
}

const MIGRATIONS = [
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
];

interface Row {
  account: unknown; user: unknown; status: unknown; current_gen: unknown; current_key: unknown;
  pending_gen: unknown; pending_key: unknown; pending_expires: unknown; max_gen: unknown;
  last_rotation_id: unknown; last_rotation_gen: unknown; confirmed_gen: unknown; pending_sealed: unknown;
}

/** Bounds of a sealed secret (nonce + 32-byte secret + tag, with room for a format byte): the admin message's. */
const SEALED_MIN = SEALED_SECRET_MIN;
const SEALED_MAX = SEALED_SECRET_MAX;

const isGen = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isKey = (v: unknown): v is Uint8Array => v instanceof Uint8Array && v.length === WRAPPED_KEY_BYTES;

/**
 * Validates a row before anything acts on it (STORE_CORRUPT_ROW otherwise), and opens its
 * wrapped login keys with the storage key.
 */
export function accountFromRow(r: Row, storageKey: Uint8Array): Account {
  const what = `account row ${typeof r.user === 'string' ? r.user.slice(0, 64) : '?'}`;
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
  const open = (blob: unknown, which: string): Uint8Array | null => {
    if (blob === null) return null;
    const k = unwrapLoginKey(storageKey, r.user as string, blob as Uint8Array);
    if (!k) corrupt(what, `${which} login key does not open under the storage key (another store.key, or tampered)`);
    return k;
  };
  const currentKey = open(r.current_key, 'current');
  const pendingKey = open(r.pending_key, 'pending');
  return {
    account: r.account,
    user: r.user,
    status: r.status,
    currentGen: r.current_gen,
    currentKey,
    pendingGen: r.pending_gen as number | null,
    pendingKey,
    pendingExpires: r.pending_expires as number | null,
    maxGen: r.max_gen,
    confirmedGen: r.confirmed_gen as number | null,
    pendingSealed: r.pending_sealed === null ? null : Uint8Array.from(r.pending_sealed as Uint8Array),
    pendingRotationId: r.pending_gen === null ? null : Uint8Array.from(r.last_rotation_id as Uint8Array),
  };
}

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
  /** storageKey: the 32-byte key login keys are wrapped under (`store.key` in the state directory). */
  constructor(file: string, storageKey: Uint8Array) {
    if (!(storageKey instanceof Uint8Array) || storageKey.length !== 32) throw new ImplementationError('BIZ_BAD_STORAGE_KEY', 'the storage key must be 32 bytes');
    this.#storageKey = Uint8Array.from(storageKey);
    this.db = openDb(file, MIGRATIONS);
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
      const r = this.#row(user);
      if (!r) throw new ImplementationError('BIZ_UNKNOWN_USER', `no account for user '${user}'`);
      const a = accountFromRow(r, this.#storageKey);
      if (a.pendingGen !== null && pendingUsable(a, now)) {
        // A retry of the call that installed it gets installed: true (the caller's own secret).
        const own = Buffer.compare(a.pendingRotationId!, rotationId) === 0;
        return { currentGen: a.currentGen, pendingGen: a.pendingGen, installed: own, sealed: a.pendingSealed!, rotationId: a.pendingRotationId! };
      }
      const gen = a.maxGen + 1;
      this.#install.run(gen, wrapLoginKey(this.#storageKey, user, key), sealed, expiresAt, gen, rotationId, gen, now, user);
      return { currentGen: a.currentGen, pendingGen: gen, installed: true, sealed: Uint8Array.from(sealed), rotationId: Uint8Array.from(rotationId) };
    });
    this.#promoteTx = this.db.transaction((user: string, gen: number, now: number): boolean => {
      const r = this.#row(user);
      if (!r) return false;
      const a = accountFromRow(r, this.#storageKey);
      if (a.pendingGen !== gen || !pendingUsable(a, now)) return false;
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

  setStatus(user: string, status: AccountStatus): boolean {
    return this.#setStatus.run(status, Date.now(), user).changes === 1;
  }

  installPending(user: string, key: Uint8Array, sealed: Uint8Array, expiresAt: number, rotationId: Uint8Array, now = Date.now()): InstallResult {
    if (sealed.length < SEALED_MIN || sealed.length > SEALED_MAX || rotationId.length !== 16) throw new ImplementationError('BIZ_BAD_INSTALL', 'sealed secret or rotation id of the wrong size');
    return this.#installTx.immediate(user, key, sealed, expiresAt, rotationId, now);
  }

  promote(user: string, gen: number, now = Date.now()): boolean {
    return this.#promoteTx.immediate(user, gen, now);
  }

  confirm(user: string, gen: number, now = Date.now()): boolean {
    return this.#confirm.run(gen, now, user, gen).changes === 1;
  }

  close(): void {
    this.db.close();
  }
}
