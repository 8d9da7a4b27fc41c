// `usbphone simulate`: the whole system in one deterministic simulation (issue 14,
// sim/dsim.ts). Runs seeds, prints the failing ones with the invariant they broke, shrinks each
// to a shorter fault schedule; `--seed S --trace` replays one seed with its full event trace.
// `--jobs N` splits the seeds over N worker processes (each its own process: a run replaces the
// process's Date.now and CSPRNG), one progress line, the same totals as one process.
import type { Command } from './main.ts';
import { parseOptions, intOption } from './args.ts';
import { CliError, reportError } from './flash-common.ts';
import { fork, type ChildProcess } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import type { FaultKind, RunResult } from '../sim/dsim.ts';
import type { Violation } from '../sim/dsim-invariants.ts';
import type { Mutant } from '../server-kit/mutant.ts';

export const OPTIONS = {
  seeds: { type: 'string' },
  from: { type: 'string' },
  seed: { type: 'string' },
  faults: { type: 'string' },
  jobs: { type: 'string' },
  progress: { type: 'string' },
  trace: { type: 'boolean' },
  'no-shrink': { type: 'boolean' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

const HELP = `usage: usbphone simulate --seeds N [--from S] [--jobs J] [--faults KINDS] [--no-shrink] [--progress SEC] [--json]
       usbphone simulate --seed S [--trace] [--faults KINDS] [--no-shrink] [--json]

Runs the whole system in one process on a virtual clock and a simulated network, from one seed
per run: 1-3 phones (each with a SIM card and a person banking with it), the real gateway (and
its links), the registration primary and backup, two business servers that are also banks (S4),
the operator server they ask, and the security policy server (S3), with their real SQLite
stores; three seeds in ten add a password-guessing bot. Each seed's faults come and go while the
phones log in; then every fault heals and each phone must log in again. Named invariants are
checked all along (docs/simulation.md): no-lockout, liveness, secrets-per-user,
no-secret-on-wire, no-secret-in-zones, no-half-validated-frame, store-integrity,
bank-one-identity, bank-swap-confirmed, attack-in-table (and progress, no-crash).

  --seeds N        run seeds S .. S+N-1; a progress line on a terminal, else (a log, a soak
                   in the background) one line on stderr every --progress seconds
  --from S         the first seed of --seeds (default 1)
  --jobs J         with --seeds: run the seeds in J worker processes (default 1: this process);
                   the same seeds, the same totals, J times the CPU. A worker that dies is
                   reported with the seed it was running (no-crash) and replaced
  --seed S         run one seed (the same seed replays the same run, event for event)
  --trace          with --seed: print its full event trace
  --faults KINDS   only these fault kinds, comma-separated, or 'none'; default all:
                   ${'{FAULTS}'}
  --no-shrink      do not shrink a failing seed's fault schedule
  --progress SEC   when stderr is not a terminal: a progress line every SEC seconds (default
                   60; 0: none)
  --json           one JSON object on stdout: {seeds, done, interrupted, resumeFrom, jobs,
                   failed, seconds, seedsPerSecond, cpuSeconds, faultsInjected, invariantChecks, crashes, ...,
                   results: [...]}, failing seeds with their violations, shrunk schedule and
                   replay command; each failing seed is also told on stderr as it is found
  -h, --help       this text

Exit: 0 every seed kept every invariant, 1 a seed broke one (SIMULATE_VIOLATION), 2 bad usage,
130 interrupted (Ctrl-C or SIGTERM stops the workers; the summary of the seeds done so far,
failing ones included, is printed as for a whole run).
`;

/** Set (to 1) in a worker's environment; its options come over the IPC channel. */
const WORKER_ENV = 'USBPHONE_SIMULATE_WORKER';
/**
 * TEST ONLY (cli/simulate.test.ts): `mutant@seed` runs that seed with a server mutant
 * (server-kit/mutant.ts), to see a failing seed reported from a worker; `exit@seed` makes a
 * worker die (SIGKILL) as it starts that seed, to see a dead worker reported, not waited for.
 */
const TEST_ENV = 'USBPHONE_TEST_SIMULATE';
/** Shrinking reruns a seed (up to 60 times): the first few failures only, so a broken build still ends. */
const SHRINK_FIRST = 3;

/**
 * What a process that runs seeds sets up before its first one. None of it changes a run (a
 * seed's trace is the same byte for byte with it and without it: cli/simulate.test.ts); it cuts
 * what a seed costs that is not the simulated behaviour:
 * - the protocol's primitives on node:crypto: the phones' chip engine (firmware/hal/node/
 *   chip-crypto.ts: HMAC, HKDF, AEAD as every server host runs them, decision 101, plus the
 *   SHA-256 of the boot measurements and Ed25519), the same bytes and verdicts as the noble
 *   reference (chip-crypto.test.ts, protocol/native-crypto.test.ts);
 * - the runs' store files on tmpfs (/dev/shm) when there is one: a seed opens, writes and
 *   closes five SQLite databases, and on a disk each close's checkpoint waits for its fsync.
 *   `tmpRoot` given (a worker): its parent made it and removes it.
 * Returns what puts it back (and removes the temporary directory it made).
 */
export async function prepareSimulationProcess(o: { tmpRoot?: string } = {}): Promise<{ tmpRoot: string; restore: () => void }> {
  const [{ useCryptoEngine }, { chipEngine }] = await Promise.all([import('../protocol/crypto-engine.ts'), import('../firmware/hal/node/chip-crypto.ts')]);
  const engine = useCryptoEngine(chipEngine);
  const prevTmp = process.env.TMPDIR;
  const own = o.tmpRoot === undefined;
  const tmpRoot = o.tmpRoot ?? mkdtempSync(join(fastTmp(), 'usbphone-simulate-'));
  // os.tmpdir() reads TMPDIR at each call: sim/dsim-world.ts makes its directories under it.
  process.env.TMPDIR = tmpRoot;
  return {
    tmpRoot,
    restore: () => {
      useCryptoEngine(engine);
      if (prevTmp === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = prevTmp;
      if (own) rmSync(tmpRoot, { recursive: true, force: true });
    },
  };
}

/** /dev/shm when it is a directory this process may write, else the usual temporary directory. */
function fastTmp(): string {
  try {
    if (statSync('/dev/shm').isDirectory()) {
      accessSync('/dev/shm', constants.W_OK);
      return '/dev/shm';
    }
  } catch {
    // no tmpfs there
  }
  return tmpdir();
}

function testHook(kind: 'mutant' | 'exit', seed: number): string | null {
  const v = process.env[TEST_ENV];
  if (!v) return null;
  const [what, at] = v.split('@');
  if (Number(at) !== seed) return null;
  if (kind === 'exit') return what === 'exit' ? 'exit' : null;
  return what === 'exit' ? null : what!;
}

/** One seed as the summary keeps it: what a worker sends its parent. */
interface SeedReport {
  seed: number;
  ok: boolean;
  stats: RunResult['stats'];
  violations: Violation[];
  faults: string[];
}
interface Failure {
  seed: number;
  violations: Violation[];
  faults: string[];
  shrunk: string[];
  replay: string;
}
type Totals = { faultsInjected: number; invariantChecks: number; events: number; logins: number; frames: number; crashes: number; virtualMs: number; bankAnswers: number; swaps: number; attacks: number };

type ToWorker =
  | { t: 'init'; kinds: FaultKind[] | null }
  | { t: 'run'; from: number; n: number }
  | { t: 'shrink'; seed: number; yes: boolean };
type FromWorker =
  | { t: 'ready' }
  | { t: 'seed'; r: SeedReport; cpuMs: number }
  | { t: 'shrunk'; seed: number; schedule: string[] }
  | { t: 'idle'; cpuMs: number };

const cpuMs = () => {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1000;
};

/**
 * Runs seeds from .. from+n-1 one after the other (sim/dsim.ts runSeed), telling `onSeed` of
 * each before the next starts. The test hooks (TEST_ENV) act here.
 */
async function runRange(from: number, n: number, o: { kinds?: FaultKind[]; trace?: boolean }, onSeed: (r: RunResult) => Promise<void>): Promise<void> {
  const { runSeed } = await import('../sim/dsim.ts');
  for (let s = from; s < from + n; s++) {
    if (testHook('exit', s) && process.send) process.kill(process.pid, 'SIGKILL');
    const mutant = (testHook('mutant', s) as Mutant | null) ?? undefined;
    await onSeed(await runSeed(s, { kinds: o.kinds, trace: o.trace, mutant }));
  }
}

/** A worker process: runs the batches its parent sends, reports each seed, shrinks a failure when told to. */
async function worker(): Promise<number> {
  const send = (m: FromWorker) => process.send!(m);
  const { shrink, describeFault } = await import('../sim/dsim.ts');
  await prepareSimulationProcess({ tmpRoot: process.env.TMPDIR ?? tmpdir() });
  // The parent gone (killed, or its channel closed): nothing left to report to. A Ctrl-C on
  // the terminal reaches every process of the group: the parent alone decides, and stops us.
  process.on('disconnect', () => process.exit(0));
  process.on('SIGINT', () => {});
  let kinds: FaultKind[] | undefined;
  let shrinkAnswer: ((yes: boolean) => void) | null = null;
  let queue = Promise.resolve();
  process.on('message', (m: ToWorker) => {
    if (m.t === 'init') kinds = m.kinds ?? undefined;
    else if (m.t === 'shrink') shrinkAnswer?.(m.yes);
    else if (m.t === 'run') {
      queue = queue.then(async () => {
        await runRange(m.from, m.n, { kinds }, async (r) => {
          const faults = r.plan.faults.map(describeFault);
          send({ t: 'seed', r: { seed: r.seed, ok: r.ok, stats: r.stats, violations: r.violations, faults }, cpuMs: cpuMs() });
          if (r.ok) return;
          // The parent decides (the first few failures of the whole run are shrunk).
          const yes = await new Promise<boolean>((res) => (shrinkAnswer = res));
          shrinkAnswer = null;
          const mutant = (testHook('mutant', r.seed) as Mutant | null) ?? undefined;
          const schedule = yes ? (await shrink(r.seed, { kinds, mutant })).plan.faults.map(describeFault) : faults;
          send({ t: 'shrunk', seed: r.seed, schedule });
        });
        send({ t: 'idle', cpuMs: cpuMs() });
      });
    }
  });
  send({ t: 'ready' });
  // Runs until its parent stops it (SIGTERM, or the channel closes).
  return new Promise<number>(() => {});
}

export const command: Command = {
  summary: 'run seeds of the whole system in one deterministic simulation, with faults, in one process or --jobs N; replay one with --trace (issue 14)',
  async run(argv) {
    if (process.env[WORKER_ENV] === '1' && process.send) return worker();
    try {
      const v = parseOptions('simulate', argv, OPTIONS).values;
      const { FAULT_KINDS } = await import('../sim/dsim.ts');
      if (v.help) {
        process.stdout.write(HELP.replace('{FAULTS}', FAULT_KINDS.join(',')));
        return 0;
      }
      if (v.seed !== undefined && (v.seeds !== undefined || v.from !== undefined)) throw new CliError('CLI_BAD_ARGS', "give --seed S (one run) or --seeds N [--from S], not both; see 'usbphone simulate --help'");
      if (v.seed === undefined && v.seeds === undefined) throw new CliError('CLI_BAD_ARGS', "give --seeds N or --seed S; see 'usbphone simulate --help'");
      if (v.trace && v.seed === undefined) throw new CliError('CLI_BAD_ARGS', '--trace applies to one seed: --seed S --trace');
      if (v.progress !== undefined && v.seed !== undefined) throw new CliError('CLI_BAD_ARGS', '--progress applies to --seeds N');
      if (v.jobs !== undefined && v.seed !== undefined) throw new CliError('CLI_BAD_ARGS', '--jobs applies to --seeds N: one seed runs in this process');
      let kinds: FaultKind[] | undefined;
      if (typeof v.faults === 'string') {
        const list = v.faults === 'none' ? [] : v.faults.split(',').map((s) => s.trim());
        for (const k of list) if (!(FAULT_KINDS as readonly string[]).includes(k)) throw new CliError('CLI_BAD_ARGS', `--faults: no fault kind '${k}'; the kinds: ${FAULT_KINDS.join(', ')}; or --faults none alone`);
        // One set of kinds, one run: in the table's order and once each, whatever order they were given in (found by review).
        kinds = FAULT_KINDS.filter((k) => list.includes(k));
      }
      if (v.trace && v.json) throw new CliError('CLI_BAD_ARGS', '--trace prints the event trace as text; give --trace or --json, not both');
      const one = v.seed !== undefined;
      const from = one ? intOption(v.seed, 'seed', 0, 2 ** 31 - 1, 1) : intOption(v.from, 'from', 0, 2 ** 31 - 1, 1);
      const n = one ? 1 : intOption(v.seeds, 'seeds', 1, 10_000_000, 1);
      const jobs = Math.min(n, intOption(v.jobs, 'jobs', 1, 256, 1));
      // Every seed run must replay with --seed: the last one stays within --seed's range (found by review).
      if (from + n - 1 > 2 ** 31 - 1) throw new CliError('CLI_BAD_ARGS', `--from ${from} --seeds ${n} runs past seed ${2 ** 31 - 1}, the last one --seed takes`);
      const progressS = intOption(v.progress, 'progress', 0, 86_400, 60);
      return await simulate({ one, from, n, jobs, kinds, trace: one && v.trace === true, json: v.json === true, shrink: !v['no-shrink'], progressS });
    } catch (e) {
      return reportError('simulate', e);
    }
  },
};

interface Args {
  one: boolean;
  from: number;
  n: number;
  jobs: number;
  kinds: FaultKind[] | undefined;
  trace: boolean;
  json: boolean;
  shrink: boolean;
  /** Seconds between progress lines when stderr is not a terminal (0: none). */
  progressS: number;
}

async function simulate(a: Args): Promise<number> {
  const { FAULT_KINDS } = await import('../sim/dsim.ts');
  const faultsArg = a.kinds === undefined ? '' : ` --faults ${a.kinds.length ? a.kinds.join(',') : 'none'}`;
  const replay = (seed: number) => `usbphone simulate --seed ${seed} --trace${faultsArg}`;
  const tty = process.stderr.isTTY === true && !a.json;
  const failed: Failure[] = [];
  const totals: Totals = { faultsInjected: 0, invariantChecks: 0, events: 0, logins: 0, frames: 0, crashes: 0, virtualMs: 0, bankAnswers: 0, swaps: 0, attacks: 0 };
  let done = 0;
  const t0 = performance.now();
  const status = () => `[${done}/${a.n}] ${failed.length} failing, ${(done / ((performance.now() - t0) / 1000)).toFixed(1)} seeds/s${a.jobs > 1 ? `, ${a.jobs} workers` : ''}`;
  // Not on a terminal (a log file, a soak left running): a line now and then, not one per seed.
  let nextLine = performance.now() + a.progressS * 1000;
  const progress = () => {
    if (tty) {
      if (done % 10 === 0 || done === a.n) process.stderr.write(`\r\x1b[K${status()}`);
    } else if (!a.one && a.progressS > 0 && performance.now() >= nextLine) {
      nextLine = performance.now() + a.progressS * 1000;
      process.stderr.write(`usbphone simulate: ${status()}, ${totals.faultsInjected} faults injected, ${totals.invariantChecks} invariant checks\n`);
    }
  };
  // The seeds run so far above the first gap (the workers take batches: a stop leaves holes).
  const ran = new Set<number>();
  let resumeFrom = a.from;
  const counted = (r: SeedReport) => {
    done++;
    ran.add(r.seed);
    while (ran.delete(resumeFrom)) resumeFrom++;
    for (const k of Object.keys(totals) as (keyof Totals)[]) totals[k] += r.stats[k];
  };
  const fail = (f: Omit<Failure, 'replay'>) => {
    const x = { ...f, replay: replay(f.seed) };
    failed.push(x);
    // In JSON the findings come at the end: a long run tells each one as it is found, on stderr.
    if (a.json && !a.one) process.stderr.write(`usbphone simulate: FAIL seed ${x.seed}: ${[...new Set(x.violations.map((v) => v.invariant))].join(', ')}; replay: ${x.replay}\n`);
    if (!a.json) {
      if (tty) process.stderr.write('\r\x1b[K');
      process.stdout.write(`FAIL seed ${x.seed}: ${x.violations.map((v) => `${v.invariant} (${v.detail})`).join('; ')}\n  faults: ${x.faults.join('; ') || 'none'}\n  shrunk: ${x.shrunk.join('; ') || 'none'}\n  replay: ${x.replay}\n`);
    }
  };
  // Shrinking reruns the seed (up to 60 times): said, so a run that seems to stall does not.
  const tellShrinking = (seed: number, violations: SeedReport['violations']) => {
    if (tty) process.stderr.write('\r\x1b[K');
    process.stderr.write(`usbphone simulate: seed ${seed} broke ${[...new Set(violations.map((v) => v.invariant))].join(', ')}; shrinking its fault schedule\n`);
  };
  const env = a.jobs > 1 ? null : await prepareSimulationProcess();
  const tmpRoot = env?.tmpRoot ?? mkdtempSync(join(fastTmp(), 'usbphone-simulate-'));
  let interrupted = false;
  let shrinking: Omit<Failure, 'replay'> | null = null;
  let stopWorkers: (() => Promise<void>) | null = null;
  const onSignal = () => {
    if (interrupted) return;
    interrupted = true;
    if (stopWorkers) return void stopWorkers();
    // One process: the seed running now is dropped with it; what it had made goes too. A failing
    // seed being shrunk is counted already: it is reported with its schedule unshrunk.
    if (shrinking) fail(shrinking);
    env?.restore();
    process.exit(summarize(cpuMs()));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let cpu = 0;
  try {
    if (a.jobs === 1) {
      const { shrink, describeFault } = await import('../sim/dsim.ts');
      let shrunk = 0;
      await runRange(a.from, a.n, { kinds: a.kinds, trace: a.trace }, async (r) => {
        if (a.trace && !a.json) process.stdout.write(r.lines.join('\n') + '\n');
        const faults = r.plan.faults.map(describeFault);
        counted({ seed: r.seed, ok: r.ok, stats: r.stats, violations: r.violations, faults });
        if (!r.ok) {
          let schedule = faults;
          if (a.shrink && shrunk < SHRINK_FIRST) {
            shrunk++;
            const mutant = (testHook('mutant', r.seed) as Mutant | null) ?? undefined;
            // An interrupt while it shrinks reports the failure as it is (onSignal).
            shrinking = { seed: r.seed, violations: r.violations, faults, shrunk: faults };
            tellShrinking(r.seed, r.violations);
            schedule = (await shrink(r.seed, { kinds: a.kinds, mutant })).plan.faults.map(describeFault);
            shrinking = null;
          }
          fail({ seed: r.seed, violations: r.violations, faults, shrunk: schedule });
        }
        progress();
      });
      cpu = cpuMs();
    } else {
      const r = await runWorkers(a, tmpRoot, { counted, fail, progress, shrinking: tellShrinking }, (stop) => (stopWorkers = stop), () => interrupted);
      cpu = r.cpuMs + cpuMs();
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (env) env.restore();
    else rmSync(tmpRoot, { recursive: true, force: true });
  }
  return summarize(cpu);

  /** The summary of the seeds done (all of them, or those before an interrupt); returns the exit code. */
  function summarize(cpu: number): number {
    if (tty) process.stderr.write('\r\x1b[K');
    const secs = (performance.now() - t0) / 1000;
    const rate = done / secs;
    failed.sort((x, y) => x.seed - y.seed);
    if (a.json) process.stdout.write(JSON.stringify({ seeds: a.n, from: a.from, done, interrupted, ...(interrupted ? { resumeFrom } : {}), kinds: a.kinds ?? FAULT_KINDS, jobs: a.jobs, failed: failed.length, seconds: Math.round(secs * 10) / 10, seedsPerSecond: Math.round(rate * 100) / 100, cpuSeconds: Math.round(cpu / 100) / 10, ...totals, results: failed }) + '\n');
    // With --trace, stdout is the trace alone (it replays byte for byte); the summary, with its real-time rate, goes to stderr.
    else (a.trace ? process.stderr : process.stdout).write(`${interrupted ? `interrupted: ${done} of ${a.n}` : a.n} seed(s) from ${a.from}: ${done - failed.length} passed, ${failed.length} failed; ${totals.faultsInjected} faults injected, ${totals.invariantChecks} invariant checks, ${totals.crashes} server crashes, ${totals.bankAnswers} bank answers, ${totals.swaps} SIM swaps, ${totals.attacks} attackers, ${rate.toFixed(1)} seeds/s${a.jobs > 1 ? ` (${a.jobs} workers)` : ''}\n`);
    if (interrupted) {
      process.stderr.write(`usbphone simulate: interrupted after ${done} of ${a.n} seed(s)${a.jobs > 1 ? '; the workers are stopped' : ''}; so far ${failed.length} failed, ${totals.faultsInjected} faults injected, ${totals.invariantChecks} invariant checks, ${totals.crashes} server crashes${resumeFrom >= a.from + a.n ? '; every seed ran' : `; every seed below ${resumeFrom} ran: go on with --from ${resumeFrom} --seeds ${a.from + a.n - resumeFrom}`}\n`);
      return 130;
    }
    if (failed.length) {
      if (!a.json) process.stderr.write(`usbphone simulate: ${failed.length} seed(s) broke an invariant (SIMULATE_VIOLATION)\n`);
      return 1;
    }
    return 0;
  }
}

/** Workers that may die (each replaced) before the run gives up: a build whose workers cannot start ends. */
const MAX_WORKER_DEATHS = 5;
/** A stopped worker that has not exited after this long is killed. */
const STOP_GRACE_MS = 5_000;

interface Sink {
  counted(r: SeedReport): void;
  shrinking(seed: number, violations: SeedReport['violations']): void;
  fail(f: Omit<Failure, 'replay'>): void;
  progress(): void;
}

/**
 * Runs a's seeds in a.jobs worker processes (this command, forked with WORKER_ENV): each asks
 * for a batch of consecutive seeds, runs them, reports each one; this process sums them. A
 * worker that dies mid-batch is reported with the seed it was running (no-crash) and replaced;
 * the rest of its batch goes back in the queue. `onStop` is handed the function that stops
 * every worker (Ctrl-C). Resolves with the workers' CPU time (ms).
 */
async function runWorkers(a: Args, tmpRoot: string, sink: Sink, onStop: (stop: () => Promise<void>) => void, interrupted: () => boolean): Promise<{ cpuMs: number }> {
  const { planFor, describeFault } = await import('../sim/dsim.ts');
  const queue: { from: number; n: number }[] = [{ from: a.from, n: a.n }];
  let left = a.n;
  // Batches small enough that the workers finish together, large enough that asking is rare.
  const batch = () => Math.max(1, Math.min(50, Math.ceil(left / (a.jobs * 8))));
  const take = (): { from: number; n: number } | null => {
    const q = queue[0];
    if (!q) return null;
    const n = Math.min(q.n, batch());
    const b = { from: q.from, n };
    q.from += n;
    q.n -= n;
    if (q.n === 0) queue.shift();
    return b;
  };
  let shrunk = 0;
  let deaths = 0;
  let cpuDone = 0;
  interface W { p: ChildProcess; id: number; cur: { from: number; n: number; next: number } | null; pendingFail: SeedReport | null; cpuMs: number; exited: Promise<void> }
  const workers = new Set<W>();
  let nextId = 0;
  return new Promise<{ cpuMs: number }>((resolve, reject) => {
    let finished = false;
    const finish = (e?: Error) => {
      if (finished) return;
      finished = true;
      void stopAll().then(() => (e ? reject(e) : resolve({ cpuMs: cpuDone })));
    };
    const stopAll = async () => {
      const all = [...workers];
      for (const w of all) {
        w.p.kill('SIGTERM');
        const t = setTimeout(() => w.p.kill('SIGKILL'), STOP_GRACE_MS);
        void w.exited.then(() => clearTimeout(t));
      }
      await Promise.all(all.map((w) => w.exited));
    };
    onStop(async () => finish());
    const checkDone = () => {
      if (queue.length === 0 && [...workers].every((w) => w.cur === null && w.pendingFail === null)) finish();
    };
    const give = (w: W) => {
      const b = take();
      if (!b) {
        checkDone();
        return;
      }
      w.cur = { ...b, next: b.from };
      w.p.send({ t: 'run', from: b.from, n: b.n } satisfies ToWorker);
    };
    const spawn = () => {
      const id = nextId++;
      const p = fork(join(import.meta.dirname, '..', 'bin', 'usbphone.js'), ['simulate'], {
        env: { ...process.env, [WORKER_ENV]: '1', TMPDIR: tmpRoot },
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      const w: W = { p, id, cur: null, pendingFail: null, cpuMs: 0, exited: new Promise((r) => p.once('exit', () => r())) };
      workers.add(w);
      p.on('message', (m: FromWorker) => {
        if (m.t === 'ready') {
          p.send({ t: 'init', kinds: a.kinds ?? null } satisfies ToWorker);
          give(w);
        } else if (m.t === 'seed') {
          w.cpuMs = m.cpuMs;
          if (w.cur) w.cur.next = m.r.seed + 1;
          left--;
          sink.counted(m.r);
          if (m.r.ok) sink.progress();
          else {
            w.pendingFail = m.r;
            const yes = a.shrink && shrunk < SHRINK_FIRST;
            if (yes) {
              shrunk++;
              sink.shrinking(m.r.seed, m.r.violations);
            }
            p.send({ t: 'shrink', seed: m.r.seed, yes } satisfies ToWorker);
          }
        } else if (m.t === 'shrunk') {
          const f = w.pendingFail;
          w.pendingFail = null;
          if (f) sink.fail({ seed: f.seed, violations: f.violations, faults: f.faults, shrunk: m.schedule });
          sink.progress();
        } else if (m.t === 'idle') {
          w.cpuMs = m.cpuMs;
          w.cur = null;
          give(w);
        }
      });
      p.on('error', () => {});
      p.once('exit', (code, signal) => {
        workers.delete(w);
        cpuDone += w.cpuMs;
        if (finished || interrupted()) {
          // Stopped while shrinking a failing seed (counted already): reported unshrunk, not lost.
          if (w.pendingFail) sink.fail({ seed: w.pendingFail.seed, violations: w.pendingFail.violations, faults: w.pendingFail.faults, shrunk: w.pendingFail.faults });
          w.pendingFail = null;
          return;
        }
        // Died under us: what it was running is a finding, the rest of its batch is run by another.
        deaths++;
        const why = `the worker process running it died (${signal ?? `exit code ${code}`}); replay it alone to see whether the seed is the cause`;
        if (w.pendingFail) {
          const f = w.pendingFail;
          sink.fail({ seed: f.seed, violations: f.violations, faults: f.faults, shrunk: f.faults });
        }
        const c = w.cur;
        if (c && c.next < c.from + c.n && !w.pendingFail) {
          left--;
          sink.counted({ seed: c.next, ok: false, stats: { events: 0, virtualMs: 0, frames: 0, faultsInjected: 0, invariantChecks: 0, logins: 0, crashes: 0, bankAnswers: 0, swaps: 0, attacks: 0 }, violations: [], faults: [] });
          const faults = planFor(c.next, a.kinds).faults.map(describeFault);
          sink.fail({ seed: c.next, violations: [{ invariant: 'no-crash', detail: why, at: 0 }], faults, shrunk: faults });
          if (c.next + 1 < c.from + c.n) queue.unshift({ from: c.next + 1, n: c.from + c.n - c.next - 1 });
        } else if (c && c.next < c.from + c.n) queue.unshift({ from: c.next, n: c.from + c.n - c.next });
        sink.progress();
        if (deaths > MAX_WORKER_DEATHS) return finish(new CliError('SIMULATE_VIOLATION', `${deaths} worker processes died; stopped with ${left} seed(s) not run`, 1));
        if (queue.length > 0) spawn();
        else checkDone();
      });
    };
    for (let i = 0; i < a.jobs; i++) spawn();
  });
}
