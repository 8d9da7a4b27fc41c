// The authenticated admin API between servers (docs/architecture.md §"Admin API"): the
// registration server and enrollment call the business servers (the operations and their
// messages: admin-messages.ts). Each call is one HTTP POST whose body is a sealed box
// (protocol/sealed-box.ts) under a key derived from the admin key, so it is authenticated and
// confidential without relying on TLS (the install carries a login key). A request carries a
// timestamp and a random id: stale or repeated requests are refused (ADMIN_STALE,
// ADMIN_REPLAY). The response is sealed too and bound to the request id.
//
// Every business server holds the same admin key and keeps its own replay cache, so a request
// is bound to the server it is for: the target's name is in the associated data, and a
// request recorded on its way to biz-east does not authenticate at biz-west (ADMIN_BAD_AUTH).
// The operation travels inside the authenticated plaintext, so it is bound too.
//
//   request  = box(kReq, aad "usbphone/v1 admin request|" target,  cbor [ts, id, op, args])
//   response = box(kRes, aad "usbphone/v1 admin response|" target "|" id, cbor [true, result] | [false, code, message])
import { concatBytes, utf8ToBytes } from '@noble/hashes/utils.js';
import { createServer, Agent as HttpAgent, type IncomingMessage, type ServerResponse, type Server } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { boundedPost, BoundedPostError } from './bounded-post.ts';
import { sealBox, openBox } from '../protocol/sealed-box.ts';
import { kdf } from '../protocol/keys.ts';
import { encode, decode, type CborValue } from '../protocol/cbor.ts';
import { systemRng } from '../protocol/channel.ts';
import type { SharedReplay } from './shared-replay.ts';
import { ReplayCache } from '../protocol/replay.ts';
import { ProtocolError, ImplementationError, TimeoutError } from '../protocol/errors.ts';
import { Limits, type CborLimits } from '../protocol/limits.ts';
import { createLogger } from './log.ts';

export const ADMIN_MAX_BODY = 16 * 1024;
/**
 * The bounds of one admin body by default: the device frame limits (maxFrameBytes is the HTTP
 * body). An endpoint whose operations carry more (the policy server's attack reports and
 * tables, server-kit/admin-messages.ts POLICY_ADMIN_LIMITS) passes its own to both ends.
 */
export const ADMIN_LIMITS: CborLimits = { ...Limits, maxFrameBytes: ADMIN_MAX_BODY };
/** Idle keep-alive sockets close after this, below node's server keepAliveTimeout (5 s). */
export const ADMIN_IDLE_SOCKET_MS = 4_000;
/** Server names the admin API binds requests to: the names of the topology (biz-east). */
export const ADMIN_TARGET_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const requestAad = (target: string) => utf8ToBytes(`usbphone/v1 admin request|${target}`);
const responseAad = (target: string, id: Uint8Array) => concatBytes(utf8ToBytes(`usbphone/v1 admin response|${target}|`), id);
function checkTarget(target: string): string {
  if (typeof target !== 'string' || !ADMIN_TARGET_RE.test(target)) throw new ImplementationError('ADMIN_BAD_TARGET', `admin target '${String(target).slice(0, 64)}' is not a server name`);
  return target;
}

export class AdminError extends Error {
  override readonly name = 'AdminError';
  constructor(readonly code: string, message: string) {
    super(`${code}: ${message}`);
  }
}

function keys(adminKey: Uint8Array) {
  return { req: kdf(adminKey, 'usbphone/v1 admin', 'request'), res: kdf(adminKey, 'usbphone/v1 admin', 'response') };
}

function seal(key: Uint8Array, aad: Uint8Array, value: CborValue): Uint8Array {
  return sealBox(key, encode(value), aad, systemRng);
}
function open(key: Uint8Array, aad: Uint8Array, body: Uint8Array, limits: CborLimits): CborValue {
  const pt = openBox(key, body, aad);
  if (!pt) throw new ProtocolError('ADMIN_BAD_AUTH', 'request does not authenticate');
  return decode(pt, limits);
}

/** An integer argument: CBOR integers above 2^32 decode as bigint (protocol/cbor.ts). */
export function safeInt(v: unknown): number | null {
  if (typeof v === 'bigint') v = v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(v) : NaN;
  return typeof v === 'number' && Number.isSafeInteger(v) ? v : null;
}

