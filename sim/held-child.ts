// One process of sim/held.ts: holds `count` WebSocket connections to a gateway, from loopback
// source addresses of its own (127.B.x.y, `perIp` each: no address runs out of ports or reaches
// the gateway's per-address cap), and counts the attack tables pushed to each (S3.11,
// protocol/messages.ts peekTablePush). argv[2]: JSON {url, count, block, perIp, openBatch}.
// stdout, JSON lines: {"event":"open",...} once all are open or failed; then one line per
// stdin line 'count': {"event":"count", open, closed, withPush, pushes, tables: {sha256 prefix: connections}}.
// stdin closed: closes everything and exits.
import { createInterface } from 'node:readline';
import { createHash } from 'node:crypto';
import WebSocket from 'ws';
import { peekTablePush } from '../protocol/messages.ts';

const o = JSON.parse(process.argv[2] ?? '{}') as { url: string; count: number; block: number; perIp: number; openBatch?: number };
const out = (m: unknown) => process.stdout.write(JSON.stringify(m) + '\n');
/** Per connection: pushes received, and the table of the last one (a key into `tables`). */
const pushes = new Uint16Array(o.count);
const lastTable: (string | undefined)[] = new Array(o.count);
const socks: WebSocket[] = [];
let open = 0, closed = 0, failed = 0;
const firstError: string[] = [];

function addressOf(i: number): string {
  const n = Math.floor(i / o.perIp);
  return `127.${o.block}.${Math.floor(n / 254) % 256}.${1 + (n % 254)}`;
}

function connect(i: number): Promise<void> {
  return new Promise((resolve) => {
    const ws = new WebSocket(o.url, { localAddress: addressOf(i), perMessageDeflate: false, handshakeTimeout: 30_000 });
    socks[i] = ws;
    let opened = false;
    ws.on('open', () => {
      opened = true;
      open++;
      resolve();
    });
    ws.on('message', (data: Buffer) => {
      const t = peekTablePush(new Uint8Array(data.buffer, data.byteOffset, data.length));
      if (!t) return;
      pushes[i] = pushes[i]! + 1;
      lastTable[i] = createHash('sha256').update(t).digest('hex').slice(0, 16);
    });
    ws.on('error', (e) => {
      if (firstError.length < 3) firstError.push(e.message);
    });
    ws.on('close', () => {
      if (opened) {
        open--;
        closed++;
      } else {
        failed++;
        resolve();
      }
    });
  });
}

const batch = o.openBatch ?? 200;
for (let i = 0; i < o.count; i += batch) await Promise.all(Array.from({ length: Math.min(batch, o.count - i) }, (_, j) => connect(i + j)));
out({ event: 'open', open, failed, errors: firstError });

createInterface({ input: process.stdin })
  .on('line', (line) => {
    if (line.trim() !== 'count') return;
    const tables: Record<string, number> = {};
    let withPush = 0, total = 0;
    for (let i = 0; i < o.count; i++) {
      total += pushes[i]!;
      if (pushes[i]! > 0) withPush++;
      const t = lastTable[i];
      if (t) tables[t] = (tables[t] ?? 0) + 1;
    }
    out({ event: 'count', open, closed, failed, withPush, pushes: total, tables });
  })
  .on('close', () => {
    for (const ws of socks) ws?.terminate();
    process.exit(0);
  });
