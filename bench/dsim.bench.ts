// The deterministic simulation's throughput (issue 14): seeds per second with no faults and with
// every fault kind, and what a seed costs (events, frames, plug-ins, faults, invariant checks).
// Each row runs in a process of its own, side by side in one run:
//   plain      this tree's sim/dsim.ts runSeeds alone (what sim/dsim*.test.ts run);
//   simulate   the same after `usbphone simulate`'s process set-up (cli/simulate.ts
//              prepareSimulationProcess: node:crypto, a simulation-sized attack LRU, stores on tmpfs);
//   before     BENCH_BASELINE=<dir>: an earlier tree's runSeeds, plain (git archive <commit> | tar -x -C
//              <dir>, with <dir>/node_modules linked to this tree's), as bench/login-cost.bench.ts does.
// The seeds are the same in every row: their totals must be equal (the set-up changes no run).
// ROUNDS > 1 runs every variant of a row that many times, alternating (before, plain, simulate,
// before, ...), so a shared machine's load falls on all of them alike, and prints the
// median CPU figure of each with the ratios of the medians (each process's own CPU time).
// `make soak`'s 100,000 seeds take 100,000 / (seeds/s) seconds on one core; --jobs N divides it.
// Usage: npx tsx bench/dsim.bench.ts [SEEDS] [ROUNDS]   (default 100 seeds per row, 1 round)
import { spawnSync } from 'node:child_process';
import { resolve, join } from 'node:path';
import { pathToFileURL } from 'node:url';

interface ChildOut { seconds: number; cpu: number; failed: number; totals: Record<string, number> }

if (process.argv[2] === '--child') {
  // One row: [tree, set-up 0|1, seeds, kinds as JSON]. Warm up (the shared template, the JIT) on seeds no row counts.
  const [, , , tree, setup, n, kinds] = process.argv;
  const { runSeeds } = (await import(pathToFileURL(join(tree!, 'sim', 'dsim.ts')).href)) as typeof import('../sim/dsim.ts');
  const env = setup === '1' ? await ((await import(pathToFileURL(join(tree!, 'cli', 'simulate.ts')).href)) as typeof import('../cli/simulate.ts')).prepareSimulationProcess() : null;
  await runSeeds(200_001, 5);
  const cpu0 = process.cpuUsage();
  const s = await runSeeds(100_001, Number(n), { kinds: JSON.parse(kinds!) as never });
  const cpu = process.cpuUsage(cpu0);
  env?.restore();
  process.stdout.write(JSON.stringify({ seconds: s.seconds, cpu: (cpu.user + cpu.system) / 1e6, failed: s.failed.length, totals: s.totals } satisfies ChildOut) + '\n');
  process.exit(0);
}

const { FAULT_KINDS } = await import('../sim/dsim.ts');
const n = Number(process.argv[2] ?? 100);
const rounds = Math.max(1, Number(process.argv[3] ?? 1));
const here = resolve(import.meta.dirname, '..');
const BASE = process.env.BENCH_BASELINE;
const variants: { name: string; tree: string; setup: boolean }[] = [
  ...(BASE ? [{ name: 'before', tree: resolve(BASE), setup: false }] : []),
  { name: 'plain', tree: here, setup: false },
  { name: 'simulate', tree: here, setup: true },
];
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const rows: [string, readonly string[]][] = [['no faults', []], ['every fault kind', FAULT_KINDS]];
console.log(`deterministic simulation, ${n} seeds per row (from 100001: seeds no test runs), each row its own process, ${rounds} round(s)${BASE ? `; before = ${BASE}` : ''}`);
console.log('row                | variant  | round | seeds/s | seeds/CPU-s | CPU-ms/seed | faults/seed | checks/seed | events/seed | frames/seed | plug-ins/seed | failed');
/** CPU-ms per seed and wall seeds/s of each round, by row/variant. */
const cpuMs = new Map<string, number[]>();
const rate = new Map<string, number[]>();
for (const [row, kinds] of rows) {
  let first: string | null = null;
  for (let round = 1; round <= rounds; round++) {
    for (const v of variants) {
      const r = spawnSync(process.execPath, [...process.execArgv, import.meta.filename, '--child', v.tree, v.setup ? '1' : '0', String(n), JSON.stringify(kinds)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 24 });
      if (r.status !== 0) throw new Error(`${row} / ${v.name}: the row's process exited ${r.status}`);
      const o = JSON.parse(r.stdout.trim().split('\n').pop()!) as ChildOut;
      const t = o.totals;
      // CPU time is the row's own process; wall time includes other processes' turns on a shared machine.
      const key = `${row}/${v.name}`;
      cpuMs.set(key, [...(cpuMs.get(key) ?? []), (o.cpu * 1000) / n]);
      rate.set(key, [...(rate.get(key) ?? []), n / o.seconds]);
      const same = JSON.stringify(t);
      if (first === null) first = same;
      else if (same !== first) console.log(`  !! ${v.name}: the totals differ from the first variant's: ${same} vs ${first}`);
      console.log(`${row.padEnd(18)} | ${v.name.padEnd(8)} | ${String(round).padStart(5)} | ${(n / o.seconds).toFixed(2).padStart(7)} | ${(n / o.cpu).toFixed(2).padStart(11)} | ${((o.cpu * 1000) / n).toFixed(1).padStart(11)} | ${(t.faultsInjected! / n).toFixed(2).padStart(11)} | ${(t.invariantChecks! / n).toFixed(0).padStart(11)} | ${(t.events! / n).toFixed(0).padStart(11)} | ${(t.frames! / n).toFixed(0).padStart(11)} | ${(t.logins! / n).toFixed(2).padStart(13)} | ${o.failed}`);
    }
  }
}
const med = (row: string, v: string) => median(cpuMs.get(`${row}/${v}`)!);
for (const [row] of rows) {
  console.log(`${row}: median CPU-ms per seed over ${rounds} round(s): ${variants.map((v) => `${v.name} ${med(row, v.name).toFixed(1)}`).join(', ')}`);
  // A ratio above 1: fewer CPU-ms per seed than the variant it is compared with.
  const cmp = (a: string, b: string) => `${(med(row, b) / med(row, a)).toFixed(2)}x`;
  console.log(`${row}: seeds per CPU second, simulate / plain ${cmp('simulate', 'plain')}${BASE ? `, simulate / before ${cmp('simulate', 'before')}, plain / before ${cmp('plain', 'before')}` : ''}`);
}
const best = 1000 / med('every fault kind', 'simulate');
const wall = median(rate.get('every fault kind/simulate')!);
console.log(`make soak (100,000 seeds, every fault kind, simulate set-up): ${(100_000 / wall / 3600).toFixed(1)} h at this wall rate on one process, ${(100_000 / best / 3600).toFixed(1)} h of one idle core (--jobs N: divided by up to N)`);
