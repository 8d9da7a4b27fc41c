// Attack counting at the gateway (docs/benchmarks.md §"Attack counting at the gateway", S3.4):
//   1. login openings/s through a gateway with attack counting on vs one with it off, measured
//      in one run: two gateway processes (gateway/memory-probe.ts) in front of one stub
//      business server on the real link protocol that echoes every frame; 32 connections per
//      gateway, each from its own loopback address, each sending login openings (mechanism
//      turning password/otp/fingerprint, so every group holds 3 slots) and awaiting the echo.
//      Every frame is a login opening: the worst case for counting. Rounds alternate which
//      gateway goes first; medians of frames/s and of frames per CPU-second of the gateway
//      process; the ratio on/off (target: counting costs at most 10 %).
//   2. the counter alone, in this process: ns per login opening for 96 hot keys (32 groups x 3
//      mechanisms, always over the limit) and for a new address each time (insert + evict at
//      the 100,000 bound): the cost the ratio above hides in the noise of a shared machine
//   3. the gateway process's memory with 100,000 tracked addresses (heap + external after a
//      full GC, and RSS), recorded by the counter in that process (the 'fill' line of
//      memory-probe.ts: 100,000 real connections would measure the sockets, not the counter).
// Run: npx tsx bench/attacks.bench.ts   (BENCH_QUICK=1 for a short run; BENCH_CONTROL=1 for an A/A run)
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { randomBytes } from 'node:crypto';
import { startHost } from '../server-kit/host.ts';
import { linkKeyFor } from '../server-kit/link.ts';
import { FrameSocket } from '../server-kit/test-device.ts';
import { setLogLevel } from '../server-kit/log.ts';
import { encodeEnvelope, MsgType, MECHANISMS } from '../protocol/messages.ts';
import { startProbeGateway, type ProbeGateway } from '../gateway/hostile-client.ts';
import { AttackCounter } from '../gateway/attacks.ts';

setLogLevel('error');
const QUICK = !!process.env.BENCH_QUICK;
const ROUNDS = QUICK ? 3 : 7;
const PHASE_MS = QUICK ? 1_000 : 3_000;
const CONC = 32;
const root = randomBytes(32);
const MiB = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
const fmt = (n: number) => n.toLocaleString('en-US', { maximumFractionDigits: 0 });
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
/** CPU seconds (user + system) a process has used so far. */
function cpuSecs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

console.log(`machine: ${cpus().length} cores, ${cpus()[0]?.model}, node ${process.version}, ${new Date().toISOString().slice(0, 10)}`);

const biz = await startHost({
  name: 'biz-east', host: '127.0.0.1', devicePort: null, linkPort: 0, linkKey: linkKeyFor(root, 'biz-east'),
  factory: (t) => ({ onFrame: (f) => t.send(f), onClose() {} }),
});
const probe = (enabled: boolean) => startProbeGateway({
  upstreams: [{ name: 'biz-east', linkUrl: `ws://127.0.0.1:${biz.linkPort}/` }],
  rootKeyHex: root.toString('hex'),
  // Only the counter is measured: the per-connection frame rate limit is lifted.
  limits: { framesPerSecond: 1_000_000, frameBurst: 1_000_000, idleTimeoutMs: 600_000 },
  attacks: { enabled },
});
// BENCH_CONTROL=1: both gateways with counting off (an A/A run: the noise floor of the ratio).
const gws: Record<'on' | 'off', ProbeGateway> = { on: await probe(!process.env.BENCH_CONTROL), off: await probe(false) };

const frames = MECHANISMS.map((m) => encodeEnvelope(MsgType.login, 0, 'biz-east', [m, 'alice', 1, new Map(), randomBytes(32), randomBytes(32)]));
const conns: Record<'on' | 'off', FrameSocket[]> = { on: [], off: [] };
for (const [k, octet] of [['on', 1], ['off', 2]] as const) {
  conns[k] = await Promise.all(Array.from({ length: CONC }, (_, i) => FrameSocket.connect(`ws://127.0.0.1:${gws[k].port}/`, { localAddress: `127.6.${octet}.${i + 1}` })));
}

