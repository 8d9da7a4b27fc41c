// The gateway <-> server link inside one process (issue 15): when the gateway and a server
// share a process (`usbphone serve all`, fleets), the gateway's link to it is a pair of
// in-memory message ports instead of a loopback WebSocket. The link protocol is the same
// (server-kit/link.ts: CHALLENGE, AUTH, AUTH_OK, then OPEN/DATA/CLOSE/PING/PONG), so the
// server authenticates the gateway as it does over a socket; what differs is that the
// messages after AUTH_OK carry no tag (`isInProcess` in link.ts, decision 142: no one outside the process
// can reach a message between the two ends). What it saves is the WebSocket framing, the
// socket writes and reads on both ends, their buffers, and two HMACs per message.
//
// A link server listening in this process offers itself under its address (host:port, the
// same key a gateway's link URL names); a gateway whose ws:// link URL names an offered
// address connects in memory, any other connects over the network (a wss:// link keeps the
// TLS and certificate check it was configured with). A closed server withdraws its
// offer and ends its in-memory links, as closing its socket would.
//
// MemoryLinkSocket has the part of ws's WebSocket interface the link uses. Messages are
// delivered in order, asynchronously (in the check phase after the turn that sent them, as
// socket reads arrive in a later turn), each as a copy: neither end ever shares a buffer with
// the other. What this does not emulate: partial writes, TCP backpressure (bufferedAmount is
// the bytes queued for the peer, drained every turn), ping/pong.
import { EventEmitter } from 'node:events';

const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;

type Item = { data: Buffer } | { close: number; reason: string };

export class MemoryLinkSocket extends EventEmitter {
  readonly OPEN = OPEN;
  readyState: number = OPEN;
  binaryType = 'nodebuffer';
  #peer: MemoryLinkSocket | null = null;
  /** What the peer sent us, not yet delivered. */
  #inbox: Item[] = [];
  #inboxBytes = 0;
  #scheduled = false;

  /** Connects two sockets: what one sends, the other receives. */
  static pair(): [MemoryLinkSocket, MemoryLinkSocket] {
    const a = new MemoryLinkSocket();
    const b = new MemoryLinkSocket();
    a.#peer = b;
    b.#peer = a;
    return [a, b];
  }

  /** Bytes sent and not yet delivered to the peer (as ws counts what the socket has not written). */
  get bufferedAmount(): number {
    const p = this.#peer;
    return p ? p.#inboxBytes : 0;
  }

  send(data: Uint8Array): void {
    if (this.readyState !== OPEN || !this.#peer) return;
    // A copy, as a socket would give the peer its own bytes.
    this.#peer.#enqueue({ data: Buffer.from(data) });
  }

  /** Closes both ends: the peer gets `code` and `reason` after what was sent before. */
  close(code = 1000, reason = ''): void {
    if (this.readyState >= CLOSING) return;
    this.readyState = CLOSING;
    const p = this.#peer;
    if (p) p.#enqueue({ close: code, reason });
    this.#enqueue({ close: code, reason });
  }

  /** Ends at once: the peer sees an abnormal close (1006); nothing more is delivered to this end. */
  terminate(): void {
    if (this.readyState === CLOSED) return;
    this.#inbox = [];
    this.#inboxBytes = 0;
    const p = this.#peer;
    if (this.readyState === OPEN && p) p.#enqueue({ close: 1006, reason: '' });
    this.readyState = CLOSING;
    this.#enqueue({ close: 1006, reason: '' });
  }

  #enqueue(i: Item): void {
    if (this.readyState === CLOSED) return;
    this.#inbox.push(i);
    if ('data' in i) this.#inboxBytes += i.data.length;
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => this.#deliver());
    }
  }

  #deliver(): void {
    this.#scheduled = false;
    while (this.#inbox.length > 0 && this.readyState !== CLOSED) {
      const i = this.#inbox.shift()!;
      if ('data' in i) {
        this.#inboxBytes -= i.data.length;
        // A closing end reads no more messages (ws stops reading once it closes).
        if (this.readyState === OPEN) this.emit('message', i.data, true);
        continue;
      }
      this.readyState = CLOSED;
      this.#inbox = [];
      this.#inboxBytes = 0;
      // The peer closed: close this end too (ws answers a close frame with its own).
      if (this.#peer && this.#peer.readyState < CLOSING) this.#peer.close(i.close, i.reason);
      this.emit('close', i.close, Buffer.from(i.reason));
    }
  }
}
void CONNECTING;

/** Accepts one in-memory link connection (the server's end) from the gateway. */
export type MemoryLinkAcceptor = (ws: MemoryLinkSocket) => void;

const offers = new Map<string, { accept: MemoryLinkAcceptor; live: Set<MemoryLinkSocket> }>();
const keyOf = (host: string, port: number) => `${host.replace(/^\[|\]$/g, '')}:${port}`;

/** Offers a link server listening at host:port to gateways in this process; returns the withdrawal (which ends its links). */
export function offerMemoryLink(host: string, port: number, accept: MemoryLinkAcceptor): () => void {
  const key = keyOf(host, port);
  const offer = { accept, live: new Set<MemoryLinkSocket>() };
  offers.set(key, offer);
  return () => {
    if (offers.get(key) === offer) offers.delete(key);
    for (const s of offer.live) s.terminate();
    offer.live.clear();
  };
}

/** In-memory link connections live in this process (servers' ends): for tests and metrics. */
export function memoryLinks(): number {
  let n = 0;
  for (const o of offers.values()) n += o.live.size;
  return n;
}

/** The gateway's end of a new in-memory link to the server at `url`, or null when none listens there in this process. */
export function connectMemoryLink(url: string): MemoryLinkSocket | null {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return null;
  }
  // A wss:// link was configured with a certificate the gateway checks: it keeps its TLS.
  if (u.protocol !== 'ws:') return null;
  const offer = offers.get(keyOf(u.hostname, u.port ? Number(u.port) : 80));
  if (!offer) return null;
  const [gateway, server] = MemoryLinkSocket.pair();
  offer.live.add(server);
  server.once('close', () => offer.live.delete(server));
  // Accepted in a later turn, as a socket's connection would be: the caller attaches its handlers first.
  setImmediate(() => offer.accept(server));
  return gateway;
}
