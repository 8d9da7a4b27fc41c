// The gateway's side of one upstream link (server-kit/link.ts): connects to the server's link
// port, proves the link key and checks the server's proof, then carries OPEN/DATA/CLOSE for
// every device session routed there. Reconnects with backoff while the server is down; when
// the link drops, every session on it is told (onDown). A link that goes silent without
// dropping (a cut cable, a frozen server, a partition without RST) is declared dead by the
// link heartbeat (server-kit/link.ts LinkHeartbeat: a PING per silent period, dead after
// heartbeatMisses unanswered) and closed: the sessions on it get onDown, the reconnect follows.
import { equalBytes } from '@noble/ciphers/utils.js';
import { concatBytes as concat, utf8ToBytes as utf8 } from '@noble/hashes/utils.js';
import { WebSocket } from 'ws';
import { systemRng } from '../protocol/channel.ts';
import { LinkKind, LINK_MAX_PAYLOAD, linkSealer, LinkHeartbeat, type LinkSealer, heartbeatSettings, encodeLink, decodeLink, closePayload, decodeClose, clientAuthMac, serverAuthMac, linkMacKeys, toBytes, type LinkFrame, type LinkSocket } from '../server-kit/link.ts';
import { createLogger, type Logger } from '../server-kit/log.ts';
import type { Timers } from './attack-reporter.ts';
import { tickCorker } from '../server-kit/tick-cork.ts';
import { connectMemoryLink } from '../server-kit/memory-link.ts';
import type { Socket } from 'node:net';

export interface UpstreamHandlers {
  onData(connId: number, frame: Uint8Array): void;
  onClose(connId: number, code: number, reason: string): void;
  /** The link went down: every open session on it is gone. */
  onDown(): void;
  onUp?(): void;
  /** The link's send buffer drained below the high-water mark. */
  onDrain?(): void;
  /**
   * The link was closed for breaking the link protocol (LINK_BAD_MAC, LINK_AUTH_FAILED, ...)
   * or for going silent (LINK_HEARTBEAT_TIMEOUT).
   */
  onRefused?(code: string): void;
}

export interface UpstreamOptions {
  name: string;
  url: string;
  key: Uint8Array;
  reconnectMinMs: number;
  reconnectMaxMs: number;
  /** Extra ws client options (e.g. `ca` to trust a wss:// link server's certificate). */
  wsOptions?: ConstructorParameters<typeof WebSocket>[2];
  /**
   * Opens the link's connection (the deterministic simulation: its network). Default: in memory
   * to a server of this process (memory-link.ts), else a WebSocket.
   */
  connect?: (url: string) => LinkSocket;
  /** The reconnect backoff's, the heartbeat's and waitUp's clock and timers. Default: real, unref'd. */
  timers?: Timers;
  log?: Logger;
  /** The link heartbeat (server-kit/link.ts LinkHeartbeatDefaults: 2 s, 3 misses). */
  heartbeatMs?: number;
  heartbeatMisses?: number;
}

export class UpstreamLink {
  #ws: WebSocket | null = null;
  #up = false;
  #stopped = false;
  #delay: number;
  #timer: unknown = null;
  #url: string;
  /** Holds the link socket's writes until the end of the event-loop turn (tick-cork.ts). */
  #hold: (() => void) | null = null;
  /** The current connection's frame MACs, once it is authenticated. */
  #mac: LinkSealer | null = null;
  /** A connection refused for breaking the protocol: nothing more it sent is acted on. */
  #refused: WebSocket | null = null;
  readonly #hbs: { heartbeatMs: number; heartbeatMisses: number };
  readonly #log;

  constructor(private readonly opts: UpstreamOptions, private readonly h: UpstreamHandlers) {
    this.#hbs = heartbeatSettings(opts);
    this.#delay = opts.reconnectMinMs;
    this.#url = opts.url;
    this.#log = opts.log ?? createLogger(`gateway/${opts.name}`);
  }

