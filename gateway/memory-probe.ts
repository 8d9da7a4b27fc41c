// A gateway in a process of its own, for tests that measure its memory (gateway/memory.test.ts,
// the slow load test): prints {"port", "operatorPort"} once listening, then answers each stdin
// line with one JSON line of process.memoryUsage() taken after a full GC (run it with
// --expose-gc), plus the open connection count. Limits come as JSON in argv[2].
import { createInterface } from 'node:readline';
import { startGateway } from './gateway.ts';
import { setLogLevel } from '../server-kit/log.ts';
import { linkKeyFor } from '../server-kit/link.ts';

setLogLevel('error');
const opts = JSON.parse(process.argv[2] ?? '{}') as { limits?: Record<string, unknown>; upstreams?: { name: string; linkUrl: string }[]; rootKeyHex?: string };
const root = Buffer.from(opts.rootKeyHex ?? '00'.repeat(32), 'hex');
const gw = await startGateway({
  host: '127.0.0.1', port: 0, operatorPort: 0,
  upstreams: (opts.upstreams ?? []).map((u) => ({ ...u, linkKey: linkKeyFor(new Uint8Array(root), u.name) })),
  limits: opts.limits,
});
await gw.waitUpstreams(5_000);
process.stdout.write(JSON.stringify({ port: gw.port, operatorUrl: gw.operatorUrl }) + '\n');
const gc = (globalThis as { gc?: () => void }).gc;
createInterface({ input: process.stdin }).on('line', () => {
  gc?.();
  gc?.();
  const m = process.memoryUsage();
  process.stdout.write(JSON.stringify({ rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers, connections: gw.connections() }) + '\n');
}).on('close', () => {
  void gw.close().then(() => process.exit(0));
});
