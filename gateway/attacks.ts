// The gateway's attack counter (S3.4: the management center detects attacks): login openings
// per client address group, site and mechanism in a sliding window; more than `limit` of them
// within any `windowMs` counts as ONE attack on that site and mechanism, and the same
// (address group, site, mechanism) counts again only once a whole window has passed since.
// Attacks are summed per period T (S3.5) for attack-reporter.ts.
//
// - Address group: an IPv4 address on its own, an IPv6 address by its /64 (one subscriber's
//   prefix: an attacker with a /64 has 2^64 addresses, all one group).
// - Site: the envelope dest of the login opening (the business server's name), counted only
//   when it names a configured upstream, so no peer can invent sites (labels, report rows).
// - Mechanism: the login opening's `mech` (in clear, MAC-covered, validated by parseLogin).
// - Memory: at most `maxTrackedIps` address groups, in an LRUCache (lru-cache) with TTL =
//   windowMs: the least recently seen group is evicted first, and a group silent for a whole
//   window expires (nothing it did still counts). Each group holds one slot per (site,
//   mechanism) it tried, at most sites x 3, each a ring of `limit` timestamps: the cost per
//   tracked group is stated in docs/architecture.md §"Attack detection" (measured by
//   gateway/attacks.test.ts and bench/attacks.bench.ts).
// - Cost per login opening: one LRU get, a scan of the group's slots (usually one), one ring
//   write: O(1), no allocation after a group's first attempt at a (site, mechanism).
// An evicted or expired group starts again from nothing: under a flood of more than
// maxTrackedIps distinct groups within one window, a slow attacker's early attempts may be
// forgotten (counted late or not at all); a fast one (limit+1 attempts in a row) is still seen.
import { LRUCache } from 'lru-cache';
import { ImplementationError } from '../protocol/errors.ts';
import type { Mechanism } from '../protocol/messages.ts';
import { ipBytes, normalizeIp } from '../server-kit/ip.ts';

export interface AttackLimits {
  /** Count login openings at all (default true). */
  enabled: boolean;
  /** The sliding window, ms. */
  windowMs: number;
  /** More than this many login openings within windowMs is one attack. */
  limit: number;
  /** The reporting period T, ms (attack-reporter.ts); periods are aligned to multiples of T. */
  periodMs: number;
  /** Address groups tracked at most (least recently seen evicted). */
  maxTrackedIps: number;
}

export const AttackDefaults: AttackLimits = {
  enabled: true,
  windowMs: 60_000,
  limit: 10,
  periodMs: 60_000,
  maxTrackedIps: 100_000,
};

/** The bounds a configuration must keep (CFG_INVALID outside): the memory bound stays a bound. */
export const ATTACK_BOUNDS = { windowMs: [1, 24 * 3600_000], limit: [1, 1_000], periodMs: [1_000, 7 * 24 * 3600_000], maxTrackedIps: [1, 10_000_000] } as const;

/** Checks a (partial) configuration, fills defaults; CFG_INVALID names the field. */
export function attackLimits(cfg: Partial<AttackLimits> = {}): AttackLimits {
  const L = { ...AttackDefaults, ...cfg };
  if (typeof L.enabled !== 'boolean') throw new ImplementationError('CFG_INVALID', 'attacks.enabled must be true or false');
  for (const k of Object.keys(ATTACK_BOUNDS) as (keyof typeof ATTACK_BOUNDS)[]) {
    const v = L[k];
    const [lo, hi] = ATTACK_BOUNDS[k];
    if (!Number.isInteger(v) || v < lo || v > hi) throw new ImplementationError('CFG_INVALID', `attacks.${k} must be a whole number in [${lo}, ${hi}], not ${String(v)}`);
  }
  return L;
}

/**
 * The key an address is counted under: IPv4 as is, IPv6 as its /64 ('2001:db8:0:1::/64'),
 * anything else (never seen from a socket) as is. Computed once per connection.
 */
export function addressGroup(ip: string): string {
  const b = ipBytes(ip);
  if (!b || b.length === 4) return normalizeIp(ip);
  const g = (i: number) => ((b[i]! << 8) | b[i + 1]!).toString(16);
  return `${g(0)}:${g(2)}:${g(4)}:${g(6)}::/64`;
}

