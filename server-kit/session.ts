// One device session on a server, whatever carries it (a direct WebSocket or a connection
// multiplexed on the gateway link). The sessions of reg-server/ and biz-server/ extend
// ServerSession around an exchange's server machine (protocol/registration.ts,
// protocol/login.ts): frames are handled one at a time in arrival order, any refusal sends the
// error frame [code, prevSeq, reason] in clear and ends the session with the error's close
// code (S0.7), and a session that waits longer than the step timeout for its next message
// is ended (TIMEOUT, close 1001: docs/protocol.md §6).
import { decodeEnvelope, encodeEnvelope, errorBody, parseError, MsgType, type Envelope } from '../protocol/messages.ts';
import { ProtocolError, ImplementationError, CloseCode } from '../protocol/errors.ts';
import type { ServerExchange } from '../protocol/exchange.ts';
import type { Logger, LogField } from './log.ts';
import type { ServerMetrics } from './metrics.ts';
import { acceptVersion0, lenientEnvelope, wrongProof, explainedReason, type Mutant } from './mutant.ts';

export interface SessionTransport {
  /** The client address: the socket's peer, or the one the authenticated gateway observed. */
  readonly observedIp: string;
  readonly via: 'gateway' | 'direct';
  send(frame: Uint8Array): void;
  /** Ends the session; idempotent. */
  close(code: number, reason: string): void;
  bufferedAmount(): number;
}

export interface SessionHandler {
  onFrame(frame: Uint8Array): void;
  /** The peer (or the link) went away; called at most once, also after our own close. */
  onClose(): void;
}

export type SessionFactory = (t: SessionTransport) => SessionHandler;

/** The step timer's clock (default the process's timers; a simulation passes its virtual scheduler's). */
export interface SessionTimers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const realTimers: SessionTimers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface SessionOptions {
  /** Where the session counts what it does (GET /metrics); none in some tests. */
  metrics?: ServerMetrics;
  /** This server's name: the dest its frames carry. */
  name: string;
  stepTimeoutMs: number;
  log: Logger;
  /** The step timer's clock (default real timers). */
  timers?: SessionTimers;
  /** TEST ONLY: one rule broken on purpose (server-kit/mutant.ts); never set in production. */
  mutant?: Mutant;
}

export abstract class ServerSession implements SessionHandler {
  #queue: Promise<void> = Promise.resolve();
  #timer: unknown = null;
  #ended = false;
  #lastSeq: number | null = null;
  /** Highest seq handled so far (only the 'ignore-old-seq' mutant reads it). */
  #highSeq = -1;

  constructor(
    protected readonly transport: SessionTransport,
    protected readonly opts: SessionOptions,
  ) {
    this.opts.metrics?.session(transport.via);
    this.#arm();
  }

  get ended(): boolean {
    return this.#ended;
  }

  /** Handles one decoded frame (hands it to the machine); throws ProtocolError to refuse. */
  protected abstract step(frame: Uint8Array, env: Envelope): void | Promise<void>;
  /** The protocol machine (set in the subclass's constructor). */
  protected abstract readonly exchange: ServerExchange<string>;

  /** Seq this side's next frame carries. */
  protected nextSendSeq(): number {
    return this.exchange.nextSendSeq;
  }
  /** Wipes the machine's keys (subclasses add their own, then call this). */
  protected cleanup(): void {
    this.exchange.abort();
  }

  /**
   * Fields for the log line of a refusal, beside its code: what the operator needs and the
   * peer must not get (a refused hello's reason, issue 10). None by default.
   */
  protected refusalLogFields(_e: ProtocolError): Record<string, LogField> {
    return {};
  }

