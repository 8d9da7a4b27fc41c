// Where a server process's CPU went, from a V8 CPU profile (`node --cpu-prof`, which
// bench/login-cost.bench.ts asks of its server processes with BENCH_PROF=<dir>): each sample's
// self time is put in one category, by its own frame (the crypto libraries) or by the nearest
// frame of our code that caused it, and shown as a share of the non-idle time without
// start-up (module loading, schema compilation, opening the stores). The summaries in
// docs/benchmarks.md §"Login cost (issue 15)" come from it. Heuristic, by file: read the
// categories below before quoting a figure.
// Run: npx tsx bench/cpu-profile-summary.ts <file.cpuprofile>
import { readFileSync } from 'node:fs';

function usage(): never {
  process.stderr.write('usage: npx tsx bench/cpu-profile-summary.ts <file.cpuprofile>\n');
  process.exit(2);
}
interface Frame { functionName: string; url: string }
interface Node { id: number; callFrame: Frame; children?: number[] }
const p = JSON.parse(readFileSync(process.argv[2] ?? usage(), 'utf8')) as { nodes: Node[]; samples: number[]; timeDeltas: number[] };
const byId = new Map<number, Node>(p.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const self = new Map<number, number>();
p.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i] ?? 0)));
const ours = (u: string) => /\/(protocol|server-kit|gateway|reg-server|biz-server|deploy|policy-server|operator-server|cli|bin)\//.test(u) && !u.includes('node_modules');
function category(id: number): string {
  const f0 = byId.get(id)!.callFrame;
  if (f0.functionName === '(garbage collector)') return 'GC';
  if (f0.functionName === '(program)') return 'native, unattributed';
  const chain: Frame[] = [];
  for (let c: number | undefined = id; c !== undefined; c = parent.get(c)) chain.push(byId.get(c)!.callFrame);
  if (chain.some((f) => /tsx|esbuild|node:internal\/modules|cjs-module-lexer/.test(f.url))) return 'start-up (module loading)';
  if (chain.some((f) => (/ajv\/dist\/core/.test(f.url) && f.functionName === 'compile') || f.functionName === 'openDb' || f.functionName === 'startStack')) return 'start-up (module loading)';
  const cryptoLib = chain.findIndex((f) => f.url.includes('@noble') || f.url === 'node:internal/crypto/hash' || f.url.includes('node:internal/crypto/cipher') || f.url.includes('native-crypto.ts') || f.url.includes('crypto-engine.ts'));
  const firstOurs = chain.findIndex((f) => ours(f.url));
  if (cryptoLib >= 0 && (firstOurs < 0 || cryptoLib <= firstOurs + 2)) {
    const o = chain.find((f) => ours(f.url) && !f.url.includes('native-crypto') && !f.url.includes('crypto-engine'));
    return o && o.url.includes('server-kit/link.ts') ? 'link (tags, framing, in-memory ports)' : 'crypto (HMAC, HKDF, AEAD, SHA-256)';
  }
  if (chain.some((f) => /better-sqlite3/.test(f.url))) return 'SQLite (stores)';
  const o = chain.find((f) => ours(f.url));
  const u: string = o?.url ?? '';
  if (/feed-hub|feed-schema|page-server/.test(u) || chain.some((f) => f.url.includes('/ajv/'))) return 'live page feed (deploy/feed-hub.ts)';
  if (/admin-rpc|bounded-post|admin-messages/.test(u) || chain.some((f) => /admin-rpc/.test(f.url))) return 'admin API (password install, health polls)';
  if (/server-kit\/link|gateway\/upstream|memory-link|tick-cork/.test(u)) return 'link (tags, framing, in-memory ports)';
  if (/prom-client/.test(chain.map((f) => f.url).join())) return 'metrics (prom-client)';
  if (/store\.ts|sqlite\.ts/.test(u)) return 'SQLite (stores)';
  if (/gateway\//.test(u) || /frame-meter|limits/.test(u)) return 'gateway (validation, attack counting, metering)';
  if (/protocol\//.test(u) || /server-kit\/session|reg-server|biz-server/.test(u)) return 'sessions and protocol machines (CBOR, validation)';
  if (!o) return 'device sockets: accept, WebSocket upgrade, reads, writes, close';
  return 'other: ' + u.replace(/^.*\/(wt-perf|c-[0-9a-f]+)\//, '');
}
const cats = new Map<string, number>();
let tot = 0;
for (const [id, t] of self) {
  if (byId.get(id)!.callFrame.functionName === '(idle)') continue;
  tot += t;
  const c = category(id);
  cats.set(c, (cats.get(c) ?? 0) + t);
}
const start = cats.get('start-up (module loading)') ?? 0;
console.log(`non-idle ${(tot / 1e6).toFixed(2)} s; shares of the non-idle time without start-up (${((100 * start) / tot).toFixed(0)} % of it)`);
for (const [c, t] of [...cats].filter(([c]) => !c.startsWith('start-up')).sort((a, b) => b[1] - a[1])) console.log(`${((100 * t) / (tot - start)).toFixed(1).padStart(5)} %  ${c}`);