/** How far a request's timestamp may be from this server's clock, by default (ADMIN_STALE beyond). */
export const ADMIN_MAX_SKEW_MS = 60_000;

export type AdminOp = (args: CborValue) => CborValue | Promise<CborValue>;

export interface AdminServerOptions {
  key: Uint8Array;
  ops: Record<string, AdminOp>;
  /** This server's name: requests must name it as their target (ADMIN_TARGET_RE). */
  name: string;
  maxSkewMs?: number;
  /**
   * The replay cache shared with the other instances of this name (server-kit/shared-replay.ts,
   * Redis; fails open to this process's cache): a request one instance ran is ADMIN_REPLAY at
   * every other, and at this one after a restart. Its ttl must cover 2 x maxSkewMs.
   */
  shared?: SharedReplay;
  now?: () => number;
  /** Body and CBOR bounds of requests (default ADMIN_LIMITS). */
  limits?: CborLimits;
}

/** An HTTP request listener serving POST /admin. */
export function adminListener(opts: AdminServerOptions): (req: IncomingMessage, res: ServerResponse) => void {
  const k = keys(opts.key);
  const target = checkTarget(opts.name);
  const aadReq = requestAad(target);
  const now = opts.now ?? Date.now;
  const skew = opts.maxSkewMs ?? ADMIN_MAX_SKEW_MS;
  const seen = new ReplayCache(100_000, 2 * skew, now);
  const log = createLogger(`${opts.name}/admin`);
  const limits = opts.limits ?? ADMIN_LIMITS;
  const maxBody = limits.maxFrameBytes;
  return (req, res) => {
    const reply = (status: number, body?: Uint8Array) => {
      res.writeHead(status, { 'content-type': 'application/octet-stream', ...(body ? { 'content-length': body.length } : {}) });
      res.end(body);
    };
    if (req.method !== 'POST' || req.url !== '/admin') return reply(404);
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > maxBody) {
        log.warn('admin request refused', { code: 'ADMIN_TOO_LARGE' });
        reply(413);
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', async () => {
      if (size > maxBody) return;
      let id: Uint8Array | null = null;
      try {
        const v = open(k.req, aadReq, new Uint8Array(Buffer.concat(chunks)), limits);
        if (!Array.isArray(v) || v.length !== 4 || safeInt(v[0]) === null || !(v[1] instanceof Uint8Array) || v[1].length !== 16 || typeof v[2] !== 'string') {
          throw new ProtocolError('ADMIN_BAD_REQUEST', 'request must be [ts, id(16), op, args]');
        }
        const [, rid, op, args] = v as [unknown, Uint8Array, string, CborValue];
        const ts = safeInt(v[0])!;
        id = rid;
        if (Math.abs(now() - ts) > skew) throw new ProtocolError('ADMIN_STALE', 'request timestamp outside the window');
        if (!seen.check(rid)) throw new ProtocolError('ADMIN_REPLAY', 'request id already seen');
        if (opts.shared && !(await opts.shared.claim(rid))) throw new ProtocolError('ADMIN_REPLAY', 'request id already seen (by another instance)');
        const fn = Object.hasOwn(opts.ops, op) ? opts.ops[op] : undefined;
        if (!fn) throw new ProtocolError('ADMIN_UNKNOWN_OP', `no admin operation '${op.slice(0, 32)}'`);
        let result: CborValue;
        try {
          result = await fn(args);
        } catch (e) {
          const code = (e as { code?: string }).code ?? 'ADMIN_INTERNAL';
          if (!(e instanceof ProtocolError || e instanceof AdminError)) log.error('admin op failed', { op, code, err: (e as Error).stack ?? String(e) });
          return reply(200, seal(k.res, responseAad(target, rid), [false, code, e instanceof ProtocolError || e instanceof AdminError ? e.message : 'internal error']));
        }
        reply(200, seal(k.res, responseAad(target, rid), [true, result]));
      } catch (e) {
        const code = (e as { code?: string }).code ?? 'ADMIN_BAD_REQUEST';
        log.warn('admin request refused', { code });
        // Unauthenticated callers learn nothing but the status; authenticated ones get the code.
        if (id && code !== 'ADMIN_BAD_AUTH') return reply(200, seal(k.res, responseAad(target, id), [false, code, (e as Error).message]));
        reply(code === 'ADMIN_BAD_AUTH' ? 401 : 400);
      }
    });
  };
}

export function createAdminServer(opts: AdminServerOptions): Server {
  return createServer(adminListener(opts));
}