  #later(fn: () => void, ms: number): unknown {
    if (this.opts.timers) return this.opts.timers.setTimeout(fn, ms);
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  }
  #cancel(h: unknown): void {
    if (this.opts.timers) this.opts.timers.clearTimeout(h);
    else clearTimeout(h as NodeJS.Timeout);
  }

  get name(): string {
    return this.opts.name;
  }
  get up(): boolean {
    return this.#up;
  }
  get url(): string {
    return this.#url;
  }
  get bufferedAmount(): number {
    return this.#ws?.bufferedAmount ?? 0;
  }

  start(): void {
    this.#stopped = false;
    this.#connect();
  }

  /** Points the link at a new address (a restarted server on another port) and reconnects. */
  setUrl(url: string): void {
    this.#url = url;
    this.#delay = this.opts.reconnectMinMs;
    if (this.#ws) this.#ws.terminate();
    else if (!this.#stopped) {
      if (this.#timer) this.#cancel(this.#timer);
      this.#connect();
    }
  }

  /** Resolves once the link is up (or after `timeoutMs`, false). */
  waitUp(timeoutMs = 5_000): Promise<boolean> {
    if (this.#up) return Promise.resolve(true);
    const t = this.opts.timers;
    if (t) {
      const until = t.now() + timeoutMs;
      return new Promise((resolve) => {
        const check = () => (this.#up || t.now() >= until ? resolve(this.#up) : t.setTimeout(check, 10));
        check();
      });
    }
    return new Promise((resolve) => {
      const started = Date.now();
      const tick = setInterval(() => {
        if (this.#up || Date.now() - started > timeoutMs) {
          clearInterval(tick);
          resolve(this.#up);
        }
      }, 10);
    });
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer) this.#cancel(this.#timer);
    this.#timer = null;
    this.#ws?.terminate();
    this.#ws = null;
  }

  open(connId: number, ip: string): void {
    this.#send(LinkKind.OPEN, connId, utf8(ip));
  }
  send(connId: number, frame: Uint8Array): void {
    this.#send(LinkKind.DATA, connId, frame);
  }
  close(connId: number, code: number, reason: string): void {
    this.#send(LinkKind.CLOSE, connId, closePayload(code, reason));
  }

  #send(kind: number, connId: number, payload: Uint8Array = new Uint8Array(0)): void {
    if (!this.#up || !this.#mac || !this.#ws || this.#refused === this.#ws || this.#ws.readyState !== WebSocket.OPEN) return;
    this.#hold?.();
    this.#ws.send(this.#mac.seal(kind, connId, payload));
  }

  /** Closes this link connection for breaking the protocol; the reconnect follows. */
  #refuse(ws: WebSocket, code: string, why: string): void {
    this.#log.warn('link refused', { code, url: this.#url, why });
    this.h.onRefused?.(code);
    this.#refused = ws;
    ws.terminate();
  }

  #connect(): void {
    if (this.#stopped) return;
    // A server listening in this process is linked in memory (server-kit/memory-link.ts): the
    // same link protocol and checks, without a loopback socket. Anywhere else: a WebSocket.
    const mem = this.opts.connect ? this.opts.connect(this.#url) : connectMemoryLink(this.#url);
    const ws = mem ? (mem as unknown as WebSocket) : new WebSocket(this.#url, { maxPayload: LINK_MAX_PAYLOAD, perMessageDeflate: false, handshakeTimeout: 5_000, ...this.opts.wsOptions });
    this.#ws = ws;
    let nonceS: Uint8Array | null = null;
    let nonceG: Uint8Array | null = null;
    /** This connection's heartbeat, once it is authenticated; stopped when it closes. */
    let hb: LinkHeartbeat | null = null;
    ws.binaryType = 'nodebuffer';
    // The handshake has the heartbeat's bound too: a server (or a path) that accepts the
    // connection and then says nothing would otherwise hold this link 'connecting' forever,
    // never retried. Each of its two messages (CHALLENGE, AUTH_OK) is awaited that long, the
    // first from the WebSocket's 'open' (TCP, TLS and the upgrade are bounded by ws's
    // handshakeTimeout, not by this): a slow upgrade does not count against the heartbeat.
    const silentMs = (this.#hbs.heartbeatMisses + 1) * this.#hbs.heartbeatMs;
    let handshake: unknown = null;
    const awaitHandshake = (what: string) => {
      if (handshake !== null) this.#cancel(handshake);
      handshake = this.#later(() => {
        handshake = null;
        if (this.#ws === ws && !this.#up && this.#refused !== ws) this.#refuse(ws, 'LINK_AUTH_TIMEOUT', `no ${what} from the server within ${silentMs} ms`);
      }, silentMs);
    };
    // The in-memory and simulated sockets are born open (they never emit 'open').
    if (ws.readyState === WebSocket.OPEN) awaitHandshake('CHALLENGE');
    else ws.once('open', () => awaitHandshake('CHALLENGE'));
    ws.on('message', (data, isBinary) => {
      // Messages already parsed from the same read still arrive after terminate().
      if (this.#ws !== ws || this.#refused === ws) return;
      let f: LinkFrame;
      try {
        if (!isBinary) throw new Error('text message on the link');
        f = this.#up && this.#mac ? this.#mac.open(toBytes(data)) : decodeLink(toBytes(data));
      } catch (e) {
        return this.#refuse(ws, (e as { code?: string }).code ?? 'LINK_BAD_FRAME', (e as Error).message);
      }
      if (!this.#up) {
        // connId is outside the proofs: a CHALLENGE or AUTH_OK on any connection but 0 was altered on the way.
        if (f.kind === LinkKind.CHALLENGE && f.connId === 0 && !nonceS && f.payload.length === 32) {
          nonceS = Uint8Array.from(f.payload);
          nonceG = systemRng(32);
          ws.send(encodeLink(LinkKind.AUTH, 0, concat(nonceG, clientAuthMac(this.opts.key, nonceS, nonceG, this.opts.name), utf8(this.opts.name))));
          awaitHandshake('AUTH_OK');
          return;
        }
        if (f.kind === LinkKind.AUTH_OK && f.connId === 0 && nonceS && nonceG && equalBytes(f.payload, serverAuthMac(this.opts.key, nonceS, nonceG, this.opts.name))) {
          const k = linkMacKeys(this.opts.key, nonceS, nonceG, this.opts.name);
          this.#mac = linkSealer(ws, k.toServer, k.toGateway);
          this.#up = true;
          if (handshake !== null) this.#cancel(handshake);
          handshake = null;
          this.#delay = this.opts.reconnectMinMs;
          this.#log.info('link up', { url: this.#url });
          const sock = (ws as unknown as { _socket?: Socket })._socket;
          sock?.on('drain', () => this.h.onDrain?.());
          this.#hold = sock ? tickCorker(sock) : null;
          hb = new LinkHeartbeat({
            ...this.#hbs,
            timers: { setTimeout: (fn, ms) => this.#later(fn, ms), clearTimeout: (h) => this.#cancel(h) },
            ping: () => {
              if (this.#ws === ws) this.#send(LinkKind.PING, 0);
            },
            dead: () => {
              if (this.#ws !== ws || this.#refused === ws) return;
              this.#refuse(ws, 'LINK_HEARTBEAT_TIMEOUT', `nothing heard for ${this.#hbs.heartbeatMisses + 1} heartbeat periods of ${this.#hbs.heartbeatMs} ms`);
            },
          });
          hb.start();
          this.h.onUp?.();
          return;
        }
        return this.#refuse(ws, 'LINK_AUTH_FAILED', 'the server did not prove the link key');
      }
      hb?.heard();
      if (f.kind === LinkKind.DATA) return this.h.onData(f.connId, f.payload);
      if (f.kind === LinkKind.PING || f.kind === LinkKind.PONG) {
        // Control frames belong to the link, not to a session: connId 0, nothing else in them.
        if (f.connId !== 0 || f.payload.length !== 0) return this.#refuse(ws, 'LINK_BAD_FRAME', `heartbeat frame on connection ${f.connId} or with a payload`);
        if (f.kind === LinkKind.PING) this.#send(LinkKind.PONG, 0);
        return;
      }
      if (f.kind === LinkKind.CLOSE) {
        let c;
        try {
          c = decodeClose(f.payload);
        } catch (e) {
          // Authenticated but malformed: the server is broken, not the path.
          return this.#refuse(ws, 'LINK_BAD_FRAME', (e as Error).message);
        }
        return this.h.onClose(f.connId, c.code, c.reason);
      }
      return this.#refuse(ws, 'LINK_BAD_FRAME', `unexpected link frame kind ${f.kind}`);
    });
    ws.on('close', () => {
      const wasUp = this.#up;
      this.#up = false;
      if (this.#ws === ws) {
        this.#ws = null;
        this.#hold = null;
        this.#mac = null;
      }
      hb?.stop();
      if (handshake !== null) this.#cancel(handshake);
      handshake = null;
      if (wasUp) {
        if (!this.#stopped) this.#log.warn('link down', { url: this.#url });
        this.h.onDown();
      }
      if (this.#stopped) return;
      this.#timer = this.#later(() => this.#connect(), this.#delay);
      this.#delay = Math.min(this.opts.reconnectMaxMs, this.#delay * 2);
    });
    ws.on('error', () => {
      // 'close' follows and schedules the reconnect.
    });
  }
}
