// 50,000 phones held connected at once (issue 15; the S3 table push needs them): W gateway
// workers sharing one port (deploy/gateway-workers.ts), the connections held by driver processes
// from loopback blocks of their own (sim/held.ts), then one new attack table from the policy
// server pushed to all of them. Prints the gateway's memory per idle connection (each worker's
// heap + external after full GCs, and its RSS, held minus before, summed over the workers, per
// connection; target <= 8 KiB), the connections each worker holds, and the push's fan-out time.
// HELD_PHONES=N (default 50,000), HELD_WORKERS=W (default 4), HELD_PORT (default 24200).
import { cpus } from 'node:os';
import { createHash } from 'node:crypto';
import { sha256 } from '@noble/hashes/sha2.js';
import { startGatewayWorkers } from '../deploy/gateway-workers.ts';
import { holdConnections } from '../sim/held.ts';
import { startPolicyServer } from '../policy-server/server.ts';
import { tempDir, FakeClock, PATENT_SITES } from '../policy-server/test-util.ts';
import { setLogLevel } from '../server-kit/log.ts';

setLogLevel('error');
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
