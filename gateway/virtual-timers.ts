// A virtual clock with timers (attack-reporter.ts Timers) for tests: time moves only when a
// test calls advance(), which fires every timer due, in order, letting promises settle after
// each, so periods, resends and sink timeouts run without real waiting.
import type { Timers } from './attack-reporter.ts';

interface Pending { at: number; seq: number; fn: () => void }

export class VirtualTimers implements Timers {
  #t: number;
  #seq = 0;
  #pending = new Map<number, Pending>();

  constructor(startMs: number) {
    this.#t = startMs;
  }

  now = (): number => this.#t;

  setTimeout = (fn: () => void, ms: number): unknown => {
    const id = ++this.#seq;
    this.#pending.set(id, { at: this.#t + Math.max(0, ms), seq: id, fn });
    return id;
  };

  clearTimeout = (h: unknown): void => {
    this.#pending.delete(h as number);
  };

  /** Timers waiting. */
  get pending(): number {
    return this.#pending.size;
  }

  /** A process stopped for ms (SIGSTOP, a suspended VM): the clock jumps, then what is due fires late, at the new time. */
  async jump(ms: number): Promise<void> {
    this.#t += ms;
    await this.advance(0);
  }

  /** Moves the clock by ms, firing each timer due at its own time, promises settled between. */
  async advance(ms: number): Promise<void> {
    const until = this.#t + ms;
    for (;;) {
      await settle();
      let next: Pending | undefined;
      for (const p of this.#pending.values()) if (p.at <= until && (!next || p.at < next.at || (p.at === next.at && p.seq < next.seq))) next = p;
      if (!next) break;
      this.#pending.delete(next.seq);
      this.#t = Math.max(this.#t, next.at);
      next.fn();
    }
    this.#t = until;
    await settle();
  }
}

/** Lets every queued promise callback run (a few macrotask turns). */
export async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}
