// The business store on PostgreSQL (issue 16): the same BizStore as SqliteBizStore (store.ts),
// for business servers on several hosts sharing one database, with the bank's tables in the
// same schema (pg-bank-store.ts). Login keys are kept wrapped under the storage key exactly as
// on SQLite (never in clear: a dump of the schema logs nobody in), the same row validators and
// the same one-row, one-unwrap login query (issue 10). installPending and promote lock the
// account row (SELECT ... FOR UPDATE) so two servers deciding for one account queue instead of
// both deciding on the same old row. Schema history starts here at version 1 (SQLite's five
// steps folded into one; SQLite's rewrap step has nothing to rewrap on a new database); version
// 2 is SQLite's 6.
import { ImplementationError } from '../protocol/errors.ts';
import { systemRng } from '../protocol/channel.ts';
import { USER_RE } from '../protocol/messages.ts';
import { openMigrated, tx, type PgPool, type PgMigration, type PgOptions } from '../server-kit/pg.ts';
import { pgOptionsOf, type StorePlace } from '../server-kit/store-choice.ts';
import {
  SqliteBizStore, accountFromRow, accountStateFromRow, generationsOf, wrapLoginKey, loginKeyFromRow, installDecision, promoteAllowed, accountProblems, checkInstallInput, DUMMY_USER,
  type BizStore, type Account, type AccountGenerations, type AccountStatus, type InstallResult, type LoginKey, type LoginRow, type Row,
} from './store.ts';
import { SqliteBankStore, type BankStore } from './bank-store.ts';
import { PgBankStore, PG_BANK_SCHEMA, PG_BANK_SIM_CHANGE_SCHEMA } from './pg-bank-store.ts';

const MIGRATIONS: PgMigration[] = [
  // "user" is a reserved word in PostgreSQL: quoted everywhere, the same column name as SQLite's.
  `CREATE TABLE accounts (
     account TEXT PRIMARY KEY,
     "user" TEXT NOT NULL UNIQUE,
     status TEXT NOT NULL DEFAULT 'active',
     current_gen INTEGER NOT NULL DEFAULT 0,
     current_key BYTEA,
     pending_gen INTEGER,
     pending_key BYTEA,
     pending_expires BIGINT,
     max_gen INTEGER NOT NULL DEFAULT 0,
     last_rotation_id BYTEA,
     last_rotation_gen INTEGER,
     confirmed_gen INTEGER,
     created_at BIGINT NOT NULL,
     updated_at BIGINT NOT NULL,
     pending_sealed BYTEA
   );
   ${PG_BANK_SCHEMA}`,
  // 2: the operator's SIM-change record of each bank binding (SQLite's schema 6; decision 137).
  PG_BANK_SIM_CHANGE_SCHEMA,
];

/** The schema the business servers (and their banks) use unless told otherwise. */
export const BIZ_PG_SCHEMA = 'biz';

// LOGIN_SQL of store.ts, with PostgreSQL's booleans as 0/1 and typed parameters.
const LOGIN_SQL = `
  SELECT (a."user" IS NOT NULL)::int AS found, COALESCE(a.status, 'active') AS status, COALESCE(a.current_gen, 0) AS current_gen,
    COALESCE(a.pending_gen, 0) AS pending_gen, COALESCE(a.pending_expires, 0) AS pending_expires, (a.current_key IS NULL)::int AS no_current,
    CASE WHEN a.current_key IS NOT NULL AND a.current_gen = q.gen THEN 1 WHEN a.pending_key IS NOT NULL AND a.pending_gen = q.gen THEN 2 ELSE 0 END AS slot,
    CASE WHEN a.current_key IS NOT NULL AND a.current_gen = q.gen THEN a.current_key WHEN a.pending_key IS NOT NULL AND a.pending_gen = q.gen THEN a.pending_key ELSE q.dummy END AS blob
  FROM (SELECT $1::text AS "user", $2::int AS gen, $3::bytea AS dummy) q LEFT JOIN accounts a ON a."user" = q."user"`;

export class PgBizStore implements BizStore {
  readonly #storageKey: Uint8Array;
  readonly #dummyBlob: Uint8Array;

  private constructor(readonly pool: PgPool, readonly schema: string, storageKey: Uint8Array) {
    this.#storageKey = storageKey;
    this.#dummyBlob = wrapLoginKey(storageKey, DUMMY_USER, 0, systemRng(32));
  }

  /** storageKey: the 32-byte key login keys are wrapped under (never stored in the database). */
  static async open(url: string, storageKey: Uint8Array, schema = BIZ_PG_SCHEMA, o: Omit<PgOptions, 'schema'> = {}): Promise<PgBizStore> {
    if (!(storageKey instanceof Uint8Array) || storageKey.length !== 32) throw new ImplementationError('BIZ_BAD_STORAGE_KEY', 'the storage key must be 32 bytes');
    return new PgBizStore(await openMigrated(url, { ...o, schema }, MIGRATIONS), schema, Uint8Array.from(storageKey));
  }

