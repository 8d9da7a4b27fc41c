// One piece of logic over a store that answers at once (SQLite) or with promises (PostgreSQL)
// (issue 16): the logic is a generator that yields each store call's value (`yield* call(v)`),
// and a driver runs it synchronously — inside a SQLite transaction, which cannot span an await —
// or awaits each value inside a PostgreSQL transaction. The same steps either way.
import { ImplementationError } from '../protocol/errors.ts';
import type { Awaitable } from './store-choice.ts';

export type Steps<T> = Generator<unknown, T, unknown>;

/** A store call's value inside steps: `const rows = yield* call(store.pendingFor(...))`. */
export function* call<T>(v: Awaitable<T>): Generator<unknown, T, unknown> {
  return (v instanceof Promise ? yield v : v) as T;
}

/** Runs steps whose every call answered at once; a promise is our bug (a sync store was expected). */
export function runSteps<T>(g: Steps<T>): T {
  // call() yields only a promise: steps over a synchronous store never yield.
  const r = g.next();
  if (r.done) return r.value;
  g.return(undefined as T);
  throw new ImplementationError('STEPS_ASYNC', 'a store call answered with a promise inside synchronous steps');
}

/** Runs steps, awaiting each value they yield. */
export async function runStepsAsync<T>(g: Steps<T>): Promise<T> {
  let r = g.next();
  while (!r.done) {
    let v: unknown;
    try {
      v = await r.value;
    } catch (e) {
      r = g.throw(e);
      continue;
    }
    r = g.next(v);
  }
  return r.value;
}
