// A PostgreSQL database of a test run's own (issue 16): created on the server of PG_TEST_URL
// (default postgres://root@127.0.0.1:5432/test), handed to `f` as a URL, dropped afterwards with
// whatever schemas a suite left in it, so that runs never meet other sessions' schemas.
// Used by scripts/test-pg.mjs and by scripts/run-tests.mjs --pg-pass (make test).
import { randomBytes } from 'node:crypto';
import pg from 'pg';

export async function withTestDatabase(f) {
  const base = new URL(process.env.PG_TEST_URL ?? 'postgres://root@127.0.0.1:5432/test');
  if (!base.username) base.username = process.env.PGUSER ?? 'root';
  const db = `test_pg_${randomBytes(5).toString('hex')}`;
  const admin = async (sql) => {
    const c = new pg.Client({ connectionString: base.toString() });
    await c.connect();
    try {
      await c.query(sql);
    } finally {
      await c.end();
    }
  };
  await admin(`CREATE DATABASE ${db}`);
  const url = new URL(base);
  url.pathname = `/${db}`;
  try {
    return await f(url.toString(), db);
  } finally {
    await admin(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  }
}

/** The environment of a run on PostgreSQL: STORE_URL for the stacks, PG_TEST_URL for the store matrices. */
export const pgEnv = (url) => ({ STORE_URL: url, PG_TEST_URL: url });

/** The URL for a log line (no user or password). */
export const shownUrl = (url) => url.replace(/\/\/[^@]*@/, '//');
