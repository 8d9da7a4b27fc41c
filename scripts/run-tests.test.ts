// scripts/run-tests.mjs against small fake test files in a directory of their own (the reviewer's
// attacks on make test's PostgreSQL pass): a file that exits 0 without a uvu summary is a failure,
// a file that fails in the first pass before reading STORE_URL is named as left out of the second,
// and a whole-suite first pass that notes too few files fails instead of "passing" on 0 files.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync, symlinkSync } from 'node:fs';
import { join, resolve, relative } from 'node:path';
import { tmpdir } from 'node:os';

const repo = resolve('.');
const runner = join(repo, 'scripts', 'run-tests.mjs');

const FOLLOWS = `import { test } from 'uvu';\nimport { storeChoiceFrom } from '${join(repo, 'server-kit', 'store-choice.ts')}';\ntest('follows', () => { storeChoiceFrom(undefined); });\ntest.run();\n`;
const CRASH = "throw new Error('crash before STORE_URL is read');\n";
const NO_SUMMARY = `import { storeChoiceFrom } from '${join(repo, 'server-kit', 'store-choice.ts')}';\nstoreChoiceFrom(undefined);\nprocess.exit(0);\n`;
const PLAIN = "import { test } from 'uvu';\nimport * as assert from 'uvu/assert';\ntest('plain', () => { assert.ok(true); });\ntest.run();\n";

// The runner's arguments are relative to its working directory (it joins them to it).
/** A directory holding `files` under t/ (and node_modules, so that the fakes import uvu and tsx runs). */
function fakes(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-run-tests-test-'));
  symlinkSync(join(repo, 'node_modules'), join(dir, 'node_modules'));
  mkdirSync(join(dir, 't'));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, 't', name), text);
  return dir;
}

function run(cwd: string, args: string[]): { status: number | null; out: string } {
  const env = { ...process.env };
  delete env.STORE_URL;
  delete env.STORE_CHOICE_LOG;
  delete env.TEST_FILE;
  const r = spawnSync(process.execPath, [runner, ...args], { cwd, env: { ...env, TEST_JOBS: '1' }, encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, out: r.stdout + r.stderr };
}

const finalLines = (out: string) => out.split('\n').filter((l) => /^\d+ passed, \d+ failed/.test(l));

test('a file that prints no uvu summary and exits 0 is one failed test ("no test summary"), not "ok" with 0 tests', () => {
  const dir = fakes({ 'c-nosummary.test.ts': NO_SUMMARY });
  try {
    const { status, out } = run(repo, [relative(repo, join(dir, 't'))]);
    assert.match(out, /FAIL .*c-nosummary\.test\.ts .*no test summary/);
    assert.equal(finalLines(out), ['0 passed, 1 failed'], out);
    assert.equal(status, 1, out);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--pg-pass names the files left out of the second pass because they failed before reading STORE_URL; the followers still run on PostgreSQL', () => {
  const dir = fakes({ 'a-crash.test.ts': CRASH, 'b-follows.test.ts': FOLLOWS });
  try {
    const { status, out } = run(repo, ['--pg-pass', relative(repo, join(dir, 't'))]);
    assert.match(out, /second pass: the 1 files whose stores followed STORE_URL/);
    assert.match(out, /not in the second pass: 1 file\(s\) that failed in the first pass before reading STORE_URL[^\n]*\n\s+\S*a-crash\.test\.ts\n/);
    assert.not.match(out, /not in the second pass[^\n]*\n\s+\S*b-follows/);
    assert.match(out, /ok {3}\[pg\] \S*b-follows\.test\.ts/);
    assert.equal(finalLines(out), ['2 passed, 1 failed'], out);
    assert.equal(status, 1, out);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--pg-pass on the whole suite that notes fewer files than the floor fails loudly; with file arguments an empty second pass is said and passes', () => {
  const dir = fakes({ 'plain.test.ts': PLAIN });
  try {
    const whole = run(dir, ['--pg-pass']);
    assert.match(whole.out, /FAIL \[pg\] the whole suite's first pass noted 0 files following STORE_URL, fewer than the floor/);
    assert.equal(finalLines(whole.out), ['1 passed, 1 failed'], whole.out);
    assert.equal(whole.status, 1, whole.out);
    const named = run(dir, ['--pg-pass', 't']);
    assert.match(named.out, /second pass: nothing to run on PostgreSQL/);
    assert.equal(finalLines(named.out), ['1 passed, 0 failed'], named.out);
    assert.equal(named.status, 0, named.out);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
