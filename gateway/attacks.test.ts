// The attack counter (S3.4) on a virtual clock: the limit and the window exactly, one attack
// per window per (address group, site, mechanism), IPv6 grouped by /64, the period sums, the
// memory bound under 150,000 distinct addresses (with the heap cost per tracked group
// measured), and hostile configurations refused. A plain reference (every attempt time kept
// in a list) is checked against the ring on random traffic.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { AttackCounter, addressGroup, attackLimits, type PeriodCounts } from './attacks.ts';
import { ImplementationError } from '../protocol/errors.ts';
import type { Mechanism } from '../protocol/messages.ts';

/** A counter on a clock the test moves by hand. */
function counter(limits: Parameters<typeof attackLimits>[0] = {}, start = 1_000_000) {
  const clock = { t: start };
  const attacks: { group: string; site: string; mech: string; at: number }[] = [];
  const periods: [number, PeriodCounts][] = [];
  const c = new AttackCounter({ windowMs: 1_000, limit: 5, periodMs: 60_000, ...limits }, {
    now: () => clock.t,
    onAttack: (a) => attacks.push(a),
    onPeriod: (id, counts) => periods.push([id, counts]),
  });
  return { c, clock, attacks, periods };
}
const plain = (m: PeriodCounts) => Object.fromEntries([...m].map(([k, v]) => [k, { total: v.total, perMech: v.perMech }]));

test('below the limit no attack; the attempt over it is one attack; more in the same window add none', () => {
  const { c, clock, attacks } = counter();
  for (let i = 0; i < 5; i++) {
    assert.is(c.attempt('10.0.0.1', 'biz-east', 'password'), false, `attempt ${i + 1}`);
    clock.t += 10;
  }
  assert.is(attacks.length, 0);
  assert.equal(plain(c.current()), {});
  assert.is(c.attempt('10.0.0.1', 'biz-east', 'password'), true, 'the 6th within the window');
  for (let i = 0; i < 200; i++) {
    clock.t += 4;
    assert.is(c.attempt('10.0.0.1', 'biz-east', 'password'), false);
  }
  assert.is(attacks.length, 1);
  assert.equal(plain(c.current()), { 'biz-east': { total: 1, perMech: { password: 1 } } });
});

test('a second window counts again: continuous hammering is one attack per window', () => {
  const { c, clock, attacks } = counter();
  const start = clock.t;
  // 1 attempt every 10 ms for 3.5 windows.
  while (clock.t < start + 3_500) {
    c.attempt('10.0.0.2', 'biz-east', 'otp');
    clock.t += 10;
  }
  // Attacks at the 6th attempt (start+50), then a window later each time.
  assert.equal(attacks.map((a) => a.at - start), [50, 1050, 2050, 3050]);
  assert.equal(plain(c.current()), { 'biz-east': { total: 4, perMech: { otp: 4 } } });
});

test('the window slides: 5 attempts late in one second and 1 early in the next is an attack; exactly the limit per window never is', () => {
  const { c, clock, attacks } = counter();
  clock.t = 2_000_900;
  for (let i = 0; i < 5; i++, clock.t++) c.attempt('10.0.0.3', 's', 'password');
  clock.t = 2_001_050; // a fixed 1-second window would have started again at 2_001_000
  assert.is(c.attempt('10.0.0.3', 's', 'password'), true);
  // limit attempts spread exactly one window apart from the limit-th before: never over.
  const slow = counter();
  for (let i = 0; i < 100; i++, slow.clock.t += 200) slow.c.attempt('10.0.0.4', 's', 'password');
  assert.is(slow.attacks.length, 0, 'one every windowMs/limit is at the limit, not over it');
  const fast = counter();
  for (let i = 0; i < 100; i++, fast.clock.t += 199) fast.c.attempt('10.0.0.4', 's', 'password');
  assert.ok(fast.attacks.length > 0, 'one every 199 ms is over it');
  assert.is(attacks.length, 1);
});

