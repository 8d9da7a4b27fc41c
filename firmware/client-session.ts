// One client session over one socket: the adapter between a protocol client machine (what
// to send, what each state accepts; anything else ends the session, S0.7) and the board's
// network, loop and clock (connection, timeouts, a single end).
// Sessions in sequence (docs/protocol.md §2.1, issue 15): each connection asks the gateway
// for them (`sessions`); once answered, a session that ends cleanly sends `sessionEnd` instead
// of closing and the board holds the connection: the next session to the same URL runs on it
// (the business login after the registration), and after the last one it stays open, idle,
// receiving the table pushes (§16) until the device is unplugged or the gateway's idle sweep
// closes it. A connection that was not answered, or that closes, is today's: one per session.
import { peekTablePush, peekSessionEnd, isSessionsFrame, sessionsFrame, sessionEndFrame, decodeEnvelope, parseError, MsgType } from '../protocol/messages.ts';
import { CloseCode, retryClass, type RetryClass } from '../protocol/errors.ts';
import { isClientEnd, type ClientEnd, type ClientExchange, type Step } from '../protocol/exchange.ts';
import { equalBytes } from '@noble/ciphers/utils.js';
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
  | {
      kind: 'unreachable'; why: string; code?: string; retry?: Exclude<RetryClass, 'never'>;
      /**
       * The held connection the session reused failed (closed, or the gateway's GW_IDLE_TIMEOUT)
       * before anything of this session arrived: its end had not been seen yet. The program runs
       * the session again at once (no backoff, not a failure); the connection is gone, so the
       * next one is new and cannot be stale: once only.
       */
      stale?: true;
    }
  /** The server sent something invalid: we ended the session (S0.7, claim 5). */
  | { kind: 'invalid'; code: string; why: string }
  /** The server refused us with an error frame. */
  | { kind: 'refused'; code: string; why: string };

/** What a connection tells the session running on it. */
interface LineUser {
  readonly dest: string;
  opened(): void;
  frame(data: Uint8Array): void;
  /** The gateway's sessionEnd for this session: what a close would have said (§2.1). */
  ended(code: number, reason: string): void;
  closed(code: number, reason: string, wasOpen: boolean): void;
  /** The session goes on on another connection (a retry without `sessions`, §2.1 rule 1). */
  moved(line: Line): void;
}

/** Whether a frame is an error frame with code `code`. */
function isErrorWith(f: Uint8Array, code: string): boolean {
  try {
    const env = decodeEnvelope(f);
    return env.type === MsgType.error && parseError(env.body).code === code;
  } catch {
    return false;
  }
}

/** Whether a frame is an error frame with code MSG_UNKNOWN_TYPE (a peer that does not know `sessions`, §15). */
function isUnknownTypeError(f: Uint8Array): boolean {
  return isErrorWith(f, 'MSG_UNKNOWN_TYPE');
}

/** Whether a frame is of type sessionEnd (its envelope starts 85 01 18 34), well-formed or not. */
function isSessionEndType(f: Uint8Array): boolean {
  return f[0] === 0x85 && f[1] === 0x01 && f[2] === 0x18 && f[3] === 52;
}

