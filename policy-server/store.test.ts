// The policy server's store on both back ends (SQLite and PostgreSQL: server-kit/store-backends.ts):
// reports taken once, the period update (policy-server/update.ts, the same steps on either back
// end) folding its slice and publishing the next table, two updates of one period racing (one
// publishes), pruning, and corrupt rows refused and listed by the integrity check.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { sha256 } from '@noble/hashes/sha2.js';
import { initialTable, verifyTable, tablePublicKey, type AttackTable } from '../protocol/attack-table.ts';
import { SqlitePolicyStore, type PolicyStore } from './store.ts';
import { openPolicyStore, PgPolicyStore } from './pg-store.ts';
import { updatePeriod, DEFAULT_THRESHOLDS, type PolicyParams } from './update.ts';
import { PATENT_SITES } from './test-util.ts';
import { backends } from '../server-kit/store-backends.ts';
import type { AttackReport } from '../server-kit/admin-messages.ts';
import { rejects, implCode as code } from '../server-kit/test-assert.ts';

const key = sha256(new TextEncoder().encode('policy store test key'));
const T = 60_000;
const params = (over: Partial<PolicyParams> = {}): PolicyParams => ({ periodMs: T, budgetRows: 1_000, thresholds: [...DEFAULT_THRESHOLDS], floorDegreePpm: 10_000, tableLifetimeMs: 3 * T, maxLagPeriods: 4, ...over });
const config = () => initialTable(PATENT_SITES, 0, 1);
const first = (c: AttackTable): AttackTable => ({ ...c, version: 1, issuedAt: 0, expiresAt: 3 * T });
const digest = (s: string) => sha256(new TextEncoder().encode(s));
const rep = (gateway: string, periodId: number, sites: AttackReport['sites']): AttackReport => ({ gateway, periodId, periodMs: T, sites });

for (const b of backends()) {
  const test = suite(`policy store [${b.name}]`);
  let store: PolicyStore;
  const exec = async (q: string): Promise<void> => {
    if (store instanceof PgPolicyStore) await store.pool.query(q);
    else (store as SqlitePolicyStore).db.exec(q);
  };
  test.before(async () => {
    store = await b.opening(openPolicyStore(b.place('policy')));
  });
  test.after(async () => {
    await store?.close();
    await b.cleanup();
  });

  test('a report is taken once: a resend is a duplicate, other counts for the same gateway and period are refused', async () => {
    const r = rep('gw-1', 10, [{ site: 'a', total: 12_000, perMech: { password: 9_000, otp: 3_000 } }, { site: 'b', total: 6_000, perMech: { fingerprint: 6_000 } }, { site: 'c', total: 3_000, perMech: {} }]);
    assert.is(await store.addReport(r, digest('one'), 5), 'new');
    assert.is(await store.addReport(r, digest('one'), 6), 'duplicate');
    await rejects(() => store.addReport(r, digest('other'), 7), code('POLICY_REPORT_CONFLICT'));
    assert.equal(await store.counts(), { reports: 1, pending: 3, tables: 0 });
    assert.is(await store.pendingCount('a'), 1);
  });

  test('the period update folds the pending rows and publishes the next table (the patent example: a -> 3rd, b -> 2nd, c -> 1st)', async () => {
    await store.putTable({ version: 1, periodId: 10, issuedAt: 0, expiresAt: 3 * T, signed: new Uint8Array(8) });
    const r = await updatePeriod(store, config(), first(config()), 11, 1_000, params(), key);
    assert.equal(r.table.sites.map((s) => [s.site, s.level]), [['a', 3], ['b', 2], ['c', 1]]);
    assert.ok(verifyTable(r.signed, tablePublicKey(key), 1_000, 1).ok);
    const t = (await store.latestTable())!;
    assert.equal([t.version, t.periodId], [2, 11]);
    assert.equal(t.signed, r.signed);
    assert.equal(await store.sitePeriod('a', 10), { total: 12_000, password: 9_000, fingerprint: 0, otp: 3_000, rows: 1 });
    assert.equal(await store.counts(), { reports: 1, pending: 0, tables: 2 });
    await rejects(() => store.putTable({ ...t, version: 2 }), code('POLICY_VERSION_ORDER'));
  });

  test('the update of a site never exceeds its slice; the backlog waits for the next period', async () => {
    for (let g = 0; g < 5; g++) await store.addReport(rep(`gw-s${g}`, 11, [{ site: 'a', total: 10, perMech: { password: 10 } }]), digest(`s${g}`), 0);
    const latest = (await store.latestTable())!;
    const prev = verifyTable(latest.signed, tablePublicKey(key), latest.issuedAt, null);
    assert.ok(prev.ok);
    const r = await updatePeriod(store, config(), prev.ok ? prev.table : first(config()), 12, 2_000, params({ budgetRows: 2 }), key);
    const w = r.work.get('a')!;
    assert.ok(w.slice < 5 && w.folded <= w.slice, JSON.stringify(w));
    assert.is(w.backlog, 5 - w.folded);
    assert.is(await store.pendingCount('a', 11), 5 - w.folded);
  });

  test('two updates of one period racing (two policy servers): one table is published, the other refused', async () => {
    const latest = (await store.latestTable())!;
    const prev = verifyTable(latest.signed, tablePublicKey(key), latest.issuedAt, null);
    assert.ok(prev.ok);
    const runs = await Promise.allSettled([0, 1].map(async () => updatePeriod(store, config(), prev.ok ? prev.table : first(config()), 14, 4_000, params(), key)));
    assert.is(runs.filter((x) => x.status === 'fulfilled').length, 1, JSON.stringify(runs.map((x) => x.status)));
    const refused = runs.find((x) => x.status === 'rejected') as PromiseRejectedResult;
    assert.ok(code('POLICY_VERSION_ORDER')(refused.reason), String(refused.reason));
    assert.is((await store.latestTable())!.version, latest.version + 1);
  });

  test('prune forgets old periods, drops stale pending rows and keeps the latest table', async () => {
    await store.addReport(rep('gw-old', 3, [{ site: 'b', total: 1, perMech: {} }]), digest('old'), 0);
    const dropped = await store.prune(100);
    assert.ok(dropped >= 1);
    const c = await store.counts();
    assert.equal([c.reports, c.pending, c.tables], [0, 0, 1]);
    assert.ok(await store.latestTable());
  });

  test('corrupt rows are refused (STORE_CORRUPT_ROW) and listed by the integrity check', async () => {
    await store.addReport(rep('gw-c', 200, [{ site: 'a', total: 5, perMech: { password: 2 } }]), digest('c'), 0);
    assert.equal(await store.check(), []);
    await exec("UPDATE pending SET password = 9 WHERE site = 'a' AND period_id = 200");
    await rejects(() => store.pendingFor('a', 200, 10), code('STORE_CORRUPT_ROW'));
    assert.match((await store.check()).join('\n'), /mechanisms add up to more than the total/);
    await exec("UPDATE pending SET password = 2 WHERE site = 'a' AND period_id = 200");
    await exec("UPDATE pending SET site = 'not a site!' WHERE period_id = 200");
    assert.match((await store.check()).join('\n'), /pending row \d+: bad key/);
    await exec("DELETE FROM pending WHERE period_id = 200");
    assert.equal(await store.check(), []);
  });

  test.run();
}
