// Store benchmark (docs/benchmarks.md §"Stores: SQLite vs PostgreSQL", issue 16): the store
// calls of one login, SQLite and PostgreSQL side by side in one run. One login here = what the
// servers ask their stores for one registration with a rotation and the business login that
// follows, in order:
//   registration server: firmwareAccepted (the hello), getDevice, listRegions + listServers
//     (placement), recordRotation;
//   business server: installPending (the admin call of the rotation), loginKey (the opening),
//     promote (the finish), confirm (pwConfirm), getByUser (the confirmation's log line).
// 1. one login at a time (the latency a device sees from the stores);
// 2. 16 logins in flight over different devices (SQLite: one process, its calls synchronous;
//    PostgreSQL: the server's pool of 8 connections, the calls overlapping).
// PostgreSQL at PG_TEST_URL (default the local one, trust auth), in a fresh schema, dropped after.
// Run: npx tsx bench/store.bench.ts   (BENCH_QUICK=1 for a short run)
import { join } from 'node:path';
import { SqliteRegStore, type RegStore } from '../reg-server/store.ts';
import { PgRegStore } from '../reg-server/pg-store.ts';
import { SqliteBizStore, type BizStore } from '../biz-server/store.ts';
import { PgBizStore } from '../biz-server/pg-store.ts';
import { testSchema } from '../server-kit/pg.ts';
import { tempDir } from '../deploy/test-util.ts';

const QUICK = !!process.env.BENCH_QUICK;
const MS = QUICK ? 1_500 : 6_000;
const DEVICES = 200;
const IN_FLIGHT = 16;
const storageKey = new Uint8Array(32).fill(0x42);
const MEASUREMENT = 'ab'.repeat(32);
const FAR = 30 * 24 * 3600_000;

interface Stores { name: string; reg: RegStore; biz: BizStore; close(): Promise<void> }

async function seed(s: Stores): Promise<void> {
  await s.reg.addFirmware(MEASUREMENT, 1);
  await s.reg.syncTopology([{ name: 'biz-east', region: 'east', url: 'ws://h/biz-east', adminUrl: 'http://h/admin' }, { name: 'biz-west', region: 'west', url: 'ws://h/biz-west', adminUrl: 'http://h/admin' }], [{ cidr: '10.0.0.0/8', region: 'east' }]);
  for (let i = 0; i < DEVICES; i++) {
    await s.reg.enrollDevice({ serial: `SN-B${i}`, keyVersion: 1, account: `acct-${i}`, user: `u-b${i}` });
    await s.biz.createAccount(`acct-${i}`, `u-b${i}`);
  }
}

const rid = (i: number, n: number) => Uint8Array.from({ length: 16 }, (_, j) => (j < 4 ? (n >>> (8 * j)) & 0xff : j === 4 ? i & 0xff : j === 5 ? i >> 8 : 0));
let counter = 0;

/** The store calls of one login of device i, awaited in order as the servers make them. */
async function oneLogin(s: Stores, i: number): Promise<void> {
  const serial = `SN-B${i}`;
  const user = `u-b${i}`;
  const now = Date.now();
  if (!(await s.reg.firmwareAccepted(MEASUREMENT))) throw new Error('firmware');
  const d = (await s.reg.getDevice(serial))!;
  await Promise.all([s.reg.listRegions(), s.reg.listServers()]);
  const key = new Uint8Array(32).fill(i & 0xff);
  const r = await s.biz.installPending(user, key, new Uint8Array(72).fill(1), now + FAR, rid(i, ++counter), now);
  await s.reg.recordRotation(serial, r.currentGen, r.pendingGen, now);
  const k = await s.biz.loginKey(user, r.pendingGen, now);
  if (!k) throw new Error(`login key of ${user} gen ${r.pendingGen} (device at ${d.currentGen})`);
  k.key.fill(0);
  if (!(await s.biz.promote(user, r.pendingGen, now))) throw new Error('promote');
  if (!(await s.biz.confirm(user, r.pendingGen, now))) throw new Error('confirm');
  await s.biz.getByUser(user);
}

