// The authenticated admin API between servers (docs/architecture.md §"Admin API"): the
// registration server and enrollment call the business servers (the operations and their
// messages: admin-messages.ts). Each call is one HTTP POST whose body is a sealed box
// (protocol/sealed-box.ts) under a key derived from the admin key, so it is authenticated and
// confidential without relying on TLS (the install carries a login key). A request carries a
// timestamp and a random id: stale or repeated requests are refused (ADMIN_STALE,
// ADMIN_REPLAY). The response is sealed too and bound to the request id.
//
// A call to an endpoint listening in the same process goes to it directly, without HTTP and
// without the box (adminInProcess, decision 143): [ts, op, args] and the request key, no id and
// no replay cache (no byte of it leaves the process); the key and target check, the timestamp
// window and the bounds of the sealed request and answer it stands for are the same, and so
// is every answer (a test runs the same calls both ways).
//
// Every business server holds the same admin key and keeps its own replay cache, so a request
// is bound to the server it is for: the target's name is in the associated data, and a
// request recorded on its way to biz-east does not authenticate at biz-west (ADMIN_BAD_AUTH).
// The operation travels inside the authenticated plaintext, so it is bound too.
//
//   request  = box(kReq, aad "usbphone/v1 admin request|" target,  cbor [ts, id, op, args])
//   response = box(kRes, aad "usbphone/v1 admin response|" target "|" id, cbor [true, result] | [false, code, message])
import { concatBytes, utf8ToBytes } from '@noble/hashes/utils.js';
import { equalBytes } from '@noble/ciphers/utils.js';
import { createServer, Agent as HttpAgent, type IncomingMessage, type ServerResponse, type Server } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { boundedPost, BoundedPostError } from './bounded-post.ts';
import { sealBox, openBox, BOX_OVERHEAD } from '../protocol/sealed-box.ts';
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
/** The operation name of a batch of calls in one request (AdminClient `batch`). */
export const ADMIN_BATCH_OP = 'batch';
/** Most calls in one batch: well under the decoder's item bounds for the biggest call (installPending). */
export const ADMIN_MAX_BATCH = 32;
/** Idle keep-alive sockets close after this, below node's server keepAliveTimeout (5 s). */
export const ADMIN_IDLE_SOCKET_MS = 4_000;
/** Server names the admin API binds requests to: the names of the topology (biz-east). */
export const ADMIN_TARGET_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** The CBOR of a request's 16-byte id (0x50 + 16 bytes): what a sealed request carries that an in-process call does not. */
const REQUEST_ID_CBOR = 17;
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

/** The key requests are sealed under (and that a call in this process shows its endpoint, AdminDirect): 32 bytes from the admin key. */
export function adminRequestKey(adminKey: Uint8Array): Uint8Array {
  return kdf(adminKey, 'usbphone/v1 admin', 'request');
}
function keys(adminKey: Uint8Array) {
  return { req: adminRequestKey(adminKey), res: kdf(adminKey, 'usbphone/v1 admin', 'response') };
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
  /** false: a batch is an unknown operation, as at an endpoint built before batches (tests of the client's fallback). */
  batches?: boolean;
}

/** An admin request's answer: an HTTP status and, with 200, the sealed response. */
export interface AdminAnswer { status: number; body?: Uint8Array }
/** One admin request body in, its answer out: what a transport (HTTP, or a call in the same process) carries. */
export type AdminHandler = (body: Uint8Array) => Promise<AdminAnswer>;
/**
 * A call from a client in this process (adminInProcess, decision 143): the client's request key
 * and target, and the CBOR of [ts, op, args]; the answer's CBOR ([true, result] | [false, code,
 * message]) with status 200, or 401 / 413 as over HTTP. No box: nothing outside the process
 * carries it.
 */
export type AdminDirect = (reqKey: Uint8Array, target: string, call: Uint8Array) => Promise<AdminAnswer>;

/**
 * The admin endpoint's logic without its transport. `handle` authenticates a sealed request,
 * checks freshness and replay, runs the op and seals the answer; `direct` takes a call from this
 * process: the same key and target check (a wrong key or another target is 401, as a box that
 * does not open), the same bounds, timestamp window and operations; no box and no replay cache,
 * since no bytes of it travel where they could be recorded.
 */
