// The simulated HAL: a virtual clock, a seeded rng and an in-memory network with
// configurable delay and loss. One scheduler drives every device and server of a run, so a
// seed replays the same story byte for byte (matter.js MockCrypto(index) does the same).
import { keystreamRng } from '../../protocol/seeded-rng.ts';
import type { Clock, NetHandlers, NetSocket, Network, Rng } from './hal.ts';

/** The simulated phones' date at virtual time 0 unless a run says otherwise: 2026-11-30T00:00:00Z. */
export const SIM_EPOCH_MS = Date.UTC(2026, 10, 30);

/** Virtual time: timers run in time order (ties in creation order) when the run advances. */
export class Scheduler {
  #now = 0;
  /**
   * @param epochAtStartMs the wall-clock date at virtual time 0 (ms since the Unix epoch): a
   *   fixed date by default, so a seed replays byte for byte; a run bridged to real servers
   *   passes Date.now(), so dates the servers sign compare as they would on a real phone.
   */
  constructor(readonly epochAtStartMs = SIM_EPOCH_MS) {}
  #seq = 0;
  #queue: { at: number; seq: number; fn: () => void; dead: boolean }[] = [];

  now(): number {
    return this.#now;
  }

  at(delayMs: number, fn: () => void): { dead: boolean } {
    const e = { at: this.#now + Math.max(0, delayMs), seq: this.#seq++, fn, dead: false };
    // Insert keeping (at, seq) order; queues are short, a linear scan from the end is enough.
    let i = this.#queue.length;
    while (i > 0 && (this.#queue[i - 1]!.at > e.at || (this.#queue[i - 1]!.at === e.at && this.#queue[i - 1]!.seq > e.seq))) i--;
    this.#queue.splice(i, 0, e);
    return e;
  }

  /** Runs events until none is left, or `untilMs` of virtual time, or `maxEvents`. Returns events run. */
  run(untilMs = Infinity, maxEvents = 10_000_000): number {
    let n = 0;
    while (this.#queue.length && n < maxEvents) {
      const e = this.#queue[0]!;
      if (e.at > untilMs) break;
      this.#queue.shift();
      if (e.dead) continue;
      this.#now = e.at;
      n++;
      e.fn();
    }
    if (untilMs !== Infinity && this.#now < untilMs && !this.#queue.length) this.#now = untilMs;
    return n;
  }

  /** Virtual time of the next live event, or null when none is queued. */
  nextAt(): number | null {
    while (this.#queue.length && this.#queue[0]!.dead) this.#queue.shift();
    return this.#queue.length ? this.#queue[0]!.at : null;
  }

  get pending(): number {
    return this.#queue.filter((e) => !e.dead).length;
  }

  clock(): Clock {
    return {
      now: () => this.#now,
      epochMs: () => this.epochAtStartMs + this.#now,
      setTimer: (ms, fn) => this.at(ms, fn),
      clearTimer: (h) => {
        if (h) (h as { dead: boolean }).dead = true;
      },
    };
  }
}

/**
 * The rng of one part of a simulated run (a phone, its fuses, the network), named by
 * `label`: protocol/seeded-rng.ts's keystream of `${label}/${seed}`, so parts of one run
 * draw independent streams and the run replays from its seed.
 */
export function simRng(seed: number | string, label = ''): Rng {
  return keystreamRng(`${label}/${seed}`);
}

/** The server side of one in-memory connection. */
export interface SimConn {
  readonly remoteIp: string;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  onMessage: (data: Uint8Array) => void;
  onClose: (code: number, reason: string) => void;
}

/** Something listening on the in-memory network (a gateway or a server). */
export type SimListener = (conn: SimConn) => void;

export interface LinkProfile {
  /** One-way delay in ms. */
  delayMs: number;
  /** Probability in [0, 1) that a frame is lost (the connection is then closed: TCP gives up). */
  loss: number;
}

/**
 * An in-memory network. Listeners register by URL origin (`ws://host:port`); a device's
 * socket reaches the listener of its URL's origin after `delayMs`, or fails like a refused
 * connection when nothing listens there.
 */
export class SimNetwork {
  readonly #listeners = new Map<string, SimListener>();
  #rng: Rng;
  delivered = 0;
  lost = 0;

  constructor(
    readonly sched: Scheduler,
    public profile: LinkProfile = { delayMs: 1, loss: 0 },
    seed: number | string = 0,
  ) {
    this.#rng = simRng(seed, 'net');
  }

  listen(origin: string, l: SimListener): void {
    this.#listeners.set(origin, l);
  }
  unlisten(origin: string): void {
    this.#listeners.delete(origin);
  }

  #lose(): boolean {
    if (this.profile.loss <= 0) return false;
    const b = this.#rng(4);
    return ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0 < this.profile.loss * 2 ** 32;
  }

  /** The HAL network of one device bound to `localIp`. */
  device(localIp: string): Network {
    const net = this;
    return {
      localIp,
      connect(url: string, h: NetHandlers): NetSocket {
        const origin = /^(wss?:\/\/[^/]+)/.exec(url)?.[1] ?? url;
        let open = false;
        // `closing`: no more frames may be sent. Frames already in flight still arrive before
        // the close does (as TCP delivers data before FIN); `deviceGone`/`serverGone`: that
        // side has been told the connection closed, and nothing reaches it any more.
        let closing = false;
        let deviceGone = false;
        let serverGone = false;
        const d = () => net.profile.delayMs;
        const closeBoth = (code: number, reason: string) => {
          if (closing) return;
          closing = true;
          net.sched.at(d(), () => {
            deviceGone = true;
            h.onClose(code, reason);
          });
          net.sched.at(d(), () => {
            if (!open) return;
            serverGone = true;
            server.onClose(code, reason);
          });
        };
        const carry = (data: Uint8Array, deliver: (b: Uint8Array) => void, gone: () => boolean) => {
          if (closing) return;
          if (net.#lose()) {
            net.lost++;
            return closeBoth(1006, 'frame lost');
          }
          const copy = Uint8Array.from(data);
          net.sched.at(d(), () => {
            if (gone()) return;
            net.delivered++;
            deliver(copy);
          });
        };
        const server: SimConn = {
          remoteIp: localIp,
          send: (data) => carry(data, (b) => h.onMessage(b), () => deviceGone),
          close: (code = 1000, reason = '') => closeBoth(code, reason),
          onMessage: () => {},
          onClose: () => {},
        };
        net.sched.at(d(), () => {
          if (closing) return;
          const l = net.#listeners.get(origin);
          if (!l) {
            closing = deviceGone = true;
            h.onClose(1006, 'connection refused');
            return;
          }
          open = true;
          l(server);
          h.onOpen();
        });
        return {
          send: (data) => {
            if (open) carry(data, (b) => server.onMessage(b), () => serverGone);
          },
          close: (code = 1000, reason = '') => closeBoth(code, reason),
        };
      },
    };
  }
}
