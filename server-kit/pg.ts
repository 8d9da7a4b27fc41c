// PostgreSQL as every store opens it (issue 16), beside server-kit/sqlite.ts: a pool from a
// URL whose every connection has the store's schema as its search_path (each store kind in its
// own schema, so the registration and the business store can share one database without their
// tables or schema_version meeting), numbered migrations recorded in that schema's
// schema_version table and applied in one transaction under a pg_advisory_xact_lock (two
// servers starting together: the second waits, then finds the work done), and a transaction
// helper that retries serialization failures. Integers come back as numbers (int8 too, when
// safe), bytea as Uint8Array, so the row validators the SQLite stores use serve both.
import pg from 'pg';
import { randomBytes } from 'node:crypto';
import { userInfo } from 'node:os';
import { ImplementationError } from '../protocol/errors.ts';

export type PgPool = pg.Pool;
export type PgClient = pg.PoolClient;
/** What a store's queries run on: the pool (one statement) or a transaction's client. */
export type PgQueryable = Pick<pg.Pool, 'query'>;

/** One schema step: SQL, or a function run on the migration's transaction. */
export type PgMigration = string | ((c: PgClient) => Promise<void>);

/** The default database of the project's machines and CI (scripts/ensure-services.sh). */
export const DEFAULT_PG_URL = 'postgres://root@127.0.0.1:5432/test';

const SCHEMA_RE = /^[a-z_][a-z0-9_]{0,62}$/;

function int8(v: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw new ImplementationError('STORE_CORRUPT_ROW', `an int8 value ${v.slice(0, 24)} is beyond 2^53`);
  return n;
}
const OID_INT8 = 20;
const OID_BYTEA = 17;
const byteaParser = pg.types.getTypeParser(OID_BYTEA);
const typeParser: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: string) => {
    if (oid === OID_INT8) return int8;
    // A Buffer is a Uint8Array, but code that keeps it would keep a view of a pooled slab.
    if (oid === OID_BYTEA) return (v: string) => Uint8Array.from(byteaParser(v) as Buffer);
    return pg.types.getTypeParser(oid, format as 'text');
  }) as pg.CustomTypesConfig['getTypeParser'],
};

export interface PgOptions {
  /** The PostgreSQL schema the store's tables live in (created by the migrations). */
  schema: string;
  /** Connections kept by this process's pool. */
  max?: number;
  /** A statement running longer is cancelled (ms). */
  statementTimeoutMs?: number;
  /**
   * PostgreSQL's synchronous_commit, set on every connection of the pool whatever the server's
   * or the database's default (docs/decisions.md): true (the default) = `on`, a commit returns
   * once its WAL record is flushed to disk, so a crash of the database server loses no commit a
   * client was told of; false = `off`, a commit returns before the flush: a crash may lose the
   * last commits (up to 3 x wal_writer_delay, ~0.6 s by default) that clients were told of, and
   * never corrupts or half-applies a transaction. The bench measures both.
   */
  synchronousCommit?: boolean;
}

/**
 * `url` with the user libpq would take when it names none (PGUSER, else the OS user): node-postgres
 * reads a URL without a user name as the empty name, which the server refuses ("no PostgreSQL user
 * name specified"), and a CI shell may have no USER either. A URL that names its user is kept.
 */
export function pgUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new ImplementationError('STORE_CONFIG', 'the PostgreSQL URL does not parse');
  }
  // The schema (search_path) and the statement timeout are set per connection by openPool: a URL's
  // own ?options= would override them and point a store into another store's schema.
  if (u.searchParams.has('options')) throw new ImplementationError('STORE_CONFIG', "the PostgreSQL URL must not carry 'options' (the server sets the schema and timeouts itself)");
  if (u.username === '') u.username = encodeURIComponent(process.env.PGUSER || userInfo().username);
  return u.toString();
}

/** The synchronous_commit value the pool's connections get (`on` unless the options say false). */
export const synchronousCommitSetting = (o: Pick<PgOptions, 'synchronousCommit'>): 'on' | 'off' => (o.synchronousCommit === false ? 'off' : 'on');

/** A pool whose every connection uses `schema`; nothing is created until migrate(). */
export function openPool(url: string, o: PgOptions): PgPool {
  if (!SCHEMA_RE.test(o.schema)) throw new ImplementationError('STORE_CONFIG', `PostgreSQL schema '${o.schema}' must match ${SCHEMA_RE.source}`);
  const pool = new pg.Pool({
    connectionString: pgUrl(url),
    max: o.max ?? 8,
    // Set at connection start: a pooled connection never runs a query in another schema.
    // synchronous_commit explicit either way: a server or database configured `off` (or
    // `remote_apply` on a replica set) does not silently change what a store's commit means.
    options: `-c search_path=${o.schema} -c statement_timeout=${Math.floor(o.statementTimeoutMs ?? 10_000)} -c synchronous_commit=${synchronousCommitSetting(o)}`,
    types: typeParser,
    connectionTimeoutMillis: 5_000,
  });
  // An idle connection the server dropped (restart, kill): the pool replaces it; the next
  // query fails or succeeds on its own. Without a listener the error would end the process.
  pool.on('error', () => {});
  return pool;
}

