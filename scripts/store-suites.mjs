// Which test files run on which store back end (issue 16: "the whole existing suite passes on
// both store back ends"). Every suite runs on SQLite (`make test`); on PostgreSQL a suite either
//   - is a store matrix (server-kit/store-backends.ts backends()): both halves in every run, or
//   - follows STORE_URL (deploy/stack.ts, sim/world.ts, `usbphone` processes, chosenBackend()):
//     scripts/test-pg.mjs runs it again with STORE_URL=postgres://..., and make test's second
//     pass runs the files that were seen following STORE_URL (scripts/run-tests.mjs --pg-pass), or
//   - is listed below: SQLite-only, because what it tests is SQLite itself. Neither test-pg.mjs
//     nor the second pass runs it with STORE_URL. docs/deploy.md ("Tests on both back ends")
//     lists the same files with the same reasons; scripts/store-suites.test.ts fails when a test
//     file opens a SQLite store class itself without being listed here, or when the two lists differ.

/** test file -> why it stays on SQLite only. */
export const SQLITE_ONLY = {
  'biz-server/timing.test.ts':
    "times the business server's login step synchronously (process.hrtime around one call), which only the in-process SQLite store answers at once; on PostgreSQL the step is asynchronous and its time a network round trip",
  'biz-server/bank.test.ts':
    "reads the SQLite file at rest (no password, the verifier only in its column, after a WAL checkpoint); the bank's store on PostgreSQL is biz-server/bank-store.test.ts (matrix) and the bank stories of sim/bank-scenarios.test.ts (test-pg)",
  'biz-server/bank-person.test.ts':
    "reads the SQLite file at rest (the OTP seed never in clear) and migrates a schema-4 SQLite file; the person rows on PostgreSQL are biz-server/bank-store.test.ts (matrix) and sim/person-bank.test.ts (test-pg)",
  'biz-server/store.test.ts':
    'a store matrix (both back ends in every run) whose schema-2 test rewraps the keys of a SQLite file written by an older build',
  'deploy/enroll-batches.test.ts':
    "counts the COMMITs of enrollInBatches, which batches SQLite transactions (one per 5,000 records); on PostgreSQL enrollment is one record per transaction",
  'cli/mistakes.test.ts':
    'damaged SQLite files (reg.sqlite, biz-accounts.sqlite) must be CLI_CORRUPT_FILE with a hint; on PostgreSQL there is no such file',
};

/** A test file's source opens a SQLite store class (or a raw SQLite database) itself. */
export function opensSqliteStore(source) {
  // Comments are not code: a file that explains what it no longer does is not flagged.
  const code = source.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
  return /\bnew\s+Sqlite(Reg|Biz|Bank|Policy|Operator)Store\s*\(|\bopenDb\s*\(/.test(code);
}

/**
 * The fewest files make test's second pass (scripts/run-tests.mjs --pg-pass, whole suite) may
 * find following STORE_URL before it fails the run: 48 were noted when it was measured
 * (decision 126, docs/benchmarks.md), and at least this many test files start a stack or a world
 * or choose a back end in their own source (scripts/store-suites.test.ts checks). A floor, not the
 * count: a few files failing in the first pass must not trip it; a noting that broke (0 files, and
 * the second pass "passes" without touching PostgreSQL) does.
 */
export const PG_PASS_MIN_FILES = 24;