/** One attack, as detected: the group, the site and mechanism, when (clock ms). */
export interface AttackEvent { group: string; site: string; mech: Mechanism; at: number }

/** Attacks per site in one period: total and per mechanism. */
export interface SiteCount { total: number; perMech: Partial<Record<Mechanism, number>> }
export type PeriodCounts = Map<string, SiteCount>;

/**
 * One (site, mechanism) of an address group: the last `limit` attempt times, as a ring of
 * exactly `limit` entries (-Infinity where no attempt yet), oldest at `head`.
 */
interface Slot {
  site: string;
  mech: Mechanism;
  ring: number[];
  head: number;
  /** No further attack from this slot before this time (one per window). */
  quietUntil: number;
}

export interface AttackCounterOptions {
  /**
   * The clock, ms (default: the wall clock at process start plus monotonic time, as
   * attack-reporter.ts realTimers; period ids must be wall-clock so receivers line them up).
   */
  now?: () => number;
  /** Told of each attack as it is detected (metrics, log line). Called in line: keep it cheap. */
  onAttack?: (a: AttackEvent) => void;
  /** Handed each period's counts when the period closes (the reporter); dropped without one. */
  onPeriod?: (periodId: number, counts: PeriodCounts) => void;
  /**
   * The window shared by several gateways (gateway/shared-attacks.ts, Redis); absent: this
   * process's own. attempt() then answers later, through onAttack.
   */
  shared?: SharedAttackWindow;
}

/**
 * The sliding window of attacks.ts kept where several gateways see it: resolves true for the
 * one attempt (of any gateway) that crossed the limit, once per window; rejects when it cannot
 * answer (the counter then counts in its own window).
 */
export interface SharedAttackWindow {
  readonly limits: AttackLimits;
  attempt(group: string, site: string, mech: Mechanism, now: number): Promise<boolean>;
}

/** Shared verdicts awaited at most at once; beyond, attempts are counted locally (memory bound under a flood while Redis is slow). */
export const MAX_SHARED_IN_FLIGHT = 10_000;

export class AttackCounter {
  readonly limits: AttackLimits;
  readonly #now: () => number;
  /** A group's slots: one Slot (the usual case, no array), or several. */
  readonly #groups: LRUCache<string, Slot | Slot[]>;
  readonly #onAttack?: (a: AttackEvent) => void;
  #onPeriod?: (periodId: number, counts: PeriodCounts) => void;
  #periodId: number;
  #periodEnd: number;
  #counts: PeriodCounts = new Map();
  /** The time of the attempt being counted (the cache's clock). */
  #t: number;
  readonly #shared?: SharedAttackWindow;
  #inFlight = 0;
  /** Attempts counted in this process's window because the shared one did not answer. */
  sharedFallbacks = 0;

  constructor(limits: Partial<AttackLimits> = {}, opts: AttackCounterOptions = {}) {
    this.limits = attackLimits(limits);
    this.#now = opts.now ?? (() => performance.timeOrigin + performance.now());
    this.#onAttack = opts.onAttack;
    this.#onPeriod = opts.onPeriod;
    this.#shared = opts.shared;
    const t = this.#now();
    this.#t = t;
    // TTL on the time of the attempt being counted: the cache reads no clock of its own (a
    // clock read costs 50-150 ns on this VM, more than the rest of an attempt); ttlResolution 0:
    // no timer to cache the time.
    this.#groups = new LRUCache<string, Slot | Slot[]>({ max: this.limits.maxTrackedIps, ttl: this.limits.windowMs, updateAgeOnGet: true, ttlResolution: 0, perf: { now: () => this.#t } });
    this.#periodId = Math.floor(t / this.limits.periodMs);
    this.#periodEnd = (this.#periodId + 1) * this.limits.periodMs;
  }

  /** The reporter takes closed periods from here (one consumer). */
  set onPeriod(fn: ((periodId: number, counts: PeriodCounts) => void) | undefined) {
    this.#onPeriod = fn;
  }

  /** Address groups tracked now (expired ones not yet purged included): at most maxTrackedIps. */
  get tracked(): number {
    return this.#groups.size;
  }

  /** The id of the period now open: floor(now / periodMs). */
  get periodId(): number {
    return this.#periodId;
  }

