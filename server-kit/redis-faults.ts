// Test helpers for the shared state (issue 16): a namespace per test on the real Redis (shared
// by every session of this machine: all keys under a random prefix, removed after), and the
// two ways Redis fails that matter for bounded timeouts: a server that accepts and never
// answers (blackhole), and a proxy to the real Redis that can stop answering mid-way (freeze).
import { createServer, connect, type Server, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { SharedState, type SharedStateConfig } from './redis.ts';

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/** A fresh namespace: 'test-<hex>'. */
export const testNamespace = (tag = 'test') => `${tag}-${randomBytes(6).toString('hex')}`;

/** Removes every key of `namespace` (SCAN, not KEYS: Redis is shared). */
export async function dropNamespace(namespace: string, url = REDIS_URL): Promise<number> {
  const s = new SharedState({ url, namespace, timeoutMs: 5_000 });
  try {
    await s.ready(5_000);
    let n = 0;
    let cursor = '0';
    do {
      const [next, keys] = await s.redis.scan(cursor, 'MATCH', `${namespace}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length) n += await s.redis.del(...keys);
    } while (cursor !== '0');
    return n;
  } finally {
    await s.close();
  }
}

export interface FaultyRedis {
  url: string;
  /** Stops forwarding: connected clients get no answer (and new ones connect but get none). */
  freeze(): void;
  thaw(): void;
  close(): Promise<void>;
}

async function listen(server: Server, port: number, host = '127.0.0.1'): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return (server.address() as { port: number }).port;
}

/** A TCP server that accepts and never answers: a hung Redis. */
export async function blackholeRedis(port = 0): Promise<{ url: string; close(): Promise<void> }> {
  const socks = new Set<Socket>();
  const server = createServer((s) => {
    socks.add(s);
    s.on('error', () => {});
    s.on('close', () => socks.delete(s));
  });
  const p = await listen(server, port);
  return {
    url: `redis://127.0.0.1:${p}`,
    close: () => new Promise<void>((r) => {
      for (const s of socks) s.destroy();
      server.close(() => r());
    }),
  };
}

/** A proxy to the real Redis that can freeze (hold every byte both ways) and thaw; on `host` (default loopback). */
export async function freezableRedis(target = REDIS_URL, port = 0, host = '127.0.0.1'): Promise<FaultyRedis> {
  const u = new URL(target);
  const p = await freezableProxy({ host: u.hostname, port: Number(u.port || 6379) }, port, host);
  return { ...p, url: `redis://${host}:${p.port}` };
}

/**
 * A TCP forwarder to `target` listening on `host`:`port` that can freeze and thaw (the cluster
 * harness's way for the hosts in their namespaces to reach Redis and PostgreSQL on loopback).
 */
export async function freezableProxy(target: { host: string; port: number }, port = 0, host = '127.0.0.1'): Promise<Omit<FaultyRedis, 'url'> & { port: number }> {
  let frozen = false;
  const pairs = new Set<{ a: Socket; b: Socket; held: [Socket, Buffer][] }>();
  const server = createServer((a) => {
    const b = connect(target.port, target.host);
    const pair = { a, b, held: [] as [Socket, Buffer][] };
    pairs.add(pair);
    const fwd = (to: Socket) => (d: Buffer) => (frozen ? pair.held.push([to, d]) : to.write(d));
    a.on('data', fwd(b));
    b.on('data', fwd(a));
    const end = () => {
      a.destroy();
      b.destroy();
      pairs.delete(pair);
    };
    a.on('error', end).on('close', end);
    b.on('error', end).on('close', end);
  });
  const p = await listen(server, port, host);
  return {
    port: p,
    freeze: () => void (frozen = true),
    thaw() {
      frozen = false;
      for (const x of pairs) for (const [to, d] of x.held.splice(0)) to.write(d);
    },
    close: () => new Promise<void>((r) => {
      for (const x of pairs) {
        x.a.destroy();
        x.b.destroy();
      }
      server.close(() => r());
    }),
  };
}

/** A shared-state configuration on the real Redis under a fresh namespace. */
export const testShared = (over: Partial<SharedStateConfig> = {}): SharedStateConfig => ({ url: REDIS_URL, namespace: testNamespace(), timeoutMs: 500, ...over });
