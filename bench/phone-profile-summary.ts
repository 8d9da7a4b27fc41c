// Where the phones' process of a fleet spent its CPU (issue 15, the phone side), from a V8
// CPU profile of `usbphone sim --devices N` (servers in their own process, so this process is
// the phones and the fleet driver only): the top functions by self time, the top source files
// by self time, and the inclusive time of the phone's main steps (each counted once per
// sample however deep the recursion). Shares of the non-idle time without start-up.
// Run: node --cpu-prof --cpu-prof-dir=DIR bin/usbphone.js sim --devices 2000
//      npx tsx bench/phone-profile-summary.ts DIR/<the largest>.cpuprofile [top]
import { readFileSync } from 'node:fs';

interface Frame { functionName: string; url: string; lineNumber: number }
interface Node { id: number; callFrame: Frame; children?: number[] }
const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: npx tsx bench/phone-profile-summary.ts <file.cpuprofile> [top]\n');
  process.exit(2);
}
const top = Number(process.argv[3] ?? 25);
const p = JSON.parse(readFileSync(file, 'utf8')) as { nodes: Node[]; samples: number[]; timeDeltas: number[] };
const byId = new Map<number, Node>(p.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const short = (u: string) => u.replace(/^.*\/node_modules\//, '~/').replace(/^file:\/\/.*?\/(firmware|protocol|sim|server-kit|cli|bench|gateway|deploy)\//, '$1/');
const chainOf = (id: number) => {
  const out: Frame[] = [];
  for (let c: number | undefined = id; c !== undefined; c = parent.get(c)) out.push(byId.get(c)!.callFrame);
  return out;
};
const startUp = (ch: Frame[]) => ch.some((f) => /tsx|esbuild|node:internal\/modules|cjs-module-lexer/.test(f.url) || f.functionName === 'makeWorld' || f.functionName === 'startExternalStack');
// Inclusive steps: a sample counts for a step when any frame of its stack matches.
const steps: [string, (f: Frame) => boolean][] = [
  ['makePhone (factory personalization, chip, bus, wiring)', (f) => f.functionName === 'makePhone'],
  ['  personalize (identity record)', (f) => f.functionName === 'personalize'],
  ['  Fuses.generate (per-phone keys)', (f) => f.url.includes('fuses.ts') && f.functionName === 'generate'],
  ['park (what a phone keeps)', (f) => f.functionName === 'park'],
  ['boot (firmware/boot.ts)', (f) => f.url.includes('firmware/boot.ts')],
  ['boot manifest checks (signature, file hashes)', (f) => f.url.includes('boot-manifest.ts')],
  ['secure controller (firmware/secure/)', (f) => f.url.includes('firmware/secure/')],
  ['client sessions (firmware/client-session.ts)', (f) => f.url.includes('client-session.ts')],
  ['record store (firmware/zones/hidden.ts)', (f) => f.url.includes('zones/hidden.ts')],
  ['flash model (firmware/flash/)', (f) => f.url.includes('firmware/flash/')],
  ['WebSocket client (ws)', (f) => f.url.includes('/ws/lib/')],
  ['noble (hashes, ciphers, curves)', (f) => f.url.includes('@noble')],
  ['  noble curves (ed25519 / ECDSA)', (f) => f.url.includes('@noble/curves')],
  ['CBOR (protocol/cbor.ts)', (f) => f.url.includes('protocol/cbor.ts')],
];
const self = new Map<number, number>();
p.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i] ?? 0)));
let tot = 0;
let start = 0;
const fn = new Map<string, number>();
const files = new Map<string, number>();
const inc = new Map<string, number>();
for (const [id, t] of self) {
  const f0 = byId.get(id)!.callFrame;
  if (f0.functionName === '(idle)') continue;
  const ch = chainOf(id);
  if (startUp(ch)) {
    start += t;
    continue;
  }
  tot += t;
  const k = `${f0.functionName || '(anonymous)'} ${short(f0.url)}${f0.url ? ':' + (f0.lineNumber + 1) : ''}`;
  fn.set(k, (fn.get(k) ?? 0) + t);
  const fk = f0.url ? short(f0.url) : f0.functionName;
  files.set(fk, (files.get(fk) ?? 0) + t);
  for (const [name, m] of steps) if (ch.some(m)) inc.set(name, (inc.get(name) ?? 0) + t);
}
const pc = (t: number) => `${((100 * t) / tot).toFixed(1).padStart(5)} %`;
console.log(`non-idle ${((tot + start) / 1e6).toFixed(2)} s, of which start-up ${(start / 1e6).toFixed(2)} s; shares below of the ${(tot / 1e6).toFixed(2)} s without it`);
console.log('\ninclusive, by step:');
for (const [name] of steps) console.log(`${pc(inc.get(name) ?? 0)}  ${name}`);
console.log(`\nself time, top ${top} files:`);
for (const [k, t] of [...files].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${pc(t)}  ${k}`);
console.log(`\nself time, top ${top} functions:`);
for (const [k, t] of [...fn].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${pc(t)}  ${k}`);
