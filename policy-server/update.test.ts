// The period update (S3.6-S3.9) on a real store, both back ends (the store-backed tests run as a
// matrix: server-kit/store-backends.ts): the patent's worked example, attack rates, the first
// policy with its floor, and the time slices really bounding the work.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { sha256 } from '@noble/hashes/sha2.js';
import { initialTable, verifyTable, tablePublicKey, PPM, type AttackTable } from '../protocol/attack-table.ts';
import { ImplementationError } from '../protocol/errors.ts';
import type { PolicyStore } from './store.ts';
import { openPolicyStore } from './pg-store.ts';
import { backends } from '../server-kit/store-backends.ts';
import { updatePeriod, levelFor, rateFor, degreesFor, sliceRows, checkParams, DEFAULT_THRESHOLDS, type PolicyParams } from './update.ts';
import type { AttackReport } from '../server-kit/admin-messages.ts';
import { PATENT_SITES } from './test-util.ts';

const key = sha256(new TextEncoder().encode('update test policy key'));
const T = 60_000;
const params = (over: Partial<PolicyParams> = {}): PolicyParams => ({ periodMs: T, budgetRows: 1_000, thresholds: [...DEFAULT_THRESHOLDS], floorDegreePpm: 10_000, tableLifetimeMs: 3 * T, maxLagPeriods: 4, ...over });
const config = (json: unknown = PATENT_SITES) => initialTable(json, 0, 1);
const first = (c: AttackTable): AttackTable => ({ ...c, version: 1, issuedAt: 0, expiresAt: 3 * T });
let n = 0;
const report = (store: PolicyStore, gateway: string, periodId: number, sites: AttackReport['sites']) => store.addReport({ gateway, periodId, periodMs: T, sites }, sha256(new TextEncoder().encode(`${n++}`)), 0);

