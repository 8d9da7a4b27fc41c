// `usbphone simulate`, run as the real command: what review found in its arguments (issue 14),
// and --jobs (the seeds over worker processes): the same totals as one process, a failing seed
// and a dead worker reported with their seed, Ctrl-C stopping the workers; the process set-up
// (node:crypto, attack LRU, tmpfs) changes no seed's trace.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { runSeed } from '../sim/dsim.ts';

const bin = join(import.meta.dirname, '..', 'bin', 'usbphone.js');
const cli = (...args: string[]) => cliEnv({}, ...args);
function cliEnv(env: Record<string, string>, ...args: string[]) {
  const r = spawnSync(process.execPath, [bin, 'simulate', ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 180_000 });
  return { code: r.status, out: r.stdout, err: r.stderr, signal: r.signal };
}
/** The summary without what depends on the machine (times, rates, how many processes). */
const strip = (out: string) => {
  const j = JSON.parse(out) as Record<string, unknown>;
  for (const k of ['seconds', 'seedsPerSecond', 'cpuSeconds', 'jobs']) delete j[k];
  return j;
};

/** Processes whose environment carries `tag` (the test's mark, inherited by the workers). */
function procsWith(tag: string): { pid: number; env: Map<string, string> }[] {
  const out: { pid: number; env: Map<string, string> }[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    let raw: string;
    try {
      raw = readFileSync(`/proc/${d}/environ`, 'latin1');
    } catch {
      continue;
    }
    if (!raw.includes(`USBPHONE_TEST_TAG=${tag}\0`)) continue;
    out.push({ pid: Number(d), env: new Map(raw.split('\0').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)])) });
  }
  return out;
}

test('a run past the last seed --seed takes, --trace with --json, bad --jobs: bad usage (exit 2, CLI_BAD_ARGS), nothing run', () => {
  for (const args of [['--seeds', '10', '--from', '2147483645'], ['--seed', '7', '--trace', '--json'], ['--seeds', '1', '--faults', 'none,loss'], ['--seeds', '2', '--jobs', '0'], ['--seed', '7', '--jobs', '2']]) {
    const r = cli(...args);
    assert.equal([r.code, /CLI_BAD_ARGS/.test(r.err), r.out], [2, true, ''], `${args.join(' ')}: ${r.err}`);
  }
  assert.is(cli('--seeds', '1', '--from', '2147483647', '--faults', 'none').code, 0);
});

test('the fault kinds are a set: their order and repeats do not change the run; --json names them', () => {
  const a = cli('--seed', '132', '--faults', 'corrupt,power-cut', '--json');
  const b = cli('--seed', '132', '--faults', 'power-cut,corrupt,corrupt', '--json');
  assert.is(a.code, 0, a.err);
  assert.equal(strip(a.out), strip(b.out));
  assert.equal((strip(a.out) as { kinds: string[] }).kinds, ['corrupt', 'power-cut'], "in the table's order");
});

test("the command's process set-up changes no run: its --trace is sim/dsim.ts's own trace, byte for byte", async () => {
  for (const seed of [132, 222]) {
    const r = cli('--seed', String(seed), '--trace');
    assert.is(r.code, 0, r.err);
    const plain = await runSeed(seed, { trace: true });
    assert.ok(plain.stats.faultsInjected > 0, 'a seed with faults');
    assert.is(r.out, plain.lines.join('\n') + '\n', `seed ${seed}`);
  }
});

test('--jobs 2: the same seeds, the same totals and failures as one process; the summary says seeds/s and how many workers', () => {
  const one = cli('--seeds', '6', '--from', '7', '--json');
  const two = cli('--seeds', '6', '--from', '7', '--json', '--jobs', '2');
  assert.is(one.code, 0, one.err);
  assert.is(two.code, 0, two.err);
  const j = JSON.parse(two.out) as Record<string, number>;
  assert.is(j.jobs, 2);
  assert.ok(j.seedsPerSecond! > 0 && j.cpuSeconds! > 0);
  assert.ok(j.faultsInjected! > 0 && j.invariantChecks! > 0, 'seeds 7-12 have faults');
  assert.equal(strip(two.out), strip(one.out));
});

