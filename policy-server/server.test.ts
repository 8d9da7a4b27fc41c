// The policy server over its real admin port (sealed admin RPC), on both store back ends (the
// matrix, server-kit/store-backends.ts: SQLite and PostgreSQL): idempotent reports (S3.5),
// hostile reports refused with codes and nothing stored, a signed table per period that the
// phone's check accepts (S3.10, S3.11), restart never going back, the period timer on a fake
// clock, attacks on one mechanism moving the phones' choice (S3.1), and two policy servers on
// one store publishing one table per period, each serving the latest stored one (issue 16).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { sha256 } from '@noble/hashes/sha2.js';
import { verifyTable, chooseMechanism, MECH_STRENGTH, TableLimits, type AttackTable } from '../protocol/attack-table.ts';
import { keystreamRng } from '../protocol/seeded-rng.ts';
import { ImplementationError } from '../protocol/errors.ts';
import type { CborValue } from '../protocol/cbor.ts';
import { AdminClient, AdminError } from '../server-kit/admin-rpc.ts';
import { adminCall, POLICY_ADMIN_LIMITS, type AttackReport } from '../server-kit/admin-messages.ts';
import { setLogLevel } from '../server-kit/log.ts';
import { backends } from '../server-kit/store-backends.ts';
import type { StorePlace } from '../server-kit/store-choice.ts';
import { startPolicyServer, type PolicyServer, type PolicyConfig, type PublishedTable } from './server.ts';
import { FakeClock, PATENT_SITES } from './test-util.ts';

setLogLevel('error');
const T = 60_000;
const T0 = 1_800_000_000_000; // a period boundary (T divides it)
const adminKey = new Uint8Array(32).fill(5);
const privateKey = sha256(new TextEncoder().encode('server test policy key'));
const storeOf = (place: StorePlace): Pick<PolicyConfig, 'dbFile' | 'store'> =>
  place.kind === 'sqlite' ? { dbFile: place.file } : { dbFile: '', store: place };
