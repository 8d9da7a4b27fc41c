// The gateway <-> server link (docs/architecture.md §"Link protocol"): one WebSocket per
// upstream server, opened by the gateway, authenticated both ways by an HMAC
// challenge-response on the link key, then multiplexing every device session routed to that
// server. A server believes an observed client IP only when it arrives in an OPEN on an
// authenticated link; a device never gets to state its own address.
//
// Every link message is one binary WebSocket message: kind (1 byte) | connId (u32 BE) | payload.
//   CHALLENGE  server -> gw   connId 0, payload nonceS (32)
//   AUTH       gw -> server   connId 0, payload nonceG (32) | mac (32) | upstream name (UTF-8)
//   AUTH_OK    server -> gw   connId 0, payload mac (32)
//   OPEN       gw -> server   payload observed client IP (UTF-8)
//   DATA       both           payload one device frame, passed through untouched
//   CLOSE      both           payload close code (u16 BE) | reason (UTF-8)
//   PING       both           connId 0, empty payload: "I heard nothing from you for a period"
//   PONG       both           connId 0, empty payload: the answer to a PING
// After AUTH_OK every message also ends in a 16-byte tag: HMAC-SHA256 under a per-connection,
// per-direction key derived from the link key and both nonces, over the direction's sequence
// number and the message (LinkMac). The challenge alone proved who opened the link; the tags
// keep anyone on the path without the key from rewriting an observed IP, injecting a CLOSE or
// dropping a frame afterwards (LINK_BAD_MAC, the link closes 1008).
//
// Heartbeat (LinkHeartbeat): a link that goes silent without a close (a cut cable, a frozen
// peer, a partition that sends no RST) would otherwise be noticed only when the sessions on it
// time out. Each end, once authenticated, checks every heartbeatMs whether it heard anything
// (any tagged message) since the last check; if not it sends a PING, which the other end
// answers with a PONG. After heartbeatMisses PINGs in a row unanswered for a period each, the
// link is declared dead (LINK_HEARTBEAT_TIMEOUT) and closed at once (terminate: a silent peer
// would not finish a close handshake). PING and PONG are link messages like the others: tagged
// after AUTH_OK (an untagged or forged one fails LINK_BAD_MAC) and on connId 0 only.
//
// In one process (server-kit/memory-link.ts: `serve all`, fleets) the messages after AUTH_OK
// carry no tag (LinkPlain, decision 142): the challenge-response still proves both ends hold
// the link key, but nothing outside the process can read, drop or alter a message between two
// ends of an in-memory pair, and code inside it already holds the keys the tags would use.
// `isInProcess` decides: true only for an end of a MemoryLinkSocket pair, and both ends of a
// pair are one, so the two ends always agree. Every other transport (a socket, the
// deterministic simulation's network) is tagged.
import { createHmac, createSecretKey, timingSafeEqual, type KeyObject } from 'node:crypto';
import { equalBytes } from '@noble/ciphers/utils.js';
import { utf8ToBytes as utf8 } from '@noble/hashes/utils.js';
import type { WebSocket, WebSocketServer, RawData } from 'ws';
import { mac, kdf } from '../protocol/keys.ts';
import { systemRng } from '../protocol/channel.ts';
import { Limits } from '../protocol/limits.ts';
import { ProtocolError, CloseCode } from '../protocol/errors.ts';
import type { SessionFactory, SessionHandler, SessionTimers, SessionTransport } from './session.ts';
import { createLogger, type Logger } from './log.ts';
import { tickCorker } from './tick-cork.ts';
import { MemoryLinkSocket } from './memory-link.ts';

export const LinkKind = { OPEN: 0x01, DATA: 0x02, CLOSE: 0x03, PING: 0x04, PONG: 0x05, CHALLENGE: 0x10, AUTH: 0x11, AUTH_OK: 0x12 } as const;
const LINK_KINDS: ReadonlySet<number> = new Set(Object.values(LinkKind));

