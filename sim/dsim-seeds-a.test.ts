// 500 seeds of the deterministic simulation (issue 14), every fault kind on, every invariant
// checked: seeds 1-500; sim/dsim-seeds-b.test.ts runs 501-1000 (make test: 1,000).
// A failure names its seeds: `usbphone simulate --seed S --trace` replays one.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { runSeeds, describeFault } from './dsim.ts';

test('seeds 1..500: every invariant holds under seeded faults', async () => {
  const sum = await runSeeds(1, 500);
  const lines = sum.failed.map((r) => `seed ${r.seed}: ${r.violations.map((v) => `${v.invariant}: ${v.detail}`).join('; ')} [${r.plan.faults.map(describeFault).join('; ')}]`);
  console.log(`  ${sum.seeds} seeds in ${sum.seconds.toFixed(1)} s (${(sum.seeds / sum.seconds).toFixed(1)}/s): ${sum.totals.faultsInjected} faults injected, ${sum.totals.invariantChecks} invariant checks, ${sum.totals.crashes} server crashes, ${sum.totals.logins} plug-ins, ${sum.totals.bankAnswers} bank answers, ${sum.totals.swaps} SIM swaps, ${sum.totals.attacks} attackers`);
  assert.equal(lines, [], lines.join('\n'));
  assert.ok(sum.totals.faultsInjected > 500, 'faults were injected');
  assert.ok(sum.totals.bankAnswers > 1_000 && sum.totals.swaps > 200 && sum.totals.attacks > 100, 'the banks answered, lines moved to new cards, bots attacked');
});

test.run();
