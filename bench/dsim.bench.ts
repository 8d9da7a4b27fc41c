// The deterministic simulation's throughput (issue 14): seeds per second with no faults and with
// every fault kind, side by side in one run, and what a seed costs (events, frames, plug-ins,
// faults, invariant checks). `make soak`'s 100,000 seeds take 100,000 / (seeds/s) seconds.
// Usage: npx tsx bench/dsim.bench.ts [SEEDS]   (default 100 per row)
import { runSeeds, FAULT_KINDS, type FaultKind } from '../sim/dsim.ts';

const n = Number(process.argv[2] ?? 100);
const rows: [string, readonly FaultKind[]][] = [['no faults', []], ['every fault kind', FAULT_KINDS]];
const out: { name: string; rate: number; perCpu: number }[] = [];
console.log(`deterministic simulation, ${n} seeds per row (from 100001: seeds no test runs)`);
console.log('row                | seeds/s | seeds/CPU-s | faults/seed | checks/seed | events/seed | frames/seed | plug-ins/seed | failed');
// Warm up (the shared template, the JIT) on seeds no row counts.
await runSeeds(200_001, 5);
for (const [name, kinds] of rows) {
  const cpu0 = process.cpuUsage();
  const s = await runSeeds(100_001, n, { kinds });
  const cpu = process.cpuUsage(cpu0);
  // On a shared machine wall time includes other processes' turns; CPU time is this run's own.
  const perCpu = n / ((cpu.user + cpu.system) / 1e6);
  const t = s.totals;
  const rate = n / s.seconds;
  out.push({ name, rate, perCpu });
  console.log(`${name.padEnd(18)} | ${rate.toFixed(2).padStart(7)} | ${perCpu.toFixed(2).padStart(11)} | ${(t.faultsInjected / n).toFixed(2).padStart(11)} | ${(t.invariantChecks / n).toFixed(0).padStart(11)} | ${(t.events / n).toFixed(0).padStart(11)} | ${(t.frames / n).toFixed(0).padStart(11)} | ${(t.logins / n).toFixed(2).padStart(13)} | ${s.failed.length}`);
}
console.log(`faults / no faults: ${(out[1]!.perCpu / out[0]!.perCpu).toFixed(2)}x the seeds per CPU second`);
console.log(`make soak (100,000 seeds, every fault kind): ${(100_000 / out[1]!.rate / 3600).toFixed(1)} h at this wall rate, ${(100_000 / out[1]!.perCpu / 3600).toFixed(1)} h of one idle core`);