/** scheme://host:port of a URL: a gateway routes by dest, not by the path (§2.1 rule 1). */
function originOf(url: string): string {
  return /^(wss?:\/\/[^/?#]+)/.exec(url)?.[1]?.toLowerCase() ?? url;
}

/** The connection each board holds between sessions (at most one). */
const held = new WeakMap<Board, Line>();

/**
 * Gateways (origins) that refused `sessions` (MSG_UNKNOWN_TYPE, or a close 1002 before any
 * frame): for this boot the board connects to them per session and never asks again (§2.1 rule 1).
 */
const plainOrigins = new WeakMap<Board, Set<string>>();

/** Whether the board connects to `url` without asking for sessions in sequence. */
export function noSessionsAt(board: Board, url: string): boolean {
  return plainOrigins.get(board)?.has(originOf(url)) ?? false;
}

/**
 * One device connection, which may run sessions in sequence (docs/protocol.md §2.1): at most
 * one session on it at a time (`user`), numbered from 1 as the gateway numbers them.
 */
class Line {
  readonly socket: NetSocket;
  #open = false;
  #closed = false;
  /** The gateway answered `sessions`: sessions end with sessionEnd, and the connection stays. */
  #granted = false;
  /** The session running now, or the last one: its number on this connection. */
  #n = 1;
  /** The number of the last session the gateway ended (its sessionEnd arrived). */
  #endedByGateway = 0;
  /** The session the device ended itself last (its sessionEnd sent): the gateway's may cross it, once. */
  #deviceEnded: { n: number; dest: string } | null = null;
  #user: LineUser | null;
  /** A frame arrived on this connection. */
  #heard = false;
  /** What the first session sent before any frame arrived: sent again if the peer refuses `sessions`. */
  #sentEarly: Uint8Array[] = [];

  private constructor(
    private readonly board: Board,
    readonly url: string,
    user: LineUser,
    /** Connected without asking (the peer refused `sessions` this boot): §2's rule, one connection per session. */
    private readonly plain = false,
    /** A retry's first frames (already made by the session on the refused connection), sent on opening. */
    replay: Uint8Array[] | null = null,
  ) {
    this.#user = user;
    const loop = board.loop;
    this.socket = board.net.connect(url, {
      onOpen: () => loop.post(() => {
        if (this.#closed) return;
        this.#open = true;
        if (replay) {
          for (const f of replay) this.socket.send(f);
          return;
        }
        // Asked first; the first session's frames follow at once (no round trip, §2.1 rule 1).
        if (!this.plain) this.socket.send(sessionsFrame());
        this.#user?.opened();
      }),
      onMessage: (data) => loop.post(() => {
        if (this.#closed) return;
        // A peer that does not know `sessions` refuses it (§15: MSG_UNKNOWN_TYPE, close 1002)
        // before anything of the session: the session is retried at once without asking.
        if (!this.#heard && this.#asked() && isUnknownTypeError(data)) return this.#retryPlain();
        this.#heard = true;
        // S3.11: a table the gateway pushed is outside the session (no seq, no state): kept or
        // refused on its own signature, version and expiry; the session goes on either way, and
        // a held connection with no session takes it too.
        const pushed = peekTablePush(data);
        if (pushed) return this.board.tablePush?.(pushed);
        if (!this.#granted && this.#n === 1 && isSessionsFrame(data)) {
          this.#granted = true;
          return;
        }
        if (this.#granted && isSessionEndType(data)) {
          const d = this.#deviceEnded;
          // The server's end crossed the device's own (rule 4): expected once, for that session,
          // and only as the one frame a normal end is, [1000, ""] (rule 3), byte for byte. The
          // connection goes on after it, so nothing in it may go unchecked: a reason, which the
          // device could not check, or any other change means the frame was altered on the way
          // (or the gateway breaks rule 3), and the connection is given up below.
          if (d && equalBytes(data, sessionEndFrame(d.n, d.dest, CloseCode.normal, ''))) {
            this.#deviceEnded = null;
            return;
          }
          const end = peekSessionEnd(data);
          const u = this.#user;
          if (end && u && end.n === this.#n && end.dest === u.dest && this.#endedByGateway !== end.n) {
            this.#endedByGateway = end.n;
            return u.ended(end.code, end.reason);
          }
          // Malformed, altered, or for no session of ours: not acted on; the connection is given up (S0.7).
          return this.#refuse(!end ? 'a malformed sessionEnd' : d && end.n === d.n && end.dest === d.dest ? 'a sessionEnd for the ended session that is not [1000, ""]' : 'a sessionEnd for no open session');
        }
        // Between sessions nothing but a push or a sessionEnd is expected: the connection is given up.
        if (!this.#user) return this.#refuse('unexpected frame between sessions');
        this.#user.frame(data);
      }),
      onClose: (code, reason) => loop.post(() => {
        if (!this.#closed && !this.#heard && this.#open && this.#asked() && code === CloseCode.protocol && this.#user) return this.#retryPlain();
        const wasOpen = this.#open;
        this.#closed = true;
        if (held.get(this.board) === this) held.delete(this.board);
        const u = this.#user;
        this.#user = null;
        u?.closed(code, reason, wasOpen);
      }),
    });
  }

  /**
   * A connection for `user`'s session to `url`: the one the board holds when it goes to the same
   * gateway (origin) and runs sessions in sequence, else a new one (a held one to another URL is closed).
   */
  static take(board: Board, url: string, user: LineUser): { line: Line; reused: boolean } {
    const plain = noSessionsAt(board, url);
    const h = held.get(board);
    if (h) {
      held.delete(board);
      if (!h.#closed && h.#user === null && h.#granted && originOf(h.url) === originOf(url)) {
        h.#user = user;
        h.#n++;
        board.loop.post(() => (h.#user === user ? user.opened() : undefined));
        return { line: h, reused: true };
      }
      h.close(1000);
    }
    return { line: new Line(board, url, user, plain), reused: false };
  }

  /** This connection asked for sessions in sequence and nothing has answered yet (its first session). */
  #asked(): boolean {
    return !this.plain && !this.#granted && this.#n === 1;
  }

  /**
   * The peer refused `sessions` (§2.1 rule 1): the gateway is marked as not running sessions in
   * sequence for this boot and the session goes on at once on a new connection, without asking,
   * with the frames it already made. Once: that connection never asks, so it never comes back here.
   */
  #retryPlain(): void {
    const u = this.#user;
    const o = originOf(this.url);
    const set = plainOrigins.get(this.board) ?? new Set<string>();
    set.add(o);
    plainOrigins.set(this.board, set);
    this.#user = null;
    this.close(CloseCode.normal);
    if (!u) return;
    u.moved(new Line(this.board, this.url, u, true, this.#sentEarly.splice(0)));
  }

  send(data: Uint8Array): void {
    if (this.#closed) return;
    if (!this.#heard && this.#asked()) this.#sentEarly.push(data);
    this.socket.send(data);
  }

  /**
   * `user`'s session ended with close code `code`. A normal end on a connection in sequence is
   * a sessionEnd (unless the gateway's own ended it), and the board holds the connection;
   * anything else closes it, as a session's end always did.
   */
  release(user: LineUser, code: number, clean: boolean): void {
    if (this.#user !== user) return;
    this.#user = null;
    if (this.#closed) return;
    // Only a session that ended on its own authenticated outcome (credReply, notFound, the
    // login's confirmation) keeps the connection: one ended by a clear frame (an error frame,
    // loginFail, the gateway's sessionEnd) may have been altered on the way, and nothing more
    // is sent on a connection that carried a frame we could not trust (S0.7).
    if (code === 1000 && clean && this.#granted && this.#open && this.#endedByGateway !== this.#n) {
      this.socket.send(sessionEndFrame(this.#n, user.dest, 1000, ''));
      this.#deviceEnded = { n: this.#n, dest: user.dest };
      held.get(this.board)?.close(1000);
      held.set(this.board, this);
      return;
    }
    this.close(code);
  }

  /**
   * Gives the connection up after a frame it cannot act on (or could not check whole): closed
   * 1002, its session (if any) told; the next session connects again (§2.1 rule 4).
   */
  #refuse(why: string): void {
    const u = this.#user;
    this.#user = null;
    this.close(CloseCode.protocol);
    u?.closed(CloseCode.protocol, why, true);
  }

  close(code: number): void {
    if (this.#closed) return;
    this.#closed = true;
    if (held.get(this.board) === this) held.delete(this.board);
    this.socket.close(code);
  }
}

/** Whether the board holds a connection between sessions (docs/protocol.md §2.1), and to which URL. */
export function heldUrl(board: Board): string | null {
  return held.get(board)?.url ?? null;
}

/**
 * One exchange's client machine (protocol/registration.ts, protocol/login.ts) over one
 * socket: connect, hand each frame to the machine and send what it returns, a timeout per
 * step, and end exactly once. The machine's events go to `onEvent`, where the program traces
 * them, re-arms the step timer and answers the machine (apply()).
 */
export class ClientSession<Ev, Out> implements LineUser {
  #line: Line | null = null;
  /** The session runs on a connection an earlier session of this board used (§2.1). */
  reused = false;
  #timer: Timer | null = null;
  #ended = false;
  #opened = false;
  /** A frame of this session arrived. */
  #heard = false;
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
    const { line, reused } = Line.take(this.board, this.url, this);
    this.#line = line;
    this.reused = reused;
  }

  opened(): void {
    if (this.#ended) return;
    this.#opened = true;
    this.openedAt = this.board.clock.now();
    this.arm('first reply');
    this.apply(this.machine.start());
  }

  frame(data: Uint8Array): void {
    if (this.#ended) return;
    // The reused connection's idle timeout crossed this session's first frames (§2.1): the
    // gateway's end of the held connection, not this server's answer.
    if (this.reused && !this.#heard && isErrorWith(data, 'GW_IDLE_TIMEOUT')) return this.#stale('GW_IDLE_TIMEOUT');
    this.#heard = true;
    this.apply(this.machine.receive(data));
  }

  ended(code: number, reason: string): void {
    if (this.#ended) return;
    this.#end({ kind: 'unreachable', why: `session ended by the server (${code}${reason ? ` ${reason}` : ''})` });
  }

  moved(line: Line): void {
    if (this.#ended) return line.release(this, CloseCode.normal, false);
    this.#line = line;
  }

  closed(code: number, reason: string, wasOpen: boolean): void {
    if (this.#ended) return;
    // Only the gateway's own end of an idle connection (close 1001, going away, as its idle sweep
    // closes) is stale; a cut (1006) or any other close mid-session is a failure as on a new
    // connection: a withheld opening must not buy the attacker a free, immediate retry
    // (sim/withhold.test.ts).
    if (this.reused && !this.#heard && code === CloseCode.goingAway) return this.#stale(`closed ${code}`);
    this.#end({ kind: 'unreachable', why: this.#opened || wasOpen ? `connection closed (${code}${reason ? ` ${reason}` : ''})` : `no connection (${reason || code})` });
  }

  /** The reused connection failed before anything of this session arrived (SessionEnd.stale). */
  #stale(what: string): void {
    this.#end({ kind: 'unreachable', why: `the held connection ended before the server answered (${what})`, ...(what === 'GW_IDLE_TIMEOUT' ? { code: what, retry: 'later' as const } : {}), stale: true });
  }

  /** Sends a step's frames, reports its event, and ends the session on its outcome. */
  apply(step: Step<Ev, Out | ClientEnd>): void {
    if (this.#ended) return;
    for (const f of step.send) this.#line?.send(f);
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

  /**
   * Ends the session once: stops the timer, ends it on its connection (closes the socket, or on a
   * connection in sequence a normal end sends sessionEnd and keeps it, §2.1), wipes the keys, reports.
   */
  #end(r: Out | SessionEnd, code: number = CloseCode.normal): void {
    if (this.#ended) return;
    this.#ended = true;
    this.board.loop.cancel(this.#timer);
    // Clean: the machine's own outcome, not a refusal, a failure notice or the peer's end.
    const clean = !isSessionEnd(r) && (r as { kind?: string }).kind !== 'failed';
    this.#line?.release(this, code, clean);
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
