// The guard of issue 16's criterion ("the whole suite passes on both store back ends") as the
// suite grows: a test file that opens a SQLite store class itself (new SqliteRegStore(...),
// openDb(...)) runs on SQLite only whatever STORE_URL says, so it must be on the SQLite-only list
// of scripts/store-suites.mjs, with its reason, and docs/deploy.md must list the same files.
// Everything else follows STORE_URL or is a store matrix (server-kit/store-backends.ts).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, readdirSync, statSync, existsSync, mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { join, relative } from 'node:path';
import { tmpdir } from 'node:os';
import { storeChoiceFrom, followsStoreUrl } from '../server-kit/store-choice.ts';
import { chosenBackend } from '../server-kit/store-backends.ts';
// @ts-expect-error: a plain .mjs module of the scripts (no declarations)
import { SQLITE_ONLY, opensSqliteStore, PG_PASS_MIN_FILES } from './store-suites.mjs';

const only = SQLITE_ONLY as Record<string, string>;
const opens = opensSqliteStore as (source: string) => boolean;

function testFiles(dir = '.', out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    if (['node_modules', '.git', 'state', 'tmp'].includes(name)) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) testFiles(p, out);
    else if (name.endsWith('.test.ts')) out.push(relative('.', p));
  }
  return out.sort();
}

test('the scanner: a SQLite store class opened in code is seen; the back-end-neutral openers and comments are not', () => {
  for (const src of ["const s = new SqliteRegStore(join(d, 'reg.sqlite'));", 'x = new SqliteBizStore (f, key)', 'const b = new SqliteBankStore(biz.db, k);', 'new SqlitePolicyStore(f)', 'new SqliteOperatorStore(f)', "const db = openDb(file, MIGRATIONS);"]) {
    assert.ok(opens(src), src);
  }
  for (const src of ["const reg = await openRegStore(B.place('reg'));", "import { SqliteRegStore } from './store.ts';", 'let reg: SqliteRegStore;', '// was: new SqliteRegStore(file)', '/* new SqliteBizStore(f, k) */', '(biz as SqliteBizStore).db']) {
    assert.not.ok(opens(src), src);
  }
});

test('every test file that opens a SQLite store itself is on the SQLite-only list (else it must follow STORE_URL or be a store matrix)', () => {
  const files = testFiles();
  assert.ok(files.length > 100, `found ${files.length} test files`);
  // This file's own examples (the scanner's test above) are strings, not stores.
  const offenders = files.filter((f) => f !== 'scripts/store-suites.test.ts' && !(f in only) && opens(readFileSync(f, 'utf8')));
  assert.equal(offenders, [], `open a SQLite store class directly without being SQLite-only (scripts/store-suites.mjs): ${offenders.join(', ')}`);
});

test('the SQLite-only list names existing test files, each with its reason; docs/deploy.md lists the same files', () => {
  const listed = Object.keys(only).sort();
  assert.ok(listed.length > 0);
  for (const f of listed) {
    assert.ok(existsSync(f) && f.endsWith('.test.ts'), `${f} (SQLite-only) is not a test file`);
    assert.ok(only[f]!.length >= 40, `${f}: say why it is SQLite-only`);
  }
  const doc = readFileSync('docs/deploy.md', 'utf8');
  const section = doc.slice(doc.indexOf('## Tests on both back ends'));
  assert.ok(section.length < doc.length, 'docs/deploy.md has a "Tests on both back ends" section');
  const inDoc = [...section.slice(0, (section.indexOf('\n## ', 3) + 1 || section.length + 1) - 1).matchAll(/^\| `([^`]+\.test\.ts)` \|/gm)].map((m) => m[1]!).sort();
  assert.equal(inDoc, listed, 'docs/deploy.md and scripts/store-suites.mjs list different SQLite-only files');
});

test("make test's second pass finds its files: a store choice that reads STORE_URL notes the running test file; an explicit choice, or no runner, notes nothing", () => {
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-store-choice-test-'));
  try {
    const log = join(dir, 'followed');
    writeFileSync(log, '');
    const runner = { STORE_CHOICE_LOG: log, TEST_FILE: 'a/x.test.ts' };
    assert.equal(storeChoiceFrom(undefined, { ...runner }), { kind: 'sqlite' });
    assert.equal(storeChoiceFrom(undefined, { ...runner, TEST_FILE: 'b/y.test.ts', STORE_URL: 'postgres://h/d' }), { kind: 'postgres', url: 'postgres://h/d' });
    storeChoiceFrom({ kind: 'sqlite' }, { ...runner, TEST_FILE: 'c/explicit.test.ts' });
    followsStoreUrl({ TEST_FILE: 'd/no-runner.test.ts' });
    followsStoreUrl({ STORE_CHOICE_LOG: log });
    chosenBackend({ ...runner, TEST_FILE: 'e/chosen.test.ts' });
    assert.equal(readFileSync(log, 'utf8').split('\n').filter(Boolean), ['a/x.test.ts', 'b/y.test.ts', 'e/chosen.test.ts']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the second pass's floor (PG_PASS_MIN_FILES) is reachable: at least that many test files start a stack or a world, or choose a back end, in their own source", () => {
  const floor = PG_PASS_MIN_FILES as number;
  assert.ok(Number.isInteger(floor) && floor > 0, `floor ${floor}`);
  const direct = testFiles().filter((f) => !(f in only) && /startStack\(|chosenBackend\(|startWorld\(|storeChoiceFrom\(/.test(readFileSync(f, 'utf8')));
  assert.ok(direct.length >= floor, `only ${direct.length} test files start a stack/world or choose a back end themselves; the floor ${floor} would fail every make test`);
});

test.run();