  /** The bank's store on the same pool and schema. */
  bankStore(): PgBankStore {
    return new PgBankStore(this.pool, this.#storageKey);
  }

  async createAccount(account: string, user: string, now = Date.now()): Promise<'created' | 'exists'> {
    if (!USER_RE.test(user)) throw new ImplementationError('BIZ_BAD_USER', `user name '${user}' is outside ${USER_RE.source}`);
    return tx(this.pool, async (c) => {
      const { rows } = await c.query<{ account: string; user: string }>('SELECT account, "user" FROM accounts WHERE account = $1 OR "user" = $2', [account, user]);
      if (rows.length > 0) {
        if (rows.length === 1 && rows[0]!.account === account && rows[0]!.user === user) return 'exists' as const;
        throw new ImplementationError('BIZ_ACCOUNT_CONFLICT', `account '${account}' or user '${user}' is already bound to another`);
      }
      await c.query('INSERT INTO accounts (account, "user", created_at, updated_at) VALUES ($1, $2, $3, $3)', [account, user, now]);
      return 'created' as const;
    });
  }

  async getByUser(user: string): Promise<Account | null> {
    const { rows } = await this.pool.query<Row>('SELECT * FROM accounts WHERE "user" = $1', [user]);
    return rows[0] ? accountFromRow(rows[0], this.#storageKey) : null;
  }

  async generations(user: string): Promise<AccountGenerations | null> {
    const { rows } = await this.pool.query<Row>('SELECT * FROM accounts WHERE "user" = $1', [user]);
    return rows[0] ? generationsOf(accountStateFromRow(rows[0])) : null;
  }

  async loginKey(user: string, gen: number, now: number): Promise<LoginKey | null> {
    // gen beyond int4 cannot be stored: the same one query with a generation no row has.
    const g = Number.isSafeInteger(gen) && gen >= 0 && gen <= 0x7fffffff ? gen : -1;
    const { rows } = await this.pool.query<LoginRow>(LOGIN_SQL, [user, g, this.#dummyBlob]);
    return loginKeyFromRow(rows[0]!, this.#storageKey, user, gen, now);
  }

  async setStatus(user: string, status: AccountStatus): Promise<boolean> {
    return (await this.pool.query('UPDATE accounts SET status = $1, updated_at = $2 WHERE "user" = $3', [status, Date.now(), user])).rowCount === 1;
  }

  async installPending(user: string, key: Uint8Array, sealed: Uint8Array, expiresAt: number, rotationId: Uint8Array, now = Date.now()): Promise<InstallResult> {
    checkInstallInput(sealed, rotationId);
    return tx(this.pool, async (c) => {
      const { rows } = await c.query<Row>('SELECT * FROM accounts WHERE "user" = $1 FOR UPDATE', [user]);
      const d = installDecision(rows[0], this.#storageKey, user, key, sealed, rotationId, now);
      if (d.write) {
        const gen = d.result.pendingGen;
        await c.query(
          'UPDATE accounts SET pending_gen = $1, pending_key = $2, pending_sealed = $3, pending_expires = $4, max_gen = $1, last_rotation_id = $5, last_rotation_gen = $1, updated_at = $6 WHERE "user" = $7',
          [gen, d.write.wrapped, sealed, expiresAt, rotationId, now, user],
        );
      }
      return d.result;
    }, { isolation: 'read committed' });
  }

  async promote(user: string, gen: number, now = Date.now()): Promise<boolean> {
    return tx(this.pool, async (c) => {
      const { rows } = await c.query<Row>('SELECT * FROM accounts WHERE "user" = $1 FOR UPDATE', [user]);
      if (!promoteAllowed(rows[0], this.#storageKey, gen, now)) return false;
      await c.query(
        'UPDATE accounts SET current_gen = pending_gen, current_key = pending_key, pending_gen = NULL, pending_key = NULL, pending_sealed = NULL, pending_expires = NULL, updated_at = $1 WHERE "user" = $2',
        [now, user],
      );
      return true;
    }, { isolation: 'read committed' });
  }

  async confirm(user: string, gen: number, now = Date.now()): Promise<boolean> {
    const g = Number.isSafeInteger(gen) && gen >= 0 && gen <= 0x7fffffff ? gen : -1;
    return (await this.pool.query('UPDATE accounts SET confirmed_gen = $1, updated_at = $2 WHERE "user" = $3 AND current_gen = $1', [g, now, user])).rowCount === 1;
  }

  async check(): Promise<string[]> {
    return accountProblems((await this.pool.query<Row>('SELECT * FROM accounts')).rows, this.#storageKey);
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

/** The business store and the bank's at `place` (the bank's tables live beside the accounts). */
export async function openBizStores(place: StorePlace, storageKey: Uint8Array): Promise<{ store: BizStore; bank: BankStore }> {
  if (place.kind === 'sqlite') {
    const store = new SqliteBizStore(place.file, storageKey);
    return { store, bank: new SqliteBankStore(store.db, storageKey) };
  }
  const store = await PgBizStore.open(place.url, storageKey, place.schema, pgOptionsOf(place));
  return { store, bank: store.bankStore() };
}