export function adminEndpoint(opts: AdminServerOptions): { handle: AdminHandler; direct: AdminDirect } {
  const k = keys(opts.key);
  const target = checkTarget(opts.name);
  const aadReq = requestAad(target);
  const now = opts.now ?? Date.now;
  const skew = opts.maxSkewMs ?? ADMIN_MAX_SKEW_MS;
  const seen = new ReplayCache(100_000, 2 * skew, now);
  const log = createLogger(`${opts.name}/admin`);
  const limits = opts.limits ?? ADMIN_LIMITS;
  /** One operation's answer: [true, result] or [false, code, message]. */
  const run = async (op: string, args: CborValue): Promise<CborValue> => {
    const fn = Object.hasOwn(opts.ops, op) ? opts.ops[op] : undefined;
    if (!fn) return [false, 'ADMIN_UNKNOWN_OP', `no admin operation '${op.slice(0, 32)}'`];
    try {
      return [true, await fn(args)];
    } catch (e) {
      const code = (e as { code?: string }).code ?? 'ADMIN_INTERNAL';
      if (!(e instanceof ProtocolError || e instanceof AdminError)) log.error('admin op failed', { op, code, err: (e as Error).stack ?? String(e) });
      return [false, code, e instanceof ProtocolError || e instanceof AdminError ? e.message : 'internal error'];
    }
  };
  const fresh = (ts: number) => {
    if (Math.abs(now() - ts) > skew) throw new ProtocolError('ADMIN_STALE', 'request timestamp outside the window');
  };
  /** An authenticated, fresh request's op (or batch of ops) run: its answer. Throws ProtocolError for a request it refuses. */
  const dispatch = async (op: string, args: CborValue): Promise<CborValue> => {
    if (op !== ADMIN_BATCH_OP || opts.batches === false) return run(op, args);
    // A batch (AdminClient `batch`): the calls of one event-loop turn in one request, run in
    // order, each answered as if alone. Under the request's one id and timestamp.
    if (!Array.isArray(args) || args.length < 1 || args.length > ADMIN_MAX_BATCH || !args.every((c) => Array.isArray(c) && c.length === 2 && typeof c[0] === 'string' && c[0] !== ADMIN_BATCH_OP)) {
      throw new ProtocolError('ADMIN_BAD_REQUEST', `a batch is 1..${ADMIN_MAX_BATCH} calls [op, args], none of them a batch`);
    }
    const answers: CborValue[] = [];
    for (const c of args as [string, CborValue][]) answers.push(await run(c[0], c[1]));
    return [true, answers];
  };
  const refusal = (e: unknown) => {
    const code = (e as { code?: string }).code ?? 'ADMIN_BAD_REQUEST';
    log.warn('admin request refused', { code });
    return code;
  };
  const handle: AdminHandler = async (body) => {
    if (body.length > limits.maxFrameBytes) {
      log.warn('admin request refused', { code: 'ADMIN_TOO_LARGE' });
      return { status: 413 };
    }
    let id: Uint8Array | null = null;
    try {
      const v = open(k.req, aadReq, body, limits);
      if (!Array.isArray(v) || v.length !== 4 || safeInt(v[0]) === null || !(v[1] instanceof Uint8Array) || v[1].length !== 16 || typeof v[2] !== 'string') {
        throw new ProtocolError('ADMIN_BAD_REQUEST', 'request must be [ts, id(16), op, args]');
      }
      const [, rid, op, args] = v as [unknown, Uint8Array, string, CborValue];
      id = rid;
      fresh(safeInt(v[0])!);
      if (!seen.check(rid)) throw new ProtocolError('ADMIN_REPLAY', 'request id already seen');
      if (opts.shared && !(await opts.shared.claim(rid))) throw new ProtocolError('ADMIN_REPLAY', 'request id already seen (by another instance)');
      return { status: 200, body: seal(k.res, responseAad(target, rid), await dispatch(op, args)) };
    } catch (e) {
      const code = refusal(e);
      // Unauthenticated callers learn nothing but the status; authenticated ones get the code.
      if (id && code !== 'ADMIN_BAD_AUTH') return { status: 200, body: seal(k.res, responseAad(target, id), [false, code, (e as Error).message]) };
      return { status: code === 'ADMIN_BAD_AUTH' ? 401 : 400 };
    }
  };
  const direct: AdminDirect = async (reqKey, to, call) => {
    // The bound of the sealed request this call stands for (its 16-byte id and the box added), so
    // that a call refused across processes is refused here too.
    if (call.length + REQUEST_ID_CBOR + BOX_OVERHEAD > limits.maxFrameBytes) {
      log.warn('admin request refused', { code: 'ADMIN_TOO_LARGE' });
      return { status: 413 };
    }
    if (to !== target || !equalBytes(reqKey, k.req)) {
      log.warn('admin request refused', { code: 'ADMIN_BAD_AUTH' });
      return { status: 401 };
    }
    let v: CborValue;
    try {
      // Decoded here, within the bounds: the op gets its own copy of the arguments, as over a socket.
      v = decode(call, limits);
      if (!Array.isArray(v) || v.length !== 3 || safeInt(v[0]) === null || typeof v[1] !== 'string') throw new ProtocolError('ADMIN_BAD_REQUEST', 'request must be [ts, op, args]');
    } catch (e) {
      // As a sealed request that opens but does not decode to [ts, id, op, args]: 400, no detail.
      refusal(e);
      return { status: 400 };
    }
    try {
      fresh(safeInt(v[0])!);
      return { status: 200, body: encode(await dispatch(v[1] as string, v[2] as CborValue)) };
    } catch (e) {
      return { status: 200, body: encode([false, refusal(e), (e as Error).message]) };
    }
  };
  return { handle, direct };
}