test('IPv6 by /64: addresses in one /64 count together, different /64s apart; IPv4 per address', () => {
  assert.is(addressGroup('2001:db8:1:2::5'), '2001:db8:1:2::/64');
  assert.is(addressGroup('2001:0db8:0001:0002:ffff:eeee:dddd:cccc'), '2001:db8:1:2::/64');
  assert.is(addressGroup('::1'), '0:0:0:0::/64');
  assert.is(addressGroup('10.1.2.3'), '10.1.2.3');
  assert.is(addressGroup('::ffff:10.1.2.3'), '10.1.2.3');
  assert.is(addressGroup('not an address'), 'not an address');

  const { c, attacks } = counter();
  // 6 attempts, each from another address of one /64: one attack.
  for (let i = 0; i < 6; i++) c.attempt(addressGroup(`2001:db8:1:2::${i + 1}`), 'biz-east', 'password');
  assert.is(attacks.length, 1);
  assert.is(attacks[0]!.group, '2001:db8:1:2::/64');
  // 5 from one /64 and 5 from the next: none.
  for (let i = 0; i < 5; i++) c.attempt(addressGroup(`2001:db8:1:3::${i + 1}`), 'biz-east', 'password');
  for (let i = 0; i < 5; i++) c.attempt(addressGroup(`2001:db8:1:4::${i + 1}`), 'biz-east', 'password');
  // 10 IPv4 addresses side by side, 5 each: none.
  for (let i = 0; i < 50; i++) c.attempt(addressGroup(`10.9.0.${i % 10}`), 'biz-east', 'password');
  assert.is(attacks.length, 1);
});

test('sites and mechanisms are counted apart; the period sums per site total and per mechanism', () => {
  const { c, attacks } = counter();
  const keys: [string, Mechanism][] = [['biz-east', 'password'], ['biz-east', 'otp'], ['biz-east', 'fingerprint'], ['biz-west', 'password']];
  for (const [site, mech] of keys) for (let i = 0; i < 5; i++) c.attempt('10.0.0.5', site, mech);
  assert.is(attacks.length, 0, 'the limit on each, not added up');
  for (const [site, mech] of keys) assert.ok(c.attempt('10.0.0.5', site, mech), `${site} ${mech}`);
  // Another address on biz-east password.
  for (let i = 0; i < 6; i++) c.attempt('10.0.0.6', 'biz-east', 'password');
  assert.equal(plain(c.current()), {
    'biz-east': { total: 4, perMech: { password: 2, otp: 1, fingerprint: 1 } },
    'biz-west': { total: 1, perMech: { password: 1 } },
  });
});

test('periods: aligned to multiples of T, each handed over when it closes (empty too), attacks go to the period they happen in', () => {
  const T = 60_000;
  const { c, clock, periods } = counter({ periodMs: T }, 100 * T + 5_000);
  assert.is(c.periodId, 100);
  for (let i = 0; i < 6; i++) c.attempt('10.0.0.7', 'biz-east', 'password');
  clock.t = 101 * T + 10; // the next attack closes period 100 itself
  for (let i = 0; i < 6; i++) c.attempt('10.0.0.8', 'biz-east', 'otp');
  assert.equal(periods.map(([id, m]) => [id, plain(m)]), [[100, { 'biz-east': { total: 1, perMech: { password: 1 } } }]]);
  c.roll(103 * T + 1); // periods 101 (one attack) closed; 102 was never opened (nothing happened in it)
  assert.equal(periods.map(([id, m]) => [id, plain(m)]).slice(1), [[101, { 'biz-east': { total: 1, perMech: { otp: 1 } } }]]);
  assert.is(c.periodId, 103);
  c.roll(103 * T + 2);
  assert.is(periods.length, 2, 'no close within a period');
  c.roll(99 * T); // a clock that went back closes nothing
  assert.is(c.periodId, 103);
});

test('the ring agrees with a plain reference (every attempt time kept) on random traffic', () => {
  let seed = 7;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  for (const [limit, windowMs] of [[1, 100], [3, 500], [10, 1_000]] as const) {
    const { c, clock, attacks } = counter({ limit, windowMs });
    const ref: Record<string, { times: number[]; quiet: number }> = {};
    let refAttacks = 0;
    for (let i = 0; i < 20_000; i++) {
      // Mostly bursts (a key over its limit now and then), sometimes a pause of up to two windows.
      clock.t += Math.floor(rnd() < 0.01 ? rnd() * 2 * windowMs : rnd() * (windowMs / (3 * limit)));
      const group = `10.0.0.${Math.floor(rnd() * 3)}`;
      const mech = (['password', 'otp'] as const)[Math.floor(rnd() * 2)]!;
      const k = group + mech;
      const r = (ref[k] ??= { times: [], quiet: -Infinity });
      r.times.push(clock.t);
      const inWindow = r.times.filter((t) => clock.t - t < windowMs).length;
      if (inWindow > limit && clock.t >= r.quiet) {
        r.quiet = clock.t + windowMs;
        refAttacks++;
      }
      c.attempt(group, 's', mech);
      assert.is(attacks.length, refAttacks, `limit ${limit}, attempt ${i}`);
    }
    assert.ok(refAttacks > 10, `traffic made ${refAttacks} attacks: the test exercises both sides`);
  }
});

