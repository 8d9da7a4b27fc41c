// The deterministic simulation's network (issue 14): every party of one run (phones, the
// gateway, the registration and business servers) has an address on it, and every byte
// between two parties crosses it on the one virtual scheduler (firmware/hal/sim-hal.ts). Two
// kinds of traffic: connections (a device's WebSocket to the gateway, the gateway's link to a
// server: ordered frames, a close with a code and reason) and admin calls (one sealed request,
// one sealed answer: server-kit/admin-rpc.ts's HTTP POST, replaced at its AdminPost seam).
//
// Faults, all drawn from the run's seeded rng: a frame is lost (the connection then dies, as TCP
// gives up: code 1006), delayed (jitter), duplicated, overtaken by a later one (reordered) or
// corrupted (one bit flipped); a partition between two parties loses everything between them; a
// crashed party receives nothing and its connections die; a stalled party answers late.
//
// What it does not model: TCP's own retransmission (a lost frame kills the connection at once
// instead of after a timeout), bandwidth and buffers (no backpressure), TLS.
import type { Scheduler } from '../firmware/hal/sim-hal.ts';
import type { Rng } from '../firmware/hal/hal.ts';
import { AdminError } from '../server-kit/admin-rpc.ts';
import { TimeoutError } from '../protocol/errors.ts';

/** Probabilities per frame (or admin message) and the delays of the network while faults are on. */
export interface NetFaultRates {
  loss: number;
  dup: number;
  reorder: number;
  corrupt: number;
  /** Most extra delay of one frame, virtual ms (uniform jitter). */
  jitterMs: number;
}

export const NO_NET_FAULTS: NetFaultRates = { loss: 0, dup: 0, reorder: 0, corrupt: 0, jitterMs: 0 };

/** One end of a connection, as its owner sees it. */
export interface DsimEnd {
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  onMessage: (data: Uint8Array) => void;
  onClose: (code: number, reason: string) => void;
}

/** What the net tells the invariants about each frame it carries. */
export interface WireEvent {
  conn: number;
  from: string;
  to: string;
  kind: 'frame' | 'close' | 'admin';
  /** What the sender sent. */
  sent: Uint8Array;
  /** What travels on (after a corruption: the flipped copy). */
  bytes: Uint8Array;
  /** What happened to it (the fault decisions): 'ok' | 'lost' | 'dup' | 'reorder' | 'corrupt' | 'partitioned' | 'down'. */
  fate: string;
}

export type ConnListener = (end: DsimEnd, meta: { conn: number; from: string; observedIp: string }) => void;
/** An admin endpoint: `call` numbers the adminPost it serves (a duplicate request has the same), for the simulation's own bookkeeping. */
export type AdminListener = (body: Uint8Array, call: number) => Promise<{ status: number; body?: Uint8Array }>;

const BASE_DELAY_MS = 1;

export class DsimNet {
  rates: NetFaultRates = NO_NET_FAULTS;
  readonly #listeners = new Map<string, ConnListener>();
  readonly #admin = new Map<string, AdminListener>();
  readonly #partitions = new Set<string>();
  /** Parties that are down (crashed, not yet restarted): they receive nothing. */
  readonly down = new Set<string>();
  /** Parties that answer late: extra virtual ms before each frame or answer they send. */
  readonly stalled = new Map<string, number>();
  /** Ends by owner, so a crash can kill its connections. */
  readonly #ends = new Map<string, Set<() => void>>();
  #connSeq = 0;
  /** Told of every frame as it reaches its receiver. */
  onDeliver: (conn: number, to: string, bytes: Uint8Array) => void = () => {};
  counts = { frames: 0, lost: 0, dup: 0, reorder: 0, corrupt: 0, partitioned: 0, admin: 0 };

  constructor(
    readonly sched: Scheduler,
    readonly rng: Rng,
    readonly observe: (e: WireEvent) => void,
    readonly log: (line: string) => void,
  ) {}

  /** A uniform draw in [0, 1) from the run's rng. */
  draw(): number {
    const b = this.rng(4);
    return (((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0) / 2 ** 32;
  }
  #chance(p: number): boolean {
    return p > 0 && this.draw() < p;
  }
  #delay(from: string): number {
    return BASE_DELAY_MS + (this.rates.jitterMs > 0 ? Math.floor(this.draw() * this.rates.jitterMs) : 0) + (this.stalled.get(from) ?? 0);
  }