/** The sealed-request handler alone (adminEndpoint's `handle`): for transports other than HTTP (a simulation's network). */
export function adminHandler(opts: AdminServerOptions): AdminHandler {
  return adminEndpoint(opts).handle;
}

/** An HTTP request listener serving POST /admin. */
export function adminListener(opts: AdminServerOptions): (req: IncomingMessage, res: ServerResponse) => void {
  return httpAdminListener(adminHandler(opts), opts);
}

/** POST /admin over HTTP: the body read under its bound (413 beyond it, without reading on), then `handle`. */
function httpAdminListener(handle: AdminHandler, opts: AdminServerOptions): (req: IncomingMessage, res: ServerResponse) => void {
  const maxBody = (opts.limits ?? ADMIN_LIMITS).maxFrameBytes;
  const log = createLogger(`${opts.name}/admin`);
  return (req, res) => {
    const reply = (a: AdminAnswer) => {
      res.writeHead(a.status, { 'content-type': 'application/octet-stream', ...(a.body ? { 'content-length': a.body.length } : {}) });
      res.end(a.body);
    };
    if (req.method !== 'POST' || req.url !== '/admin') return reply({ status: 404 });
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > maxBody) {
        log.warn('admin request refused', { code: 'ADMIN_TOO_LARGE' });
        reply({ status: 413 });
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', async () => {
      if (size > maxBody) return;
      reply(await handle(new Uint8Array(Buffer.concat(chunks))));
    });
  };
}

/**
 * The admin endpoints listening in this process, by the address a client names (host:port):
 * a client of one of them (the registration server of `serve all` calling its business
 * servers) hands its call straight to the endpoint instead of an HTTP request on loopback
 * (issue 15: that round trip cost a tenth of a login's server CPU), and without the box
 * (decision 143: the two seals and two opens of a call were 4-5 % of a login's server CPU
 * where no byte of the call leaves the process). The same key and target check, bounds,
 * deadline, timestamp window and operations. A client in another process, or naming another
 * address, uses HTTP and the box.
 */
const inProcess = new Map<string, AdminDirect>();
const endpointKey = (host: string, port: number) => `${host.replace(/^\[|\]$/g, '')}:${port}`;

/**
 * The endpoint at `url` when it listens in this process: a URL HTTP would deliver to it (plain
 * http, the path /admin, no query), so that a URL that fails across processes fails in one too.
 */
