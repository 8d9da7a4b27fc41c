// The attack window shared by several gateways (issue 16) against the real Redis (127.0.0.1:6379,
// a fresh namespace per test, removed after): the Lua window decides as attacks.ts's ring on
// random traffic; two gateway processes' worth (two startGateway instances) count an attacker
// alternating between them once; Redis refusing, hung, or going silent mid-way: every verdict
// still comes within the timeout, from the gateway's own window (fail open to local).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { connect, createServer, type AddressInfo } from 'node:net';
import { AttackCounter, type AttackEvent } from './attacks.ts';
import { RedisAttackWindow } from './shared-attacks.ts';
import { startGateway, type Gateway } from './gateway.ts';
import { SharedState, type SharedStateConfig } from '../server-kit/redis.ts';
import { blackholeRedis, dropNamespace, freezableRedis, testShared } from '../server-kit/redis-faults.ts';
import { startHost, type Host } from '../server-kit/host.ts';
import { linkKeyFor } from '../server-kit/link.ts';
import { FrameSocket } from '../server-kit/test-device.ts';
import { setLogLevel } from '../server-kit/log.ts';
import { closedPort } from '../deploy/test-util.ts';
import { encodeEnvelope, MsgType, type Mechanism } from '../protocol/messages.ts';

setLogLevel('error');
const MECHS: Mechanism[] = ['password', 'otp', 'fingerprint'];
const namespaces: string[] = [];
function config(over: Partial<SharedStateConfig> = {}): SharedStateConfig {
  const c = testShared(over);
  namespaces.push(c.namespace);
  return c;
}
test.after(async () => {
  for (const n of namespaces) await dropNamespace(n);
});