  static pairKey(a: string, b: string): string {
    return a < b ? `${a}|${b}` : `${b}|${a}`;
  }
  partition(a: string, b: string, on: boolean): void {
    if (on) this.#partitions.add(DsimNet.pairKey(a, b));
    else this.#partitions.delete(DsimNet.pairKey(a, b));
  }
  healAll(): void {
    this.#partitions.clear();
    this.stalled.clear();
    this.rates = NO_NET_FAULTS;
  }
  /** Whether a frame from `a` can reach `b` now (no partition, `b` up). */
  reachable(a: string, b: string): boolean {
    return !this.#partitions.has(DsimNet.pairKey(a, b)) && !this.down.has(b) && !this.down.has(a);
  }

  listen(party: string, l: ConnListener): void {
    this.#listeners.set(party, l);
  }
  serveAdmin(party: string, l: AdminListener): void {
    this.#admin.set(party, l);
  }

  /** Kills every connection `party` holds (a crash): peers see 1006 after the usual delay. */
  killConnections(party: string): void {
    const set = this.#ends.get(party);
    if (!set) return;
    this.#ends.delete(party);
    for (const kill of set) kill();
  }

  /**
   * Opens a connection from `from` to the listener `to`. The returned end gets onClose(1006,
   * 'connection refused') when nothing listens, the target is down or partitioned away.
   */
  connect(from: string, to: string, observedIp: string, onOpen: () => void): DsimEnd {
    const conn = ++this.#connSeq;
    const net = this;
    let open = false;
    let closing = false;
    const gone = { a: false, b: false };
    // Per direction: when the last in-order frame arrives (FIFO: the next one comes no earlier),
    // and when anything in flight arrives (the close comes after it, as FIN after data).
    const last = { ab: 0, ba: 0 };
    const latest = { ab: 0, ba: 0 };
    const a: DsimEnd = { send: (d) => carry('ab', d), close: (c, r) => closeBoth(c ?? 1000, r ?? '', from), onMessage: () => {}, onClose: () => {} };
    const b: DsimEnd = { send: (d) => carry('ba', d), close: (c, r) => closeBoth(c ?? 1000, r ?? '', to), onMessage: () => {}, onClose: () => {} };
    const track = (party: string, kill: () => void) => {
      let s = this.#ends.get(party);
      if (!s) this.#ends.set(party, (s = new Set()));
      s.add(kill);
    };
    const untrack = () => {
      this.#ends.get(from)?.delete(killA);
      this.#ends.get(to)?.delete(killB);
    };
    const closeBoth = (code: number, reason: string, by: string) => {
      if (closing) return;
      closing = true;
      untrack();
      const rb = new TextEncoder().encode(reason);
      this.observe({ conn, from: by, to: by === from ? to : from, kind: 'close', sent: rb, bytes: rb, fate: 'ok' });
      // After every frame already in flight (TCP delivers data before FIN).
      const at = Math.max(latest.ab, latest.ba, this.sched.now()) - this.sched.now() + this.#delay(by);
      this.sched.at(at, () => {
        if (!gone.a) {
          gone.a = true;
          a.onClose(code, reason);
        }
        if (open && !gone.b) {
          gone.b = true;
          b.onClose(code, reason);
        }
      });
    };
    const killA = () => closeBoth(1006, 'connection lost', from);
    const killB = () => closeBoth(1006, 'connection lost', to);
    const carry = (dir: 'ab' | 'ba', data: Uint8Array) => {
      if (closing || (dir === 'ab' && !open)) return;
      const src = dir === 'ab' ? from : to;
      const dst = dir === 'ab' ? to : from;
      const target = dir === 'ab' ? b : a;
      const isGone = () => (dir === 'ab' ? gone.b : gone.a);
      const sent = Uint8Array.from(data);
      const bytes = Uint8Array.from(data);
      this.counts.frames++;
      if (!this.reachable(src, dst)) {
        this.counts.partitioned++;
        this.observe({ conn, from: src, to: dst, kind: 'frame', sent, bytes, fate: 'partitioned' });
        return closeBoth(1006, 'connection lost', src);
      }
      if (this.#chance(this.rates.loss)) {
        this.counts.lost++;
        this.observe({ conn, from: src, to: dst, kind: 'frame', sent, bytes, fate: 'lost' });
        return closeBoth(1006, 'frame lost', src);
      }
      let fate = 'ok';
      if (this.#chance(this.rates.corrupt) && bytes.length > 0) {
        this.counts.corrupt++;
        const bit = Math.floor(this.draw() * bytes.length * 8);
        bytes[bit >> 3]! ^= 1 << (bit & 7);
        fate = 'corrupt';
      }
      const now = this.sched.now();
      let at = now + this.#delay(src);
      const reorder = this.#chance(this.rates.reorder);
      if (reorder) {
        // Held back, outside the FIFO order: a frame sent after it may arrive first.
        this.counts.reorder++;
        at = Math.max(at, last[dir]) + 1 + Math.floor(this.draw() * 20);
        if (fate === 'ok') fate = 'reorder';
      } else {
        at = Math.max(at, last[dir]);
        last[dir] = at;
      }
      latest[dir] = Math.max(latest[dir], at);
      this.observe({ conn, from: src, to: dst, kind: 'frame', sent, bytes, fate });
      const deliver = (copy: Uint8Array) => () => {
        if (isGone() || net.down.has(dst)) return;
        net.onDeliver(conn, dst, copy);
        target.onMessage(copy);
      };
      this.sched.at(at - now, deliver(bytes));
      if (this.#chance(this.rates.dup)) {
        this.counts.dup++;
        const at2 = Math.max(at, last[dir]) + 1;
        last[dir] = at2;
        latest[dir] = Math.max(latest[dir], at2);
        this.observe({ conn, from: src, to: dst, kind: 'frame', sent, bytes, fate: 'dup' });
        this.sched.at(at2 - now, deliver(Uint8Array.from(bytes)));
      }
    };
    track(from, killA);
    this.sched.at(this.#delay(from), () => {
      if (closing) return;
      const l = this.#listeners.get(to);
      if (!l || !this.reachable(from, to)) {
        closing = gone.a = true;
        untrack();
        a.onClose(1006, 'connection refused');
        return;
      }
      open = true;
      track(to, killB);
      l(b, { conn, from, observedIp });
      onOpen();
    });
    return a;
  }

  /**
   * One admin call: `body` to `to`'s admin endpoint and its answer back, under the same faults
   * (a lost request or answer is a timeout; nothing listening is ADMIN_UNREACHABLE). Never
   * settles for a caller that is down by the time the answer would arrive (its process is gone).
   */
  adminPost(from: string, to: string, body: Uint8Array, timeoutMs: number): Promise<{ status: number; buf: Uint8Array; call: number }> {
    this.counts.admin++;
    const conn = ++this.#connSeq;
    return new Promise((resolve, reject) => {
      let done = false;
      const finish = (f: () => void) => {
        if (done || this.down.has(from)) return;
        done = true;
        f();
      };
      const timer = this.sched.at(timeoutMs, () => finish(() => reject(new TimeoutError(`admin call to ${to}`))));
      const send = (src: string, dst: string, bytes: Uint8Array, arrive: (b: Uint8Array) => void) => {
        const sent = Uint8Array.from(bytes);
        const b = Uint8Array.from(bytes);
        if (!this.reachable(src, dst)) {
          this.counts.partitioned++;
          this.observe({ conn, from: src, to: dst, kind: 'admin', sent, bytes: b, fate: 'partitioned' });
          return;
        }
        if (this.#chance(this.rates.loss)) {
          this.counts.lost++;
          this.observe({ conn, from: src, to: dst, kind: 'admin', sent, bytes: b, fate: 'lost' });
          return;
        }
        let fate = 'ok';
        if (this.#chance(this.rates.corrupt) && b.length > 0) {
          this.counts.corrupt++;
          const bit = Math.floor(this.draw() * b.length * 8);
          b[bit >> 3]! ^= 1 << (bit & 7);
          fate = 'corrupt';
        }
        this.observe({ conn, from: src, to: dst, kind: 'admin', sent, bytes: b, fate });
        this.sched.at(this.#delay(src), () => {
          if (!this.down.has(dst)) arrive(b);
        });
        // A retransmitted request: the endpoint sees it twice (its replay cache must refuse the second).
        if (this.#chance(this.rates.dup)) {
          this.counts.dup++;
          this.observe({ conn, from: src, to: dst, kind: 'admin', sent, bytes: b, fate: 'dup' });
          this.sched.at(this.#delay(src) + 1, () => {
            if (!this.down.has(dst)) arrive(Uint8Array.from(b));
          });
        }
      };
      if (!this.#admin.has(to) || this.down.has(to)) {
        // Connection refused, after one hop.
        this.sched.at(this.#delay(from), () => finish(() => {
          timer.dead = true;
          reject(new AdminError('ADMIN_UNREACHABLE', `admin call to ${to}: connection refused`));
        }));
        return;
      }
      let answered = false;
      send(from, to, body, (req) => {
        const l = this.#admin.get(to);
        if (!l) return;
        void l(req, conn).then((r) => {
          // Only the first answer travels back (a duplicate request's answer meets a closed socket).
          if (answered) return;
          answered = true;
          send(to, from, r.body ?? new Uint8Array(0), (res) => finish(() => {
            timer.dead = true;
            resolve({ status: r.status, buf: res, call: conn });
          }));
        }, () => {});
      });
    });
  }
}
