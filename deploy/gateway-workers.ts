// The gateway across processes (issue 15: 50,000 phones held connected at once; a process may
// open 20,000 files here): W node:cluster workers (deploy/gateway-worker.ts) share one listening
// port (the primary accepts and hands each connection to a worker, round robin; Node 20 has no
// SO_REUSEPORT option), each a whole gateway with its own upstream links.
//
// The policy table push (S3.11) reaches every held phone without crossing workers: each worker
// holds its own TableSource (server-kit/table-source.ts) polling the policy server, and pushes a
// table it has not seen to the phones it holds, as separate gateway hosts would. A new table
// reaches all of them within one poll period; refreshTables() has every worker poll now (the
// primary's one message per worker, not per phone). docs/decisions.md.
import cluster, { type Worker } from 'node:cluster';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { GatewayLimits } from '../gateway/limits.ts';
import { ImplementationError } from '../protocol/errors.ts';

const here = dirname(fileURLToPath(import.meta.url));

export interface WorkerConfig {
  host: string;
  port: number;
  upstreams: { name: string; linkUrl: string; linkKeyHex: string }[];
  /** The policy server's sealed admin API, polled by each worker (no table push without it). */
  policy?: { name: string; adminUrl: string; adminKeyHex: string };
  tablePollMs?: number;
  limits?: Partial<GatewayLimits>;
  logLevel?: string;
}
export type WorkerRequest = { op: 'stats' } | { op: 'refresh' } | { op: 'close' };
export interface WorkerStats { op: 'stats'; id: number; pid: number; connections: number; pushed: number; tableVersion: number | null; rss: number; heapUsed: number; external: number; gcExposed: boolean }
export type WorkerReply = { op: 'listening'; id: number; port: number } | { op: 'failed'; id: number; error: string } | WorkerStats | { op: 'refreshed'; id: number; pushed: number; tableVersion: number | null };

export interface GatewayWorkers {
  port: number;
  url: string;
  workers: number;
  /** Each worker's memory (after full GCs), connections and pushes so far. */
  stats(): Promise<WorkerStats[]>;
  /** Every worker polls the policy server now; resolves with each one's pushes so far and the table version it holds. */
  refreshTables(): Promise<{ id: number; pushed: number; tableVersion: number | null }[]>;
  close(): Promise<void>;
}

export interface GatewayWorkersOptions extends WorkerConfig {
  workers: number;
  /** ms to wait for every worker to listen (default 30 s). */
  startTimeoutMs?: number;
}

/** Starts the workers (this process is the cluster's primary); resolves once each listens on the shared port. */
export async function startGatewayWorkers(o: GatewayWorkersOptions): Promise<GatewayWorkers> {
  if (!cluster.isPrimary) throw new ImplementationError('GATEWAY_WORKERS', 'gateway workers are started from the primary process');
  if (!Number.isInteger(o.workers) || o.workers < 1 || o.workers > 64) throw new ImplementationError('GATEWAY_WORKERS', 'workers must be 1..64');
  const { workers: count, startTimeoutMs, ...cfg } = o;
  cluster.setupPrimary({ exec: join(here, 'gateway-worker.ts'), execArgv: ['--expose-gc', '--import', join(here, '..', 'node_modules', 'tsx', 'dist', 'loader.mjs')] });
  const workers: Worker[] = [];
  const exited = new Set<Worker>();
  const stop = async () => {
    await Promise.all(workers.map((w) => (exited.has(w) ? undefined : new Promise<void>((r) => {
      w.once('exit', () => r());
      try {
        w.send({ op: 'close' } satisfies WorkerRequest);
      } catch {
        w.kill('SIGKILL');
      }
      setTimeout(() => w.kill('SIGKILL'), 5_000).unref();
    }))));
  };
  let port = -1;
  try {
    for (let i = 0; i < count; i++) {
      const w = cluster.fork({ USBPHONE_GATEWAY_WORKER: JSON.stringify(cfg) });
      workers.push(w);
      w.once('exit', () => exited.add(w));
    }
    const ports = await Promise.all(workers.map((w) => new Promise<number>((resolve, reject) => {
      const t = setTimeout(() => reject(new ImplementationError('GATEWAY_WORKERS', `worker ${w.id} did not listen in time`)), startTimeoutMs ?? 30_000);
      w.once('exit', (code) => reject(new ImplementationError('GATEWAY_WORKERS', `worker ${w.id} exited (${code}) before listening`)));
      const on = (m: WorkerReply) => {
        if (m.op === 'failed') return reject(new ImplementationError('GATEWAY_WORKERS', `worker ${w.id} could not start: ${m.error}`));
        if (m.op !== 'listening') return;
        clearTimeout(t);
        w.off('message', on);
        resolve(m.port);
      };
      w.on('message', on);
    })));
    port = ports[0]!;
    if (ports.some((p) => p !== port)) throw new ImplementationError('GATEWAY_WORKERS', `workers listen on different ports: ${ports.join(', ')}`);
  } catch (e) {
    await stop();
    throw e;
  }
  /** One request to every worker, the first matching reply of each. */
  const ask = <R extends WorkerReply>(req: WorkerRequest, op: R['op']) => Promise.all(workers.map((w) => new Promise<R>((resolve, reject) => {
    const onExit = () => reject(new ImplementationError('GATEWAY_WORKERS', `worker ${w.id} exited`));
    const on = (m: WorkerReply) => {
      if (m.op !== op) return;
      w.off('message', on);
      w.off('exit', onExit);
      resolve(m as R);
    };
    w.on('message', on);
    w.once('exit', onExit);
    w.send(req);
  })));
  const hostPart = o.host.includes(':') ? `[${o.host}]` : o.host;
  return {
    port,
    url: `ws://${hostPart}:${port}/`,
    workers: count,
    stats: () => ask<WorkerStats>({ op: 'stats' }, 'stats'),
    refreshTables: () => ask<{ op: 'refreshed'; id: number; pushed: number; tableVersion: number | null }>({ op: 'refresh' }, 'refreshed').then((r) => r.map(({ id, pushed, tableVersion }) => ({ id, pushed, tableVersion }))),
    close: stop,
  };
}