export function adminInProcess(url: URL): AdminDirect | undefined {
  if (url.protocol !== 'http:' || url.pathname !== '/admin' || url.search !== '') return undefined;
  return inProcess.get(endpointKey(url.hostname, url.port ? Number(url.port) : 80));
}

/** An HTTP admin server; once listening, also reachable in this process (adminInProcess) until it closes. */
export function createAdminServer(opts: AdminServerOptions): Server {
  const { handle, direct } = adminEndpoint(opts);
  const server = createServer(httpAdminListener(handle, opts));
  let key: string | null = null;
  server.on('listening', () => {
    const a = server.address();
    if (a && typeof a === 'object') inProcess.set((key = endpointKey(a.address, a.port)), direct);
  });
  const leave = () => {
    if (key !== null && inProcess.get(key) === direct) inProcess.delete(key);
  };
  // Unreachable in process from close() on, as over HTTP (which refuses new connections at
  // once), not only from the 'close' event that waits for open connections to end.
  const close = server.close.bind(server);
  server.close = (cb?: (err?: Error) => void) => {
    leave();
    return close(cb);
  };
  server.on('close', leave);
  return server;
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
  /** HTTP even to an endpoint in this process (adminInProcess): for tests of the HTTP transport. */
  http?: boolean;
  /**
   * Send the calls made in one event-loop turn as one request (at most ADMIN_MAX_BATCH): one
   * HTTP round trip for the password installs of all the registrations a turn finished
   * (issue 15). Each call still gets its own result or refusal. For endpoints whose calls fit
   * the device frame bounds (the business servers'); an endpoint that does not know batches
   * gets the calls one by one.
   */
  batch?: boolean;
  /** How a sealed request reaches the endpoint (default an HTTP POST to url): a simulation's network. */
  post?: AdminPost;
  /** The clock whose time a request carries (default Date.now; a simulation's virtual, skewed clock). */
  now?: () => number;
}

interface Pending { op: string; args: CborValue; resolve(v: CborValue): void; reject(e: unknown): void }

/** A call's result from its answer, or its refusal thrown (AdminError with the server's code). */
function answer(op: string, v: CborValue): CborValue {
  if (!Array.isArray(v) || typeof v[0] !== 'boolean') throw new AdminError('ADMIN_BAD_RESPONSE', `admin ${op}: malformed response`);
  if (v[0]) return v[1] as CborValue;
  throw new AdminError(String(v[1]), String(v[2]));
}

/**
 * The transport seam of the admin client: posts a sealed body, resolves with the status and the
 * answer's body; throws TimeoutError when no answer came within timeoutMs, AdminError
 * ADMIN_UNREACHABLE when the endpoint could not be reached.
 */
