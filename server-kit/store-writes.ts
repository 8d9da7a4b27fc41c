// The store writes a protocol machine asks for while it handles one frame (issue 16). The
// machines call their store callbacks synchronously (they do no I/O); a SQLite store answers at
// once, a PostgreSQL one with a promise. A promised write is queued here and the session awaits
// flush() before it sends the step's reply or acts on the step's outcome: nothing leaves for the
// device before the store answered, and a write that fails (or a compare-and-set that answers
// false) ends the session with the refusal the machine itself would have thrown.
import type { Awaitable } from './store-choice.ts';

export class StoreWrites {
  #queued: Promise<void>[] = [];

  /** A write whose result does not matter beyond its success. */
  write(v: Awaitable<void>): void {
    if (v instanceof Promise) this.#queued.push(v);
  }

  /**
   * A compare-and-set the machine needs a verdict of: an immediate answer is returned as is; a
   * promised one is taken as true for the machine and checked by flush(), which throws
   * `refusal()` when it answers false.
   */
  verdict(v: Awaitable<boolean>, refusal: () => Error): boolean {
    if (!(v instanceof Promise)) return v;
    this.#queued.push(v.then((ok) => {
      if (!ok) throw refusal();
    }));
    return true;
  }

  /**
   * Waits for every queued write; rejects with the first failure once all have settled.
   * undefined when nothing is queued (a SQLite store's step stays synchronous: no await).
   */
  flush(): Promise<void> | undefined {
    if (this.#queued.length === 0) return undefined;
    return Promise.allSettled(this.#queued.splice(0)).then((all) => {
      const failed = all.find((r) => r.status === 'rejected');
      if (failed) throw (failed as PromiseRejectedResult).reason;
    });
  }
}
