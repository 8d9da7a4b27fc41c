// The period report (S3.5) on a virtual clock: one report per period at its boundary (empty
// periods too), resent after every kind of sink failure with the same periodId and in order,
// never counted twice by an idempotent receiver, a refused report dropped, the queue bounded.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { AttackCounter } from './attacks.ts';
import { AttackReporter, type AttackReport, type ReportEvent, type SinkAnswer } from './attack-reporter.ts';
import { VirtualTimers } from './virtual-timers.ts';

const T = 60_000;

/**
 * A receiver keyed by (gateway, periodId), as the policy server is: a second copy of a period
 * is answered duplicate and not added. `fail` decides per call how it misbehaves.
 */
function receiver(fail: (call: number, r: AttackReport) => 'ok' | 'reject' | 'throw' | 'hang' | 'hang-after-storing' | 'refuse' | 'garbage' = () => 'ok') {
  const got = new Map<number, AttackReport>();
  const calls: number[] = [];
  const send = (r: AttackReport): Promise<SinkAnswer> => {
    calls.push(r.periodId);
    const how = fail(calls.length, r);
    if (how === 'throw') throw new Error('sink threw');
    if (how === 'reject') return Promise.reject(new Error('policy server unreachable'));
    if (how === 'hang') return new Promise(() => {});
    if (how === 'garbage') return Promise.resolve(undefined as never);
    if (how === 'refuse') return Promise.resolve({ accepted: false, duplicate: false });
    const duplicate = got.has(r.periodId);
    if (!duplicate) got.set(r.periodId, structuredClone(r));
    if (how === 'hang-after-storing') return new Promise(() => {});
    return Promise.resolve({ accepted: !duplicate, duplicate });
  };
  return { got, calls, send };
}

function setup(send: (r: AttackReport) => Promise<SinkAnswer>, opts: { maxQueue?: number; start?: number } = {}) {
  const timers = new VirtualTimers(opts.start ?? 1_000 * T + T / 2);
  const counter = new AttackCounter({ windowMs: 1_000, limit: 2, periodMs: T }, { now: timers.now });
  const events: ReportEvent[] = [];
  const reporter = new AttackReporter({ gateway: 'gw-1', counter, send, timers, maxQueue: opts.maxQueue, sendTimeoutMs: 5_000, retryMinMs: 1_000, retryMaxMs: 8_000, onEvent: (e) => events.push(e) });
  reporter.start();
  /** n attacks from distinct addresses on (site, mech). */
  const attack = (site: string, mech: 'password' | 'otp' | 'fingerprint', n = 1) => {
    for (let i = 0; i < n; i++) for (let k = 0; k < 3; k++) counter.attempt(`10.${site.length}.${mech.length}.${i}.${timers.now()}`, site, mech);
  };
  return { timers, counter, reporter, events, attack };
}

test('one report per period at its boundary: periodId = floor(start / T), per site total and per mechanism; an empty period is reported with no sites', async () => {
  const r = receiver();
  const { timers, attack, events } = setup(r.send);
  attack('biz-east', 'password', 3);
  attack('biz-east', 'otp', 1);
  attack('biz-west', 'fingerprint', 2);
  await timers.advance(T / 2 - 1);
  assert.equal(r.calls, [], 'nothing before the boundary');
  await timers.advance(1);
  assert.equal(r.calls, [1000]);
  assert.equal(r.got.get(1000), {
    gateway: 'gw-1', periodId: 1000, periodMs: T,
    sites: [{ site: 'biz-east', total: 4, perMech: { password: 3, otp: 1 } }, { site: 'biz-west', total: 2, perMech: { fingerprint: 2 } }],
  });
  await timers.advance(T / 3);
  attack('biz-east', 'otp', 1); // in period 1001
  await timers.advance(T);
  await timers.advance(T);
  assert.equal(r.calls, [1000, 1001, 1002]);
  assert.equal(r.got.get(1001)!.sites, [{ site: 'biz-east', total: 1, perMech: { otp: 1 } }]);
  assert.equal(r.got.get(1002), { gateway: 'gw-1', periodId: 1002, periodMs: T, sites: [] });
  assert.equal(events.map((e) => e.outcome), ['sent', 'sent', 'sent']);
});