  /**
   * Records one login opening from `group` (addressGroup) to `site` with `mech` at `now` (ms
   * on the counter's clock; read from it when absent: the gateway passes the time it already
   * took for the frame); returns true when it made an attack (the attempt that crossed the
   * limit, once per window). With a shared window it returns false: onAttack tells the verdict.
   */
  attempt(group: string, site: string, mech: Mechanism, now: number = this.#now()): boolean {
    const shared = this.#shared;
    if (shared !== undefined && this.#inFlight < MAX_SHARED_IN_FLIGHT) {
      // Several gateways (issue 16): the window is shared, and whichever gateway's attempt
      // crosses the limit counts the attack (once for all). Its verdict comes later, through
      // onAttack; while Redis is down or slow, this gateway's own window decides (fail open to
      // local: docs/architecture.md "What is shared, where").
      this.#inFlight++;
      shared.attempt(group, site, mech, now).then(
        (attack) => {
          this.#inFlight--;
          if (attack) this.#attack(group, site, mech, now);
        },
        () => {
          this.#inFlight--;
          this.sharedFallbacks++;
          if (this.#window(group, site, mech, now)) this.#attack(group, site, mech, now);
        },
      );
      return false;
    }
    if (!this.#window(group, site, mech, now)) return false;
    this.#attack(group, site, mech, now);
    return true;
  }

  /** This process's window: true when the attempt crossed the limit (once per window). */
  #window(group: string, site: string, mech: Mechanism, now: number): boolean {
    this.#t = now;
    const L = this.limits;
    const v = this.#groups.get(group);
    let s: Slot | undefined;
    if (v === undefined) {
      s = this.#slot(site, mech);
      this.#groups.set(group, s);
    } else if (!Array.isArray(v)) {
      if (v.site === site && v.mech === mech) s = v;
      else this.#groups.set(group, [v, (s = this.#slot(site, mech))]);
    } else {
      for (let i = 0; i < v.length; i++) {
        const x = v[i]!;
        if (x.site === site && x.mech === mech) {
          s = x;
          break;
        }
      }
      if (s === undefined) v.push((s = this.#slot(site, mech)));
    }
    // Exact sliding window: the ring holds the last `limit` attempt times; this attempt is
    // over the limit when the oldest of them is still inside the window.
    const over = now - s.ring[s.head]! < L.windowMs;
    s.ring[s.head] = now;
    s.head = s.head + 1 === L.limit ? 0 : s.head + 1;
    if (!over || now < s.quietUntil) return false;
    s.quietUntil = now + L.windowMs;
    return true;
  }

  #attack(group: string, site: string, mech: Mechanism, now: number): void {
    this.#count(site, mech, now);
    this.#onAttack?.({ group, site, mech, at: now });
  }

  #slot(site: string, mech: Mechanism): Slot {
    const ring = new Array<number>(this.limits.limit).fill(-Infinity);
    return { site, mech, ring, head: 0, quietUntil: -Infinity };
  }

  #count(site: string, mech: Mechanism, now: number): void {
    if (now >= this.#periodEnd) this.roll(now);
    let c = this.#counts.get(site);
    if (c === undefined) {
      c = { total: 0, perMech: {} };
      this.#counts.set(site, c);
    }
    c.total++;
    c.perMech[mech] = (c.perMech[mech] ?? 0) + 1;
  }

  /**
   * Closes the open period when `now` is past its end, handing its counts (possibly empty)
   * to onPeriod, and opens the period `now` falls in. A clock that went back closes nothing:
   * attacks then count in the period still open.
   */
  roll(now = this.#now()): void {
    if (now < this.#periodEnd) return;
    const id = this.#periodId;
    const counts = this.#counts;
    this.#periodId = Math.floor(now / this.limits.periodMs);
    this.#periodEnd = (this.#periodId + 1) * this.limits.periodMs;
    this.#counts = new Map();
    this.#onPeriod?.(id, counts);
  }

  /** The open period's counts so far (a copy; for tests and the operator). */
  current(): PeriodCounts {
    return new Map([...this.#counts].map(([k, v]) => [k, { total: v.total, perMech: { ...v.perMech } }]));
  }
}