for (const b of backends()) {
  const test = suite(`period update [${b.name}]`);
  test.after(() => b.cleanup());

  test('the patent example: a=12000 -> 3rd, b=6000 -> 2nd, c=3000 -> 1st', async () => {
    assert.is(levelFor(12_000, DEFAULT_THRESHOLDS), 3);
    assert.is(levelFor(6_000, DEFAULT_THRESHOLDS), 2);
    assert.is(levelFor(3_000, DEFAULT_THRESHOLDS), 1);
    // The boundaries: at or above a threshold.
    assert.equal([0, 4_999, 5_000, 9_999, 10_000].map((t) => levelFor(t, DEFAULT_THRESHOLDS)), [1, 1, 2, 2, 3]);
    // Any number of levels (S3.6): four thresholds, five levels.
    assert.equal([0, 10, 100, 1_000, 10_000].map((t) => levelFor(t, [10, 100, 1_000, 10_000])), [1, 2, 3, 4, 5]);
    // And through a real period: three gateways' reports, one table.
    const store = await b.opening(openPolicyStore(b.place('policy')));
    try {
      await report(store, 'gw-1', 10, [{ site: 'a', total: 12_000, perMech: { password: 9_000, otp: 3_000 } }, { site: 'b', total: 6_000, perMech: { fingerprint: 6_000 } }, { site: 'c', total: 3_000, perMech: {} }]);
      const r = await updatePeriod(store, config(), first(config()), 11, 1_000, params(), key);
      assert.equal(r.table.sites.map((s) => [s.site, s.level]), [['a', 3], ['b', 2], ['c', 1]]);
      assert.is(r.table.version, 2);
      const v = verifyTable(r.signed, tablePublicKey(key), 1_000, 1);
      assert.ok(v.ok);
    } finally {
      await store.close();
    }
  });

  test('attack rates: attacks on the mechanism / all attacks on the site; 0 with no attacks (S3.7)', async () => {
    assert.is(rateFor(9_000, 12_000), 750_000);
    assert.is(rateFor(1, 3), 333_333);
    assert.is(rateFor(0, 0), 0);
    assert.is(rateFor(2 ** 40, 2 ** 40), PPM); // exact beyond 2^53 intermediate products
    const store = await b.opening(openPolicyStore(b.place('policy')));
    try {
      await report(store, 'gw-1', 10, [{ site: 'a', total: 100, perMech: { password: 80, otp: 10 } }]);
      await report(store, 'gw-2', 10, [{ site: 'a', total: 100, perMech: { password: 70, fingerprint: 20 } }]);
      const r = await updatePeriod(store, config(), first(config()), 11, 1_000, params(), key);
      // (80+70)/200, (10)/200, (20)/200; the other 20 attacks name no mechanism.
      assert.equal(r.table.sites[0]!.mechs, [{ mech: 'password', ratePpm: 750_000 }, { mech: 'otp', ratePpm: 50_000 }, { mech: 'fingerprint', ratePpm: 100_000 }]);
      assert.equal(r.table.sites[1]!.mechs.map((m) => m.ratePpm), [0, 0, 0]);
    } finally {
      await store.close();
    }
  });

  test('degrees follow the first policy: a higher security level gets a lower degree; all within A', async () => {
    // The patent's sites after the example period: a 3rd level, b 2nd, c 1st.
    const d = degreesFor([3, 2, 1], 3, 10_000);
    assert.ok(d[0]! < d[1]! && d[1]! < d[2]!, `degrees ${d}`);
    assert.ok(d.reduce((x, y) => x + y, 0) <= PPM);
    for (const x of d) assert.ok(x >= 10_000);
    // Equal levels, equal degrees.
    const e = degreesFor([2, 2, 2], 3, 10_000);
    assert.ok(e[0] === e[1] && e[1] === e[2]);
    // Through a period: the new table carries them, the slices of the next period follow.
    const store = await b.opening(openPolicyStore(b.place('policy')));
    try {
      await report(store, 'gw-1', 10, [{ site: 'a', total: 12_000, perMech: {} }, { site: 'b', total: 6_000, perMech: {} }, { site: 'c', total: 3_000, perMech: {} }]);
      const r = await updatePeriod(store, config(), first(config()), 11, 1_000, params(), key);
      const [a, b, c] = r.table.sites.map((s) => s.degreePpm);
      assert.ok(a! < b! && b! < c!);
      const next = await updatePeriod(store, config(), r.table, 12, 2_000, params(), key);
      assert.equal([...next.work.values()].map((w) => w.slice), [a, b, c].map((x) => sliceRows(x!, 1_000)));
    } finally {
      await store.close();
    }
  });

  test('no site starves: with the floor every site gets at least one row per period; without it, one gets none', () => {
    // 999 quiet sites (1st level) and one hammered site (3rd level), A = 2000 rows.
    const levels = [3, ...Array.from({ length: 999 }, () => 1)];
    const noFloor = degreesFor(levels, 3, 0);
    assert.is(sliceRows(noFloor[0]!, 2_000), 0, 'the patent\'s rule alone starves the most attacked site');
    const floored = degreesFor(levels, 3, 500);
    for (const d of floored) assert.ok(sliceRows(d, 2_000) >= 1);
    assert.ok(floored.reduce((x, y) => x + y, 0) <= PPM);
    assert.ok(floored[0]! < floored[1]!, 'still the first policy above the floor');
    // The configuration refuses a floor that would round to no row.
    const c = config();
    assert.throws(() => checkParams(params({ budgetRows: 50, floorDegreePpm: 10_000 }), c), (e: unknown) => e instanceof ImplementationError && e.code === 'POLICY_BAD_CONFIG');
    for (const bad of [{ thresholds: [10, 5] }, { thresholds: [] }, { floorDegreePpm: 400_000 }, { tableLifetimeMs: T }, { budgetRows: 0 }, { maxLagPeriods: 0 }]) {
      assert.throws(() => checkParams(params(bad as Partial<PolicyParams>), c), (e: unknown) => e instanceof ImplementationError && e.code === 'POLICY_BAD_CONFIG', JSON.stringify(bad));
    }
    // Initial degrees that overcommit A are refused too.
    assert.throws(() => checkParams(params(), config({ sites: ['a', 'b', 'c', 'd'].map((site) => ({ site, mechanisms: ['otp'], floor: 'otp', degree: 0.3 })) })), (e: unknown) => e instanceof ImplementationError && e.code === 'POLICY_BAD_CONFIG');
  });

  test('the update of a site never exceeds its slice; the rest is done next period', async () => {
    const store = await b.opening(openPolicyStore(b.place('policy')));
    try {
      // A = 10 rows: each site's slice is 0.3 x 10 = 3 rows. Site a gets 5 reports in period 10.
      const p = params({ budgetRows: 10, floorDegreePpm: 100_000 });
      for (let g = 1; g <= 5; g++) await report(store, `gw-${g}`, 10, [{ site: 'a', total: 3_000, perMech: { password: 3_000 } }, ...(g === 1 ? [{ site: 'b', total: 10, perMech: { otp: 10 } }] : [])]);
      const v1 = first(config());
      const r2 = await updatePeriod(store, config(), v1, 11, 1_000, p, key);
      assert.equal(r2.work.get('a'), { slice: 3, folded: 3, backlog: 2 });
      assert.equal(r2.work.get('b'), { slice: 3, folded: 1, backlog: 0 });
      // a's period is incomplete: the table keeps its previous statistics; b's is complete.
      assert.equal(r2.table.sites[0]!.mechs.map((m) => m.ratePpm), [0, 0, 0]);
      assert.is(r2.table.sites[0]!.level, 1);
      assert.equal(r2.table.sites[1]!.mechs.map((m) => m.ratePpm), [0, PPM, 0]);
      assert.is((await store.sitePeriod('a', 10))!.rows, 3);
      // Period 11: one more report for a. Next update: a's slice (from the new degree) folds the 2
      // rows left of period 10 first, then period 11's.
      await report(store, 'gw-1', 11, [{ site: 'a', total: 12_000, perMech: { otp: 12_000 } }]);
      const r3 = await updatePeriod(store, config(), r2.table, 12, 2_000, p, key);
      const w = r3.work.get('a')!;
      assert.is(w.slice, sliceRows(r2.table.sites[0]!.degreePpm, 10));
      assert.ok(w.folded <= w.slice);
      assert.equal(await store.sitePeriod('a', 10), { total: 15_000, password: 15_000, fingerprint: 0, otp: 0, rows: 5 });
      // Every update of every site stayed within its slice.
      for (const r of [r2, r3]) for (const [site, x] of r.work) assert.ok(x.folded <= x.slice, `${site}: ${x.folded} > ${x.slice}`);
      // 2 rows of period 10 and 1 of period 11 = a's slice of 3: caught up, so the table states period 11.
      assert.equal(w, { slice: 3, folded: 3, backlog: 0 });
      assert.is(r3.table.sites[0]!.level, 3);
      assert.equal(r3.table.sites[0]!.mechs.map((m) => m.ratePpm), [0, PPM, 0]);
      // Rows of the current period are never folded early: a report for period 12 waits.
      await report(store, 'gw-9', 12, [{ site: 'c', total: 1, perMech: {} }]);
      const r4 = await updatePeriod(store, config(), r3.table, 12, 2_500, p, key);
      assert.is(r4.work.get('c')!.folded, 0);
      assert.is(await store.pendingCount('c'), 1);
    } finally {
      await store.close();
    }
  });

  test('pending rows beyond the lag window are dropped by prune; the latest table is always kept', async () => {
    const store = await b.opening(openPolicyStore(b.place('policy')));
    try {
      await report(store, 'gw-1', 3, [{ site: 'a', total: 1, perMech: {} }]);
      const r = await updatePeriod(store, config(), first(config()), 4, 1_000, params({ budgetRows: 1_000 }), key);
      await report(store, 'gw-1', 1, [{ site: 'a', total: 1, perMech: {} }]);
      assert.is(await store.prune(100), 1);
      assert.is((await store.counts()).pending, 0);
      assert.is((await store.latestTable())!.version, r.table.version);
    } finally {
      await store.close();
    }
  });

  test.run();
}
