// Which back end a server's store uses (issue 16): SQLite, the embedded default (one file per
// server, server-kit/sqlite.ts), or PostgreSQL shared by several processes or hosts
// (server-kit/pg.ts). The store interfaces return Awaitable values: the SQLite classes answer
// at once (their many direct tests stay synchronous), the PostgreSQL ones with a promise, and
// every production caller awaits.

import { appendFileSync } from 'node:fs';

export type Awaitable<T> = T | Promise<T>;

/** A role's store: SQLite in its state directory, or PostgreSQL at `url` (schema: the role's default). */
export type StoreChoice = { kind: 'sqlite' } | PgStoreChoice;

/**
 * A PostgreSQL store: `synchronousCommit` false = PostgreSQL's synchronous_commit off (a database
 * crash may lose the last ~0.6 s of acknowledged commits; server-kit/pg.ts PgOptions); absent or
 * true = on (durable), set explicitly on every connection.
 */
export type PgStoreChoice = { kind: 'postgres'; url: string; schema?: string; synchronousCommit?: boolean };

/**
 * The store of a role's configuration: `STORE_URL=postgres://...` in the environment selects
 * PostgreSQL when the configuration says nothing (how the stack-level stories are run on PG).
 */
export function storeChoiceFrom(explicit: StoreChoice | undefined, env: NodeJS.ProcessEnv = process.env): StoreChoice {
  if (explicit) return explicit;
  followsStoreUrl(env);
  const url = env.STORE_URL;
  return url && /^postgres(ql)?:\/\//.test(url) ? { kind: 'postgres', url } : { kind: 'sqlite' };
}

/**
 * Notes that the running test file's stores follow STORE_URL: scripts/run-tests.mjs sets
 * STORE_CHOICE_LOG (a file) and TEST_FILE (inherited by the CLI processes a suite starts), and
 * runs the files noted here a second time on PostgreSQL (make test). Nothing outside a test run.
 */
export function followsStoreUrl(env: NodeJS.ProcessEnv = process.env): void {
  if (env.STORE_CHOICE_LOG && env.TEST_FILE) {
    try {
      appendFileSync(env.STORE_CHOICE_LOG, `${env.TEST_FILE}\n`);
    } catch {
      // The runner's log is gone (its run ended): nothing to note.
    }
  }
}

/** Where one store lives: a SQLite file, or a PostgreSQL schema (the role's default when absent). */
export type StorePlace = { kind: 'sqlite'; file: string } | PgStoreChoice;

/** The pool options of a PostgreSQL place (what open*Store hands to server-kit/pg.ts). */
export const pgOptionsOf = (place: PgStoreChoice): { synchronousCommit?: boolean } => (place.synchronousCommit === undefined ? {} : { synchronousCommit: place.synchronousCommit });

/** The place of a role's store: its SQLite file under the choice of SQLite, else the PostgreSQL choice. */
export function placeOf(choice: StoreChoice, file: string): StorePlace {
  return choice.kind === 'sqlite' ? { kind: 'sqlite', file } : choice;
}

/**
 * The row checker of a store's integrity check (both back ends): `each(rows, f)` runs the row
 * validator `f` on every row and keeps the message of each row it refuses; `problems` lists them.
 */
export function rowChecker(): { each<R>(rows: readonly R[], f: (r: R) => unknown): void; problems: string[] } {
  const problems: string[] = [];
  return {
    problems,
    each(rows, f) {
      for (const r of rows) {
        try {
          f(r);
        } catch (e) {
          problems.push((e as Error).message);
        }
      }
    },
  };
}
