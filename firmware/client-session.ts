// One client session over one socket: connect, exchange frames step by step with a
// timeout per step, and end exactly once. Subclasses (registration, business login) say
// what to send and what each state accepts; anything else ends the session (S0.7).
import { decodeEnvelope, encodeError, parseError, unexpected, MsgType, type Envelope } from '../protocol/messages.ts';
import { ProtocolError, CloseCode, retryClass, type RetryClass } from '../protocol/errors.ts';
import type { NetSocket } from './hal/hal.ts';
import type { EventLoop, Timer } from './loop.ts';
import type { Device } from './device.ts';

/**
 * Where a session goes: the URL to connect to and the envelope dest of its frames. Both come
 * from a validated source (UPMon's configuration, checked at boot; a server entry, checked by
 * parseServerEntry): the dest is never re-derived from the URL.
 */
export interface Endpoint {
  url: string;
  dest: string;
}

/** How a session ended, as the program that ran it needs to know. */
export type SessionEnd =
  /**
   * Could not reach the server, or it said "not now": no connection, closed early, timed out, or
   * an error frame whose code's retry class (protocol/errors.ts) is `later` / `other-server`.
   */
  | { kind: 'unreachable'; why: string; code?: string; retry?: Exclude<RetryClass, 'never'> }
  /** The server sent something invalid: we ended the session (S0.7, claim 5). */
  | { kind: 'invalid'; code: string; why: string }
  /** The server refused us with an error frame. */
  | { kind: 'refused'; code: string; why: string };

export abstract class ClientSession<R> {
  protected socket: NetSocket | null = null;
  #timer: Timer | null = null;
  #ended = false;
  protected opened = false;
  readonly started: number;
  readonly dest: string;

  readonly url: string;

  constructor(
    protected readonly dev: Device,
    endpoint: Endpoint,
    private readonly finish: (r: R | SessionEnd) => void,
  ) {
    this.started = dev.clock.now();
    this.url = endpoint.url;
    this.dest = endpoint.dest;
  }

  protected get loop(): EventLoop {
    return this.dev.loop;
  }

  start(): void {
    this.arm('connect');
    try {
      this.#connect();
    } catch (e) {
      // A network layer that refuses the address outright (it should call onClose instead):
      // this server is unreachable, the program tries the next one; the plug-in goes on.
      this.loop.post(() => this.end({ kind: 'unreachable', why: `no connection (${(e as Error)?.message ?? String(e)})` }));
    }
  }

  #connect(): void {
    this.socket = this.dev.net.connect(this.url, {
      onOpen: () => this.loop.post(() => {
        if (this.#ended) return;
        this.opened = true;
        this.arm('first reply');
        this.guard(() => this.onOpen());
      }),
      onMessage: (data) => this.loop.post(() => {
        if (this.#ended) return;
        this.guard(() => this.onFrameBytes(data));
      }),
      onClose: (code, reason) => this.loop.post(() => {
        if (this.#ended) return;
        this.end({ kind: 'unreachable', why: this.opened ? `connection closed (${code}${reason ? ` ${reason}` : ''})` : `no connection (${reason || code})` });
      }),
    });
  }

  /** Subclass: the session's first frame(s). */
  protected abstract onOpen(): void;
  /** Subclass: one decoded frame that is not an error frame. */
  protected abstract onFrame(env: Envelope, frame: Uint8Array): void;
  /** Subclass: the seq of our next frame, for error frames we send. */
  protected abstract nextSeq(): number;

  protected send(frame: Uint8Array): void {
    this.socket?.send(frame);
  }

  /** (Re)starts the step timer. */
  protected arm(step: string): void {
    this.loop.cancel(this.#timer);
    this.#timer = this.loop.after(this.dev.config.stepTimeoutMs, () => {
      if (!this.#ended) this.end({ kind: 'unreachable', why: `timed out waiting for ${step}` }, CloseCode.goingAway);
    });
  }

  private onFrameBytes(data: Uint8Array): void {
    const env = decodeEnvelope(data);
    if (env.type === MsgType.error) {
      const e = parseError(env.body);
      const reason = e.reason.startsWith(`${e.code}: `) ? e.reason.slice(e.code.length + 2) : e.reason;
      // What to do next comes from the one error table: `later` and `other-server` codes are
      // retried (another server now, this one after a backoff); anything else, known or not, never.
      const retry = retryClass(e.code);
      const end: SessionEnd = retry === 'never' ? { kind: 'refused', code: e.code, why: reason } : { kind: 'unreachable', code: e.code, retry, why: reason };
      this.end(end, CloseCode.normal);
      return;
    }
    this.onFrame(env, data);
  }

  /** Runs a step; a ProtocolError from the server's frame ends the session as invalid (S0.7). */
  protected guard(f: () => void): void {
    try {
      f();
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      this.send(encodeError(this.nextSeq(), this.dest, e.code, null, e.message));
      this.end({ kind: 'invalid', code: e.code, why: e.message.replace(`${e.code}: `, '') }, e.closeCode);
    }
  }

  protected unexpected(env: Envelope, state: string): never {
    throw unexpected(env.type, state);
  }

  /** Ends the session once: stops the timer, closes the socket, reports the result. */
  protected end(r: R | SessionEnd, code: number = CloseCode.normal): void {
    if (this.#ended) return;
    this.#ended = true;
    this.loop.cancel(this.#timer);
    this.socket?.close(code);
    this.cleanup();
    this.finish(r);
  }

  protected cleanup(): void {}

  get ms(): number {
    return this.dev.clock.now() - this.started;
  }
}

export function isSessionEnd(r: unknown): r is SessionEnd {
  return typeof r === 'object' && r !== null && 'kind' in r && ['unreachable', 'invalid', 'refused'].includes((r as SessionEnd).kind);
}
