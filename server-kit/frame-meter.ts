// Reads the WebSocket frame headers of one client connection as its bytes arrive, before the
// WebSocket library buffers them, and decides from the headers alone whether to refuse:
// every frame (data or control, fragment or whole) against the rate limit, a message split
// into too many frames or reads, a declared length over the limit, a text frame. The
// library (ws) keeps each read of an unfinished message as its own buffer until the message
// completes, so a client that never finishes one could pin memory without bound; with the
// meter a connection holds at most one message of maxFrameBytes in at most
// maxReadsPerMessage buffers. It never copies payload bytes: it only counts them.
//
// RFC 6455 §5.2: byte 0 = FIN | RSV1-3 | opcode; byte 1 = MASK | payload length (7 bits,
// 126: 16-bit length follows, 127: 64-bit length follows); then the 4-byte mask (clients
// always mask); then the payload.
import { ProtocolError } from '../protocol/errors.ts';
import type { Socket } from 'node:net';
import type { DeviceLimits } from './limits.ts';

const OP_CONT = 0x0;
const OP_TEXT = 0x1;

export class FrameMeter {
  /** Header bytes of a header split across reads (allocated only then). */
  #head: Uint8Array | null = null;
  #headLen = 0;
  /** Payload bytes of the current frame still to come. */
  #skip = 0;
  /** Within an unfinished message: its frames, reads, declared bytes, and when it began. */
  #fragments = 0;
  #reads = 0;
  #bytes = 0;
  #inMessage = false;
  #started = 0;
  #tokens: number;
  #refilled: number;
  #refused: ProtocolError | null = null;

  constructor(private readonly L: DeviceLimits, private readonly now: () => number = () => performance.now()) {
    this.#tokens = L.frameBurst;
    this.#refilled = now();
  }

  /** When the unfinished message began (0: none): for the message timeout sweep. */
  get partialSince(): number {
    return this.#inMessage || this.#skip > 0 || this.#headLen > 0 ? this.#started : 0;
  }

  /** Takes one read of the connection; returns the refusal (again for every read after it), or null. */
  feed(chunk: Uint8Array): ProtocolError | null {
    if (this.#refused) return this.#refused;
    const e = this.#feed(chunk);
    if (e) this.#refused = e;
    return e;
  }

  #feed(chunk: Uint8Array): ProtocolError | null {
    let i = 0;
    // A read that continues an unfinished message (or frame, or header) counts against it; a
    // message that starts in this read counts it as its first (below).
    if ((this.#inMessage || this.#skip > 0 || this.#headLen > 0) && ++this.#reads > this.L.maxReadsPerMessage) {
      return new ProtocolError('GW_TRICKLED', `a message arrived in more than ${this.L.maxReadsPerMessage} reads`);
    }
    while (i < chunk.length) {
      if (this.#skip > 0) {
        const n = Math.min(this.#skip, chunk.length - i);
        this.#skip -= n;
        i += n;
        continue;
      }
      // A header: at least 2 bytes, then extended length and mask.
      const avail = chunk.length - i;
      const have = this.#headLen;
      const b0 = have > 0 ? this.#head![0]! : chunk[i]!;
      const b1 = have > 1 ? this.#head![1]! : have === 1 ? chunk[i] : avail > 1 ? chunk[i + 1] : undefined;
      if (have === 0 && !this.#inMessage) {
        this.#started = this.now();
        this.#reads = 1;
      }
      let need = 2;
      if (b1 !== undefined) {
        const len7 = b1 & 0x7f;
        need = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (b1 & 0x80 ? 4 : 0);
      }
      if (have + avail < need || b1 === undefined) {
        // Keep the partial header (at most 14 bytes) for the next read.
        this.#head ??= new Uint8Array(14);
        this.#head.set(chunk.subarray(i), have);
        this.#headLen = have + avail;
        return null;
      }
      const h = new Uint8Array(need);
      if (have > 0) h.set(this.#head!.subarray(0, have), 0);
      h.set(chunk.subarray(i, i + need - have), have);
      i += need - have;
      this.#headLen = 0;
      const e = this.#frame(b0, h);
      if (e) return e;
    }
    return null;
  }

  #frame(b0: number, h: Uint8Array): ProtocolError | null {
    const fin = (b0 & 0x80) !== 0;
    const opcode = b0 & 0x0f;
    const len7 = h[1]! & 0x7f;
    const dv = new DataView(h.buffer, h.byteOffset, h.byteLength);
    // A 64-bit length above 2^53 reads as a huge float: refused as too large either way.
    const length = len7 === 126 ? dv.getUint16(2) : len7 === 127 ? dv.getUint32(2) * 2 ** 32 + dv.getUint32(6) : len7;
    const t = this.now();
    this.#tokens = Math.min(this.L.frameBurst, this.#tokens + ((t - this.#refilled) / 1000) * this.L.framesPerSecond);
    this.#refilled = t;
    if (this.#tokens < 1) return new ProtocolError('GW_RATE_LIMITED', `more than ${this.L.framesPerSecond} frames per second`);
    this.#tokens -= 1;
    this.#skip = length;
    if (opcode >= 0x8) {
      // Control frames (close, ping, pong) may come between fragments; ws checks their size (125).
      return null;
    }
    if (opcode === OP_TEXT) return new ProtocolError('GW_TEXT_FRAME', 'frames are binary CBOR, not text');
    if (opcode === OP_CONT && !this.#inMessage) return null; // ws refuses it (1002)
    if (opcode !== OP_CONT) {
      this.#fragments = 0;
      this.#bytes = 0;
    }
    this.#fragments++;
    this.#bytes += length;
    if (this.#bytes > this.L.maxFrameBytes) return new ProtocolError('GW_FRAME_TOO_LARGE', `message of ${this.#bytes} bytes > ${this.L.maxFrameBytes}`);
    if (this.#fragments > this.L.maxFragments) return new ProtocolError('GW_FRAGMENTED', `a message split into more than ${this.L.maxFragments} frames`);
    this.#inMessage = !fin;
    return null;
  }
}

/**
 * Puts `pass` in front of the socket's current 'data' listeners (ws's, once it has taken the
 * socket): each read reaches them only if `pass(read)` is true. A read that breaks a limit
 * is not handed on at all, so ws never parses (and buffers) the thousands of frames that
 * may follow the one that broke it in the same read.
 */
export function interpose(sock: Socket, pass: (chunk: Buffer) => boolean): void {
  const downstream = sock.listeners('data') as ((chunk: Buffer) => void)[];
  sock.removeAllListeners('data');
  sock.on('data', (chunk: Buffer) => {
    if (!pass(chunk)) return;
    for (const l of downstream) l.call(sock, chunk);
  });
}
