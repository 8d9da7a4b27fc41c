// The gateway's period report (S3.5: every period T the management center sends the security
// policy server, per site, the period's total attacks and the attacks per mechanism). Every
// period T (aligned to multiples of T on the counter's clock) the closed period's counts from
// attacks.ts become one report, queued and handed to an injected async sink; deploy/ plugs in
// the policy server's sealed admin call (`reportAttacks`).
//
// Delivery: one report in flight at a time, oldest first. A sink that throws, rejects, times
// out or answers something else keeps the report at the head of the queue, resent after a
// backoff with the SAME periodId, so a receiver that keys on (gateway, periodId) never counts
// one twice (a timed-out call that did arrive is answered `duplicate` the second time). A
// report the receiver refuses outright (accepted: false, duplicate: false) is dropped with a
// metric and a warning: the same bytes would be refused again, and it must not block the
// periods behind it. The queue holds at most maxQueue periods; when full the oldest is dropped
// (metric + log). Periods with no attack are reported too (sites: []): the receiver sees the
// gateway is alive and that the period really had none. The first period is partial (from
// start()); the open period at stop() is not sent.
import type { AttackCounter, PeriodCounts } from './attacks.ts';
import type { AttackReport, SiteAttacks, ReportResult } from '../server-kit/admin-messages.ts';

// One definition of the report: the admin op's (server-kit/admin-messages.ts), which the
// policy server validates. periodId = floor(periodStartMs / periodMs) on the counter's clock;
// a site absent from `sites` had no attack in the period.
export type { AttackReport };
export type SiteReport = SiteAttacks;
export type SinkAnswer = ReportResult;
export type AttackSink = (report: AttackReport) => Promise<SinkAnswer>;

/** The clock and timers the reporter runs on (real ones by default; a virtual one in tests). */
export interface Timers {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}
/**
 * The real clock: the wall clock at process start plus monotonic time (performance.now), so
 * a wall-clock step does not move periods, and the gateway can stamp an attempt with the
 * performance.now() it already took for the frame.
 */
