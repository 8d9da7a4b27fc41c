// Phones held connected (issue 15: the S3 table push needs them): N WebSocket connections to a
// gateway, held open by several processes of their own (sim/held-child.ts: a process may open
// 20,000 files here, and one source address has ~28,000 ports), each from its own loopback
// block 127.B.0.0/16, each counting the attack tables pushed to every connection it holds.
// What a held phone costs the gateway is measured on the gateway's side (deploy/gateway-workers.ts stats).
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface, type Interface } from 'node:readline';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ImplementationError } from '../protocol/errors.ts';
import { trackChild } from './lifetime.ts';

const here = dirname(fileURLToPath(import.meta.url));

export interface HeldCounts {
  open: number;
  closed: number;
  failed: number;
  /** Connections that received at least one table push. */
  withPush: number;
  pushes: number;
  /** Connections by the table (a SHA-256 prefix) of the last push each received. */
  tables: Record<string, number>;
}

export interface HeldConnections {
  opened: number;
  failed: number;
  /** First errors of connections that did not open (for a failure message). */
  errors: string[];
  processes: number;
  counts(): Promise<HeldCounts>;
  close(): Promise<void>;
}

export interface HoldOptions {
  url: string;
  count: number;
  /** Connections per driver process (default 15,000: under the 20,000 open files a process may have here). */
  perProcess?: number;
  /** Connections per source address (default 200). */
  perIp?: number;
  /** First loopback block: process k uses 127.(firstBlock + k).0.0/16 (default 40). */
  firstBlock?: number;
  openTimeoutMs?: number;
}

export async function holdConnections(o: HoldOptions): Promise<HeldConnections> {
  const per = o.perProcess ?? 15_000;
  if (!(o.count > 0) || !(per > 0)) throw new ImplementationError('SIM_HOLD', 'count and perProcess must be positive');
  const n = Math.ceil(o.count / per);
  const loader = join(here, '..', 'node_modules', 'tsx', 'dist', 'loader.mjs');
  const kids: { proc: ChildProcess; lines: Interface; next: () => Promise<Record<string, unknown>>; exited: Promise<void> }[] = [];
  for (let k = 0; k < n; k++) {
    const count = Math.min(per, o.count - k * per);
    const proc = spawn(process.execPath, ['--import', loader, join(here, 'held-child.ts'), JSON.stringify({ url: o.url, count, block: (o.firstBlock ?? 40) + k, perIp: o.perIp ?? 200 })], { stdio: ['pipe', 'pipe', 'inherit'] });
    trackChild(proc);
    const lines = createInterface({ input: proc.stdout! });
    const waiting: ((m: Record<string, unknown>) => void)[] = [];
    lines.on('line', (l) => waiting.shift()?.(JSON.parse(l)));
    const exited = new Promise<void>((r) => proc.once('exit', () => r()));
    const next = () => Promise.race([new Promise<Record<string, unknown>>((r) => waiting.push(r)), exited.then(() => { throw new ImplementationError('SIM_HOLD', 'a driver process exited'); })]);
    kids.push({ proc, lines, next, exited });
  }
  const close = async () => {
    for (const k of kids) k.proc.stdin!.end();
    await Promise.all(kids.map((k) => Promise.race([k.exited, new Promise<void>((r) => setTimeout(() => (k.proc.kill('SIGKILL'), r()), 10_000).unref())])));
  };
  try {
    const timeout = new Promise<never>((_, rej) => setTimeout(() => rej(new ImplementationError('SIM_HOLD', 'connections did not open in time')), o.openTimeoutMs ?? 600_000).unref());
    const opened = await Promise.race([Promise.all(kids.map((k) => k.next())), timeout]);
    return {
      opened: opened.reduce((a, m) => a + (m.open as number), 0),
      failed: opened.reduce((a, m) => a + (m.failed as number), 0),
      errors: opened.flatMap((m) => m.errors as string[]).slice(0, 3),
      processes: n,
      async counts() {
        const all = await Promise.all(kids.map((k) => {
          const r = k.next();
          k.proc.stdin!.write('count\n');
          return r as unknown as Promise<HeldCounts>;
        }));
        const sum: HeldCounts = { open: 0, closed: 0, failed: 0, withPush: 0, pushes: 0, tables: {} };
        for (const c of all) {
          sum.open += c.open;
          sum.closed += c.closed;
          sum.failed += c.failed;
          sum.withPush += c.withPush;
          sum.pushes += c.pushes;
          for (const [t, m] of Object.entries(c.tables)) sum.tables[t] = (sum.tables[t] ?? 0) + m;
        }
        return sum;
      },
      close,
    };
  } catch (e) {
    await close();
    throw e;
  }
}