/**
 * Client of one admin endpoint. One keep-alive connection pool per endpoint over plain
 * node:http: a registration makes one call per login, and fetch (undici) costs several
 * times more CPU per call than http.request on a reused socket. Idle sockets are closed
 * before the server's keep-alive timeout (node's default 5 s) so a call rarely lands on
 * a socket the server is closing; if one does, it fails as ADMIN_UNREACHABLE, which the
 * caller retries (reg-server/rotation.ts: same rotation id, so the retry is idempotent).
 */
export interface AdminClientOptions {
  /** The name of the server at `url` (biz-east): requests are bound to it. */
  target: string;
  /** Its admin endpoint, http(s)://host:port/admin. */
  url: string;
  /** The admin key (32 bytes). */
  key: Uint8Array;
  /** Deadline of one call, ms (default 3000). */
  timeoutMs?: number;
  /** Body and CBOR bounds of responses (default ADMIN_LIMITS): the server's own. */
  limits?: CborLimits;
}

export class AdminClient {
  readonly #k: ReturnType<typeof keys>;
  readonly #url: URL;
  readonly #tls: boolean;
  readonly #agent: HttpAgent;
  readonly #aadReq: Uint8Array;
  readonly target: string;
  readonly url: string;
  private readonly timeoutMs: number;
  readonly #limits: CborLimits;
  constructor(opts: AdminClientOptions) {
    this.#limits = opts.limits ?? ADMIN_LIMITS;
    this.target = checkTarget(opts.target);
    this.url = opts.url;
    this.timeoutMs = opts.timeoutMs ?? 3_000;
    this.#k = keys(opts.key);
    this.#aadReq = requestAad(this.target);
    this.#url = new URL(opts.url);
    this.#tls = this.#url.protocol === 'https:';
    const agentOpts = { keepAlive: true, timeout: ADMIN_IDLE_SOCKET_MS, scheduling: 'lifo' as const };
    this.#agent = this.#tls ? new HttpsAgent(agentOpts) : new HttpAgent(agentOpts);
  }

  /**
   * Calls `op`. Throws AdminError with the server's code when it refused, or ADMIN_UNREACHABLE
   * / TimeoutError when no answer came (the call may or may not have taken effect).
   */
  async call(op: string, args: CborValue): Promise<CborValue> {
    const id = systemRng(16);
    const body = seal(this.#k.req, this.#aadReq, [Date.now(), id, op, args]);
    const { status, buf } = await this.#post(op, body);
    if (status !== 200) throw new AdminError(status === 401 ? 'ADMIN_BAD_AUTH' : 'ADMIN_HTTP', `admin ${op}: HTTP ${status}`);
    let v: CborValue;
    try {
      v = open(this.#k.res, responseAad(this.target, id), buf, this.#limits);
    } catch {
      throw new AdminError('ADMIN_BAD_RESPONSE', `admin ${op}: response does not authenticate`);
    }
    if (!Array.isArray(v) || typeof v[0] !== 'boolean') throw new AdminError('ADMIN_BAD_RESPONSE', `admin ${op}: malformed response`);
    if (v[0]) return v[1] as CborValue;
    throw new AdminError(String(v[1]), String(v[2]));
  }

  /** Closes the idle connections (a call after this opens a new one). */
  close(): void {
    this.#agent.destroy();
  }

  /** One POST; the deadline covers connecting, the answer and its body (server-kit/bounded-post.ts). */
  async #post(op: string, body: Uint8Array): Promise<{ status: number; buf: Uint8Array }> {
    try {
      const r = await boundedPost({ url: this.#url, agent: this.#agent, headers: { 'content-type': 'application/octet-stream' }, body, timeoutMs: this.timeoutMs, maxBytes: this.#limits.maxFrameBytes });
      return { status: r.status, buf: r.body };
    } catch (e) {
      if (!(e instanceof BoundedPostError)) throw e;
      if (e.kind === 'timeout') throw new TimeoutError(`admin ${op} at ${this.url}`);
      // A sealed answer is never larger than a request may be.
      if (e.kind === 'too-large') throw new AdminError('ADMIN_BAD_RESPONSE', `admin ${op}: response larger than ${this.#limits.maxFrameBytes} bytes`);
      throw new AdminError('ADMIN_UNREACHABLE', `admin ${op} at ${this.url}: ${e.message}`);
    }
  }
}