test('a sink that rejects, throws, hangs or answers garbage: the report is kept and resent with the same periodId, in order, and the receiver counts each period once', async () => {
  // Calls 1-4 fail in four ways (the 3rd stored the report and then never answered).
  const ways = ['reject', 'throw', 'hang-after-storing', 'garbage'] as const;
  const r = receiver((n) => ways[n - 1] ?? 'ok');
  const { timers, attack, events, reporter } = setup(r.send);
  attack('biz-east', 'password', 2);
  await timers.advance(T / 2); // period 1000 closes: call 1 rejects
  attack('biz-east', 'otp', 1);
  await timers.advance(T); // period 1001 closes behind it
  await timers.advance(T);
  await reporter.settled();
  assert.is(reporter.queued, 0);
  // 1000 tried 5 times (the 3rd arrived: its resend is a duplicate), then 1001 and 1002 once each.
  assert.equal(r.calls, [1000, 1000, 1000, 1000, 1000, 1001, 1002]);
  assert.equal(events.map((e) => `${e.periodId}:${e.outcome}`), ['1000:failed', '1000:failed', '1000:failed', '1000:failed', '1000:duplicate', '1001:sent', '1002:sent']);
  assert.match(events[2]!.reason!, 'no answer within 5000 ms');
  assert.match(events[3]!.reason!, 'neither accepted nor duplicate');
  assert.equal(r.got.get(1000)!.sites, [{ site: 'biz-east', total: 2, perMech: { password: 2 } }]);
  assert.equal(r.got.get(1001)!.sites, [{ site: 'biz-east', total: 1, perMech: { otp: 1 } }]);
  const sum = [...r.got.values()].reduce((a, x) => a + x.sites.reduce((b, s) => b + s.total, 0), 0);
  assert.is(sum, 3, 'every attack counted once at the receiver');
});

test('resends back off: doubling from retryMinMs, capped at retryMaxMs', async () => {
  const r = receiver((n) => (n <= 6 ? 'reject' : 'ok'));
  const { timers, events } = setup(r.send);
  await timers.advance(T / 2);
  const first = timers.now();
  const at: number[] = [];
  const seen = r.calls.length;
  for (let i = 0; i < 200 && r.calls.length < 7; i++) {
    const before = r.calls.length;
    await timers.advance(500);
    if (r.calls.length > before) at.push(timers.now());
  }
  assert.is(seen, 1);
  // Retries 1 s, 2 s, 4 s, then 8 s (the cap) after each failure (the clock moves by 500 ms).
  const gaps = at.map((t, i) => t - (i ? at[i - 1]! : first));
  assert.equal(gaps, [1_000, 2_000, 4_000, 8_000, 8_000, 8_000]);
  assert.equal(events.map((e) => e.outcome), ['failed', 'failed', 'failed', 'failed', 'failed', 'failed', 'resent']);
});

test('a report the receiver refuses is dropped (metric, warning), not retried, and does not block the next', async () => {
  const r = receiver((n) => (n === 1 ? 'refuse' : 'ok'));
  const { timers, events, reporter } = setup(r.send);
  await timers.advance(T / 2);
  await timers.advance(T);
  await reporter.settled();
  assert.equal(r.calls, [1000, 1001]);
  assert.equal(events.map((e) => `${e.periodId}:${e.outcome}`), ['1000:rejected', '1001:sent']);
});

test('queue bound: with the receiver down, only the newest maxQueue periods are kept, the oldest dropped with an event; delivered in order once it is back', async () => {
  let down = true;
  const r = receiver(() => (down ? 'reject' : 'ok'));
  const { timers, events, reporter } = setup(r.send, { maxQueue: 3 });
  await timers.advance(T / 2 + 5 * T); // periods 1000..1005 closed
  assert.is(reporter.queued, 3);
  assert.equal(reporter.queuedIds(), [1003, 1004, 1005]);
  assert.equal(events.filter((e) => e.outcome === 'dropped').map((e) => e.periodId), [1000, 1001, 1002]);
  down = false;
  await timers.advance(8_000);
  await reporter.settled();
  assert.equal([...r.got.keys()], [1003, 1004, 1005]);
  assert.is(reporter.queued, 0);
  // A process that slept through 10,000 periods: one event for those beyond the queue, the newest 3 queued.
  down = true;
  await timers.jump(10_000 * T);
  const far = events.filter((e) => e.outcome === 'dropped').at(-1)!;
  assert.match(far.reason!, 'periods passed beyond the queue');
  assert.is(reporter.queued, 3);
  assert.ok(timers.pending < 5, 'no timer per skipped period');
});

test('stop: no more reports, no timers left', async () => {
  const r = receiver(() => 'reject');
  const { timers, reporter } = setup(r.send);
  await timers.advance(T / 2);
  reporter.stop();
  const n = r.calls.length;
  await timers.advance(10 * T);
  assert.is(r.calls.length, n);
  assert.is(timers.pending, 0);
});

test.run();
