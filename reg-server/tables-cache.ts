// The tables every registration reads and operators rarely change, kept in this process (issue
// 15): the firmware verdicts (the hello), the region map and the business server list
// (placement). Correct across processes: each read first asks the store for the tables' version
// (RegStore.tablesVersion, bumped by a trigger on every write to firmware, biz_servers or
// regions, whoever writes), and answers from memory only while that version is the one its
// copy was read under. So a firmware revoked by `usbphone` or the backup registration server is
// refused at the very next hello, and a server removed is not offered at the next registration.
//
// The version is read BEFORE the rows: rows kept under version v are at least as new as v, so
// a later write moves the version past v and the copy is dropped. On PostgreSQL two sessions
// may load at once: a load is kept only if the version did not move while it ran.
// A row that fails validation is never kept: the store's read throws (STORE_CORRUPT_ROW) and
// throws again at the next registration.
// What it does not cache: devices (one row per registration, written by it), the settings row.
import type { Awaitable } from '../server-kit/store-choice.ts';
import type { BizServerRecord, RegionRecord, RegStore } from './store.ts';

/**
 * Most firmware verdicts kept of each kind. A hello's measurement is read before its MAC is
 * checked, so a stranger can ask for many unknown ones: refusals are kept apart from the
 * accepted verdicts, and past this many the refusals alone are dropped and read again (the cost
 * of no cache, never a wrong answer), so such a flood never evicts the firmware real phones run.
 * Accepted verdicts come only from rows an operator enrolled (bounded the same way).
 */
export const FIRMWARE_VERDICTS_MAX = 1024;

/** Counters for tests and benches: version reads, answers from memory, loads from the tables. */
export interface TablesCacheStats { versionReads: number; hits: number; loads: number }

function then<T, U>(v: Awaitable<T>, f: (x: T) => Awaitable<U>): Awaitable<U> {
  return v instanceof Promise ? v.then(f) : f(v);
}

export class TablesCache {
  readonly stats: TablesCacheStats = { versionReads: 0, hits: 0, loads: 0 };
  #version: number | null = null;
  readonly #accepted = new Set<string>();
  readonly #refused = new Set<string>();
  #regions: readonly RegionRecord[] | null = null;
  #servers: readonly BizServerRecord[] | null = null;

  constructor(private readonly store: RegStore, private readonly firmwareMax = FIRMWARE_VERDICTS_MAX) {}

  /** RegStore.firmwareAccepted, from memory while the tables' version is unchanged. */
  firmwareAccepted(measurement: string): Awaitable<boolean> {
    return this.#read(
      () => (this.#accepted.has(measurement) ? true : this.#refused.has(measurement) ? false : undefined),
      () => this.store.firmwareAccepted(measurement),
      (ok) => {
        const kept = ok ? this.#accepted : this.#refused;
        if (kept.size >= this.firmwareMax) kept.clear();
        kept.add(measurement);
      },
    );
  }

  /** RegStore.listRegions: one frozen array per version (placement.ts keeps its parsed CIDRs by it). */
  listRegions(): Awaitable<RegionRecord[]> {
    return this.#read(() => this.#regions ?? undefined, () => then(this.store.listRegions(), deepFreeze), (r) => (this.#regions = r)) as Awaitable<RegionRecord[]>;
  }

  /** RegStore.listServers: one frozen array per version (callers copy before they change it). */
  listServers(): Awaitable<BizServerRecord[]> {
    return this.#read(() => this.#servers ?? undefined, () => then(this.store.listServers(), deepFreeze), (s) => (this.#servers = s)) as Awaitable<BizServerRecord[]>;
  }

  #read<T>(have: () => T | undefined, load: () => Awaitable<T>, keep: (x: T) => void): Awaitable<T> {
    this.stats.versionReads++;
    return then(this.store.tablesVersion(), (v) => {
      if (v !== this.#version) {
        this.#version = v;
        this.#accepted.clear();
        this.#refused.clear();
        this.#regions = null;
        this.#servers = null;
      }
      const got = have();
      if (got !== undefined) {
        this.stats.hits++;
        return got;
      }
      this.stats.loads++;
      return then(load(), (x) => {
        if (this.#version === v) keep(x);
        return x;
      });
    });
  }
}

function deepFreeze<T extends object>(list: T[]): readonly T[] {
  for (const x of list) Object.freeze(x);
  return Object.freeze(list);
}

/**
 * The store with firmwareAccepted, listRegions and listServers answered by a TablesCache;
 * everything else (writes included: the trigger sees them) goes to the store itself. Put it
 * under withHealthView: the health overlay is this process's and changes without a write.
 */
export function withTablesCache<S extends RegStore>(store: S, cache = new TablesCache(store)): S {
  return new Proxy(store, {
    get(target, prop) {
      if (prop === 'firmwareAccepted' || prop === 'listRegions' || prop === 'listServers') return cache[prop].bind(cache);
      const v = Reflect.get(target, prop, target);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}
