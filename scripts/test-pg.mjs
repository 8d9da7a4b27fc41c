#!/usr/bin/env node
// `make test-pg` (issue 16): the suite with every store on PostgreSQL. With no arguments, EVERY
// test file (run-tests.mjs's discovery) except the SQLite-only ones (scripts/store-suites.mjs,
// docs/deploy.md "Tests on both back ends"), with STORE_URL=postgres://... (deploy/stack.ts and
// sim/world.ts then put each role's store in schemas named from the stack's state directory; the
// suites that open their own stores follow it through chosenBackend()) and PG_TEST_URL (the store
// matrices' schemas) both set to a database of the run's own, dropped at the end
// (scripts/pg-database.mjs). Arguments: the files or folders to run instead.
// Ends with run-tests.mjs's `N passed, N failed`.
import { spawnSync } from 'node:child_process';
import { withTestDatabase, pgEnv, shownUrl } from './pg-database.mjs';
import { SQLITE_ONLY } from './store-suites.mjs';

const args = process.argv.slice(2);
const status = await withTestDatabase(async (url, db) => {
  process.stdout.write(`test-pg: STORE_URL=${shownUrl(url)} (database ${db}, dropped after)${args.length ? '' : `; SQLite-only, not run: ${Object.keys(SQLITE_ONLY).join(', ')}`}\n`);
  const r = spawnSync(process.execPath, ['scripts/run-tests.mjs', ...(args.length ? args : ['--except-sqlite-only'])], {
    stdio: 'inherit',
    env: { ...process.env, ...pgEnv(url) },
  });
  return r.status ?? 1;
});
process.exit(status);
