// Raw WebSocket clients that misbehave below what a WebSocket library lets a client do
// (unfinished fragmented messages, trickled frames), for the gateway's memory tests and the
// slow load test, and a handle on a gateway run in its own process (memory-probe.ts).
import { connect, type Socket } from 'node:net';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface, type Interface } from 'node:readline';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

/** A masked client frame (RFC 6455 §5.2) with an all-zero mask: the payload is sent as is. */
export function clientFrame(opcode: number, payload: number | Uint8Array, fin = true, declared?: number): Uint8Array {
  const p = typeof payload === 'number' ? new Uint8Array(payload) : payload;
  const len = declared ?? p.length;
  const ext = len < 126 ? 0 : len < 65536 ? 2 : 8;
  const out = new Uint8Array(2 + ext + 4 + p.length);
  out[0] = (fin ? 0x80 : 0) | opcode;
  out[1] = 0x80 | (ext === 0 ? len : ext === 2 ? 126 : 127);
  const dv = new DataView(out.buffer);
  if (ext === 2) dv.setUint16(2, len);
  if (ext === 8) dv.setUint32(6, len);
  out.set(p, 2 + ext + 4);
  return out;
}

export interface RawClient {
  sock: Socket;
  /** Everything the server sent after the 101 response. */
  received(): Buffer;
  closed: Promise<void>;
  isClosed(): boolean;
}

/** Opens a socket and completes a WebSocket upgrade by hand. */
export function rawUpgrade(port: number, localAddress?: string): Promise<RawClient> {
  return new Promise((resolve, reject) => {
    const sock = connect({ port, host: '127.0.0.1', localAddress });
    let head = Buffer.alloc(0);
    const body: Buffer[] = [];
    let upgraded = false;
    let isClosed = false;
    const closed = new Promise<void>((r) => sock.once('close', () => {
      isClosed = true;
      r();
    }));
    sock.on('error', (e) => {
      if (!upgraded) reject(e);
    });
    sock.on('connect', () => {
      sock.write('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
    });
    sock.on('data', (d: Buffer) => {
      if (upgraded) {
        body.push(d);
        return;
      }
      head = Buffer.concat([head, d]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      if (!head.subarray(0, 12).toString().includes('101')) {
        sock.destroy();
        return reject(new Error(`upgrade refused: ${head.subarray(0, end).toString()}`));
      }
      upgraded = true;
      if (head.length > end + 4) body.push(head.subarray(end + 4));
      resolve({ sock, received: () => Buffer.concat(body), closed, isClosed: () => isClosed });
    });
    sock.once('close', () => {
      if (!upgraded) reject(new Error('closed before the upgrade'));
    });
  });
}

export interface ProbeMemory { rss: number; heapUsed: number; external: number; arrayBuffers: number; connections: number; tracked: number }

export interface ProbeGateway {
  port: number;
  operatorUrl: string;
  proc: ChildProcess;
  /** The child's memory after a full GC. */
  memory(): Promise<ProbeMemory>;
  /** Records one login opening from each of n new addresses in the attack counter, then memory(). */
  fill(n: number): Promise<ProbeMemory>;
  stop(): Promise<void>;
}

const here = dirname(fileURLToPath(import.meta.url));

/** Starts gateway/memory-probe.ts in a child process (with --expose-gc). */
export async function startProbeGateway(opts: Record<string, unknown> = {}): Promise<ProbeGateway> {
  const tsx = join(here, '..', 'node_modules', 'tsx', 'dist', 'loader.mjs');
  const proc = spawn(process.execPath, ['--expose-gc', '--import', tsx, join(here, 'memory-probe.ts'), JSON.stringify(opts)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines: Interface = createInterface({ input: proc.stdout! });
  const waiting: ((l: string) => void)[] = [];
  lines.on('line', (l) => waiting.shift()?.(l));
  const next = () => new Promise<string>((r) => waiting.push(r));
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const first = await Promise.race([next(), exited.then(() => { throw new Error('the probe gateway exited before listening'); })]);
  const ready = JSON.parse(first) as { port: number; operatorUrl: string };
  return {
    ...ready,
    proc,
    async memory() {
      const l = next();
      proc.stdin!.write('mem\n');
      return JSON.parse(await l);
    },
    async fill(n) {
      const l = next();
      proc.stdin!.write(`fill ${n}\n`);
      return JSON.parse(await l);
    },
    async stop() {
      proc.stdin!.end();
      const t = setTimeout(() => proc.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(t);
    },
  };
}
