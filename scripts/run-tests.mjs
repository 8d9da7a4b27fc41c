#!/usr/bin/env node
// Runs every *.test.ts (or the files named on the command line) each in its own process,
// as `tsx FILE`, two at a time, and ends with the line `N passed, N failed` that CI counts.
// Each file is a uvu suite; its own summary ("Total/Passed/Skipped") is parsed. A file that
// exits non-zero without a summary (a crash, a syntax error) counts as one failed test.
import { spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { cpus } from 'node:os';

const root = process.cwd();
const skip = new Set(['node_modules', '.git', 'state', 'tmp']);

function findTests(dir, out = []) {
  for (const name of readdirSync(dir)) {
    if (skip.has(name)) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) findTests(p, out);
    else if (name.endsWith('.test.ts')) out.push(relative(root, p));
  }
  return out;
}

const args = process.argv.slice(2);
// Arguments: test files, or folders to search for them.
const files = (args.length ? args.flatMap((a) => (statSync(a).isDirectory() ? findTests(join(root, a)) : [a])) : findTests(root)).sort();
const jobs = Number(process.env.TEST_JOBS ?? Math.max(1, Math.min(2, cpus().length)));
const tsx = join(root, 'node_modules', '.bin', 'tsx');

let passed = 0, failed = 0, skipped = 0;
const failures = [];

function runOne(file) {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(tsx, [file], { env: { ...process.env, FORCE_COLOR: '0', NO_COLOR: '1' } });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('close', (code) => {
      const total = /Total:\s+(\d+)/.exec(out);
      const ok = /Passed:\s+(\d+)/.exec(out);
      const sk = /Skipped:\s+(\d+)/.exec(out);
      let p = 0, f = 0, s = 0;
      if (total && ok) {
        p = Number(ok[1]);
        s = sk ? Number(sk[1]) : 0;
        f = Number(total[1]) - p - s;
        if (code !== 0 && f === 0) f = 1;
      } else {
        f = code === 0 ? 0 : 1;
        if (code === 0) p = 0;
      }
      passed += p; failed += f; skipped += s;
      const ms = Date.now() - started;
      const mark = f ? 'FAIL' : 'ok  ';
      process.stdout.write(`${mark} ${file}  (${p} passed, ${f} failed, ${ms} ms)\n`);
      // A suite's figures line ('cluster figures: ...') is shown even when it passes (CI's log keeps it).
      for (const l of out.split('\n')) if (/^[a-z][\w -]* figures: /.test(l)) process.stdout.write(`     ${l}\n`);
      if (f || code !== 0) failures.push({ file, out });
      resolve();
    });
  });
}

const queue = [...files];
await Promise.all(Array.from({ length: jobs }, async () => {
  while (queue.length) await runOne(queue.shift());
}));

for (const { file, out } of failures) {
  process.stdout.write(`\n==== ${file} ====\n${out.slice(-6000)}\n`);
}
process.stdout.write(`\n${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`);
process.exitCode = failed || files.length === 0 ? 1 : 0;