test('failure path: a seed that breaks an invariant in a worker is reported with its seed and replay command; the others still run', () => {
  const env = { USBPHONE_TEST_SIMULATE: 'leak-serial@23' };
  const r = cliEnv(env, '--seeds', '4', '--from', '21', '--faults', 'none', '--jobs', '2', '--json');
  assert.is(r.code, 1, r.err);
  const j = JSON.parse(r.out) as { failed: number; invariantChecks: number; results: { seed: number; violations: { invariant: string }[]; replay: string }[] };
  assert.is(j.failed, 1);
  assert.is(j.results[0]!.seed, 23);
  assert.ok(j.results[0]!.violations.some((v) => v.invariant === 'no-secret-on-wire'), JSON.stringify(j.results[0]));
  assert.is(j.results[0]!.replay, 'usbphone simulate --seed 23 --trace --faults none');
  // One process, the same mutant: the same finding and totals.
  const one = cliEnv(env, '--seeds', '4', '--from', '21', '--faults', 'none', '--json');
  assert.is(one.code, 1);
  assert.equal(strip(r.out), strip(one.out));
  // As text: the FAIL line and its replay on stdout, the code on stderr.
  const t = cliEnv(env, '--seeds', '2', '--from', '22', '--faults', 'none', '--jobs', '2', '--no-shrink');
  assert.is(t.code, 1);
  assert.match(t.out, /FAIL seed 23: no-secret-on-wire/);
  assert.match(t.out, /replay: usbphone simulate --seed 23 --trace --faults none/);
  assert.match(t.err, /SIMULATE_VIOLATION/);
});

test('failure path: a worker that dies is reported with the seed it was running (no-crash), replaced, and the run ends', () => {
  const r = cliEnv({ USBPHONE_TEST_SIMULATE: 'exit@32' }, '--seeds', '5', '--from', '30', '--faults', 'none', '--jobs', '2', '--json');
  assert.is(r.signal, null, 'not hung (killed by the timeout)');
  assert.is(r.code, 1, r.err);
  const j = JSON.parse(r.out) as { failed: number; invariantChecks: number; results: { seed: number; violations: { invariant: string; detail: string }[]; replay: string }[] };
  assert.equal(j.results.map((x) => x.seed), [32]);
  assert.is(j.results[0]!.violations[0]!.invariant, 'no-crash');
  assert.match(j.results[0]!.violations[0]!.detail, /worker process running it died \(SIGKILL\)/);
  // The other four seeds ran: as many checks as a run of them alone.
  const a = JSON.parse(cli('--seeds', '2', '--from', '30', '--faults', 'none', '--json').out) as { invariantChecks: number };
  const b = JSON.parse(cli('--seeds', '2', '--from', '33', '--faults', 'none', '--json').out) as { invariantChecks: number };
  assert.is(j.invariantChecks, a.invariantChecks + b.invariantChecks);
});

test('Ctrl-C stops the workers: exit 130, no worker left, the temporary stores removed', async () => {
  const tag = randomBytes(8).toString('hex');
  const p = spawn(process.execPath, [bin, 'simulate', '--seeds', '1000', '--from', '1', '--faults', 'none', '--jobs', '2'], { env: { ...process.env, USBPHONE_TEST_TAG: tag }, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  p.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((res) => p.once('exit', (code) => res(code)));
  // Both workers up (their environment says so) and a few seconds of running.
  let workers: ReturnType<typeof procsWith> = [];
  for (let i = 0; i < 1200 && workers.length < 2; i++) {
    await new Promise((r) => setTimeout(r, 100));
    workers = procsWith(tag).filter((x) => x.env.get('USBPHONE_SIMULATE_WORKER') === '1');
  }
  assert.is(workers.length, 2, 'two workers started');
  const root = workers[0]!.env.get('TMPDIR')!;
  assert.ok(existsSync(root), root);
  await new Promise((r) => setTimeout(r, 3_000));
  p.kill('SIGINT');
  const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('hung'), 20_000))]);
  assert.is(code, 130, err);
  assert.match(err, /interrupted after \d+ of 1000 seed\(s\); the workers are stopped/);
  assert.equal(procsWith(tag), [], 'no process of the run left');
  assert.not.ok(existsSync(root), 'the temporary directory is gone');
});

