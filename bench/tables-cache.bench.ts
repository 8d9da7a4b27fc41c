// The registration server's table reads per registration, before and after its cache of the
// firmware, region and server tables (reg-server/tables-cache.ts, issue 15), side by side:
// docs/benchmarks.md §"Login cost (issue 15)" / "Registration tables from memory".
//
// One registration here = what a session asks of the store for the tables, in order:
// firmwareAccepted (the hello), listRegions + listServers through the health view, chooseServers
// for the observed IP (placement).
//   uncached  the store itself (what every registration did before): 3 reads, CIDRs parsed each time
//   cached    withHealthView(withTablesCache(store)): one version read per call (3), the rest from memory
//   uncached, old placement   "uncached" with placement as it was before issue 15 (kept below:
//             the address parsed again for each block, localeCompare per comparison)
// Also the bare version reads the cache could use on SQLite: the version row it uses
// (`SELECT version FROM tables_version`) and `PRAGMA data_version` (changes only on another
// connection's commit; it would need this connection's writes to be caught by hand, and every
// device write of the backup would drop the copy).
// Both back ends: a SQLite file; PostgreSQL at PG_TEST_URL in a fresh schema, dropped after.
// Tables: 16 regions, 6 business servers, 8 firmware rows. CPU of this process (the
// registration server's side; PostgreSQL's own CPU not counted) per registration, and wall time.
// Rounds alternate the variants in a rotating order; medians over rounds, per-round ratios.
// Run: npx tsx bench/tables-cache.bench.ts   (BENCH_QUICK=1: short; BENCH_ROUNDS, BENCH_PHASE_MS)
import { join } from 'node:path';
import { SqliteRegStore, type RegStore } from '../reg-server/store.ts';
import { PgRegStore } from '../reg-server/pg-store.ts';
import { withTablesCache } from '../reg-server/tables-cache.ts';
import { HealthPoller, withHealthView } from '../reg-server/health.ts';
import { chooseServers } from '../reg-server/placement.ts';
import { parseCidr, cidrContains } from '../server-kit/ip.ts';
import type { BizServerRecord, RegionRecord } from '../reg-server/store.ts';
import { createLogger } from '../server-kit/log.ts';
import { testSchema } from '../server-kit/pg.ts';
import { tempDir } from '../deploy/test-util.ts';

const QUICK = !!process.env.BENCH_QUICK;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? (QUICK ? 3 : 9));
const PHASE_MS = Number(process.env.BENCH_PHASE_MS ?? (QUICK ? 300 : 1_000));
const M = (i: number) => i.toString(16).padStart(2, '0').repeat(32);

async function seed(s: RegStore): Promise<void> {
  for (let i = 0; i < 8; i++) await s.addFirmware(M(i), i);
  const servers = Array.from({ length: 6 }, (_, i) => ({ name: `biz-${i}`, region: `r${i % 3}`, url: `ws://h/biz-${i}`, adminUrl: 'http://h/admin' }));
  const regions = Array.from({ length: 16 }, (_, i) => ({ cidr: `10.${i}.0.0/16`, region: `r${i % 3}` }));
  await s.syncTopology(servers, regions);
}

/** A session's view: the health overlay of a poller (never polled: the store's health, as at start). */
function sessionView(store: RegStore): RegStore {
  const poller = new HealthPoller(store, () => { throw new Error('not polled in this bench'); }, createLogger('bench'), 0);
  return withHealthView(store, poller);
}

/** reg-server/placement.ts chooseServers as it was before issue 15. */
function chooseServersOld(ip: string, regions: readonly RegionRecord[], servers: readonly BizServerRecord[], max = 8): BizServerRecord[] {
  let best: { prefix: number; region: string } | null = null;
  for (const r of regions) {
    const c = parseCidr(r.cidr);
    if (cidrContains(c, ip) && (!best || c.prefix > best.prefix)) best = { prefix: c.prefix, region: r.region };
  }
  const region = best?.region ?? null;
  const byLoad = (a: BizServerRecord, b: BizServerRecord) => a.load - b.load || a.name.localeCompare(b.name);
  const healthy = servers.filter((s) => s.healthy);
  return [...healthy.filter((s) => s.region === region).sort(byLoad), ...healthy.filter((s) => s.region !== region).sort(byLoad)].slice(0, max);
}

async function registration(s: RegStore, i: number, choose = chooseServers): Promise<void> {
  if (!(await s.firmwareAccepted(M(i & 7)))) throw new Error('firmware refused');
  const [regions, servers] = await Promise.all([s.listRegions(), s.listServers()]);
  if (choose(`10.${i & 15}.1.2`, regions, servers).length !== 6) throw new Error('placement');
}

interface Phase { cpuUs: number; wallUs: number }

async function phase(f: (i: number) => Promise<void> | void): Promise<Phase> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  let n = 0;
  while (performance.now() - t0 < PHASE_MS) {
    for (let k = 0; k < 50; k++) await f(n++);
  }
  const wall = performance.now() - t0;
  const c = process.cpuUsage(c0);
  return { cpuUs: (c.user + c.system) / n, wallUs: (wall * 1e3) / n };
}

const median = (x: number[]) => [...x].sort((a, b) => a - b)[Math.floor(x.length / 2)]!;

async function bench(name: string, store: RegStore, extra: Record<string, (i: number) => Promise<void> | void>): Promise<void> {
  await seed(store);
  const uncached = sessionView(store);
  const cached = sessionView(withTablesCache(store));
  const variants: Record<string, (i: number) => Promise<void> | void> = {
    uncached: (i) => registration(uncached, i),
    cached: (i) => registration(cached, i),
    'uncached, old placement': (i) => registration(uncached, i, chooseServersOld),
    ...extra,
  };
  const names = Object.keys(variants);
  for (const n of names) await phase(variants[n]!); // warm-up
  const got: Record<string, Phase[]> = Object.fromEntries(names.map((n) => [n, []]));
  const ratios: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const round: Record<string, Phase> = {};
    for (const n of names.map((_, k) => names[(k + r) % names.length]!)) round[n] = await phase(variants[n]!);
    for (const n of names) got[n]!.push(round[n]!);
    ratios.push(round['uncached, old placement']!.cpuUs / round.cached!.cpuUs);
  }
  console.log(`\n${name}: per registration (CPU of this process, wall), medians of ${ROUNDS} rounds of ${PHASE_MS} ms`);
  for (const n of names) console.log(`  ${n.padEnd(24)} ${median(got[n]!.map((p) => p.cpuUs)).toFixed(2).padStart(8)} µs CPU ${median(got[n]!.map((p) => p.wallUs)).toFixed(2).padStart(8)} µs wall`);
  console.log(`  uncached, old placement / cached (CPU): ${median(ratios).toFixed(2)}x (rounds: ${ratios.map((v) => v.toFixed(2)).join(' ')})`);
}

const t = tempDir();
const sq = new SqliteRegStore(join(t.dir, 'reg.sqlite'));
const versionRow = sq.db.prepare('SELECT version FROM tables_version WHERE id = 1').pluck();
const dataVersion = sq.db.prepare('PRAGMA data_version').pluck();
await bench('SQLite', sq, {
  'version row read': () => void versionRow.get(),
  'PRAGMA data_version': () => void dataVersion.get(),
});
sq.close();
t.remove();

const schema = testSchema();
const pg = await PgRegStore.open(schema.url, schema.schema);
try {
  await bench('PostgreSQL', pg, {});
} finally {
  await pg.close();
  await schema.drop();
}
process.exit(0);
