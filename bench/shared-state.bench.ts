// What the shared state costs (issue 16, docs/benchmarks.md §"Shared state (Redis)"), measured
// side by side in one run against the real Redis (127.0.0.1:6379, a fresh namespace, removed):
//   1. the attack window per login opening: this process's ring (gateway/attacks.ts) vs the
//      Lua script (gateway/shared-attacks.ts), one at a time (the round trip) and 64 in flight
//      (a gateway under load: ioredis pipelines them on one connection);
//   2. the replay check per opening: this process's ReplayCache vs SET NX PX
//      (server-kit/shared-replay.ts), the same two ways;
//   3. the round trip alone (PING), for scale.
// Figures: operations/s and the median latency of one at a time; the ratios shared/local.
// Run: npx tsx bench/shared-state.bench.ts   (BENCH_QUICK=1 for a short run)
import { randomBytes } from 'node:crypto';
import { AttackCounter } from '../gateway/attacks.ts';
import { RedisAttackWindow } from '../gateway/shared-attacks.ts';
import { ReplayCache } from '../protocol/replay.ts';
import { RedisReplay } from '../server-kit/shared-replay.ts';
import { SharedState } from '../server-kit/redis.ts';
import { dropNamespace, testShared } from '../server-kit/redis-faults.ts';
import { setLogLevel } from '../server-kit/log.ts';
import type { Mechanism } from '../protocol/messages.ts';

setLogLevel('error');
const QUICK = !!process.env.BENCH_QUICK;
const N = QUICK ? 2_000 : 20_000;
const MECHS: Mechanism[] = ['password', 'otp', 'fingerprint'];
const fmt = (n: number) => n.toLocaleString('en-US', { maximumFractionDigits: n < 10 ? 2 : 0 });
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

/** ops/s of `op(i)` run `n` times with `inFlight` at once; the median latency (µs) when one at a time. */
async function measure(n: number, inFlight: number, op: (i: number) => unknown): Promise<{ perS: number; p50us: number }> {
  const lat: number[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: inFlight }, async () => {
    while (next < n) {
      const i = next++;
      const a = performance.now();
      await op(i);
      if (inFlight === 1) lat.push((performance.now() - a) * 1000);
    }
  }));
  const s = (performance.now() - t0) / 1000;
  return { perS: n / s, p50us: lat.length ? median(lat) : NaN };
}

const cfg = testShared({ timeoutMs: 5_000 });
const shared = new SharedState(cfg);
try {
  if (!(await shared.ready(3_000))) throw new Error(`no Redis at ${cfg.url}`);
  const limits = { limit: 10, windowMs: 60_000, periodMs: 60_000 };
  const local = new AttackCounter(limits, { now: () => 0 });
  const window = new RedisAttackWindow(shared, limits);
  // 1,000 address groups x 3 mechanisms, a clock moving 1 ms per opening.
  const groups = Array.from({ length: 1_000 }, (_, i) => `10.${(i >> 8) & 255}.${i & 255}.1`);
  const args = (i: number) => [groups[i % groups.length]!, 'biz-east', MECHS[i % 3]!, 1_000_000 + i] as const;
  const cache = new ReplayCache();
  const replay = new RedisReplay(shared, 'bench');
  const ids = Array.from({ length: N }, () => randomBytes(32));

  const rows: [string, { perS: number; p50us: number }][] = [];
  rows.push(['attack window, local ring', await measure(N, 1, (i) => local.attempt(...args(i)))]);
  rows.push(['attack window, Redis Lua, 1 at a time', await measure(N, 1, (i) => window.attempt(...args(i)))]);
  rows.push(['attack window, Redis Lua, 64 in flight', await measure(N, 64, (i) => window.attempt(...args(i + N)))]);
  rows.push(['replay check, local cache', await measure(N, 1, (i) => cache.check(ids[i]!))]);
  rows.push(['replay check, Redis SET NX PX, 1 at a time', await measure(N / 2, 1, (i) => replay.claim(ids[i]!))]);
  rows.push(['replay check, Redis SET NX PX, 64 in flight', await measure(N / 2, 64, (i) => replay.claim(ids[i + N / 2]!))]);
  rows.push(['Redis PING, 1 at a time', await measure(N, 1, () => shared.redis.ping())]);

  console.log(`shared state (Redis ${cfg.url}), ${N} operations each; node ${process.version}`);
  console.log(`${'operation'.padEnd(46)} ${'per second'.padStart(12)} ${'p50 (1 at a time)'.padStart(18)}`);
  for (const [name, r] of rows) console.log(`${name.padEnd(46)} ${fmt(r.perS).padStart(12)} ${(Number.isNaN(r.p50us) ? '-' : `${fmt(r.p50us)} µs`).padStart(18)}`);
  const by = (k: string) => rows.find(([n]) => n === k)![1].perS;
  console.log(`ratios: attack window Redis/local ${fmt(by('attack window, Redis Lua, 64 in flight') / by('attack window, local ring'))}x (64 in flight), ${fmt(by('attack window, Redis Lua, 1 at a time') / by('attack window, local ring'))}x (1 at a time); replay check Redis/local ${fmt(by('replay check, Redis SET NX PX, 64 in flight') / by('replay check, local cache'))}x (64 in flight)`);
} finally {
  await shared.close();
  await dropNamespace(cfg.namespace);
}
