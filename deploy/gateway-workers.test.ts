// The gateway across processes (issue 15): 500 phones' connections held across 2 node:cluster
// workers sharing one port, by 2 driver processes; a new attack table signed by the policy
// server reaches every held connection in every worker (each worker's own TableSource: no
// worker forwards to another), once, the very table the policy server holds; each worker reports
// its memory and connections. A worker that cannot listen fails the start, and no worker is left.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createServer } from 'node:net';
import { createHash } from 'node:crypto';
import { sha256 } from '@noble/hashes/sha2.js';
import { startGatewayWorkers, type GatewayWorkers } from './gateway-workers.ts';
import { holdConnections, type HeldConnections } from '../sim/held.ts';
import { startPolicyServer, type PolicyServer } from '../policy-server/server.ts';
import { tempDir, FakeClock, PATENT_SITES } from '../policy-server/test-util.ts';
import { setLogLevel } from '../server-kit/log.ts';
import { ImplementationError } from '../protocol/errors.ts';

setLogLevel('error');
const T = 60_000;
const T0 = 1_800_000_000_000;
const adminKey = new Uint8Array(32).fill(9);
const tmp = tempDir();
const clock = new FakeClock(T0 + 1_000);
let policy: PolicyServer;
let gw: GatewayWorkers | null = null;
let held: HeldConnections | null = null;

test.before(async () => {
  policy = await startPolicyServer({ host: '127.0.0.1', adminPort: 0, adminKey, dbFile: tmp.file('policy.db'), privateKey: sha256(new TextEncoder().encode('held test policy key')), initialTable: PATENT_SITES, periodMs: T, clock, timer: false });
});
test.after(async () => {
  await held?.close();
  await gw?.close();
  await policy.close();
  tmp.remove();
});

const cfg = (port: number) => ({
  workers: 2, host: '127.0.0.1', port, upstreams: [],
  policy: { name: policy.name, adminUrl: policy.adminUrl, adminKeyHex: Buffer.from(adminKey).toString('hex') },
  // Polls only when told (refreshTables): the push below is the policy server's new table, not a timer's.
  tablePollMs: 3_600_000,
  limits: { idleTimeoutMs: 600_000 },
  logLevel: 'error',
});

test('500 held connections across 2 workers: a new table reaches every one of them, once, in both workers', async () => {
  // Port 0: in a cluster every worker's listen(0) gets the one port the primary picks (Node's
  // cluster docs), so no fixed port that another test or process could hold.
  gw = await startGatewayWorkers(cfg(0));
  assert.ok(gw.port > 0);
  held = await holdConnections({ url: gw.url, count: 500, perProcess: 250, perIp: 50 });
  assert.is(held.processes, 2);
  assert.is(held.opened, 500, held.errors.join('; '));
  const before = await gw.stats();
  assert.is(before.length, 2);
  assert.is(before.reduce((n, s) => n + s.connections, 0), 500);
  assert.ok(before.every((s) => s.connections > 0), `every worker holds some: ${before.map((s) => s.connections).join(', ')}`);
  assert.ok(before.every((s) => s.gcExposed && s.heapUsed > 0 && s.rss > 0));
  const v0 = policy.latest().table.version;
  assert.ok(before.every((s) => s.tableVersion === v0));
  // The next period: the policy server signs a new table; every worker polls it and pushes it.
  clock.t += T;
  assert.ok(await policy.tick(), 'a new table');
  const v1 = policy.latest().table.version;
  assert.ok(v1 > v0);
  const r = await gw.refreshTables();
  assert.ok(r.every((w) => w.tableVersion === v1));
  assert.is(r.reduce((n, w) => n + w.pushed, 0), 500);
  const want = createHash('sha256').update(policy.latest().signed).digest('hex').slice(0, 16);
  let c = await held.counts();
  for (let i = 0; i < 50 && c.withPush < 500; i++) {
    await new Promise((res) => setTimeout(res, 100));
    c = await held.counts();
  }
  assert.is(c.withPush, 500, 'every held connection got the push');
  assert.is(c.pushes, 500, 'once each');
  assert.equal(c.tables, { [want]: 500 }, "the policy server's table, byte for byte");
  // Polled again with no new table: nothing more is pushed.
  const again = await gw.refreshTables();
  assert.is(again.reduce((n, w) => n + w.pushed, 0), 500);
});

test('a worker that cannot listen (the port taken) fails the start with GATEWAY_WORKERS; no worker is left', async () => {
  const squatter = createServer();
  await new Promise<void>((r) => squatter.listen(0, '127.0.0.1', () => r()));
  try {
    await startGatewayWorkers(cfg((squatter.address() as { port: number }).port));
    assert.unreachable('started');
  } catch (e) {
    assert.instance(e, ImplementationError);
    assert.is((e as ImplementationError).code, 'GATEWAY_WORKERS');
    assert.match((e as Error).message, /EADDRINUSE/);
  } finally {
    squatter.close();
  }
  const cluster = (await import('node:cluster')).default;
  const live = Object.values(cluster.workers ?? {}).filter((w) => w && !w.isDead());
  // Only the first test's two workers remain.
  assert.is(live.length, 2);
});

test.run();
