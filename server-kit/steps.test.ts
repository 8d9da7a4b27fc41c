// server-kit/steps.ts and server-kit/store-writes.ts: one piece of logic over a synchronous
// and an asynchronous store, and the writes a machine asks for, checked before its reply.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { call, runSteps, runStepsAsync, type Steps } from './steps.ts';
import { StoreWrites } from './store-writes.ts';
import { ImplementationError } from '../protocol/errors.ts';

interface Kv { get(k: string): number | Promise<number>; put(k: string, v: number): void | Promise<void> }
const syncKv = (m = new Map<string, number>()): Kv => ({ get: (k) => m.get(k) ?? 0, put: (k, v) => void m.set(k, v) });
const asyncKv = (m = new Map<string, number>()): Kv => ({ get: async (k) => m.get(k) ?? 0, put: async (k, v) => void m.set(k, v) });

function* addTo(kv: Kv, k: string, n: number): Steps<number> {
  const v = yield* call(kv.get(k));
  if (v + n > 100) throw new RangeError('over 100');
  yield* call(kv.put(k, v + n));
  return v + n;
}

test('the same steps run synchronously over a synchronous store and awaited over an asynchronous one', async () => {
  const a = syncKv();
  assert.is(runSteps(addTo(a, 'x', 5)), 5);
  assert.is(runSteps(addTo(a, 'x', 5)), 10);
  const b = asyncKv();
  assert.is(await runStepsAsync(addTo(b, 'x', 5)), 5);
  assert.is(await runStepsAsync(addTo(b, 'x', 5)), 10);
  assert.throws(() => runSteps(addTo(a, 'x', 95)), (e: unknown) => e instanceof RangeError);
  await runStepsAsync(addTo(b, 'x', 95)).then(() => assert.unreachable(), (e) => assert.instance(e, RangeError));
});

test('a promise inside synchronous steps is our bug (STEPS_ASYNC); a rejected call is thrown into the steps', async () => {
  assert.throws(() => runSteps(addTo(asyncKv(), 'x', 1)), (e: unknown) => e instanceof ImplementationError && e.code === 'STEPS_ASYNC');
  const failing: Kv = { get: async () => { throw new Error('store down'); }, put: () => {} };
  let caught = '';
  function* guarded(): Steps<string> {
    try {
      yield* call(failing.get('x'));
      return 'no';
    } catch (e) {
      caught = (e as Error).message;
      return 'caught';
    }
  }
  assert.is(await runStepsAsync(guarded()), 'caught');
  assert.is(caught, 'store down');
});

test('StoreWrites: immediate answers pass through; promised ones are checked by flush, a false verdict or a failed write is the refusal', async () => {
  const w = new StoreWrites();
  assert.is(w.verdict(false, () => new Error('x')), false);
  assert.is(w.flush(), undefined, 'nothing queued: a synchronous store stays synchronous');
  assert.is(w.verdict(Promise.resolve(true), () => new Error('refused')), true);
  w.write(Promise.resolve());
  await w.flush();
  assert.is(w.verdict(Promise.resolve(false), () => new Error('refused')), true, 'taken as true for the machine...');
  await w.flush()!.then(() => assert.unreachable('...and refused by flush'), (e) => assert.is(e.message, 'refused'));
  let settled = false;
  w.write(Promise.reject(new Error('write failed')));
  w.write(new Promise<void>((r) => setTimeout(() => { settled = true; r(); }, 20)));
  await w.flush()!.then(() => assert.unreachable(), (e) => assert.is(e.message, 'write failed'));
  assert.ok(settled, 'flush waits for every write before it reports the failure');
});

test.run();