/** Waits (bounded) until `f()` holds. */
async function until(f: () => boolean, ms = 5_000): Promise<boolean> {
  const end = Date.now() + ms;
  while (!f() && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
  return f();
}

test('the shared window decides exactly as the in-memory ring, attempt by attempt, on random traffic', async () => {
  const limits = { limit: 4, windowMs: 1_000, periodMs: 60_000 };
  const shared = new SharedState(config());
  assert.ok(await shared.ready());
  const window = new RedisAttackWindow(shared, limits);
  const local = new AttackCounter(limits, { now: () => 0 });
  // mulberry32, seeded: a failing run replays.
  let seed = 16;
  const next = (n: number) => {
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return Math.floor((((x ^ (x >>> 14)) >>> 0) / 4294967296) * n);
  };
  const pick = <T>(xs: T[]) => xs[next(xs.length)]!;
  let t = 1_000_000;
  let attacks = 0;
  try {
    for (let i = 0; i < 1_500; i++) {
      t += next(120);
      const g = pick(['10.0.0.1', '10.0.0.2', '2001:db8::/64']);
      const site = pick(['biz-east', 'biz-west']);
      const mech = pick(MECHS);
      const want = local.attempt(g, site, mech, t);
      const got = await window.attempt(g, site, mech, t);
      assert.is(got, want, `attempt ${i} (${g} ${site} ${mech} at +${t - 1_000_000})`);
      if (got) attacks++;
    }
    assert.ok(attacks > 5, `the traffic made attacks (${attacks})`);
  } finally {
    await shared.close();
  }
});

test('two counters on one shared window: an attacker alternating between them is one attack, counted by one of them; apart, none', async () => {
  const limits = { limit: 5, windowMs: 10_000, periodMs: 60_000 };
  const cfg = config();
  const run = async (sharedOn: boolean) => {
    const states = sharedOn ? [new SharedState(cfg), new SharedState(cfg)] : [];
    const events: AttackEvent[][] = [[], []];
    const counters = [0, 1].map((i) => new AttackCounter(limits, {
      now: () => 0,
      onAttack: (a) => events[i]!.push(a),
      ...(sharedOn ? { shared: new RedisAttackWindow(states[i]!, limits) } : {}),
    }));
    for (const s of states) assert.ok(await s.ready());
    let t = 5_000_000;
    const group = `10.1.${randomBytes(1)[0]}.1`;
    for (let i = 0; i < 10; i++) counters[i % 2]!.attempt(group, 'biz-east', 'password', (t += 100));
    await until(() => false, sharedOn ? 300 : 0);
    for (const s of states) await s.close();
    return events.map((e) => e.length);
  };
  assert.equal(await run(false), [0, 0], 'apart: each saw 5 of the 10 attempts, at its limit: no attack');
  const both = await run(true);
  assert.is(both[0]! + both[1]!, 1, `one attack for both gateways (${both})`);
});

// ---- two gateway instances over real sockets ----

const root = new Uint8Array(32).fill(0x16);
let biz: Host;
test.before(async () => {
  biz = await startHost({ name: 'biz-east', host: '127.0.0.1', devicePort: null, linkPort: 0, linkKey: linkKeyFor(root, 'biz-east'), factory: () => ({ onFrame() {}, onClose() {} }) });
});
test.after(() => biz.close());

async function gateway(redis: SharedStateConfig | undefined): Promise<Gateway> {
  const gw = await startGateway({
    host: '127.0.0.1', port: 0, operatorPort: 0,
    upstreams: [{ name: 'biz-east', linkUrl: `ws://127.0.0.1:${biz.linkPort}/`, linkKey: linkKeyFor(root, 'biz-east') }],
    attacks: { limit: 5, windowMs: 30_000, periodMs: 60_000 },
    ...(redis ? { redis } : {}),
  });
  assert.ok(await gw.waitUpstreams(5_000));
  return gw;
}
const login = (mech: Mechanism) => encodeEnvelope(MsgType.login, 0, 'biz-east', [mech, 'alice', 1, new Map(), randomBytes(32), randomBytes(32)]);
/** One login opening from `ip` to `gw` per connection, as a phone sends it; waits until sent. */
async function opening(gw: Gateway, ip: string, mech: Mechanism = 'password'): Promise<void> {
  const s = await FrameSocket.connect(gw.url, { localAddress: ip });
  s.send(login(mech));
  await new Promise((r) => setTimeout(r, 15));
  s.terminate();
}
const total = (gws: Gateway[]) => gws.reduce((n, g) => n + (g.attacks!.current().get('biz-east')?.total ?? 0), 0);

test('two gateways sharing Redis: 8 openings alternating between them (4 each, limit 5) are one attack; without Redis none', async () => {
  for (const shared of [false, true]) {
    const cfg = shared ? config() : undefined;
    const gws = [await gateway(cfg), await gateway(cfg)];
    try {
      for (let i = 0; i < 8; i++) await opening(gws[i % 2]!, '127.16.0.9');
      if (shared) assert.ok(await until(() => total(gws) >= 1), 'the shared verdict came');
      await new Promise((r) => setTimeout(r, 100));
      assert.is(total(gws), shared ? 1 : 0, shared ? 'counted once, by one gateway' : 'each gateway alone saw 4: no attack');
      assert.is(gws[0]!.attacks!.sharedFallbacks + gws[1]!.attacks!.sharedFallbacks, 0);
      if (shared) assert.match(await (await fetch(gws[0]!.operatorUrl + 'metrics')).text(), /usbphone_gateway_attack_shared_fallbacks 0/);
    } finally {
      for (const g of gws) await g.close();
    }
  }
});

test('a gateway whose Redis hangs: it starts, counts in its own window (the attack still seen) and says so in /metrics', async () => {
  const hole = await blackholeRedis();
  const t0 = performance.now();
  const gw = await gateway(config({ url: hole.url, timeoutMs: 150 }));
  try {
    assert.ok(performance.now() - t0 < 5_000, 'started without Redis');
    for (let i = 0; i < 6; i++) await opening(gw, '127.16.0.77');
    assert.ok(await until(() => total([gw]) === 1), 'the 6th opening over the limit of 5: one attack, counted locally');
    assert.match(await (await fetch(gw.operatorUrl + 'metrics')).text(), /usbphone_gateway_attack_shared_fallbacks 6/);
  } finally {
    await gw.close();
    await hole.close();
  }
});

test('Redis refused (closed port), hung (accepts, never answers) or silent mid-way: verdicts within the timeout, from the local window (fail open)', async () => {
  const limits = { limit: 3, windowMs: 10_000, periodMs: 60_000 };
  const hole = await blackholeRedis();
  const frozen = await freezableRedis();
  const cases: [string, string][] = [['closed port', `redis://127.0.0.1:${await closedPort()}`], ['blackhole', hole.url], ['frozen', frozen.url]];
  try {
    for (const [what, url] of cases) {
      const shared = new SharedState({ ...config({ url }), timeoutMs: 200 });
      if (what === 'frozen') {
        assert.ok(await shared.ready(), 'the proxy passes Redis through until frozen');
        frozen.freeze();
      }
      const events: AttackEvent[] = [];
      const c = new AttackCounter(limits, { now: () => 0, onAttack: (a) => events.push(a), shared: new RedisAttackWindow(shared, limits) });
      const t0 = performance.now();
      for (let i = 0; i < 4; i++) c.attempt('10.9.9.9', 'biz-east', 'otp', 1_000 + i);
      assert.ok(await until(() => c.sharedFallbacks === 4, 2_000), `${what}: all 4 fell back (${c.sharedFallbacks})`);
      const ms = performance.now() - t0;
      assert.ok(ms < 200 + 300, `${what}: answered in ${ms.toFixed(0)} ms (timeout 200)`);
      assert.is(events.length, 1, `${what}: the 4th attempt over the limit of 3 is an attack, in this gateway's window`);
      await shared.close();
      frozen.thaw();
    }
  } finally {
    await hole.close();
    await frozen.close();
  }
});

test.run();
