// What the power-cut search's tests share (sim/power-cut-search*.test.ts): how a result is
// printed (the figures a reader compares run to run, docs/benchmarks.md; the first failures
// with their operation index), the test of one of the phone's own writes and of one host write
// to the disk unit.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { searchPowerCuts, powerCutScenario, startCutWorld, type SearchResult } from './power-cut-search.ts';
import type { World } from './world.ts';

export const figures = (r: SearchResult) =>
  `${r.scenario}: ${r.ops} flash operations (${Object.entries(r.opKinds).map(([k, n]) => `${n} ${k}`).join(', ') || 'none'}), ${r.cuts} cuts (${r.recoveryCuts} of them a second cut in the next power-on's writes), ${r.failures.length} failures, ${r.ms} ms; wrote ${r.wrote.join(', ') || 'nothing'}`;

export const show = (r: SearchResult, n = 5) => r.failures.slice(0, n).map((f) => `op ${f.op}${f.torn === null ? '' : ` torn ${f.torn}`} [${f.invariant}] ${f.detail}`).join('\n');

/** Registers the test of host write `name` (a scenario of power-cut-search.ts), which changes `file` only. */
export function hostWriteSearchTest(name: string, file: string): void {
  test(`power cut at every flash operation of "${name}", whole and torn, and again in the next power-on's writes, then a replug: untouched files intact, fsck.fat clean, hidden and virtual zones untouched, the phone logs in`, async () => {
    const world = await startCutWorld();
    try {
      const r = await searchPowerCuts(powerCutScenario(name), { world, firstIndex: 100 });
      console.log(figures(r));
      assert.equal(r.failures, [], show(r));
      assert.equal(r.wrote, [file], 'the uncut run writes what the scenario is about');
      assert.ok(r.ops > 10 && Object.keys(r.opKinds).every((k) => k.endsWith(' free')), JSON.stringify(r.opKinds));
      // Every host write here rewrites at least one sector (erase needed): a committed rewrite cut
      // before it is done is finished by the next power-on, which is then cut too (and the boot's saves).
      assert.ok(r.recoveryCuts > 0, 'the next power-on was cut');
    } finally {
      await world.stop();
    }
  });
}

/**
 * Registers the test of the phone's own write `name` (a scenario of power-cut-search.ts) in a
 * world `world()` gives (phone indices from `firstIndex`); its uncut run must move the record
 * stores `wrote` (a search over a write that writes nothing proves nothing).
 */
export function firmwareWriteSearchTest(world: () => World, name: string, wrote: string[], firstIndex: number): void {
  test(`power cut at every flash operation of "${name}", whole and torn, and again in the next power-on's writes, then a replug: old or new record in every store, virtual and free zones untouched, the phone logs in`, async () => {
    const r = await searchPowerCuts(powerCutScenario(name), { world: world(), firstIndex });
    console.log(figures(r));
    assert.equal(r.failures, [], show(r));
    assert.equal(r.wrote, wrote, 'the uncut run writes what the scenario is about');
    const programs = Object.entries(r.opKinds).filter(([k]) => k.startsWith('program')).reduce((a, [, n]) => a + n, 0);
    assert.ok(r.ops >= 3, `${r.ops} operations`);
    assert.is(r.cuts - r.recoveryCuts, r.ops + programs, 'every operation cut, every program also torn');
    assert.ok(r.recoveryCuts > 0, 'the next power-on, which registers again or rotates, was cut too');
    assert.equal(Object.keys(r.opKinds).filter((k) => !k.endsWith(' hidden')), [], 'the firmware writes the hidden zone only');
  });
}

/** One world for the file's tests: started before the first, stopped after the last; the getter gives it. */
export function suiteCutWorld(): () => World {
  let world: Awaited<ReturnType<typeof startCutWorld>> | undefined;
  test.before(async () => {
    world = await startCutWorld();
  });
  test.after(async () => {
    await world?.stop();
  });
  return () => {
    if (!world) throw new Error('the power-cut world is not started (used outside a test)');
    return world;
  };
}
