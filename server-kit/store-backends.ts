// The store test matrix (issue 16): the same test body against SQLite and PostgreSQL.
//   for (const b of backends()) { const test = suite(`x store [${b.name}]`); ... b.place() ... }
// The PostgreSQL half runs in a fresh schema per place (t_<random>), dropped by cleanup(); when
// PostgreSQL is unreachable it FAILS (CI starts it with scripts/ensure-services.sh), never skips.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testSchema } from './pg.ts';
import { storeChoiceFrom, type StoreChoice, type StorePlace } from './store-choice.ts';

export interface Backend {
  name: 'sqlite' | 'postgres';
  /** A fresh, empty place for one store (`what` names the SQLite file). */
  place(what?: string): StorePlace;
  /** Removes every place this backend handed out (close the stores first). */
  cleanup(): Promise<void>;
  /**
   * A store opening in a `before` hook, its failure printed: uvu counts the suite's tests as
   * not passed but says nothing of why (PostgreSQL unreachable: STORE_UNAVAILABLE).
   */
  opening<T>(p: Promise<T>): Promise<T>;
}

function opening<T>(this: Backend, p: Promise<T>): Promise<T> {
  return p.catch((e: unknown) => {
    process.stderr.write(`store test [${this.name}]: the store did not open: ${(e as Error).message}\n`);
    throw e;
  });
}

function sqliteBackend(): Backend {
  let dir: string | null = null;
  let n = 0;
  return {
    name: 'sqlite',
    place(what = 'store') {
      dir ??= mkdtempSync(join(tmpdir(), 'usbphone-store-'));
      return { kind: 'sqlite', file: join(dir, `${what}-${n++}.sqlite`) };
    },
    async cleanup() {
      if (dir) rmSync(dir, { recursive: true, force: true });
      dir = null;
    },
    opening,
  };
}

function pgBackend(url?: string): Backend {
  const made: { drop(): Promise<void> }[] = [];
  return {
    name: 'postgres',
    place() {
      const s = testSchema(url);
      made.push(s);
      return { kind: 'postgres', url: s.url, schema: s.schema };
    },
    async cleanup() {
      for (const s of made.splice(0)) {
        try {
          await s.drop();
        } catch (e) {
          // Unreachable: nothing was made there (the test itself has failed with STORE_UNAVAILABLE).
          if ((e as { code?: string }).code !== 'ECONNREFUSED') throw e;
        }
      }
    },
    opening,
  };
}

/** SQLite, then PostgreSQL: `STORE_BACKENDS=sqlite` (or postgres) runs one half only, for a quick local loop. */
export function backends(only = process.env.STORE_BACKENDS): Backend[] {
  const all = [sqliteBackend(), pgBackend()];
  return only ? all.filter((b) => only.split(',').includes(b.name)) : all;
}

/** A backend's place as a server configuration's `dbFile` and `store` (SQLite: the file; PostgreSQL: a fresh schema). */
export function storeConfig(b: Backend, what = 'store'): { dbFile: string; store: StoreChoice } {
  const p = b.place(what);
  return p.kind === 'sqlite' ? { dbFile: p.file, store: { kind: 'sqlite' } } : { dbFile: `${what}-unused.sqlite`, store: p };
}

/**
 * The back end STORE_URL selects (SQLite when it is unset), for the suites that are not a
 * matrix but run on both back ends by being run twice: `node scripts/test-pg.mjs` (and make
 * test's PostgreSQL pass) sets STORE_URL=postgres://... Each place() is a fresh SQLite file or a
 * fresh schema in STORE_URL's database; cleanup() removes them. A suite that opens a SQLite store
 * class itself instead is on the SQLite-only list (scripts/store-suites.mjs) or fails the guard.
 */
export function chosenBackend(env: NodeJS.ProcessEnv = process.env): Backend {
  const c = storeChoiceFrom(undefined, env);
  return c.kind === 'sqlite' ? sqliteBackend() : pgBackend(c.url);
}

/**
 * One raw statement on a store's own database, `?` placeholders (numbered for PostgreSQL): the
 * suites that damage a row on purpose to see it refused, on either back end. Returns the rows
 * changed (a suite asserts it: `user` unquoted is PostgreSQL's current_user and matches nothing).
 */
export async function storeSql(store: object, q: string, ...params: unknown[]): Promise<number> {
  const s = store as { pool?: { query(q: string, p: unknown[]): Promise<{ rowCount: number | null }> }; db?: { prepare(q: string): { run(...p: unknown[]): { changes: number | bigint } } } };
  if (s.pool) {
    let n = 0;
    return (await s.pool.query(q.replace(/\?/g, () => `$${++n}`), params)).rowCount ?? 0;
  }
  if (s.db) return Number(s.db.prepare(q).run(...params).changes);
  throw new Error('storeSql: neither a SQLite nor a PostgreSQL store');
}

/** The rows of one raw query on a store's own database (`?` placeholders), on either back end. */
export async function storeRows<R = Record<string, unknown>>(store: object, q: string, ...params: unknown[]): Promise<R[]> {
  const s = store as { pool?: { query(q: string, p: unknown[]): Promise<{ rows: R[] }> }; db?: { prepare(q: string): { all(...p: unknown[]): R[] } } };
  if (s.pool) {
    let n = 0;
    return (await s.pool.query(q.replace(/\?/g, () => `$${++n}`), params)).rows;
  }
  if (s.db) return s.db.prepare(q).all(...params);
  throw new Error('storeRows: neither a SQLite nor a PostgreSQL store');
}