  onFrame(frame: Uint8Array): void {
    if (this.#ended) return;
    this.#disarm();
    this.#queue = this.#queue.then(() => this.#handle(frame));
  }

  async #handle(frame: Uint8Array): Promise<void> {
    if (this.#ended) return;
    try {
      this.#lastSeq = null;
      let env: Envelope;
      try {
        env = decodeEnvelope(this.opts.mutant === 'accept-version-0' ? acceptVersion0(frame) : frame);
      } catch (e) {
        const loose = this.opts.mutant === 'lenient-cbor' && e instanceof ProtocolError && e.code.startsWith('CBOR_') ? lenientEnvelope(frame) : null;
        if (!loose) throw e;
        env = loose;
      }
      this.#lastSeq = env.seq;
      if (this.opts.mutant === 'ignore-old-seq') {
        if (env.seq <= this.#highSeq) return;
        this.#highSeq = env.seq;
      }
      if (env.type === MsgType.error && this.opts.mutant !== 'answer-device-error') {
        // docs/protocol.md §7: the peer gave up. End at once, without answering; its code is
        // only logged (a malformed error frame ends the session the same way).
        let code = 'malformed';
        try {
          code = parseError(env.body).code;
        } catch {
          // logged as malformed
        }
        this.opts.log.info('peer error', { code, ip: this.transport.observedIp, via: this.transport.via });
        this.end(CloseCode.normal, 'peer error');
        return;
      }
      await this.step(frame, env);
      if (!this.#ended) this.#arm();
    } catch (e) {
      this.fail(e);
    }
  }

  /** Sends a machine's frames, in order; nothing once the session ended. */
  protected send(frames: Uint8Array[]): void {
    for (const f of frames) if (!this.#ended) this.transport.send(this.opts.mutant === 'wrong-server-proof' ? wrongProof(f) : f);
  }

  /** Sends the error frame for `e` and ends the session with its close code (S0.7). */
  protected fail(e: unknown): void {
    if (this.#ended) return;
    let code: string;
    let closeCode: number;
    let reason: string;
    if (e instanceof ProtocolError) {
      code = e.code;
      closeCode = e.closeCode;
      reason = this.opts.mutant === 'explain-bad-hello' ? explainedReason(e.message, this.refusalLogFields(e)) : e.message;
      this.opts.log.info('session refused', { code, ip: this.transport.observedIp, via: this.transport.via, ...this.refusalLogFields(e) });
    } else if (e instanceof ImplementationError) {
      // Our side is wrong (e.g. STORE_CORRUPT_ROW): the device gets the stable code, no detail.
      code = e.code;
      closeCode = CloseCode.internal;
      reason = 'internal error';
      this.opts.log.error('session failed', { code, err: e.message });
    } else {
      code = 'SRV_INTERNAL';
      closeCode = CloseCode.internal;
      reason = 'internal error';
      this.opts.log.error('session failed', { code, err: (e as Error)?.stack ?? String(e) });
    }
    this.opts.metrics?.refusals.inc({ code });
    this.transport.send(encodeEnvelope(MsgType.error, this.nextSendSeq(), this.opts.name, errorBody(code, this.#lastSeq, reason)));
    if (this.opts.mutant === 'accept-after-error') return;
    if (this.opts.mutant === 'no-close-after-refusal') {
      // The session is over for the server, but the connection stays open (S0.7 broken).
      this.#ended = true;
      this.#disarm();
      this.cleanup();
      return;
    }
    this.end(closeCode, code);
  }

  /** Ends the session (normal end or after an error frame). */
  protected end(code: number, reason: string): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#disarm();
    this.transport.close(code, reason);
    this.cleanup();
  }

  onClose(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#disarm();
    this.cleanup();
  }

  #arm(): void {
    // Frames that came together (a client step's finish + credRequest) are each handled and
    // each re-arm: the timer of the one before is replaced, never left behind to fire later.
    this.#disarm();
    this.#timer = (this.opts.timers ?? realTimers).setTimeout(() => {
      this.#timer = null;
      this.fail(new ProtocolError('TIMEOUT', `no message within ${this.opts.stepTimeoutMs} ms`));
    }, this.opts.stepTimeoutMs);
  }
  #disarm(): void {
    if (this.#timer) (this.opts.timers ?? realTimers).clearTimeout(this.#timer);
    this.#timer = null;
  }
}
