// What the state machines of every exchange share (docs/protocol.md §6). A machine takes one
// frame at a time and returns a Step: the frames to send, in order, a progress event, and,
// once, how the exchange ended. It does no I/O: the caller (the firmware's event loop, a
// server session, the scripted test device, a socket-free test) moves the bytes, runs the
// timers and decides what the program does next (STYLE.md, matter.js PaseClient/PaseServer).
import { ClientHandshake, ServerHandshake, type Rng, type SecureChannel } from './channel.ts';
import type { ClientKeyOps } from './handshake-keys.ts';
import { decodeEnvelope, encodeError, parseError, unexpected, MsgType, type Envelope } from './messages.ts';
import { ProtocolError, ImplementationError, type CloseCode, type ErrorCode } from './errors.ts';

/** One turn of a machine: frames to send in this order, then the event, then (once) the end. */
export interface Step<Ev, Done> {
  send: Uint8Array[];
  event?: Ev;
  done?: Done;
}

/** How a client exchange ends when it does not reach an outcome of its own. */
export type ClientEnd =
  /** The server sent an error frame (docs/protocol.md §6): its code, and its reason without the "CODE: " prefix. */
  | { kind: 'peer-error'; code: string; reason: string }
  /** We refused the server's frame (S0.7): `send` holds our error frame; close with `closeCode`. */
  | { kind: 'invalid'; code: ErrorCode; reason: string; closeCode: CloseCode };

/**
 * The client side of an exchange that runs on the sealed channel another one opened (S4.5:
 * the bank's, after a business login; protocol/bank.ts). The opening exchange hands it the
 * channel and passes it every later frame (never an error frame); it still owns the channel
 * and wipes it at the end. A ProtocolError it throws ends the whole exchange like any other.
 */
export interface ChannelClient<Out> {
  /** The first frames, sealed on `ch`. */
  start(ch: SecureChannel): ChannelStep<Out>;
  /** One server frame, decoded to its envelope. */
  receive(env: Envelope): ChannelStep<Out>;
}
export interface ChannelStep<Out> {
  send: Uint8Array[];
  done?: Out;
}

export function isClientEnd(d: unknown): d is ClientEnd {
  return typeof d === 'object' && d !== null && ((d as ClientEnd).kind === 'peer-error' || (d as ClientEnd).kind === 'invalid');
}

/**
 * The client side of one exchange over one connection: the handshake, then the sealed channel.
 * A ProtocolError caused by a server frame never escapes: it becomes the error frame to send
 * and an `invalid` end (S0.7); any other exception is our bug and is thrown. After the end,
 * or abort(), the keys are wiped and another call is ImplementationError EXCHANGE_OVER.
 */
export abstract class ClientExchange<Ev, Out> {
  protected readonly hs: ClientHandshake;
  protected ch: SecureChannel | null = null;
  #over = false;

  constructor(
    /** The envelope dest of every frame: the server's name (docs/protocol.md §4.1). */
    readonly dest: string,
    /** The long-term key (copied, wiped at the end), or the key holder that keeps it (a secure element). */
    key: Uint8Array | ClientKeyOps,
    rng: Rng | undefined,
    /** The state's name, as MSG_UNEXPECTED reports it. */
    protected state: string,
  ) {
    this.hs = new ClientHandshake(dest, key, rng);
  }

  /** The first step: the opening frame. */
  abstract start(): Step<Ev, Out | ClientEnd>;

  /** One frame from the server, as received (raw bytes: decoded and validated here). */
  receive(frame: Uint8Array): Step<Ev, Out | ClientEnd> {
    return this.run(() => {
      const env = decodeEnvelope(frame);
      if (env.type !== MsgType.error) return this.onFrame(env, frame);
      const e = parseError(env.body);
      const reason = e.reason.startsWith(`${e.code}: `) ? e.reason.slice(e.code.length + 2) : e.reason;
      return { send: [], done: { kind: 'peer-error', code: e.code, reason } };
    });
  }

  /** A decoded frame that is not an error frame, in the current state. */
  protected abstract onFrame(env: Envelope, frame: Uint8Array): Step<Ev, Out | ClientEnd>;

  /** Runs one turn: ends the exchange on `done`, turns a ProtocolError into the error frame. */
  protected run(f: () => Step<Ev, Out | ClientEnd>): Step<Ev, Out | ClientEnd> {
    if (this.#over) throw new ImplementationError('EXCHANGE_OVER', `the exchange with '${this.dest}' already ended`);
    try {
      const step = f();
      if (step.done) this.abort();
      return step;
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      const frame = encodeError(this.nextSendSeq, this.dest, e.code, null, e.message);
      this.abort();
      return { send: [frame], done: { kind: 'invalid', code: e.code, reason: e.message.slice(e.code.length + 2), closeCode: e.closeCode } };
    }
  }

  protected unexpected(env: Envelope): never {
    throw unexpected(env.type, this.state);
  }

  /** The seq of our next frame. */
  get nextSendSeq(): number {
    return this.ch?.nextSendSeq ?? this.hs.nextSendSeq;
  }

  get over(): boolean {
    return this.#over;
  }

  /** Ends the exchange and wipes its keys (a timeout, a close, or the end itself). Idempotent. */
  abort(): void {
    this.#over = true;
    this.hs.abort();
    this.ch?.close();
  }
}

/**
 * What the server side of every exchange shares: its handshake, then its channel, the state's
 * name, and the wiping of both. receive() (in each exchange) throws ProtocolError to refuse.
 */
export abstract class ServerExchange<S extends string> {
  protected readonly hs: ServerHandshake;
  protected ch: SecureChannel | null = null;

  constructor(
    /** This server's name: the dest its frames carry and the one it accepts. */
    readonly dest: string,
    protected state: S | 'done',
    rng?: Rng,
  ) {
    this.hs = new ServerHandshake(dest, rng);
  }

  /** Seq this side's next frame carries (for the error frame of a refusal). */
  get nextSendSeq(): number {
    return this.ch?.nextSendSeq ?? this.hs.nextSendSeq;
  }

  /** Wipes the keys (the session ended, for whatever reason). Idempotent. */
  abort(): void {
    this.state = 'done';
    this.hs.abort();
    this.ch?.close();
  }

  protected unexpected(env: Envelope): never {
    throw unexpected(env.type, this.state);
  }
}
