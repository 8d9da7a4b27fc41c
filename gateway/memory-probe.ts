// A gateway in a process of its own, for tests that measure its memory (gateway/memory.test.ts,
// the slow load test): prints {"port", "operatorPort"} once listening, then answers each stdin
// line with one JSON line of process.memoryUsage() taken after a full GC (run it with
// --expose-gc), plus the open connection count and the attack counter's tracked groups; a line
// 'fill N' first records one login opening from each of N new IPv4 addresses in the attack
// counter (bench/attacks.bench.ts: its memory at 100,000 tracked addresses). Limits and the
// attack configuration come as JSON in argv[2].
import { createInterface } from 'node:readline';
import { startGateway } from './gateway.ts';
import { setLogLevel } from '../server-kit/log.ts';
import { linkKeyFor } from '../server-kit/link.ts';

setLogLevel('error');
const opts = JSON.parse(process.argv[2] ?? '{}') as { limits?: Record<string, unknown>; attacks?: Record<string, unknown>; upstreams?: { name: string; linkUrl: string }[]; rootKeyHex?: string };
const root = Buffer.from(opts.rootKeyHex ?? '00'.repeat(32), 'hex');
const gw = await startGateway({
  host: '127.0.0.1', port: 0, operatorPort: 0,
  upstreams: (opts.upstreams ?? []).map((u) => ({ ...u, linkKey: linkKeyFor(new Uint8Array(root), u.name) })),
  limits: opts.limits,
  attacks: opts.attacks,
});
await gw.waitUpstreams(5_000);
process.stdout.write(JSON.stringify({ port: gw.port, operatorUrl: gw.operatorUrl }) + '\n');
const gc = (globalThis as { gc?: () => void }).gc;
let filled = 0;
createInterface({ input: process.stdin }).on('line', (line) => {
  const fill = /^fill (\d+)$/.exec(line);
  for (let i = 0, n = fill ? Number(fill[1]) : 0; i < n; i++, filled++) {
    gw.attacks?.attempt(`10.${(filled >> 16) & 255}.${(filled >> 8) & 255}.${filled & 255}`, 'biz-east', 'password');
  }
  gc?.();
  gc?.();
  const m = process.memoryUsage();
  process.stdout.write(JSON.stringify({ rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers, connections: gw.connections(), tracked: gw.attacks?.tracked ?? 0 }) + '\n');
}).on('close', () => {
  void gw.close().then(() => process.exit(0));
});