test('a long run in the background (stderr not a terminal): a progress line every --progress seconds, each failing seed told on stderr as found; interrupted, the JSON summary of the seeds done, failures included (one process and --jobs 2)', async () => {
  for (const jobs of ['1', '2']) {
    const p = spawn(process.execPath, [bin, 'simulate', '--seeds', '1000', '--from', '1', '--faults', 'none', '--jobs', jobs, '--json', '--progress', '1', '--no-shrink'], { env: { ...process.env, USBPHONE_TEST_SIMULATE: 'leak-serial@2' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((res) => p.once('exit', (code) => res(code)));
    for (let i = 0; i < 1200 && !(/FAIL seed 2: no-secret-on-wire/.test(err) && /\[\d+\/1000\] 1 failing, [\d.]+ seeds\/s/.test(err)); i++) await new Promise((r) => setTimeout(r, 100));
    assert.match(err, /usbphone simulate: FAIL seed 2: no-secret-on-wire.*; replay: usbphone simulate --seed 2 --trace --faults none/, `jobs ${jobs}: ${err}`);
    assert.match(err, /usbphone simulate: \[\d+\/1000\] 1 failing, [\d.]+ seeds\/s.*, \d+ faults injected, \d+ invariant checks/, err);
    assert.is(out, '', 'nothing on stdout before the end');
    p.kill('SIGINT');
    const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('hung'), 20_000))]);
    assert.is(code, 130, err);
    const j = JSON.parse(out) as { seeds: number; done: number; resumeFrom: number; interrupted: boolean; failed: number; invariantChecks: number; results: { seed: number }[] };
    assert.is(j.interrupted, true);
    assert.is(j.seeds, 1000);
    assert.ok(j.done >= 2 && j.done < 1000, String(j.done));
    // Every seed below resumeFrom ran (and no more than were done): the run goes on from there.
    assert.ok(j.resumeFrom >= 3 && j.resumeFrom - 1 <= j.done, `resumeFrom ${j.resumeFrom}, done ${j.done}`);
    assert.match(err, new RegExp(`every seed below ${j.resumeFrom} ran: go on with --from ${j.resumeFrom} --seeds ${1001 - j.resumeFrom}`));
    assert.is(j.failed, 1);
    assert.equal(j.results.map((x) => x.seed), [2]);
    assert.ok(j.invariantChecks > 0);
  }
  // --progress is for --seeds; a bad value is bad usage.
  assert.is(cli('--seed', '1', '--progress', '5').code, 2);
  assert.is(cli('--seeds', '1', '--progress', '-1').code, 2);
});

test('interrupted while it shrinks a failing seed: the seed is reported (its schedule unshrunk), not lost, and resumeFrom is past it (one process and --jobs 2)', async () => {
  for (const jobs of ['1', '2']) {
    const p = spawn(process.execPath, [bin, 'simulate', '--seeds', '1000', '--from', '1', '--faults', 'none', '--jobs', jobs, '--json', '--progress', '1'], { env: { ...process.env, USBPHONE_TEST_SIMULATE: 'leak-serial@2' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((res) => p.once('exit', (code) => res(code)));
    // Seed 2 is being shrunk (up to 60 reruns): its failure not yet told.
    const shrinking = () => /seed 2 broke no-secret-on-wire; shrinking its fault schedule/.test(err) && !/FAIL seed 2/.test(err);
    for (let i = 0; i < 1200 && !shrinking(); i++) await new Promise((r) => setTimeout(r, 50));
    assert.ok(shrinking(), `jobs ${jobs}: ${err}`);
    p.kill('SIGINT');
    const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('hung'), 20_000))]);
    assert.is(code, 130, err);
    const j = JSON.parse(out) as { failed: number; resumeFrom: number; results: { seed: number; violations: { invariant: string }[] }[] };
    assert.is(j.failed, 1, `jobs ${jobs}: ${out}`);
    assert.is(j.results[0]!.seed, 2);
    assert.ok(j.results[0]!.violations.some((v) => v.invariant === 'no-secret-on-wire'));
    assert.ok(j.resumeFrom >= 3);
  }
});

test.run();
