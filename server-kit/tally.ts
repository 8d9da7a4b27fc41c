// Counts made on the hot path (per frame, per session) kept in a plain map and added to their
// prom-client Counter when it is read (its `collect` hook, run at every scrape and get()):
// prom-client hashes the labels of every inc, and its incs were 2.6 % of a login's server CPU in
// `serve all` (profile of 2026-12-01, docs/benchmarks.md), most of them these (issue 15). The counters' values are the same at every
// read; only when the additions are made changes.
import type { Counter } from 'prom-client';

/** Counts by key since the last fold; `labelsOf` names a key's labels (bounded: types, codes, events). */
export class Tally<K> {
  readonly #n = new Map<K, number>();
  constructor(private readonly labelsOf: (key: K) => Record<string, string>) {}

  /** One more for `key`. */
  add(key: K): void {
    this.#n.set(key, (this.#n.get(key) ?? 0) + 1);
  }

  /** Adds the counts kept since the last fold to `counter`, and clears them. */
  fold(counter: Counter<string>): void {
    for (const [k, n] of this.#n) counter.inc(this.labelsOf(k), n);
    this.#n.clear();
  }
}
