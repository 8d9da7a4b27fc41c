// SQLite as every server opens it: WAL (readers never block the one writer, and two
// processes — reg primary and backup, or two business servers — can share one file),
// a busy timeout instead of SQLITE_BUSY failures, and numbered migrations recorded in a
// schema_version table, all applied in one transaction. A migration is SQL, or a function for
// what SQL cannot do (the business store rewraps its login keys under a new binding).
import Database from 'better-sqlite3';
import { mkdirSync, existsSync, chmodSync } from 'node:fs';
import { dirname } from 'node:path';
import { ImplementationError } from '../protocol/errors.ts';

export type Db = Database.Database;

/** One schema step: SQL to run, or a function run on the open database inside the migration's transaction. */
export type Migration = string | ((db: Db) => void);

export function openDb(file: string, migrations: readonly Migration[], busyTimeoutMs = 5_000): Db {
  const fresh = file !== ':memory:' && !existsSync(file);
  if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true });
  const db = new Database(file);
  // The stores hold login keys and sealed secrets: owner-only, like the key files (SQLite
  // gives its -wal and -shm files the main file's permissions).
  if (fresh) chmodSync(file, 0o600);
  db.pragma('journal_mode = WAL');
  db.pragma(`busy_timeout = ${Math.floor(busyTimeoutMs)}`);
  // A crashed process loses nothing committed; a power cut may lose the last transactions,
  // which the rotation design tolerates (docs/architecture.md §"Stores").
  db.pragma('synchronous = NORMAL');
  db.pragma('foreign_keys = ON');
  db.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
  const migrate = db.transaction(() => {
    const row = db.prepare('SELECT MAX(version) AS v FROM schema_version').get() as { v: number | null };
    const have = row.v ?? 0;
    if (have > migrations.length) throw new ImplementationError('STORE_SCHEMA_NEWER', `${file} has schema ${have}, this build knows ${migrations.length}`);
    for (let v = have; v < migrations.length; v++) {
      const m = migrations[v]!;
      if (typeof m === 'string') db.exec(m);
      else m(db);
      db.prepare('INSERT INTO schema_version (version) VALUES (?)').run(v + 1);
    }
  });
  // IMMEDIATE: two processes opening a fresh file at once do not both migrate.
  migrate.immediate();
  return db;
}

/** Thrown when a row read back fails validation: never act on a corrupt row. */
export function corrupt(what: string, why: string): never {
  throw new ImplementationError('STORE_CORRUPT_ROW', `${what}: ${why}`);
}
