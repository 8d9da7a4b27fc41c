// One client session over one socket: the adapter between a protocol client machine (what
// to send, what each state accepts; anything else ends the session, S0.7) and the board's
// network, loop and clock (connection, timeouts, a single end).
import { peekTablePush } from '../protocol/messages.ts';
import { CloseCode, retryClass, type RetryClass } from '../protocol/errors.ts';
import { isClientEnd, type ClientEnd, type ClientExchange, type Step } from '../protocol/exchange.ts';
import type { NetSocket } from './hal/hal.ts';
import type { Timer } from './loop.ts';
import type { Board } from './board.ts';

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

/**
 * One exchange's client machine (protocol/registration.ts, protocol/login.ts) over one
 * socket: connect, hand each frame to the machine and send what it returns, a timeout per
 * step, and end exactly once. The machine's events go to `onEvent`, where the program traces
 * them, re-arms the step timer and answers the machine (apply()).
 */
export class ClientSession<Ev, Out> {
  #socket: NetSocket | null = null;
  #timer: Timer | null = null;
  #ended = false;
  #opened = false;
  readonly started: number;
  /** Board clock when the connection opened (0 until then). */
  openedAt = 0;

  constructor(
    private readonly board: Board,
    readonly url: string,
    readonly machine: ClientExchange<Ev, Out>,
    private readonly onEvent: (e: Ev) => void,
    private readonly finish: (r: Out | SessionEnd) => void,
  ) {
    this.started = board.clock.now();
  }

  get dest(): string {
    return this.machine.dest;
  }

  start(): void {
    this.arm('connect');
    try {
      this.#connect();
    } catch (e) {
      // A network layer that refuses the address outright (it should call onClose instead):
      // this server is unreachable, the program tries the next one; the plug-in goes on.
      this.board.loop.post(() => this.#end({ kind: 'unreachable', why: `no connection (${(e as Error)?.message ?? String(e)})` }));
    }
  }

  #connect(): void {
    const loop = this.board.loop;
    this.#socket = this.board.net.connect(this.url, {
      onOpen: () => loop.post(() => {
        if (this.#ended) return;
        this.#opened = true;
        this.openedAt = this.board.clock.now();
        this.arm('first reply');
        this.apply(this.machine.start());
      }),
      onMessage: (data) => loop.post(() => {
        if (this.#ended) return;
        // S3.11: a table the gateway pushed is outside the session (no seq, no state): kept or
        // refused on its own signature, version and expiry; the session goes on either way.
        const pushed = peekTablePush(data);
        if (pushed) return this.board.tablePush?.(pushed);
        this.apply(this.machine.receive(data));
      }),
      onClose: (code, reason) => loop.post(() => {
        if (this.#ended) return;
        this.#end({ kind: 'unreachable', why: this.#opened ? `connection closed (${code}${reason ? ` ${reason}` : ''})` : `no connection (${reason || code})` });
      }),
    });
  }

  /** Sends a step's frames, reports its event, and ends the session on its outcome. */
  apply(step: Step<Ev, Out | ClientEnd>): void {
    if (this.#ended) return;
    for (const f of step.send) this.#socket?.send(f);
    if (step.event !== undefined) this.onEvent(step.event);
    const d = step.done;
    if (d === undefined) return;
    if (!isClientEnd(d)) return this.#end(d);
    if (d.kind === 'invalid') return this.#end({ kind: 'invalid', code: d.code, why: d.reason }, d.closeCode);
    // What to do next comes from the one error table: `later` and `other-server` codes are
    // retried (another server now, this one after a backoff); anything else, known or not, never.
    const retry = retryClass(d.code);
    this.#end(retry === 'never' ? { kind: 'refused', code: d.code, why: d.reason } : { kind: 'unreachable', code: d.code, retry, why: d.reason });
  }

  /** (Re)starts the step timer: `step` names what the session waits for. */
  arm(step: string): void {
    const loop = this.board.loop;
    loop.cancel(this.#timer);
    this.#timer = loop.after(this.board.config.stepTimeoutMs, () => {
      if (!this.#ended) this.#end({ kind: 'unreachable', why: `timed out waiting for ${step}` }, CloseCode.goingAway);
    });
  }

  /** Ends the session once: stops the timer, closes the socket, wipes the keys, reports. */
  #end(r: Out | SessionEnd, code: number = CloseCode.normal): void {
    if (this.#ended) return;
    this.#ended = true;
    this.board.loop.cancel(this.#timer);
    this.#socket?.close(code);
    this.machine.abort();
    this.finish(r);
  }

  /** Milliseconds since the session started. */
  get ms(): number {
    return this.board.clock.now() - this.started;
  }
}

export function isSessionEnd(r: unknown): r is SessionEnd {
  return typeof r === 'object' && r !== null && 'kind' in r && ['unreachable', 'invalid', 'refused'].includes((r as SessionEnd).kind);
}
