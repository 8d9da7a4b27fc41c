// The suite's only transport: one WebSocket per case step, every frame it sends and every
// frame or close it receives recorded in order, each wait bounded by the case's timeout.
// The target is a black box: this is a plain WebSocket client (RFC 6455), nothing of ours on
// the server side. With --device the same class holds the server end of a connection the
// device opened to the suite (Conn.adopt).
import { WebSocket } from 'ws';
import { decodeEnvelope, parseError, parseLoginFail, peekTablePush, isSessionsFrame, typeName, MsgType } from '../protocol/messages.ts';

/** What a wait returned: a frame, the close, or nothing within the time allowed. */
export type Received =
  | { kind: 'frame'; bytes: Uint8Array }
  | { kind: 'close'; code: number; reason: string }
  | { kind: 'timeout' };

/** One line of a case's record: what went out, what came back. */
export interface Line { dir: 'sent' | 'got'; text: string }

/** A short, readable description of a frame: type, seq, and the code of an error or loginFail. */
export function describe(bytes: Uint8Array | string): string {
  if (typeof bytes === 'string') return `text message (${bytes.length} chars)`;
  try {
    const env = decodeEnvelope(bytes);
    let extra = '';
    if (env.type === MsgType.error) extra = ` ${parseError(env.body).code}`;
    else if (env.type === MsgType.loginFail) extra = ` ${parseLoginFail(env.body).code}`;
    return `${typeName(env.type)}${extra} seq ${env.seq} dest ${env.dest} (${bytes.length} B)`;
  } catch {
    const head = Buffer.from(bytes.subarray(0, 12)).toString('hex');
    return `raw ${bytes.length} B: ${head}${bytes.length > 12 ? '…' : ''}`;
  }
}

export class Conn {
  readonly #ws: WebSocket;
  readonly #queue: Received[] = [];
  /** Every binary frame received, in order (the --device cases search them for secrets). */
  readonly frames: Uint8Array[] = [];
  #waiter: ((r: Received) => void) | null = null;
  /** A `sessions` frame arrived (docs/protocol.md §2.1). */
  sessions = false;
  #closed: Received | null = null;

  private constructor(ws: WebSocket, private readonly log: Line[], private readonly timeoutMs: number) {
    this.#ws = ws;
    ws.binaryType = 'nodebuffer';
    ws.on('message', (d: Buffer, isBinary: boolean) => {
      const bytes = Uint8Array.from(d);
      // §16: a gateway's tablePush is outside every session (no seq, no state): recorded, kept
      // among the frames (the §16 cases read it, the §12 one searches it), never taken as the
      // session's answer.
      if (isBinary && peekTablePush(bytes)) {
        this.log.push({ dir: 'got', text: `${describe(bytes)} (outside the session, §16)` });
        this.frames.push(bytes);
        return;
      }
      // §2.1: a device's (or a gateway's) `sessions` is between the device and the gateway,
      // outside every session: recorded, never taken as a session's frame. The suite's servers
      // do not answer it, so a device runs one session per connection with them, as §2 says.
      if (isBinary && isSessionsFrame(bytes)) {
        this.sessions = true;
        this.log.push({ dir: 'got', text: `${describe(bytes)} (sessions in sequence asked, §2.1)` });
        return;
      }
      this.log.push({ dir: 'got', text: isBinary ? describe(bytes) : `text message (${bytes.length} B)` });
      this.frames.push(bytes);
      this.#push({ kind: 'frame', bytes });
    });
    ws.on('close', (code: number, reason: Buffer) => {
      const r: Received = { kind: 'close', code, reason: reason.toString() };
      this.log.push({ dir: 'got', text: `close ${code}${r.reason ? ` ${r.reason}` : ''}` });
      this.#closed = r;
      this.#push(r);
    });
    ws.on('error', () => {});
  }

  /** Opens a connection to `url`; refuses (throws) when the target does not accept one within `timeoutMs`. */
  static open(url: string, log: Line[], timeoutMs: number): Promise<Conn> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: timeoutMs });
      const c = new Conn(ws, log, timeoutMs);
      ws.once('open', () => resolve(c));
      ws.once('error', (e) => reject(new Error(`cannot connect to ${url}: ${e.message}`)));
    });
  }

  /** The server end of a connection a device opened to the suite (--device), recorded in `log`. */
  static adopt(ws: WebSocket, log: Line[], timeoutMs: number): Conn {
    return new Conn(ws, log, timeoutMs);
  }

  #push(r: Received): void {
    const w = this.#waiter;
    if (w) {
      this.#waiter = null;
      w(r);
    } else this.#queue.push(r);
  }

  /** The next frame or the close (the close again once closed), or `timeout`. */
  next(timeoutMs = this.timeoutMs): Promise<Received> {
    const q = this.#queue.shift();
    if (q) return Promise.resolve(q);
    if (this.#closed) return Promise.resolve(this.#closed);
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.#waiter = null;
        resolve({ kind: 'timeout' });
      }, timeoutMs);
      this.#waiter = (r) => {
        clearTimeout(t);
        resolve(r);
      };
    });
  }

  /** Sends one binary message (or a text message, for the text-frame case); `note` says what it is when the bytes alone do not. */
  send(bytes: Uint8Array | string, note?: string): void {
    this.log.push({ dir: 'sent', text: `${describe(bytes)}${note ? `: ${note}` : ''}` });
    if (this.#ws.readyState === WebSocket.OPEN) this.#ws.send(bytes, { binary: typeof bytes !== 'string' });
  }

  /** Drops the connection without a close handshake (a lost connection). */
  drop(): void {
    this.log.push({ dir: 'sent', text: 'connection dropped (no close frame)' });
    this.#ws.terminate();
  }

  get isClosed(): boolean {
    return this.#closed !== null;
  }

  /** The close received (code and reason), or null while open. */
  get closedWith(): { code: number; reason: string } | null {
    const c = this.#closed;
    return c && c.kind === 'close' ? { code: c.code, reason: c.reason } : null;
  }

  /** Ends the connection (by default a normal close); the case is over with it. */
  close(code = 1000, reason = ''): void {
    if (this.#ws.readyState === WebSocket.OPEN || this.#ws.readyState === WebSocket.CONNECTING) {
      if (code !== 1000 || reason) this.log.push({ dir: 'sent', text: `close ${code}${reason ? ` ${reason}` : ''}` });
      this.#ws.close(code, reason);
    }
    // A peer that does not answer the close handshake is not waited for.
    setTimeout(() => this.#ws.terminate(), 200).unref();
  }
}
