#!/usr/bin/env node
// `make test-pg` (issue 16): the stack-level suites with every store on PostgreSQL
// (STORE_URL=postgres://...: deploy/stack.ts and sim/world.ts then put each role's store in
// schemas named from the stack's state directory). The run gets a database of its own on the
// server of PG_TEST_URL (default postgres://root@127.0.0.1:5432/test), dropped at the end with
// whatever schemas a suite left in it, so that runs never meet other sessions' schemas.
// Arguments: the suites (default: SUITES below); ends with run-tests.mjs's `N passed, N failed`.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import pg from 'pg';

/** The suites that run a stack or a story end to end (each passes on PostgreSQL). */
const SUITES = [
  'deploy/stack.test.ts', 'deploy/faults.test.ts', 'deploy/stack-pg.test.ts', 'deploy/operator-stack.test.ts', 'deploy/logs.test.ts',
  'reg-server/session.test.ts', 'biz-server/session.test.ts',
  'sim/scenarios.test.ts', 'sim/bank-scenarios.test.ts', 'sim/attack-table.test.ts',
  // The other suites that start a stack or a world: each passes on PostgreSQL as well.
  'deploy/page.test.ts', 'deploy/feed.test.ts', 'cli/enroll.test.ts',
  'sim/secrets.test.ts', 'sim/power-cut.test.ts', 'sim/capture.test.ts', 'sim/profiles.test.ts', 'sim/attestation.test.ts', 'sim/retry.test.ts',
  'sim/endpoints.test.ts', 'sim/withhold.test.ts', 'sim/server-metrics.test.ts', 'sim/region.test.ts', 'sim/park.test.ts',
];

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
let status = 1;
try {
  const args = process.argv.slice(2);
  process.stdout.write(`test-pg: STORE_URL=${url.toString().replace(/\/\/[^@]*@/, '//')} (database ${db}, dropped after)\n`);
  const r = spawnSync(process.execPath, ['scripts/run-tests.mjs', ...(args.length ? args : [])], {
    stdio: 'inherit',
    // PG_TEST_URL too: deploy/stack-pg.test.ts and the store matrix make their schemas there.
    env: { ...process.env, STORE_URL: url.toString(), PG_TEST_URL: url.toString() },
  });
  status = r.status ?? 1;
} finally {
  await admin(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
}
process.exit(status);