/** SQLSTATEs a transaction is retried on: serialization failure, deadlock. */
const RETRYABLE = new Set(['40001', '40P01']);

export interface TxOptions {
  isolation?: 'read committed' | 'repeatable read' | 'serializable';
  /** Attempts in all (serialization failures and deadlocks only). */
  attempts?: number;
}

/**
 * Runs `f` in one transaction on one connection: committed when it returns, rolled back when
 * it throws. SERIALIZABLE by default; a serialization failure or deadlock runs `f` again (so `f`
 * must do nothing but queries on `c` before it returns).
 */
export async function tx<T>(pool: PgPool, f: (c: PgClient) => Promise<T>, o: TxOptions = {}): Promise<T> {
  const attempts = o.attempts ?? 8;
  for (let attempt = 1; ; attempt++) {
    const c = await pool.connect();
    let broken = false;
    try {
      await c.query(`BEGIN ISOLATION LEVEL ${(o.isolation ?? 'serializable').toUpperCase()}`);
      const r = await f(c);
      await c.query('COMMIT');
      return r;
    } catch (e) {
      try {
        await c.query('ROLLBACK');
      } catch {
        broken = true;
      }
      const code = (e as { code?: string }).code;
      if (!code || !RETRYABLE.has(code) || attempt >= attempts) throw e;
      // Back off a little, with jitter, so the two colliding transactions do not collide again.
      await new Promise((r) => setTimeout(r, Math.random() * 5 * attempt));
    } finally {
      c.release(broken);
    }
  }
}

/** The advisory lock key of a schema's migrations (any 64-bit number both servers compute alike). */
const lockKey = (schema: string) => `usbphone migrate ${schema}`;

/**
 * Creates the pool's schema if needed and applies the migrations it lacks, all in one
 * transaction under an advisory lock: a second server starting at the same moment waits for the
 * first, then finds schema_version up to date. STORE_SCHEMA_NEWER when the database is ahead.
 */
export async function migrate(pool: PgPool, schema: string, migrations: readonly PgMigration[]): Promise<void> {
  if (!SCHEMA_RE.test(schema)) throw new ImplementationError('STORE_CONFIG', `PostgreSQL schema '${schema}' must match ${SCHEMA_RE.source}`);
  await tx(pool, async (c) => {
    await c.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [lockKey(schema)]);
    await c.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    await c.query('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
    const { rows } = await c.query<{ v: number | null }>('SELECT MAX(version) AS v FROM schema_version');
    const have = rows[0]?.v ?? 0;
    if (have > migrations.length) throw new ImplementationError('STORE_SCHEMA_NEWER', `schema ${schema} has version ${have}, this build knows ${migrations.length}`);
    for (let v = have; v < migrations.length; v++) {
      const m = migrations[v]!;
      if (typeof m === 'string') await c.query(m);
      else await m(c);
      await c.query('INSERT INTO schema_version (version) VALUES ($1)', [v + 1]);
    }
    // The lock serializes the starters; READ COMMITTED lets the second see the first's commit.
  }, { isolation: 'read committed' });
}

/** A pool on `url` in `schema`, migrated. Closes the pool when the migration fails. */
export async function openMigrated(url: string, o: PgOptions, migrations: readonly PgMigration[]): Promise<PgPool> {
  const pool = openPool(url, o);
  try {
    await migrate(pool, o.schema, migrations);
    return pool;
  } catch (e) {
    await pool.end().catch(() => {});
    // Nothing answered: say where, and what starts it (the server does not start either way).
    const code = (e as { code?: string }).code;
    if (code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'EHOSTUNREACH' || code === 'ETIMEDOUT') {
      throw new ImplementationError('STORE_UNAVAILABLE', `PostgreSQL at ${redactUrl(url)} does not answer (${code}); scripts/ensure-services.sh starts the local one`);
    }
    throw e;
  }
}

/** A connection URL without its password, for messages. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return 'the configured URL';
  }
}

/** The PostgreSQL the tests use: PG_TEST_URL, or the project machines' default. */
export const testPgUrl = () => process.env.PG_TEST_URL ?? DEFAULT_PG_URL;

/**
 * A fresh schema name per test (t_<random>), and its removal. The PG half of a store test
 * FAILS when PostgreSQL is unreachable (CI starts it: scripts/ensure-services.sh); it never skips.
 */
export function testSchema(url = testPgUrl()): { url: string; schema: string; drop(): Promise<void> } {
  const schema = `t_${randomBytes(8).toString('hex')}`;
  return {
    url,
    schema,
    async drop() {
      const c = new pg.Client({ connectionString: pgUrl(url) });
      await c.connect();
      try {
        await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      } finally {
        await c.end();
      }
    },
  };
}

/** Every row of every table of the pool's schema (tests that look for secrets at rest). */
export async function dumpSchema(pool: PgQueryable, schema: string): Promise<Record<string, Record<string, unknown>[]>> {
  const { rows } = await pool.query<{ table_name: string }>("SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name", [schema]);
  const out: Record<string, Record<string, unknown>[]> = {};
  for (const t of rows) out[t.table_name] = (await pool.query(`SELECT * FROM ${schema}."${t.table_name.replace(/"/g, '')}"`)).rows;
  return out;
}