/**
 * The heartbeat's defaults (docs/architecture.md §"Link protocol"): a silent peer is declared
 * dead between (misses + 1) and (misses + 2) periods after the last message heard from it,
 * 8-10 s; a peer may answer up to misses periods (6 s) late without losing the link.
 */
export const LinkHeartbeatDefaults = { heartbeatMs: 2_000, heartbeatMisses: 3 } as const;

export interface LinkHeartbeatOptions {
  /** Period: a PING when nothing was heard for this long. */
  heartbeatMs?: number;
  /** Unanswered PINGs in a row after which the link is dead. */
  heartbeatMisses?: number;
}

/** heartbeatMs and heartbeatMisses with their defaults, checked (a RangeError names the bad one). */
export function heartbeatSettings(o: LinkHeartbeatOptions): { heartbeatMs: number; heartbeatMisses: number } {
  const heartbeatMs = o.heartbeatMs ?? LinkHeartbeatDefaults.heartbeatMs;
  const heartbeatMisses = o.heartbeatMisses ?? LinkHeartbeatDefaults.heartbeatMisses;
  if (!Number.isInteger(heartbeatMs) || heartbeatMs < 10 || heartbeatMs > 3_600_000) throw new RangeError('heartbeatMs must be an integer of ms in 10..3600000');
  if (!Number.isInteger(heartbeatMisses) || heartbeatMisses < 1 || heartbeatMisses > 100) throw new RangeError('heartbeatMisses must be an integer in 1..100');
  return { heartbeatMs, heartbeatMisses };
}

/**
 * One end's heartbeat on one authenticated link connection. heard() on every message that
 * verified; every period without one sends a PING (ping()); the (misses + 1)th period in a row
 * without one calls dead() once and stops. A period in which something was heard sends nothing:
 * a busy link carries no heartbeat. Runs on the link's injectable timers (the deterministic
 * simulation's virtual clock), one timer at a time.
 */
export class LinkHeartbeat {
  #heard = false;
  #silent = 0;
  #timer: unknown = null;
  #stopped = false;

  constructor(private readonly o: { heartbeatMs: number; heartbeatMisses: number; timers: SessionTimers; ping(): void; dead(): void }) {}

  start(): void {
    this.#arm();
  }
  heard(): void {
    this.#heard = true;
  }
  stop(): void {
    this.#stopped = true;
    if (this.#timer !== null) this.o.timers.clearTimeout(this.#timer);
    this.#timer = null;
  }

  #arm(): void {
    this.#timer = this.o.timers.setTimeout(() => this.#tick(), this.o.heartbeatMs);
  }
  #tick(): void {
    this.#timer = null;
    if (this.#stopped) return;
    if (this.#heard) {
      this.#heard = false;
      this.#silent = 0;
    } else if (++this.#silent > this.o.heartbeatMisses) {
      // The first silent period sent a PING; each one after it is one PING unanswered.
      this.#stopped = true;
      return this.o.dead();
    } else this.o.ping();
    this.#arm();
  }
}
export const LINK_HEADER = 5;
/** Largest link message: a device frame of the largest size plus the header, tag and slack. */
export const LINK_MAX_PAYLOAD = Limits.maxFrameBytes + 1024;
/** Bytes of the truncated HMAC-SHA256 that ends every link message after AUTH_OK. */
export const LINK_TAG = 16;
const NONCE = 32;
const td = new TextDecoder('utf-8', { fatal: true });

/** RFC 6455 §5.5: a close frame's body is at most 125 bytes, 2 of them the code. */
export const MAX_CLOSE_REASON_BYTES = 123;

/**
 * A close reason that fits a WebSocket close frame: at most 123 UTF-8 bytes, cut at a code
 * point boundary (ws throws on a longer one, and the throw left the socket open).
 */
export function closeReason(reason: string): string {
  const b = utf8(reason);
  if (b.length <= MAX_CLOSE_REASON_BYTES) return reason;
  let end = MAX_CLOSE_REASON_BYTES;
  // Back up over continuation bytes (10xxxxxx) to the start of the cut code point.
  while (end > 0 && (b[end]! & 0xc0) === 0x80) end--;
  return td.decode(b.subarray(0, end));
}

