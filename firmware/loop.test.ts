// The event loop runs each event to completion in order, halts on a throw, and backoff stays
// within [c/2, c) for c = min(cap, base * 2^attempt).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { EventLoop, backoffMs } from './loop.ts';
import { Scheduler, simRng } from './hal/sim-hal.ts';

test('events run one at a time, in order, each to its end', () => {
  const sched = new Scheduler();
  const loop = new EventLoop(sched.clock());
  const log: string[] = [];
  loop.post(() => {
    log.push('a start');
    loop.post(() => log.push('b'));
    log.push('a end');
  });
  loop.after(5, () => log.push('timer'));
  const cancelled = loop.after(3, () => log.push('cancelled'));
  loop.cancel(cancelled);
  sched.run();
  assert.equal(log, ['a start', 'a end', 'b', 'timer']);
});

test('a handler that throws halts the loop: later events are dropped', () => {
  const sched = new Scheduler();
  let crash: unknown = null;
  const loop = new EventLoop(sched.clock(), (e) => (crash = e));
  const log: string[] = [];
  loop.post(() => {
    loop.post(() => log.push('queued before the throw'));
    throw new Error('firmware bug');
  });
  loop.post(() => log.push('after'));
  loop.after(1, () => log.push('timer'));
  sched.run();
  assert.instance(crash, Error);
  assert.equal(log, []);
  assert.ok(loop.crashed);
});

test('backoff: equal jitter within [c/2, c), growing to the cap, reproducible from the seed', () => {
  const rng = simRng(7, 'backoff');
  for (let attempt = 0; attempt < 12; attempt++) {
    const c = Math.min(1000, 50 * 2 ** attempt);
    for (let i = 0; i < 200; i++) {
      const d = backoffMs(attempt, rng, 50, 1000);
      assert.ok(d >= c / 2 - 1 && d < c, `attempt ${attempt}: ${d} outside [${c / 2}, ${c})`);
    }
  }
  const a = simRng(1, 'x');
  const b = simRng(1, 'x');
  assert.equal([1, 2, 3].map((n) => backoffMs(n, a)), [1, 2, 3].map((n) => backoffMs(n, b)));
});

test.run();
