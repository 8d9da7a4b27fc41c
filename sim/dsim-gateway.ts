// The real gateway in the deterministic simulation (issue 14): gateway/gateway.ts and both ends
// of its authenticated link (gateway/upstream.ts, server-kit/link.ts) run over the simulated
// network on the virtual scheduler, through the gateway's sockets seam (GatewayConfig.io) and the
// link server's accept(). DsimSocket is the part of ws's WebSocket they use, over one end of a
// simulated connection (sim/dsim-net.ts): frames in order (or as the net's faults deliver them),
// a close with its code and reason, a lost frame a 1006.
//
// What a WebSocket has and this does not: no TCP socket under it, so the gateway's frame meter
// (limits read from raw bytes: rate, size from the header, fragments, text frames) and the
// slow-upgrade limits do not run, and bufferedAmount is 0 (the net models no buffers), so
// backpressure never triggers.
import { EventEmitter } from 'node:events';
import type { DsimEnd } from './dsim-net.ts';

const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;

export class DsimSocket extends EventEmitter {
  readonly OPEN = OPEN;
  readyState = OPEN;
  binaryType = 'nodebuffer';
  /** The net has no buffers (dsim-net.ts): nothing is ever waiting to be written. */
  readonly bufferedAmount = 0;
  /** Frames received while paused (the gateway pauses a reader behind a full link). */
  #held: Buffer[] | null = null;

  constructor(private readonly end: DsimEnd) {
    super();
    end.onMessage = (d) => {
      if (this.readyState !== OPEN) return;
      const b = Buffer.from(d);
      if (this.#held) this.#held.push(b);
      else this.emit('message', b, true);
    };
    end.onClose = (code, reason) => {
      if (this.readyState === CLOSED) return;
      this.readyState = CLOSED;
      this.#held = null;
      this.emit('close', code, Buffer.from(reason));
    };
  }

  send(data: Uint8Array): void {
    if (this.readyState === OPEN) this.end.send(data);
  }

  close(code = 1000, reason = ''): void {
    if (this.readyState >= CLOSING) return;
    this.readyState = CLOSING;
    this.end.close(code, reason);
  }

  /** Ends at once: the peer sees 1006 (the net delivers the close to both ends). */
  terminate(): void {
    if (this.readyState >= CLOSING) return;
    this.readyState = CLOSING;
    this.end.close(1006, 'connection lost');
  }

  pause(): void {
    this.#held ??= [];
  }

  resume(): void {
    const held = this.#held;
    this.#held = null;
    for (const b of held ?? []) if (this.readyState === OPEN) this.emit('message', b, true);
  }
}

/** The simulated name of the server a link URL points at: ws://<name>.sim/link. */
export function linkUrlOf(name: string): string {
  return `ws://${name}.sim/link`;
}
export function linkTargetOf(url: string): string {
  return /^ws:\/\/([^./]+)\.sim\//.exec(url)?.[1] ?? `unknown:${url}`;
}