test('bounded memory: 150,000 distinct addresses keep 100,000 tracked, the least recently seen evicted; heap + external per tracked group measured', () => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const v4 = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
  gc();
  // Measured from before the counter is built: the cache's own arrays (sized to the bound at construction) included.
  const used = () => process.memoryUsage().heapUsed + process.memoryUsage().external;
  const before = used();
  const { c, clock } = counter({ maxTrackedIps: 100_000, windowMs: 600_000, limit: 10 }); // the default limit
  for (let i = 0; i < 100_000; i++) c.attempt(v4(i), 'biz-east', 'password');
  gc();
  const per = (used() - before) / 100_000;
  assert.is(c.tracked, 100_000);
  // The first address seen again (now the most recent, 10 attempts: at the limit), then 50,000 new ones.
  for (let i = 0; i < 9; i++) c.attempt(v4(0), 'biz-east', 'password');
  for (let i = 100_000; i < 150_000; i++) c.attempt(v4(i), 'biz-east', 'password');
  assert.is(c.tracked, 100_000, 'never above the bound');
  clock.t += 1;
  // v4(0) kept its 10 attempts: one more is its attack. v4(1) was evicted: it starts from nothing.
  assert.is(c.attempt(v4(0), 'biz-east', 'password'), true);
  for (let i = 0; i < 10; i++) assert.is(c.attempt(v4(1), 'biz-east', 'password'), false, 'evicted: counted from nothing');
  console.log(`  heap + external per tracked group (IPv4, one site and mechanism, limit 10): ${per.toFixed(0)} B; 100,000 groups: ${(per * 100_000 / 2 ** 20).toFixed(1)} MiB`);
  // docs/architecture.md §"Attack detection" states the bound.
  assert.ok(per < 400, `${per.toFixed(0)} B per tracked group`);
});

test('a group silent for a whole window expires (TTL = the window) and starts again', () => {
  const { c, clock } = counter({ windowMs: 1_000 });
  for (let i = 0; i < 5; i++) c.attempt('10.0.0.9', 's', 'password');
  assert.is(c.tracked, 1);
  clock.t += 1_001;
  for (let i = 0; i < 5; i++) assert.is(c.attempt('10.0.0.9', 's', 'password'), false);
  assert.is(c.attempt('10.0.0.9', 's', 'password'), true);
});

test('hostile configurations: CFG_INVALID naming the field, nothing built', () => {
  const bad: [string, object][] = [
    ['limit', { limit: 0 }], ['limit', { limit: 1.5 }], ['limit', { limit: 1e9 }], ['limit', { limit: '5' }],
    ['windowMs', { windowMs: 0 }], ['windowMs', { windowMs: NaN }], ['windowMs', { windowMs: -1 }],
    ['periodMs', { periodMs: 10 }], ['periodMs', { periodMs: Infinity }],
    ['maxTrackedIps', { maxTrackedIps: 0 }], ['maxTrackedIps', { maxTrackedIps: 1e12 }],
    ['enabled', { enabled: 'yes' }],
  ];
  for (const [field, cfg] of bad) {
    try {
      new AttackCounter(cfg as never);
      assert.unreachable(JSON.stringify(cfg));
    } catch (e) {
      assert.instance(e, ImplementationError);
      assert.is((e as ImplementationError).code, 'CFG_INVALID');
      assert.match((e as Error).message, `attacks.${field}`);
    }
  }
  assert.equal(attackLimits({}), { enabled: true, windowMs: 60_000, limit: 10, periodMs: 60_000, maxTrackedIps: 100_000 });
});

test.run();