async function phase(k: 'on' | 'off', ms: number): Promise<{ perSec: number; perCpu: number }> {
  const pid = gws[k].proc.pid!;
  const c0 = cpuSecs(pid);
  const t0 = performance.now();
  const until = t0 + ms;
  let n = 0;
  await Promise.all(conns[k].map(async (s, i) => {
    let j = i;
    while (performance.now() < until) {
      s.send(frames[j++ % 3]!);
      await s.frame();
      n++;
    }
  }));
  const secs = (performance.now() - t0) / 1000;
  return { perSec: n / secs, perCpu: n / Math.max(0.01, cpuSecs(pid) - c0) };
}

await phase('on', 500);
await phase('off', 500);
const r = { on: { s: [] as number[], c: [] as number[] }, off: { s: [] as number[], c: [] as number[] } };
for (let i = 0; i < ROUNDS; i++) {
  for (const k of i % 2 ? (['off', 'on'] as const) : (['on', 'off'] as const)) {
    const x = await phase(k, PHASE_MS);
    r[k].s.push(x.perSec);
    r[k].c.push(x.perCpu);
    if (process.env.BENCH_DEBUG) console.log(i, k, x);
  }
}
const m = { on: { s: median(r.on.s), c: median(r.on.c) }, off: { s: median(r.off.s), c: median(r.off.c) } };
const trackedOn = (await gws.on.memory()).tracked;
console.log(`login openings/s through the gateway, counting on: ${fmt(m.on.s)}   off: ${fmt(m.off.s)}   ratio on/off: ${(m.on.s / m.off.s).toFixed(3)}   (medians of ${ROUNDS} alternating rounds of ${PHASE_MS / 1000} s, ${CONC} connections each, every frame a login opening; ${trackedOn} groups tracked)`);
console.log(`login openings per CPU-second of the gateway process, counting on: ${fmt(m.on.c)}   off: ${fmt(m.off.c)}   ratio on/off: ${(m.on.c / m.off.c).toFixed(3)}`);
// Each round's two phases ran back to back: their ratio is the least exposed to the machine's other load.
const paired = (x: number[], y: number[]) => median(x.map((v, i) => v / y[i]!)).toFixed(3);
console.log(`median of the ${ROUNDS} per-round ratios on/off: openings/s ${paired(r.on.s, r.off.s)}   per CPU-second ${paired(r.on.c, r.off.c)}`);
for (const k of ['on', 'off'] as const) for (const s of conns[k]) s.terminate();
await gws.off.stop();

// ---- 2: the counter alone ----
{
  const c = new AttackCounter({});
  const groups = Array.from({ length: 32 }, (_, i) => `127.6.1.${i + 1}`);
  const ns = (n: number, f: (i: number) => void) => {
    for (let i = 0; i < 100_000; i++) f(i); // warm up
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) f(i);
    return Number(process.hrtime.bigint() - t0) / n;
  };
  // The gateway passes the time it took for the frame: the counter reads no clock.
  let t = performance.timeOrigin + performance.now();
  const hot = ns(2_000_000, (i) => c.attempt(groups[i & 31]!, 'biz-east', MECHANISMS[i % 3]!, (t += 0.001)));
  const ips = Array.from({ length: 1_000_000 }, (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
  const fresh = ns(800_000, (i) => c.attempt(ips[i + 100_000]!, 'biz-east', 'password', (t += 0.001)));
  console.log(`counter alone: ${hot.toFixed(0)} ns per login opening on 96 hot keys; ${fresh.toFixed(0)} ns for a new address each time (insert, evicting at ${fmt(c.tracked)} tracked)`);
}

// ---- 3: memory with 100,000 tracked addresses ----
const N = 100_000;
const before = await gws.on.memory();
const after = await gws.on.fill(N);
const more = await gws.on.fill(N / 2);
const used = (x: { heapUsed: number; external: number }) => x.heapUsed + x.external;
console.log(`gateway with ${fmt(after.tracked - before.tracked)} more tracked addresses (limit 10, one slot each): heap+external ${MiB(used(before))} -> ${MiB(used(after))} (${((used(after) - used(before)) / N).toFixed(0)} B per address), RSS ${MiB(before.rss)} -> ${MiB(after.rss)}; after ${fmt(N / 2)} more: tracked ${fmt(more.tracked)} (the bound), heap+external ${MiB(used(more))}`);
await gws.on.stop();
await biz.close();
process.exit(0);
