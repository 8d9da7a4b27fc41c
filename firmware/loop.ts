// A run-to-completion event loop: every input (timer, network event, plug-in) becomes an
// event in one queue, and each is handled to the end before the next starts, so program
// state never changes under a handler's feet. Timers go through the HAL clock, so the same
// loop runs on real time and on a virtual clock.
import type { Clock, Rng } from './hal/hal.ts';

export type Handler = () => void;

export class EventLoop {
  readonly #queue: Handler[] = [];
  #draining = false;
  #failed: unknown = null;

  constructor(
    readonly clock: Clock,
    private readonly onCrash: (e: unknown) => void = (e) => {
      throw e;
    },
  ) {}

  /** Queues an event; drains the queue unless a drain is already running. A halted loop drops it. */
  post(h: Handler): void {
    if (this.#failed !== null) return;
    this.#queue.push(h);
    if (this.#draining) return;
    this.#draining = true;
    try {
      while (this.#queue.length) {
        const next = this.#queue.shift()!;
        try {
          next();
        } catch (e) {
          // A handler threw: a firmware bug. Stop the loop (a real device would reset).
          this.#failed = e;
          this.#queue.length = 0;
          this.onCrash(e);
        }
      }
    } finally {
      this.#draining = false;
    }
  }

  get crashed(): unknown {
    return this.#failed;
  }

  /** A timer whose expiry is posted as an event. */
  after(ms: number, h: Handler): Timer {
    const t = new Timer();
    t.handle = this.clock.setTimer(ms, () => {
      if (!t.cancelled) this.post(h);
    });
    return t;
  }

  cancel(t: Timer | null | undefined): void {
    if (!t) return;
    t.cancelled = true;
    this.clock.clearTimer(t.handle);
  }
}

export class Timer {
  handle: unknown;
  cancelled = false;
}

/**
 * Exponential backoff with "equal jitter": the delay is uniform in [c/2, c) for
 * c = min(cap, base·2^n), so a fleet that failed together spreads out, yet no retry comes
 * back at once. Drawn from the device's rng, so a seeded simulation replays exactly.
 */
export function backoffMs(attempt: number, rng: Rng, baseMs = 100, capMs = 5_000): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** attempt);
  const r = rng(4);
  const u = ((r[0]! << 24) | (r[1]! << 16) | (r[2]! << 8) | r[3]!) >>> 0;
  return Math.floor(ceiling / 2 + (u / 2 ** 32) * (ceiling / 2));
}