/** Waits (bounded) until `ok` holds: the period timer's update runs after the timer fires. */
async function until(ok: () => boolean, what: string): Promise<void> {
  const end = Date.now() + 5_000;
  while (!ok()) {
    if (Date.now() > end) assert.unreachable(`not within 5 s: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
const clientFor = (s: PolicyServer) => new AdminClient({ target: s.name, url: s.adminUrl, key: adminKey, limits: POLICY_ADMIN_LIMITS });
const rep = (gateway: string, periodId: number, sites: AttackReport['sites']): AttackReport => ({ gateway, periodId, periodMs: T, sites });
async function rejects(f: () => Promise<unknown>, code: string, what: string): Promise<void> {
  try {
    await f();
  } catch (e) {
    assert.ok(e instanceof AdminError && e.code === code, `${what}: ${String(e)}`);
    return;
  }
  assert.unreachable(`${what}: accepted`);
}

for (const b of backends()) {
const test = suite(`policy server [${b.name}]`);
const cfgFor = (clock: FakeClock, over: Partial<PolicyConfig> = {}): PolicyConfig => ({
  host: '127.0.0.1', adminPort: 0, adminKey, ...storeOf(b.place('policy')), privateKey, initialTable: PATENT_SITES, periodMs: T, clock, timer: false, ...over,
});
test.after(() => b.cleanup());

test('idempotent reports: a resend, a reordered resend and a duplicate are taken once; two gateways are summed', async () => {
  const clock = new FakeClock(T0 + 1_000);
  const s = await startPolicyServer(cfgFor(clock));
  const c = clientFor(s);
  try {
    const P = T0 / T;
    const r1 = rep('gw-1', P, [{ site: 'a', total: 7_000, perMech: { password: 7_000 } }, { site: 'b', total: 100, perMech: { otp: 50 } }]);
    assert.equal(await adminCall(c, 'reportAttacks', r1), { accepted: true, duplicate: false });
    // A lost acknowledgement: the gateway sends the same report again, and again with its sites in another order.
    assert.equal(await adminCall(c, 'reportAttacks', r1), { accepted: true, duplicate: true });
    assert.equal(await adminCall(c, 'reportAttacks', { ...r1, sites: [...r1.sites].reverse() }), { accepted: true, duplicate: true });
    // Another gateway, same period: summed. A report of an earlier period arriving after a later one: counted in its own.
    assert.equal(await adminCall(c, 'reportAttacks', rep('gw-2', P, [{ site: 'a', total: 4_000, perMech: { password: 3_000, fingerprint: 1_000 } }])), { accepted: true, duplicate: false });
    assert.equal(await adminCall(c, 'reportAttacks', rep('gw-2', P - 1, [{ site: 'c', total: 1, perMech: {} }])), { accepted: true, duplicate: false });
    assert.equal((await s.store.counts()), { reports: 3, pending: 4, tables: 1 });
    clock.advanceTo(T0 + T + 1_000);
    const r = (await s.tick())!;
    const a = r.table.sites.find((x) => x.site === 'a')!;
    // 7000 + 4000 = 11000 -> 3rd level; password 10000/11000, fingerprint 1000/11000.
    assert.is(a.level, 3);
    assert.equal(a.mechs.map((m) => [m.mech, m.ratePpm]), [['password', 909_090], ['otp', 0], ['fingerprint', 90_909]]);
    assert.equal((await s.store.sitePeriod('a', P)), { total: 11_000, password: 10_000, fingerprint: 1_000, otp: 0, rows: 2 });
    assert.equal((await s.store.sitePeriod('c', P - 1)), { total: 1, password: 0, fingerprint: 0, otp: 0, rows: 1 });
    // A resend after the update is still a duplicate: not counted twice.
    assert.equal(await adminCall(c, 'reportAttacks', r1), { accepted: true, duplicate: true });
    assert.is((await s.store.counts()).pending, 0);
    // The same gateway and period with other counts: refused, the first report stands.
    await rejects(() => adminCall(c, 'reportAttacks', { ...r1, sites: [{ site: 'a', total: 1, perMech: {} }] }), 'POLICY_REPORT_CONFLICT', 'conflict');
    assert.equal((await s.store.sitePeriod('a', P))!.total, 11_000);
  } finally {
    c.close();
    await s.close();
  }
});

test('hostile reports at reportAttacks are refused with codes and nothing is stored', async () => {
  const clock = new FakeClock(T0 + 1_000);
  const s = await startPolicyServer(cfgFor(clock));
  const c = clientFor(s);
  try {
    const P = T0 / T;
    const site = (name: CborValue, total: CborValue, per: CborValue): CborValue => [name, total, per];
    const raw = (sites: CborValue, periodId: CborValue = P, periodMs: CborValue = T, gateway: CborValue = 'gw-1'): CborValue => [gateway, periodId, periodMs, sites];
    const cases: [string, CborValue, string][] = [
      ['not a list', 'report', 'ADMIN_BAD_ARGS'],
      ['gateway of the wrong type', raw([], P, T, 5), 'ADMIN_BAD_ARGS'],
      ['periodId as text', raw([], String(P)), 'ADMIN_BAD_ARGS'],
      ['negative count', raw([site('a', -5, new Map())]), 'ADMIN_BAD_ARGS'],
      ['negative mechanism count', raw([site('a', 5, new Map([['otp', -1]]))]), 'ADMIN_BAD_ARGS'],
      ['count as text', raw([site('a', '5', new Map())]), 'ADMIN_BAD_ARGS'],
      ['unknown mechanism', raw([site('a', 5, new Map([['sms', 5]]))]), 'ADMIN_BAD_ARGS'],
      ['mechanisms above the total', raw([site('a', 5, new Map([['otp', 6]]))]), 'ADMIN_BAD_ARGS'],
      ['a site twice', raw([site('a', 1, new Map()), site('a', 1, new Map())]), 'ADMIN_BAD_ARGS'],
      // More sites than a table holds: the endpoint's CBOR limits refuse the body before it is
      // opened as a request (CBOR_LIMIT in the server's log; HTTP 400, no detail, to the caller).
      ['more sites than a table holds', raw(Array.from({ length: TableLimits.maxSites + 1 }, (_, i) => site(`s${i}`, 0, new Map()))), 'ADMIN_HTTP'],
      ['periodId in the far future', raw([site('a', 1, new Map())], P + 1_000_000), 'POLICY_BAD_PERIOD'],
      ['the next period', raw([site('a', 1, new Map())], P + 1), 'POLICY_BAD_PERIOD'],
      ['another period length', raw([site('a', 1, new Map())], P, T * 2), 'POLICY_BAD_PERIOD'],
      ['an unknown site', raw([site('a', 1, new Map()), site('zz', 1, new Map())]), 'POLICY_UNKNOWN_SITE'],
    ];
    const before = (await s.store.counts());
    for (const [what, args, code] of cases) {
      await rejects(() => c.call('reportAttacks', args), code, what);
    }
    // A body above POLICY_ADMIN_LIMITS.maxFrameBytes: 413 and the upload cut before anything is
    // decoded (the caller sees the 413 or the reset, whichever comes first).
    const big = new AdminClient({ target: s.name, url: s.adminUrl, key: adminKey, limits: POLICY_ADMIN_LIMITS });
    try {
      await big.call('reportAttacks', raw(Array.from({ length: 30_000 }, (_, i) => site(`site-${i}`, 0, new Map()))));
      assert.unreachable('a 300 KB report was accepted');
    } catch (e) {
      assert.ok(e instanceof AdminError && (e.code === 'ADMIN_HTTP' || e.code === 'ADMIN_UNREACHABLE'), String(e));
    } finally {
      big.close();
    }
    assert.equal((await s.store.counts()), before, 'nothing stored');
    // A report too old to count is acknowledged (the gateway stops resending) but not stored.
    assert.equal(await adminCall(c, 'reportAttacks', rep('gw-1', P - 10, [{ site: 'a', total: 1, perMech: {} }])), { accepted: false, duplicate: false });
    assert.equal((await s.store.counts()), before);
    const m = await (await fetch(s.adminUrl.replace('/admin', '/metrics'))).text();
    assert.match(m, /usbphone_policy_reports_total\{result="refused",server="policy"\} 4/);
    assert.match(m, /usbphone_policy_reports_total\{result="late",server="policy"\} 1/);
  } finally {
    c.close();
    await s.close();
  }
});

test('latestTable: a new signed version each period, which the phone accepts; restart keeps the latest version, never goes back', async () => {
  const clock = new FakeClock(T0 + 1_000);
  const cfg = cfgFor(clock);
  let s = await startPolicyServer(cfg);
  let c = clientFor(s);
  let held: number | null = 0; // the phone ships with the initial table (version 0)
  try {
    const take = async () => {
      const bytes = await adminCall(c, 'latestTable', {});
      const v = verifyTable(bytes, s.publicKey, clock.now(), held);
      assert.ok(v.ok, v.ok ? '' : v.code);
      held = v.ok ? v.table.version : held;
      return { bytes, v };
    };
    const t1 = await take();
    assert.is(held, 1);
    for (let k = 1; k <= 3; k++) {
      clock.advanceTo(T0 + k * T + 1_000);
      assert.ok(await s.tick());
      assert.is(await s.tick(), null, 'one update per period');
      await take();
    }
    assert.is(held, 4);
    // The phone refuses the older table (a replay of version 1) and, later, an expired one.
    assert.is((verifyTable(t1.bytes, s.publicKey, clock.now(), held) as { code: string }).code, 'TABLE_STALE');
    assert.is((verifyTable(t1.bytes, s.publicKey, t1.v.ok ? t1.v.table.expiresAt : 0, null) as { code: string }).code, 'TABLE_EXPIRED');
    c.close();
    await s.close();
    // Restart in the same period: the same table, same version.
    s = await startPolicyServer(cfg);
    c = clientFor(s);
    assert.is(s.latest().table.version, 4);
    // Restart periods later (down for a while): one new version, above the last.
    await s.close();
    clock.advanceTo(T0 + 9 * T + 1_000);
    s = await startPolicyServer(cfg);
    c = clientFor(s);
    assert.is(s.latest().table.version, 5);
    await take();
    assert.is(held, 5);
  } finally {
    c.close();
    await s.close();
  }
});

test('a store whose tables another key signed is refused at start (POLICY_KEY_MISMATCH)', async () => {
  const clock = new FakeClock(T0 + 1_000);
  const cfg = cfgFor(clock);
  await (await startPolicyServer(cfg)).close();
  try {
    await startPolicyServer({ ...cfg, privateKey: new Uint8Array(32).fill(9) });
    assert.unreachable('started');
  } catch (e) {
    assert.ok(e instanceof ImplementationError && e.code === 'POLICY_KEY_MISMATCH', String(e));
  }
  for (const bad of [{ initialTable: { sites: [] } }, { initialTable: 'x' }, { thresholds: [3, 2] }]) {
    try {
      await startPolicyServer(cfgFor(clock, bad));
      assert.unreachable(JSON.stringify(bad));
    } catch (e) {
      assert.ok(e instanceof ImplementationError && e.code === 'POLICY_BAD_CONFIG', String(e));
    }
  }
});

test('the timer runs the update at each period boundary plus the grace (fake clock)', async () => {
  const clock = new FakeClock(T0 + 1_000);
  const s = await startPolicyServer(cfgFor(clock, { timer: true, graceMs: 2_000 }));
  try {
    assert.is(s.latest().table.version, 1);
    clock.advanceTo(T0 + T + 1_999);
    await new Promise((r) => setTimeout(r, 30));
    assert.is(s.latest().table.version, 1, 'not before the grace');
    clock.advanceTo(T0 + T + 2_000);
    await until(() => s.latest().table.version === 2, 'version 2');
    clock.advanceTo(T0 + 4 * T + 2_000);
    await until(() => s.latest().table.version === 5, 'version 5');
    assert.is(clock.pending(), 1);
  } finally {
    await s.close();
  }
  assert.is(clock.pending(), 0, 'close cancels the timer');
});

test('attacks on one mechanism move the phones: after the period, the least attacked one is chosen, never below the floor', async () => {
  const clock = new FakeClock(T0 + 1_000);
  const initial = { sites: [{ site: 'biz-east', mechanisms: ['password', 'otp', 'fingerprint'], floor: 'password', degree: 0.5 }, { site: 'biz-west', mechanisms: ['password', 'otp'], floor: 'otp', degree: 0.4 }] };
  const s = await startPolicyServer(cfgFor(clock, { initialTable: initial }));
  const c = clientFor(s);
  const rng = keystreamRng('shift');
  try {
    const choose = async (held: AttackTable | null, site: string) => {
      const v = verifyTable(await adminCall(c, 'latestTable', {}), s.publicKey, clock.now(), held?.version ?? 0);
      const t = v.ok ? v.table : held;
      return { t, picks: new Set(Array.from({ length: 200 }, () => chooseMechanism(t, site, rng))) };
    };
    // The initial table: all rates zero, so the choice is random among every mechanism at the floor or above.
    const first = await choose(null, 'biz-east');
    assert.equal([...first.picks].sort(), ['fingerprint', 'otp', 'password']);
    assert.equal([...(await choose(null, 'biz-west')).picks], ['otp']);
    // Attackers hammer the password of biz-east and the otp of biz-west in period P.
    await adminCall(c, 'reportAttacks', rep('gateway', T0 / T, [{ site: 'biz-east', total: 900, perMech: { password: 850, otp: 30, fingerprint: 20 } }, { site: 'biz-west', total: 50, perMech: { otp: 50 } }]));
    clock.advanceTo(T0 + T + 1_000);
    await s.tick();
    const after = await choose(first.t, 'biz-east');
    assert.equal([...after.picks], ['fingerprint']);
    // biz-west: otp is attacked and the password is not, but the floor is otp: still otp.
    const west = chooseMechanism(after.t, 'biz-west', rng);
    assert.is(west, 'otp');
    assert.ok(MECH_STRENGTH[west] >= MECH_STRENGTH.otp);
  } finally {
    c.close();
    await s.close();
  }
});

test('onTable: told of the table held at start and of each published one, with the attacks of the period it states; a listener that throws does not stop the update', async () => {
  const clock = new FakeClock(T0 + 1_000);
  const seen: PublishedTable[] = [];
  let fail = false;
  const s = await startPolicyServer(cfgFor(clock, { onTable: (t) => {
    seen.push(t);
    if (fail) throw new Error('listener broke');
  } }));
  try {
    assert.equal(seen.map((t) => [t.table.version, t.periodId]), [[1, T0 / T]]);
    await s.report(rep('gw-1', T0 / T, [{ site: 'a', total: 6_000, perMech: { password: 6_000 } }]));
    clock.advanceTo(T0 + T + 1_000);
    fail = true;
    const r = (await s.tick())!;
    assert.is(r.table.version, 2, 'published although the listener threw');
    const last = seen.at(-1)!;
    assert.equal([last.table.version, last.periodId], [2, T0 / T + 1]);
    assert.equal(last.attacks.get('a'), { total: 6_000, password: 6_000, otp: 0, fingerprint: 0 });
    assert.equal(last.attacks.get('b'), { total: 0, password: 0, otp: 0, fingerprint: 0 });
    assert.is(s.latest().table.version, 2);
  } finally {
    await s.close();
  }
});

test('two policy servers on one store: one table per period whoever updates, each serves the latest stored table, a stale one adopts it', async () => {
  const clock = new FakeClock(T0 + 1_000);
  const cfg = cfgFor(clock);
  const a = await startPolicyServer({ ...cfg, name: 'policy-a' });
  const bs = await startPolicyServer({ ...cfg, name: 'policy-b' });
  const ca = new AdminClient({ target: a.name, url: a.adminUrl, key: adminKey, limits: POLICY_ADMIN_LIMITS });
  const cb = new AdminClient({ target: bs.name, url: bs.adminUrl, key: adminKey, limits: POLICY_ADMIN_LIMITS });
  try {
    assert.is(a.latest().table.version, 1);
    assert.equal(bs.latest().signed, a.latest().signed, 'the second server adopted the first one\'s version 1');
    const P = T0 / T;
    // Reports to either server land in the one store and are counted once.
    await adminCall(ca, 'reportAttacks', rep('gw-1', P, [{ site: 'a', total: 7_000, perMech: { password: 7_000 } }]));
    assert.equal(await adminCall(cb, 'reportAttacks', rep('gw-1', P, [{ site: 'a', total: 7_000, perMech: { password: 7_000 } }])), { accepted: true, duplicate: true });
    await adminCall(cb, 'reportAttacks', rep('gw-2', P, [{ site: 'a', total: 4_000, perMech: { password: 4_000 } }]));
    // Both update period P+1 at once: one table is stored, the other server's update is refused and it adopts that table.
    clock.advanceTo(T0 + T + 1_000);
    const [ra, rb] = await Promise.all([a.tick(), bs.tick()]);
    assert.is([ra, rb].filter((r) => r !== null).length, 1, 'exactly one server published');
    assert.is((await a.store.counts()).tables, 2);
    assert.equal(a.latest().signed, bs.latest().signed);
    assert.is(a.latest().table.version, 2);
    assert.is(a.latest().table.sites.find((x) => x.site === 'a')!.level, 3, '7000 + 4000 counted once each');
    // Period P+2: only a updates; b serves a's table at once (read from the store), then its own tick finds it published.
    clock.advanceTo(T0 + 2 * T + 1_000);
    assert.ok(await a.tick());
    const served = verifyTable(await adminCall(cb, 'latestTable', {}), bs.publicKey, clock.now(), 2);
    assert.ok(served.ok && served.table.version === 3, 'b serves the table a published');
    assert.is(await bs.tick(), null, 'b does not publish a second table for the period');
    // Period P+3: a updates alone (version 4); P+4: b, stale in memory (version 3), updates from the stored table: version 5.
    clock.advanceTo(T0 + 3 * T + 1_000);
    assert.is((await a.tick())?.table.version, 4);
    await a.close();
    clock.advanceTo(T0 + 4 * T + 1_000);
    assert.is(bs.latest().table.version, 3, 'b has not seen version 4');
    assert.is((await bs.tick())?.table.version, 5);
    assert.is((await bs.store.check()).length, 0, 'the store passes its check');
  } finally {
    ca.close();
    cb.close();
    await bs.close();
    await a.close().catch(() => {});
  }
});

test.run();
}