/** The two directions' MAC keys of one authenticated link connection. */
export function linkMacKeys(key: Uint8Array, nonceS: Uint8Array, nonceG: Uint8Array, name: string): { toServer: Uint8Array; toGateway: Uint8Array } {
  const ctx = concatBytes(nonceS, nonceG, utf8(name));
  return { toServer: kdf(key, 'usbphone/v1 link mac gateway->server', ctx), toGateway: kdf(key, 'usbphone/v1 link mac server->gateway', ctx) };
}

function concatBytes(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * The MACs of one link connection after AUTH_OK: seal() appends the tag of the next outgoing
 * message, open() checks and strips the tag of the next incoming one. The sequence numbers are
 * implicit (each side counts): the link is one ordered TCP stream, so any drop, repeat,
 * reorder or insertion shows as a tag that does not verify.
 */
export class LinkMac implements LinkSealer {
  #sendSeq = 0n;
  #recvSeq = 0n;
  readonly #seqBuf = new DataView(new ArrayBuffer(8));
  // Imported once per connection: createHmac with a KeyObject skips importing the raw key on
  // every message (a quarter of a tag's cost; issue 15).
  readonly sendKey: KeyObject;
  readonly recvKey: KeyObject;

  constructor(sendKey: Uint8Array, recvKey: Uint8Array) {
    this.sendKey = createSecretKey(sendKey);
    this.recvKey = createSecretKey(recvKey);
  }

  #tag(key: KeyObject, seq: bigint, msg: Uint8Array): Uint8Array {
    this.#seqBuf.setBigUint64(0, seq);
    const h = createHmac('sha256', key);
    h.update(new Uint8Array(this.#seqBuf.buffer));
    h.update(msg);
    return h.digest().subarray(0, LINK_TAG);
  }

  /** One link message with its tag (the message is built here to avoid a copy). */
  seal(kind: number, connId: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
    const n = LINK_HEADER + payload.length;
    const out = new Uint8Array(n + LINK_TAG);
    out[0] = kind;
    new DataView(out.buffer).setUint32(1, connId >>> 0);
    out.set(payload, LINK_HEADER);
    out.set(this.#tag(this.sendKey, this.#sendSeq++, out.subarray(0, n)), n);
    return out;
  }

  /** The message without its tag; LINK_BAD_MAC when the tag is not the next one expected. */
  open(data: Uint8Array): LinkFrame {
    if (data.length < LINK_HEADER + LINK_TAG) throw new ProtocolError('LINK_BAD_MAC', 'link frame shorter than its header and tag');
    const n = data.length - LINK_TAG;
    const want = this.#tag(this.recvKey, this.#recvSeq, data.subarray(0, n));
    const got = data.subarray(n);
    if (!timingSafeEqual(want, got)) throw new ProtocolError('LINK_BAD_MAC', 'link frame tag does not verify (altered, injected, dropped or reordered)');
    this.#recvSeq++;
    return decodeLink(data.subarray(0, n));
  }
}

export interface LinkFrame { kind: number; connId: number; payload: Uint8Array }

/** What a link end does to each message after AUTH_OK: LinkMac (tagged) or LinkPlain (in one process). */
export interface LinkSealer {
  /** One link message, ready to send. */
  seal(kind: number, connId: number, payload?: Uint8Array): Uint8Array;
  /** The message received; LINK_BAD_MAC or LINK_BAD_FRAME when it is not one. */
  open(data: Uint8Array): LinkFrame;
}

/** The messages of an in-process link after AUTH_OK: no tag (decision 142); still checked as link frames. */
export class LinkPlain implements LinkSealer {
  seal(kind: number, connId: number, payload?: Uint8Array): Uint8Array {
    return encodeLink(kind, connId, payload);
  }

  open(data: Uint8Array): LinkFrame {
    return decodeLink(data);
  }
}

/** Both ends of `ws` are in this process: an end of a MemoryLinkSocket pair (a class test, not a property anyone could set). */
export function isInProcess(ws: unknown): boolean {
  return ws instanceof MemoryLinkSocket;
}

/** The sealer of an authenticated link on `ws`: tags under `send`/`recv` unless the link is in this process. */
export function linkSealer(ws: unknown, send: Uint8Array, recv: Uint8Array): LinkSealer {
  return isInProcess(ws) ? new LinkPlain() : new LinkMac(send, recv);
}

export function encodeLink(kind: number, connId: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(LINK_HEADER + payload.length);
  out[0] = kind;
  new DataView(out.buffer).setUint32(1, connId >>> 0);
  out.set(payload, LINK_HEADER);
  return out;
}

export function decodeLink(data: Uint8Array): LinkFrame {
  if (data.length < LINK_HEADER) throw new ProtocolError('LINK_BAD_FRAME', 'link frame shorter than its header');
  const kind = data[0]!;
  if (!LINK_KINDS.has(kind)) throw new ProtocolError('LINK_BAD_FRAME', `unknown link frame kind ${kind}`);
  return { kind, connId: new DataView(data.buffer, data.byteOffset, data.byteLength).getUint32(1), payload: data.subarray(LINK_HEADER) };
}

/** A CLOSE payload: code | reason cut to what a WebSocket close frame can carry. */
export function closePayload(code: number, reason: string): Uint8Array {
  const r = utf8(closeReason(reason));
  const p = new Uint8Array(2 + r.length);
  new DataView(p.buffer).setUint16(0, code);
  p.set(r, 2);
  return p;
}

export function encodeClose(connId: number, code: number, reason: string): Uint8Array {
  return encodeLink(LinkKind.CLOSE, connId, closePayload(code, reason));
}

export function decodeClose(payload: Uint8Array): { code: number; reason: string } {
  if (payload.length < 2) throw new ProtocolError('LINK_BAD_FRAME', 'CLOSE without a code');
  let reason = '';
  try {
    reason = td.decode(payload.subarray(2));
  } catch {
    throw new ProtocolError('LINK_BAD_FRAME', 'CLOSE reason is not UTF-8');
  }
  return { code: new DataView(payload.buffer, payload.byteOffset).getUint16(0), reason };
}

export function decodeText(payload: Uint8Array, what: string): string {
  try {
    return td.decode(payload);
  } catch {
    throw new ProtocolError('LINK_BAD_FRAME', `${what} is not UTF-8`);
  }
}

/** The link key of one upstream, derived from a deployment's root link key (embedded default). */
export function linkKeyFor(root: Uint8Array, name: string): Uint8Array {
  return kdf(root, 'usbphone/v1 link', utf8(name));
}

export function clientAuthMac(key: Uint8Array, nonceS: Uint8Array, nonceG: Uint8Array, name: string): Uint8Array {
  return mac(key, utf8('usbphone/v1 link gateway'), nonceS, nonceG, utf8(name));
}
export function serverAuthMac(key: Uint8Array, nonceS: Uint8Array, nonceG: Uint8Array, name: string): Uint8Array {
  return mac(key, utf8('usbphone/v1 link server'), nonceS, nonceG, utf8(name));
}

export function toBytes(data: RawData): Uint8Array {
  if (Array.isArray(data)) return new Uint8Array(Buffer.concat(data));
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

export interface LinkServerOptions {
  /** This server's upstream name (the dest devices use): part of the authenticated challenge. */
  name: string;
  key: Uint8Array;
  authTimeoutMs?: number;
  /** Most device sessions one link may carry at once. */
  maxSessions?: number;
  /** Told the code of every link refused (for a metric). */
  onRefused?(code: string): void;
  /** The auth deadline's, the refused link's and the heartbeat's timers (the deterministic simulation: virtual). Default: real, unref'd. */
  timers?: SessionTimers;
  log?: Logger;
  /** The link heartbeat (LinkHeartbeatDefaults). */
  heartbeatMs?: number;
  heartbeatMisses?: number;
}

/**
 * The part of ws's WebSocket the link's two ends use: a socket, an in-memory pair
 * (memory-link.ts) or a connection of the deterministic simulation's network (sim/dsim-gateway.ts).
 */
export interface LinkSocket {
  readonly readyState: number;
  readonly OPEN: number;
  readonly bufferedAmount: number;
  binaryType: string;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  terminate(): void;
  on(ev: 'message', fn: (data: Buffer, isBinary: boolean) => void): unknown;
  on(ev: 'close', fn: (code: number, reason: Buffer) => void): unknown;
  on(ev: 'error', fn: (e: Error) => void): unknown;
}

/**
 * Server side of the link: accepts gateway connections on `wss`, authenticates them, and runs
 * one session per OPEN through `factory`. Returns a function counting live sessions.
 */
export function attachLinkServer(wss: WebSocketServer | null, opts: LinkServerOptions, factory: SessionFactory): { sessions(): number; accept(ws: WebSocket | LinkSocket, peer: string): void } {
  const log = opts.log ?? createLogger(`${opts.name}/link`);
  const timers: SessionTimers = opts.timers ?? { setTimeout: (fn, ms) => setTimeout(fn, ms).unref(), clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout) };
  const authTimeoutMs = opts.authTimeoutMs ?? 5_000;
  const hbs = heartbeatSettings(opts);
  const maxSessions = opts.maxSessions ?? 100_000;
  let live = 0;

  // Without a server (wss null): connections come only through accept().
  wss?.on('connection', (ws: WebSocket, req) => accept(ws, req.socket.remoteAddress ?? '', tickCorker(req.socket)));

  /** One gateway connection, over a socket or in memory (server-kit/memory-link.ts): the same protocol. */
  function accept(ws: WebSocket, peer: string, hold: () => void = () => {}): void {
    const nonceS = systemRng(NONCE);
    let lmac: LinkSealer | null = null;
    let hb: LinkHeartbeat | null = null;
    const sessions = new Map<number, SessionHandler>();
    let refused = false;
    const refuse = (code: string, why: string) => {
      if (refused) return;
      refused = true;
      log.warn('link refused', { code, peer, why });
      opts.onRefused?.(code);
      ws.close(CloseCode.policy, code);
      // Nothing more is read from a link that broke its rules; don't wait 30 s for its close.
      (timers.setTimeout(() => ws.terminate(), 1_000) as { unref?(): void }).unref?.();
    };
    const timer = timers.setTimeout(() => refuse('LINK_AUTH_TIMEOUT', 'no AUTH in time'), authTimeoutMs);
    ws.send(encodeLink(LinkKind.CHALLENGE, 0, nonceS));
    const send = (kind: number, connId: number, payload?: Uint8Array) => {
      if (!lmac || refused || ws.readyState !== ws.OPEN) return;
      hold();
      ws.send(lmac.seal(kind, connId, payload));
    };

    ws.on('message', (data, isBinary) => {
      if (refused) return;
      let f: LinkFrame;
      try {
        if (!isBinary) throw new ProtocolError('LINK_BAD_FRAME', 'text message on the link');
        f = lmac ? lmac.open(toBytes(data)) : decodeLink(toBytes(data));
      } catch (e) {
        return refuse((e as ProtocolError).code ?? 'LINK_BAD_FRAME', (e as Error).message);
      }
      if (!lmac) {
        // connId is outside the MAC: an AUTH on any other connection than 0 was altered on the way.
        if (f.kind !== LinkKind.AUTH || f.connId !== 0 || f.payload.length < 2 * NONCE + 1) return refuse('LINK_AUTH_FAILED', 'first frame is not AUTH on connection 0');
        const nonceG = f.payload.subarray(0, NONCE);
        const got = f.payload.subarray(NONCE, 2 * NONCE);
        let name = '';
        try {
          name = td.decode(f.payload.subarray(2 * NONCE));
        } catch {
          return refuse('LINK_AUTH_FAILED', 'name is not UTF-8');
        }
        if (name !== opts.name || !equalBytes(clientAuthMac(opts.key, nonceS, nonceG, name), got)) return refuse('LINK_AUTH_FAILED', 'bad link MAC or name');
        timers.clearTimeout(timer);
        ws.send(encodeLink(LinkKind.AUTH_OK, 0, serverAuthMac(opts.key, nonceS, nonceG, name)));
        const k = linkMacKeys(opts.key, nonceS, nonceG, name);
        lmac = linkSealer(ws, k.toGateway, k.toServer);
        hb = new LinkHeartbeat({
          ...hbs, timers,
          ping: () => send(LinkKind.PING, 0),
          dead: () => {
            // Not refuse(): a silent gateway would not answer a close handshake; the sessions end now.
            if (refused) return;
            refused = true;
            log.warn('link dead', { code: 'LINK_HEARTBEAT_TIMEOUT', peer, silentMs: (hbs.heartbeatMisses + 1) * hbs.heartbeatMs });
            opts.onRefused?.('LINK_HEARTBEAT_TIMEOUT');
            ws.terminate();
          },
        });
        hb.start();
        log.info('link up', { peer });
        return;
      }
      hb?.heard();
      switch (f.kind) {
        case LinkKind.PING:
        case LinkKind.PONG: {
          // Control frames belong to the link, not to a session: connId 0, nothing else in them.
          if (f.connId !== 0 || f.payload.length !== 0) return refuse('LINK_BAD_FRAME', `${f.kind === LinkKind.PING ? 'PING' : 'PONG'} on connection ${f.connId} or with a payload`);
          if (f.kind === LinkKind.PING) send(LinkKind.PONG, 0);
          return;
        }
        case LinkKind.OPEN: {
          if (sessions.has(f.connId)) return refuse('LINK_BAD_FRAME', `OPEN of a live connection ${f.connId}`);
          let ip: string;
          try {
            ip = decodeText(f.payload, 'observed IP');
          } catch (e) {
            return refuse('LINK_BAD_FRAME', (e as Error).message);
          }
          const connId = f.connId;
          if (live >= maxSessions) {
            send(LinkKind.CLOSE, connId, closePayload(CloseCode.tryAgainLater, 'SRV_BUSY'));
            return;
          }
          let open = true;
          const transport: SessionTransport = {
            observedIp: ip,
            via: 'gateway',
            send(frame) {
              if (!open) return;
              send(LinkKind.DATA, connId, frame);
            },
            close(code, reason) {
              if (!open) return;
              open = false;
              if (sessions.delete(connId)) live--;
              send(LinkKind.CLOSE, connId, closePayload(code, reason));
            },
            bufferedAmount: () => ws.bufferedAmount,
          };
          live++;
          const handler = factory(transport);
          sessions.set(connId, {
            onFrame: (fr) => handler.onFrame(fr),
            onClose: () => {
              open = false;
              handler.onClose();
            },
          });
          return;
        }
        case LinkKind.DATA: {
          // A DATA for a connection we already closed crossed our CLOSE on the wire: drop it.
          sessions.get(f.connId)?.onFrame(Uint8Array.from(f.payload));
          return;
        }
        case LinkKind.CLOSE: {
          const s = sessions.get(f.connId);
          if (s) {
            sessions.delete(f.connId);
            live--;
            s.onClose();
          }
          return;
        }
        default:
          return refuse('LINK_BAD_FRAME', `unexpected link frame kind ${f.kind}`);
      }
    });
    ws.on('close', () => {
      timers.clearTimeout(timer);
      hb?.stop();
      for (const s of sessions.values()) s.onClose();
      live -= sessions.size;
      sessions.clear();
      if (lmac) log.info('link down', { peer });
    });
    ws.on('error', () => {});
  }
  return { sessions: () => live, accept: (ws, peer) => accept(ws as WebSocket, peer) };
}
