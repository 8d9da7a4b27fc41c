// Test doubles for the server link (link.ts), shared by its two ends' tests (server-kit/link.test.ts
// plays the gateway, gateway/links.test.ts plays the server): a clock whose timers fire only when
// the test moves it, and one end of a link connection that records what it is sent.
import { EventEmitter } from 'node:events';
import type { LinkSocket } from './link.ts';

/**
 * Virtual timers driven by hand, synchronously: advance(ms) fires every timer due, in time order,
 * each at its own time. Fits both the gateway's Timers (now()) and the link server's SessionTimers.
 */
export class StepClock {
  t = 0;
  #q: { at: number; fn: () => void; dead: boolean }[] = [];
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const h = { at: this.t + ms, fn, dead: false };
    this.#q.push(h);
    return h;
  }
  clearTimeout(h: unknown): void {
    if (h) (h as { dead: boolean }).dead = true;
  }
  /** Runs every timer due up to now + ms, in order, then sets the clock to now + ms. */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      const next = this.#q.filter((h) => !h.dead && h.at <= end).sort((a, b) => a.at - b.at)[0];
      if (!next) break;
      next.dead = true;
      this.t = next.at;
      next.fn();
    }
    this.#q = this.#q.filter((h) => !h.dead);
    this.t = end;
  }
}

/** How a FakeLinkSocket ended: close(code, reason) or terminate() (code 1006, no close handshake). */
export interface SocketEnd { code: number; reason: string; terminated: boolean }

/** One end of a link connection: `out` holds what the code under test sent; feed() delivers a message from the peer. */
export class FakeLinkSocket extends EventEmitter implements LinkSocket {
  readonly OPEN = 1;
  readyState = 1;
  readonly bufferedAmount = 0;
  binaryType = 'nodebuffer';
  out: Uint8Array[] = [];
  ended: SocketEnd | null = null;
  send(d: Uint8Array): void {
    if (this.readyState === 1) this.out.push(Uint8Array.from(d));
  }
  close(code = 1000, reason = ''): void {
    this.#end({ code, reason, terminated: false });
  }
  terminate(): void {
    this.#end({ code: 1006, reason: '', terminated: true });
  }
  /** A message from the peer. */
  feed(d: Uint8Array): void {
    this.emit('message', Buffer.from(d), true);
  }
  #end(e: SocketEnd): void {
    if (this.ended) return;
    this.ended = e;
    this.readyState = 3;
    this.emit('close', e.code, Buffer.from(e.reason));
  }
}
