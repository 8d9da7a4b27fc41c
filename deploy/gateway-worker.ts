// One gateway worker of deploy/gateway-workers.ts (node:cluster): a gateway on the port the
// workers share, its own upstream links, and its own TableSource polling the policy server, so
// each worker pushes a new attack table (S3.11) to the phones it holds itself: no worker needs
// another's connections. Configuration as JSON in USBPHONE_GATEWAY_WORKER; the primary's
// messages: {op:'stats'} (memory after full GCs, connections, pushes), {op:'refresh'} (poll the
// policy server now), {op:'close'}.
import cluster from 'node:cluster';
import { startGateway } from '../gateway/gateway.ts';
import { TableSource } from '../server-kit/table-source.ts';
import { AdminClient } from '../server-kit/admin-rpc.ts';
import { POLICY_ADMIN_LIMITS } from '../server-kit/admin-messages.ts';
import { createLogger, setLogLevel } from '../server-kit/log.ts';
import type { WorkerConfig, WorkerReply, WorkerRequest } from './gateway-workers.ts';

if (!cluster.isWorker) throw new Error('deploy/gateway-worker.ts runs as a node:cluster worker of deploy/gateway-workers.ts');
const cfg = JSON.parse(process.env.USBPHONE_GATEWAY_WORKER ?? '{}') as WorkerConfig;
if (cfg.logLevel) setLogLevel(cfg.logLevel as 'error');
const hex = (h: string) => new Uint8Array(Buffer.from(h, 'hex'));
const send = (m: WorkerReply) => process.send!(m);

const gw = await startGateway({
  host: cfg.host,
  port: cfg.port,
  upstreams: cfg.upstreams.map((u) => ({ name: u.name, linkUrl: u.linkUrl, linkKey: hex(u.linkKeyHex) })),
  limits: cfg.limits,
}).catch((e: NodeJS.ErrnoException) => {
  // Told to the primary (its start fails with the reason), not as a stack on stderr.
  send({ op: 'failed', id: cluster.worker!.id, error: `${e.code ?? 'error'}: ${e.message}` });
  process.exit(1);
});
let pushed = 0;
const tables = cfg.policy
  ? new TableSource({
      client: new AdminClient({ target: cfg.policy.name, url: cfg.policy.adminUrl, key: hex(cfg.policy.adminKeyHex), limits: POLICY_ADMIN_LIMITS }),
      intervalMs: cfg.tablePollMs,
      log: createLogger(`gateway/${cluster.worker!.id}/tables`),
      onUpdate: (t) => void (pushed += gw.pushTable(t)),
    })
  : null;
await tables?.start();

const gc = (globalThis as { gc?: () => void }).gc;
process.on('message', (m: WorkerRequest) => {
  if (m.op === 'stats') {
    for (let i = 0; i < 3; i++) gc?.();
    const u = process.memoryUsage();
    send({ op: 'stats', id: cluster.worker!.id, pid: process.pid, connections: gw.connections(), pushed, tableVersion: tables?.version() ?? null, rss: u.rss, heapUsed: u.heapUsed, external: u.external, gcExposed: gc !== undefined });
  } else if (m.op === 'refresh') {
    void (tables ? tables.refresh() : Promise.resolve()).then(() => send({ op: 'refreshed', id: cluster.worker!.id, pushed, tableVersion: tables?.version() ?? null }));
  } else if (m.op === 'close') {
    tables?.close();
    void gw.close().then(() => process.exit(0));
  }
});
send({ op: 'listening', id: cluster.worker!.id, port: gw.port });