export const realTimers: Timers = {
  now: () => performance.timeOrigin + performance.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

/** What happened to a report: for metrics and log lines. */
export type ReportOutcome =
  | 'sent' // accepted at the first attempt
  | 'resent' // accepted after one or more failed attempts
  | 'duplicate' // the receiver already had this period: done
  | 'failed' // one attempt failed (thrown, rejected, timed out, bad answer): kept, resent
  | 'rejected' // the receiver refused it: dropped
  | 'dropped'; // the queue was full: the oldest dropped unsent

export interface ReportEvent { outcome: ReportOutcome; periodId: number; attempts: number; reason?: string }

export interface AttackReporterOptions {
  /** This gateway's name in the reports. */
  gateway: string;
  counter: AttackCounter;
  send: AttackSink;
  /** Must share the counter's clock. */
  timers?: Timers;
  /** Unsent periods kept at most (default 1,440: a day of 1-minute periods). */
  maxQueue?: number;
  /** A sink call not settled by then counts as failed (default 10 s). */
  sendTimeoutMs?: number;
  /** Backoff between resends: doubling from min to max (defaults 1 s, and T). */
  retryMinMs?: number;
  retryMaxMs?: number;
  onEvent?: (e: ReportEvent) => void;
}

interface Queued { report: AttackReport; attempts: number }

export class AttackReporter {
  readonly #o: Required<Omit<AttackReporterOptions, 'onEvent'>> & Pick<AttackReporterOptions, 'onEvent'>;
  readonly #queue: Queued[] = [];
  /** Closed periods' counts from the counter, until their report is built. */
  readonly #closed = new Map<number, PeriodCounts>();
  #lastBuilt = -1;
  #tick: unknown = null;
  #retry: unknown = null;
  #inFlight = false;
  #backoff = 0;
  #running = false;
  /** Resolves the current drain (tests wait on it). */
  #idle: Promise<void> = Promise.resolve();

  constructor(opts: AttackReporterOptions) {
    const T = opts.counter.limits.periodMs;
    this.#o = {
      ...opts,
      timers: opts.timers ?? realTimers,
      maxQueue: opts.maxQueue ?? 1_440,
      sendTimeoutMs: opts.sendTimeoutMs ?? 10_000,
      retryMinMs: opts.retryMinMs ?? Math.min(1_000, T),
      retryMaxMs: opts.retryMaxMs ?? T,
    };
    if (!Number.isInteger(this.#o.maxQueue) || this.#o.maxQueue < 1) throw new RangeError('maxQueue must be a whole number >= 1');
  }

  /** Reports waiting (the head may be in flight). */
  get queued(): number {
    return this.#queue.length;
  }

  /** The periodIds waiting, oldest first. */
  queuedIds(): number[] {
    return this.#queue.map((q) => q.report.periodId);
  }

  /** Starts at the counter's open period (the first report covers its rest only). */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    const c = this.#o.counter;
    c.onPeriod = (id, counts) => void this.#closed.set(id, counts);
    this.#lastBuilt = c.periodId - 1;
    this.#schedule();
  }

  stop(): void {
    this.#running = false;
    this.#o.counter.onPeriod = undefined;
    if (this.#tick !== null) this.#o.timers.clearTimeout(this.#tick);
    if (this.#retry !== null) this.#o.timers.clearTimeout(this.#retry);
    this.#tick = this.#retry = null;
  }

  /** Resolves when no send is in flight (tests). */
  settled(): Promise<void> {
    return this.#idle;
  }

  #schedule(): void {
    const { timers, counter } = this.#o;
    const T = counter.limits.periodMs;
    const end = (counter.periodId + 1) * T;
    // Timers may fire a little early against the clock: onTick re-arms until the period ended.
    this.#tick = timers.setTimeout(() => this.#onTick(), Math.max(1, end - timers.now()));
  }

  #onTick(): void {
    this.#tick = null;
    if (!this.#running) return;
    const { counter, timers } = this.#o;
    counter.roll(timers.now());
    // Every period from the last one built up to the one before the open one: a period with
    // no attack was handed over empty, one the process slept through was never opened.
    const upTo = counter.periodId - 1;
    const from = Math.max(this.#lastBuilt + 1, upTo - this.#o.maxQueue + 1);
    // More periods passed than the queue holds (a process stopped for days): one event for them.
    if (from > this.#lastBuilt + 1) this.#emit({ outcome: 'dropped', periodId: this.#lastBuilt + 1, attempts: 0, reason: `${from - this.#lastBuilt - 1} periods passed beyond the queue` });
    for (let id = from; id <= upTo; id++) this.#enqueue(this.#report(id, this.#closed.get(id)));
    this.#lastBuilt = Math.max(this.#lastBuilt, upTo);
    this.#closed.clear();
    this.#schedule();
    this.#drain();
  }

  #report(periodId: number, counts: PeriodCounts | undefined): AttackReport {
    const sites = counts ? [...counts].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([site, c]) => ({ site, total: c.total, perMech: { ...c.perMech } })) : [];
    return { gateway: this.#o.gateway, periodId, periodMs: this.#o.counter.limits.periodMs, sites };
  }

  #enqueue(report: AttackReport): void {
    if (this.#queue.length >= this.#o.maxQueue) {
      // The head may be in flight: drop the oldest one that is not.
      const i = this.#inFlight ? 1 : 0;
      const [old] = this.#queue.splice(i, 1);
      if (old) this.#emit({ outcome: 'dropped', periodId: old.report.periodId, attempts: old.attempts, reason: 'queue full' });
    }
    this.#queue.push({ report, attempts: 0 });
  }

  #emit(e: ReportEvent): void {
    this.#o.onEvent?.(e);
  }

  #drain(): void {
    if (this.#inFlight || !this.#running || this.#retry !== null) return;
    const head = this.#queue[0];
    if (!head) return;
    this.#inFlight = true;
    this.#idle = this.#attempt(head).finally(() => {
      this.#inFlight = false;
    }).then(() => this.#drain());
  }

  async #attempt(q: Queued): Promise<void> {
    const { timers, sendTimeoutMs, send } = this.#o;
    q.attempts++;
    let timer: unknown = null;
    let answer: SinkAnswer;
    try {
      answer = await new Promise<SinkAnswer>((resolve, reject) => {
        timer = timers.setTimeout(() => reject(new Error(`no answer within ${sendTimeoutMs} ms`)), sendTimeoutMs);
        // A sink that throws synchronously is a failed attempt like one that rejects.
        Promise.resolve().then(() => send(q.report)).then(resolve, reject);
      });
    } catch (e) {
      return this.#failed(q, (e as Error)?.message ?? String(e));
    } finally {
      if (timer !== null) timers.clearTimeout(timer);
    }
    if (typeof answer !== 'object' || answer === null || typeof answer.accepted !== 'boolean' || typeof answer.duplicate !== 'boolean') {
      return this.#failed(q, 'the sink answered neither accepted nor duplicate');
    }
    this.#backoff = 0;
    // Only the head is ever in flight, and nothing but a full queue removes it (then index 1 was dropped instead).
    if (this.#queue[0] === q) this.#queue.shift();
    const outcome: ReportOutcome = answer.accepted ? (q.attempts > 1 ? 'resent' : 'sent') : answer.duplicate ? 'duplicate' : 'rejected';
    this.#emit({ outcome, periodId: q.report.periodId, attempts: q.attempts });
  }

  #failed(q: Queued, reason: string): void {
    this.#emit({ outcome: 'failed', periodId: q.report.periodId, attempts: q.attempts, reason });
    if (!this.#running) return;
    const { retryMinMs, retryMaxMs, timers } = this.#o;
    this.#backoff = this.#backoff === 0 ? retryMinMs : Math.min(retryMaxMs, this.#backoff * 2);
    this.#retry = timers.setTimeout(() => {
      this.#retry = null;
      this.#drain();
    }, this.#backoff);
  }
}
