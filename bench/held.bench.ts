// 50,000 phones held connected at once (issue 15; the S3 table push needs them): W gateway
// workers sharing one port (deploy/gateway-workers.ts), the connections held by driver processes
// from loopback blocks of their own (sim/held.ts), then one new attack table from the policy
// server pushed to all of them. Prints the gateway's memory per idle connection (each worker's
// heap + external after full GCs, and its RSS, held minus before, summed over the workers, per
// connection; target <= 8 KiB), the connections each worker holds, and the push's fan-out time.
// HELD_PHONES=N (default 50,000), HELD_WORKERS=W (default 4), HELD_PORT (default 24200).
// HELD_MODE=phones: instead of bare connections, N phones of the firmware log in (registration
// and business login on one WebSocket, docs/protocol.md §2.1) through a stack in this process
// and stay plugged in, holding that connection; the policy server's next table is pushed to
// them, and the bench counts the phones that accepted it after their login (sim/held-phones.ts).
import { cpus } from 'node:os';
import { createHash } from 'node:crypto';
import { sha256 } from '@noble/hashes/sha2.js';
import { startGatewayWorkers } from '../deploy/gateway-workers.ts';
import { holdConnections } from '../sim/held.ts';
import { startPolicyServer } from '../policy-server/server.ts';
import { tempDir, FakeClock, PATENT_SITES } from '../policy-server/test-util.ts';
import { setLogLevel } from '../server-kit/log.ts';
import { startWorld } from '../sim/world.ts';
import { holdPhones } from '../sim/held-phones.ts';
import { makeTempDir, removeTempDir } from '../sim/lifetime.ts';

setLogLevel('error');
if (process.env.HELD_MODE === 'phones') {
  await heldPhonesBench();
  process.exit(0);
}
const N = Number(process.env.HELD_PHONES ?? 50_000);
const W = Number(process.env.HELD_WORKERS ?? 4);
const PORT = Number(process.env.HELD_PORT ?? 24_200);
const T = 60_000;
const KiB = (b: number) => `${(b / 1024).toFixed(2)} KiB`;
console.log(`held bench: ${N} connections, ${W} gateway workers, node ${process.version}, ${cpus().length} x ${cpus()[0]?.model}`);

const tmp = tempDir();
const clock = new FakeClock(1_800_000_000_000 + 1_000);
const adminKey = new Uint8Array(32).fill(7);
const policy = await startPolicyServer({ host: '127.0.0.1', adminPort: 0, adminKey, dbFile: tmp.file('policy.db'), privateKey: sha256(new TextEncoder().encode('held bench policy key')), initialTable: PATENT_SITES, periodMs: T, clock, timer: false });
const per = Math.ceil(N / W);
const gw = await startGatewayWorkers({
  workers: W, host: '127.0.0.1', port: PORT, upstreams: [],
  policy: { name: policy.name, adminUrl: policy.adminUrl, adminKeyHex: Buffer.from(adminKey).toString('hex') },
  tablePollMs: 3_600_000,
  // Held phones send nothing between pushes: the idle cut is the deployment's keepalive, not 60 s.
  limits: { idleTimeoutMs: 3_600_000, maxConnections: per + 2_000, maxConnectionsPerIp: 256 },
  logLevel: 'error',
});
try {
  const base = await gw.stats();
  const t0 = performance.now();
  const held = await holdConnections({ url: gw.url, count: N, perProcess: Math.min(15_000, per), perIp: 200 });
  const openS = (performance.now() - t0) / 1000;
  console.log(`opened ${held.opened} of ${N} (${held.failed} failed${held.errors.length ? `: ${held.errors.join('; ')}` : ''}) in ${openS.toFixed(1)} s, ${held.processes} driver processes`);
  const now = await gw.stats();
  let live = 0, rss = 0, conns = 0;
  for (const s of now) {
    const b = base.find((x) => x.id === s.id)!;
    live += s.heapUsed + s.external - (b.heapUsed + b.external);
    rss += s.rss - b.rss;
    conns += s.connections;
    console.log(`  worker ${s.id} (pid ${s.pid}): ${s.connections} connections, heap+external ${KiB((s.heapUsed + s.external - b.heapUsed - b.external) / Math.max(1, s.connections))} per connection, RSS ${(s.rss / 1048576).toFixed(0)} MiB`);
  }
  console.log(`gateway memory per idle connection: ${KiB(live / conns)} heap + external (after full GCs), ${KiB(rss / conns)} RSS; ${conns} connections held in ${W} workers`);
  clock.t += T;
  policy.tick();
  const want = createHash('sha256').update(policy.latest().signed).digest('hex').slice(0, 16);
  const t1 = performance.now();
  const r = await gw.refreshTables();
  let c = await held.counts();
  while (c.withPush < held.opened && performance.now() - t1 < 120_000) {
    await new Promise((res) => setTimeout(res, 200));
    c = await held.counts();
  }
  console.log(`table push (v${policy.latest().table.version}): pushed ${r.reduce((n, w) => n + w.pushed, 0)} by the workers, received by ${c.withPush} of ${held.opened} held connections (${c.tables[want] ?? 0} with the policy server's table) in ${((performance.now() - t1) / 1000).toFixed(2)} s; ${c.closed} closed while held`);
  await held.close();
} finally {
  await gw.close();
  await policy.close();
  tmp.remove();
}

/** HELD_MODE=phones: logged-in phones held connected, and the push that reaches them. */
async function heldPhonesBench(): Promise<void> {
  const n = Number(process.env.HELD_PHONES ?? 2_000);
  const period = Number(process.env.HELD_PERIOD_MS ?? 5_000);
  console.log(`held phones bench: ${n} phones of the firmware, one stack in this process, policy period ${period} ms, node ${process.version}, ${cpus().length} x ${cpus()[0]?.model}`);
  const dir = makeTempDir('held-phones-bench');
  const world = await startWorld({ stateDir: dir, gatewayPort: 0, policyPeriodMs: period, tablePollMs: 200, gatewayLimits: { idleTimeoutMs: 3_600_000, maxConnections: n + 1_000 } });
  try {
    const gw = world.stack.gateway;
    const held = await holdPhones(world, n, 32);
    console.log(`logged in ${held.loggedIn} of ${n} (failed: ${JSON.stringify(held.failed)}) in ${(held.loginMs / 1000).toFixed(1)} s; the gateway accepted ${held.accepted} connections for them (${(held.accepted / Math.max(1, held.loggedIn)).toFixed(2)} per login) and holds ${gw.connections()} after the logins`);
    const v0 = world.stack.policy.latest().table.version;
    const t1 = performance.now();
    let got = held.pushed();
    while (got < held.loggedIn && performance.now() - t1 < 3 * period) {
      await new Promise((r) => setTimeout(r, 200));
      got = held.pushed();
    }
    console.log(`table push: v${v0} -> v${world.stack.policy.latest().table.version}; accepted after their login by ${got} of ${held.loggedIn} held phones, within ${((performance.now() - t1) / 1000).toFixed(1)} s; the gateway holds ${gw.connections()} connections`);
    held.unplug();
    const t2 = performance.now();
    while (gw.connections() > 0 && performance.now() - t2 < 10_000) await new Promise((r) => setTimeout(r, 50));
    console.log(`unplugged: the gateway holds ${gw.connections()} connections`);
  } finally {
    await world.stop();
    removeTempDir(dir);
  }
}