export type AdminPost = (body: Uint8Array, timeoutMs: number) => Promise<{ status: number; buf: Uint8Array }>;

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
  readonly #http: boolean;
  #batch: boolean;
  #queue: Pending[] = [];
  readonly #postSeam: AdminPost | undefined;
  readonly #now: () => number;
  constructor(opts: AdminClientOptions) {
    this.#limits = opts.limits ?? ADMIN_LIMITS;
    this.#postSeam = opts.post;
    this.#now = opts.now ?? Date.now;
    this.target = checkTarget(opts.target);
    this.url = opts.url;
    this.timeoutMs = opts.timeoutMs ?? 3_000;
    this.#k = keys(opts.key);
    this.#aadReq = requestAad(this.target);
    this.#url = new URL(opts.url);
    this.#tls = this.#url.protocol === 'https:';
    this.#http = opts.http === true;
    this.#batch = opts.batch === true;
    const agentOpts = { keepAlive: true, timeout: ADMIN_IDLE_SOCKET_MS, scheduling: 'lifo' as const };
    this.#agent = this.#tls ? new HttpsAgent(agentOpts) : new HttpAgent(agentOpts);
  }

  /**
   * Calls `op`. Throws AdminError with the server's code when it refused, or ADMIN_UNREACHABLE
   * / TimeoutError when no answer came (the call may or may not have taken effect).
   */
  async call(op: string, args: CborValue): Promise<CborValue> {
    if (!this.#batch) return answer(op, await this.#request(op, args));
    return new Promise((resolve, reject) => {
      if (this.#queue.push({ op, args, resolve, reject }) === 1) setImmediate(() => this.#flush());
    });
  }

  /** The calls queued during the turn: alone as a plain request, several as batches. */
  #flush(): void {
    const all = this.#queue.splice(0);
    for (let i = 0; i < all.length; i += ADMIN_MAX_BATCH) {
      const calls = all.slice(i, i + ADMIN_MAX_BATCH);
      const one = (c: Pending) => this.#request(c.op, c.args).then((v) => answer(c.op, v)).then(c.resolve, c.reject);
      if (calls.length === 1 || !this.#batch) {
        calls.forEach(one);
        continue;
      }
      this.#request(ADMIN_BATCH_OP, calls.map((c) => [c.op, c.args])).then(
        (v) => {
          // An endpoint that knows no batches: each call alone, and no more batches to it.
          if (Array.isArray(v) && v[0] === false && v[1] === 'ADMIN_UNKNOWN_OP') {
            this.#batch = false;
            return calls.forEach(one);
          }
          const list = Array.isArray(v) && v[0] === true && Array.isArray(v[1]) && v[1].length === calls.length ? (v[1] as CborValue[]) : null;
          calls.forEach((c, j) => {
            try {
              if (!list) throw new AdminError('ADMIN_BAD_RESPONSE', `admin ${c.op}: malformed batch response`);
              c.resolve(answer(c.op, list[j]!));
            } catch (e) {
              c.reject(e);
            }
          });
        },
        // No answer (unreachable, timeout, not authenticated): the same error for every call in it.
        (e) => calls.forEach((c) => c.reject(e)),
      );
    }
  }

  /** One sealed request and its opened answer ([true, result] | [false, code, message], unchecked); in this process, the call without its box. */
  async #request(op: string, args: CborValue): Promise<CborValue> {
    const local = this.#postSeam || this.#http ? undefined : adminInProcess(this.#url);
    if (local) {
      const { status, buf } = await this.#local(op, () => local(this.#k.req, this.target, encode([this.#now(), op, args])));
      // The codes of the same refusal over HTTP (a 401, 400 or 413 answer).
      if (status !== 200) throw new AdminError(status === 401 ? 'ADMIN_BAD_AUTH' : 'ADMIN_HTTP', `admin ${op}: refused in process, status ${status}`);
      try {
        return decode(buf, this.#limits);
      } catch {
        throw new AdminError('ADMIN_BAD_RESPONSE', `admin ${op}: malformed response`);
      }
    }
    const id = systemRng(16);
    const body = seal(this.#k.req, this.#aadReq, [this.#now(), id, op, args]);
    const { status, buf } = this.#postSeam ? await this.#postSeam(body, this.timeoutMs) : await this.#post(op, body);
    if (status !== 200) throw new AdminError(status === 401 ? 'ADMIN_BAD_AUTH' : 'ADMIN_HTTP', `admin ${op}: HTTP ${status}`);
    try {
      return open(this.#k.res, responseAad(this.target, id), buf, this.#limits);
    } catch {
      throw new AdminError('ADMIN_BAD_RESPONSE', `admin ${op}: response does not authenticate`);
    }
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

  /** A call to an endpoint in this process (adminInProcess), under the same deadline and size bound. */
  async #local(op: string, call: () => Promise<AdminAnswer>): Promise<{ status: number; buf: Uint8Array }> {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new TimeoutError(`admin ${op} at ${this.url}`)), this.timeoutMs);
    });
    try {
      const a = await Promise.race([call(), deadline]);
      const buf = a.body ?? new Uint8Array(0);
      // The bound of the sealed answer this stands for (the box added), as over HTTP.
      if (buf.length + BOX_OVERHEAD > this.#limits.maxFrameBytes) throw new AdminError('ADMIN_BAD_RESPONSE', `admin ${op}: response larger than ${this.#limits.maxFrameBytes} bytes`);
      return { status: a.status, buf };
    } finally {
      clearTimeout(timer);
    }
  }
}
