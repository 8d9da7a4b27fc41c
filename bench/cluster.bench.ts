// One node of each role vs two (issue 16, docs/benchmarks.md §"One node vs two"): logins/s of
// the reference topology (deploy/cluster/topology.ts: every role its own `usbphone serve <role>
// --config` process, the stores on PostgreSQL in fresh schemas dropped after, the shared state
// in Redis), on the harness's hosts as loopback addresses 127.0.77.x (deploy/cluster/hosts.ts).
// The same deployment serves both measurements, interleaved (one, two, one, two, ...):
//   one node: every phone through gw-1, to reg-primary, in the east region (biz-east);
//   two nodes: the phones split over gw-1 / gw-2, reg-primary / reg-backup first, east / west.
// The processes of the second node are up (idle) during the one-node rounds. A login is one
// phone cycle (server-kit/test-device.ts, as in the cluster test): register (handshake,
// credential, rotation: admin call and store writes on both servers), then log in and confirm
// at the business server. Same number of phones in flight in both. On this 2-core machine every
// process, PostgreSQL, Redis and this load generator share the same two cores.
// Run: npx tsx bench/cluster.bench.ts   (BENCH_QUICK=1 for a short run)
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, loadavg, cpus } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { HostNetwork, lockCluster } from '../deploy/cluster/hosts.ts';
import { REFERENCE_HOSTS, PORTS, type HostName, type TopologyPlan } from '../deploy/cluster/topology.ts';
import { Phone, prepareDeployment, spawnRole, gatewaysUp, type RoleProc } from '../deploy/cluster/cluster.ts';
import { stackSchemas, dropStackSchemas, checkStores } from '../deploy/stack-schemas.ts';
import { testPgUrl } from '../server-kit/pg.ts';
import { dropNamespace, testNamespace, REDIS_URL } from '../server-kit/redis-faults.ts';
import { makeDevice } from '../server-kit/test-device.ts';

const QUICK = !!process.env.BENCH_QUICK;
const ROUNDS = QUICK ? 1 : 3;
const PHASE_MS = QUICK ? 4_000 : 10_000;
const IN_FLIGHT = Number(process.env.BENCH_IN_FLIGHT ?? 16);

const dir = mkdtempSync(join(tmpdir(), 'usbphone-cluster-bench-'));
const pgUrl = testPgUrl();
const prefix = `s_${randomBytes(6).toString('hex')}`;
const schemas = stackSchemas(prefix);
const ns = testNamespace('cbench');
const net = new HostNetwork('loopback');
const procs: (RoleProc & { ready: Promise<void> })[] = [];
const unlock = await lockCluster();

try {
  for (const [h, n] of Object.entries(REFERENCE_HOSTS)) net.addHost(h, n);
  const addr = Object.fromEntries([...net.hosts.values()].map((h) => [h.name, h.address])) as Record<HostName, string>;
  const plan: TopologyPlan = {
    addr,
    phoneGatewayUrl: `ws://${addr.gw1}:${PORTS.gateway}/`,
    redis: { url: REDIS_URL, namespace: ns, timeoutMs: 500 },
    regions: [{ cidr: '127.0.77.96/28', region: 'east' }, { cidr: '127.0.77.112/28', region: 'west' }],
    periodMs: 60_000,
    healthIntervalMs: 2_000,
    store: { kind: 'postgres', url: pgUrl, schemas },
  };
  // Two sets of phones, one per layout, so that neither inherits the other's generations.
  const serials = Array.from({ length: 2 * IN_FLIGHT }, (_, i) => `SN-B${String(i).padStart(4, '0')}`);
  const { files, ring } = await prepareDeployment(dir, plan, serials, (role) => ({ kind: 'postgres', url: pgUrl, schema: schemas[role] }));
  for (const rf of files) procs.push(spawnRole(net, dir, rf, 'warn'));
  await Promise.all(procs.map((p) => p.ready));
  await gatewaysUp([addr.gw1, addr.gw2]);
  const gw = [`ws://${addr.gw1}:${PORTS.gateway}/`, `ws://${addr.gw2}:${PORTS.gateway}/`];
  // east 127.0.77.96-111, west .112-127
  const east = (i: number) => `127.0.77.${96 + (i % 16)}`;
  const west = (i: number) => `127.0.77.${112 + (i % 16)}`;
  const one = serials.slice(0, IN_FLIGHT).map((s, i) => new Phone(makeDevice(ring, s), east(i), [gw[0]!], ['reg-primary']));
  const two = serials.slice(IN_FLIGHT).map((s, i) => new Phone(makeDevice(ring, s), i % 2 ? west(i) : east(i), i % 2 ? [gw[1]!, gw[0]!] : [gw[0]!, gw[1]!], i % 2 ? ['reg-backup', 'reg-primary'] : ['reg-primary', 'reg-backup']));

  /** Every phone of `set` cycling for `ms`; logins/s and the failed cycles. */
  const phase = async (set: Phone[], ms: number) => {
    const until = performance.now() + ms;
    const t0 = performance.now();
    let logins = 0, failed = 0;
    await Promise.all(set.map(async (p) => {
      while (performance.now() < until) {
        const r = await p.cycle();
        if (r.loggedIn && r.registered) logins++;
        else failed++;
      }
    }));
    return { perSec: logins / ((performance.now() - t0) / 1000), failed };
  };
  // Warm-up: each set once (first registrations, JIT, pools).
  await phase(one, 1_500);
  await phase(two, 1_500);
  const rows: { round: number; one: number; two: number; failed: number; load: number }[] = [];
  for (let r = 1; r <= ROUNDS; r++) {
    const a = await phase(one, PHASE_MS);
    const b = await phase(two, PHASE_MS);
    rows.push({ round: r, one: a.perSec, two: b.perSec, failed: a.failed + b.failed, load: loadavg()[0]! });
  }
  const problems = await checkStores(pgUrl, schemas);
  const sum = (k: 'one' | 'two') => rows.reduce((n, x) => n + x[k], 0) / rows.length;
  console.log(`cluster bench: ${cpus().length} cores, Node ${process.version}, loopback hosts, stores on PostgreSQL, ${IN_FLIGHT} phones in flight, ${PHASE_MS / 1000} s per phase`);
  console.log('| round | one node: logins/s | two nodes: logins/s | two / one | failed cycles | load (1 min) |');
  console.log('|---|---|---|---|---|---|');
  for (const x of rows) console.log(`| ${x.round} | ${x.one.toFixed(1)} | ${x.two.toFixed(1)} | ${(x.two / x.one).toFixed(2)}x | ${x.failed} | ${x.load.toFixed(1)} |`);
  console.log(`mean: one node ${sum('one').toFixed(1)} logins/s, two nodes ${sum('two').toFixed(1)} logins/s: two / one = ${(sum('two') / sum('one')).toFixed(2)}x; store checks: ${problems.length ? problems.join('; ') : 'ok'}`);
  if (problems.length) process.exitCode = 1;
} finally {
  for (const p of procs) p.child.kill('SIGKILL');
  await Promise.all(procs.map((p) => p.exited));
  await dropStackSchemas(pgUrl, prefix);
  await dropNamespace(ns).catch(() => 0);
  unlock();
  rmSync(dir, { recursive: true, force: true });
}