async function timed(s: Stores, inFlight: number): Promise<{ rate: number; p50: number; p99: number; n: number }> {
  for (let i = 0; i < 20; i++) await oneLogin(s, i % DEVICES);
  const lat: number[] = [];
  let n = 0;
  const t0 = performance.now();
  const end = t0 + MS;
  // Each worker owns its devices: two logins of one device never overlap (as on the servers).
  await Promise.all(Array.from({ length: inFlight }, async (_, w) => {
    for (let j = 0; performance.now() < end; j++) {
      // Worker w takes the devices w, w + inFlight, ...: disjoint between workers.
      const dev = w + ((j * inFlight) % (DEVICES - (DEVICES % inFlight)));
      const t = performance.now();
      await oneLogin(s, dev);
      lat.push(performance.now() - t);
      n++;
    }
  }));
  const secs = (performance.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  return { rate: n / secs, p50: lat[lat.length >> 1]!, p99: lat[Math.floor(lat.length * 0.99)]!, n };
}

const t = tempDir();
const sqliteReg = new SqliteRegStore(join(t.dir, 'reg.sqlite'));
const sqliteBiz = new SqliteBizStore(join(t.dir, 'biz.sqlite'), storageKey);
const sqlite: Stores = { name: 'SQLite', reg: sqliteReg, biz: sqliteBiz, async close() { sqliteReg.close(); sqliteBiz.close(); } };
const pgStores = async (name: string, synchronousCommit: boolean): Promise<Stores> => {
  const sr = testSchema();
  const sb = testSchema();
  const reg = await PgRegStore.open(sr.url, sr.schema, { synchronousCommit });
  const biz = await PgBizStore.open(sb.url, storageKey, sb.schema, { synchronousCommit });
  return { name, reg, biz, async close() { await reg.close(); await biz.close(); await sr.drop(); await sb.drop(); } };
};
// Durable commits (the default) and commits that do not wait for the WAL flush: where the time goes.
const postgres = await pgStores('PostgreSQL', true);
const postgresAsync = await pgStores('PostgreSQL async commit', false);

try {
  await seed(sqlite);
  await seed(postgres);
  await seed(postgresAsync);
  console.log(`store calls of one login (10 calls: 5 registration, 5 business), ${MS / 1000} s per row, ${DEVICES} devices`);
  const results: Record<string, { rate: number; p50: number; p99: number; n: number }> = {};
  for (const inFlight of [1, IN_FLIGHT]) {
    for (const s of [sqlite, postgres, postgresAsync]) {
      const r = await timed(s, inFlight);
      results[`${s.name}/${inFlight}`] = r;
      console.log(`${`${s.name}, ${inFlight} in flight`.padEnd(28)} ${r.rate.toFixed(0).padStart(7)} logins/s  p50 ${(r.p50 * 1000).toFixed(0).padStart(6)} µs  p99 ${(r.p99 * 1000).toFixed(0).padStart(6)} µs  (${r.n} logins)`);
    }
    const a = results[`SQLite/${inFlight}`]!;
    const b = results[`PostgreSQL/${inFlight}`]!;
    const c = results[`PostgreSQL async commit/${inFlight}`]!;
    console.log(`  ${inFlight} in flight: PostgreSQL / SQLite = ${(b.rate / a.rate).toFixed(3)}x logins/s (async commit ${(c.rate / a.rate).toFixed(3)}x); wall time per login ${(1e6 / b.rate).toFixed(0)} µs vs ${(1e6 / a.rate).toFixed(0)} µs`);
  }
  for (const s of [sqlite, postgres, postgresAsync]) {
    const problems = [...(await s.reg.check()), ...(await s.biz.check())];
    if (problems.length) throw new Error(`${s.name} integrity: ${problems.slice(0, 3).join('; ')}`);
  }
} finally {
  await sqlite.close();
  await postgres.close();
  await postgresAsync.close();
  t.remove();
}
