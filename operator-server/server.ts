// The mobile operator server (S4.4, S4.6, SIM swap): one HTTPS port (TLS 1.3 only) serving
// the API of docs/operator-api.yaml to the banks it enrolled as OAuth2 clients:
//   POST /oauth2/token                          client credentials -> bearer token (RFC 6749 §4.4)
//   POST /sim-swap/v2/check, /retrieve-date     CAMARA SIM Swap v2
//   POST /card-info/v0/retrieve-phone-number    card info -> phone number (S4.4)
//   POST /card-info/v0/retrieve-card            phone number -> card info (S4.4)
//   POST /card-info/v0/check-validity           is this card info valid (S4.6)
//   GET  /healthz                               liveness, no authentication
// Every request is checked in one order, and the first failure is the answer (nothing is
// read or done past it): route, x-correlator, bearer token, scope, content type, body size,
// JSON, fields (operator-server/api.ts). Errors are CAMARA's `{status, code, message}`; the
// token endpoint answers RFC 6749 §5.2's `{error, error_description}`. A valid x-correlator
// is echoed on every answer. No token, secret or Authorization header is ever logged.
import { createServer as createHttpsServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse, OutgoingHttpHeaders } from 'node:http';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { ImplementationError } from '../protocol/errors.ts';
import { systemRng } from '../protocol/rng.ts';
import { applyPortLimits, PortDefaults, MOBILE_OPERATOR_MAX_BODY, type PortLimits } from '../server-kit/limits.ts';
import { createLogger } from '../server-kit/log.ts';
import { OperatorPaths, OperatorScopes, X_CORRELATOR_RE, type OperatorApiPath, type OperatorErrorCode, OperatorErrors } from '../server-kit/operator-api.ts';
import type { OperatorStore } from './store.ts';
import { openOperatorStore } from './pg-store.ts';
import { placeOf, type StoreChoice } from '../server-kit/store-choice.ts';
import { TokenIssuer, authenticateClient } from './tokens.ts';
import { ApiError, checkSimSwap, retrieveSimSwapDate, retrievePhoneNumber, retrieveCard, checkValidity, type ApiContext } from './api.ts';

export interface OperatorConfig {
  /** Log name (default 'operator'). */
  name?: string;
  host: string;
  /** 0 = ephemeral; null = no HTTPS listener: the caller serves `handle` itself (the deterministic simulation, sim/dsim-world.ts). */
  port: number | null;
  /** The SQLite file, under the default store choice. */
  dbFile: string;
  /** SQLite (default) or PostgreSQL (issue 16). */
  store?: StoreChoice;
  /** PEM certificate and key, as contents or file paths (server-kit/tls-ca.ts makes them); unused without a port. */
  tls: { cert: string; key: string } | null;
  /** 32 bytes: signs the bearer tokens (operator-server/tokens.ts). */
  tokenKey: Uint8Array;
  /** Bearer token lifetime, seconds (default 300). */
  tokenTtlSec?: number;
  /** Days of card-change history answered for (CAMARA `monitoredPeriod`); default null = all. */
  monitoredPeriodDays?: number | null;
  portLimits?: PortLimits;
  /** Largest request body, bytes (default 4 KiB). */
  maxBodyBytes?: number;
  /** Clock, ms since the epoch (tests move it). */
  now?: () => number;
}

export interface OperatorServer {
  name: string;
  port: number;
  /** https://host:port (no trailing slash). */
  url: string;
  store: OperatorStore;
  /** Requests answered since start, by outcome code ('OK' for a success). */
  counts(): Record<string, number>;
  /** The request handler the HTTPS server runs (for a server without a port: the caller's transport). */
  handle(req: IncomingMessage, res: ServerResponse): Promise<void>;
  close(): Promise<void>;
}

type Op = (ctx: ApiContext, body: Record<string, unknown>) => Promise<object>;
const OPS: Record<OperatorApiPath, Op> = {
  [OperatorPaths.simSwapCheck]: checkSimSwap,
  [OperatorPaths.simSwapRetrieveDate]: retrieveSimSwapDate,
  [OperatorPaths.cardToNumber]: retrievePhoneNumber,
  [OperatorPaths.numberToCard]: retrieveCard,
  [OperatorPaths.checkValidity]: checkValidity,
};

/** Answers already sent end the handling: a thrown Refusal carries its answer. */
class Refusal extends Error {
  constructor(readonly status: number, readonly body: object, readonly code: string, readonly headers: OutgoingHttpHeaders = {}, readonly closeAfter = false) {
    super(code);
  }
}
const camara = (code: OperatorErrorCode, message: string, headers: OutgoingHttpHeaders = {}, closeAfter = false) =>
  new Refusal(OperatorErrors[code], { status: OperatorErrors[code], code, message }, code, headers, closeAfter);
/** RFC 6749 §5.2 error of the token endpoint. */
const oauth = (status: number, error: string, description: string, headers: OutgoingHttpHeaders = {}) =>
  new Refusal(status, { error, error_description: description }, `oauth:${error}`, headers);

const REALM = 'Bearer realm="operator"';

function mediaType(req: IncomingMessage): string {
  return (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
}

/** The body, at most `max` bytes: refused from its Content-Length, or as soon as it grows past. */
function readBody(req: IncomingMessage, max: number, tooLarge: () => Refusal): Promise<Buffer> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > max) return Promise.reject(tooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (c: Buffer) => {
      if (over) return;
      size += c.length;
      if (size > max) {
        over = true;
        chunks.length = 0;
        reject(tooLarge());
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (!over) resolve(Buffer.concat(chunks));
    });
    req.on('error', (e) => reject(e));
  });
}

/** `Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1), or null when malformed. */
function basicCredentials(h: string): { id: string; secret: string } | null {
  const m = /^Basic ([A-Za-z0-9+/]+={0,2})$/i.exec(h);
  if (!m) return null;
  const text = Buffer.from(m[1]!, 'base64').toString('utf8');
  const i = text.indexOf(':');
  if (i < 0) return null;
  try {
    return { id: decodeURIComponent(text.slice(0, i).replace(/\+/g, ' ')), secret: decodeURIComponent(text.slice(i + 1).replace(/\+/g, ' ')) };
  } catch {
    return null;
  }
}

export async function startOperatorServer(cfg: OperatorConfig): Promise<OperatorServer> {
  const name = cfg.name ?? 'operator';
  const log = createLogger(name);
  const now = cfg.now ?? Date.now;
  const maxBody = cfg.maxBodyBytes ?? MOBILE_OPERATOR_MAX_BODY;
  const monitored = cfg.monitoredPeriodDays ?? null;
  if (monitored !== null && (!Number.isInteger(monitored) || monitored < 1)) throw new ImplementationError('CFG_INVALID', 'monitoredPeriodDays must be a whole number of days >= 1, or null');
  const pem = (v: string) => (v.includes('-----BEGIN') ? v : readFileSync(v, 'utf8'));
  if (cfg.port !== null && !cfg.tls) throw new ImplementationError('CFG_INVALID', 'the operator server needs its TLS certificate and key');
  const tlsOpts = cfg.tls && cfg.port !== null ? { cert: pem(cfg.tls.cert), key: pem(cfg.tls.key) } : null;
  const issuer = new TokenIssuer(cfg.tokenKey, { ttlSec: cfg.tokenTtlSec, now, rng: systemRng });
  const store = await openOperatorStore(placeOf(cfg.store ?? { kind: 'sqlite' }, cfg.dbFile));
  const ctx: ApiContext = { store: store, now, monitoredPeriodDays: monitored };
  const counts: Record<string, number> = {};
  const tooLarge = () => camara('INVALID_ARGUMENT', `request body larger than ${maxBody} bytes`, { connection: 'close' }, true);

  const send = (res: ServerResponse, status: number, body: object, headers: OutgoingHttpHeaders) => {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...headers });
    res.end(text);
  };

  /** The client and scope of a bearer token, or a refusal (401 / 403). */
  const authorize = async (req: IncomingMessage, scope: string): Promise<string> => {
    const h = req.headers.authorization;
    if (!h) throw camara('UNAUTHENTICATED', 'Request not authenticated due to missing, invalid, or expired credentials.', { 'www-authenticate': REALM });
    const m = /^Bearer ([^\s]+)$/i.exec(h);
    const claims = m ? issuer.verify(m[1]!) : null;
    // The client must still exist and still hold the scope: removal takes effect at once.
    const client = claims ? await store.getClient(claims.sub) : null;
    if (!claims || !client) {
      throw camara('UNAUTHENTICATED', 'Request not authenticated due to missing, invalid, or expired credentials.', { 'www-authenticate': `${REALM}, error="invalid_token"` });
    }
    if (!claims.scopes.includes(scope) || !client.scopes.includes(scope)) {
      throw camara('PERMISSION_DENIED', 'Client does not have sufficient permissions to perform this action.', { 'www-authenticate': `${REALM}, error="insufficient_scope", scope="${scope}"` });
    }
    return client.clientId;
  };

  const token = async (req: IncomingMessage): Promise<{ body: object; client: string }> => {
    if (mediaType(req) !== 'application/x-www-form-urlencoded') throw oauth(400, 'invalid_request', 'the body must be application/x-www-form-urlencoded');
    const raw = (await readBody(req, maxBody, () => oauth(400, 'invalid_request', `request body larger than ${maxBody} bytes`, { connection: 'close' }))).toString('utf8');
    const form = new URLSearchParams(raw);
    const seen = new Set<string>();
    for (const k of form.keys()) {
      // RFC 6749 §3.2: a parameter must not be given more than once.
      if (seen.has(k)) throw oauth(400, 'invalid_request', `parameter '${k.slice(0, 32)}' given more than once`);
      seen.add(k);
    }
    const basic = req.headers.authorization;
    const inBody = form.has('client_id') || form.has('client_secret');
    // RFC 6749 §2.3: one client authentication method per request.
    if (basic && inBody) throw oauth(400, 'invalid_request', 'authenticate with HTTP Basic or with client_id/client_secret, not both');
    const cred = basic ? basicCredentials(basic) : form.has('client_id') && form.has('client_secret') ? { id: form.get('client_id')!, secret: form.get('client_secret')! } : null;
    const client = cred ? await authenticateClient(store, cred.id, cred.secret) : null;
    // RFC 6749 §5.2: invalid_client is 401 with a challenge for the scheme the client used.
    if (!client) throw oauth(401, 'invalid_client', 'client authentication failed', { 'www-authenticate': 'Basic realm="operator"' });
    const grant = form.get('grant_type');
    if (grant === null) throw oauth(400, 'invalid_request', 'grant_type is required');
    if (grant !== 'client_credentials') throw oauth(400, 'unsupported_grant_type', 'only client_credentials is supported');
    const asked = form.get('scope');
    let scopes = client.scopes;
    if (asked !== null) {
      const list = asked.split(' ');
      if (list.some((s) => s === '' || !client.scopes.includes(s))) throw oauth(400, 'invalid_scope', 'a requested scope is unknown or not granted to this client');
      scopes = [...new Set(list)];
    }
    const t = issuer.issue(client.clientId, scopes);
    return { body: { access_token: t.token, token_type: 'Bearer', expires_in: t.expiresIn, scope: scopes.join(' ') }, client: client.clientId };
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '').split('?')[0]!;
    let corr: OutgoingHttpHeaders = {};
    let client: string | null = null;
    try {
      if (path === OperatorPaths.healthz) {
        if (req.method !== 'GET') throw camara('METHOD_NOT_ALLOWED', 'use GET', { allow: 'GET' });
        send(res, 200, { status: 'ok', name }, {});
        return;
      }
      const isToken = path === OperatorPaths.token;
      const op = Object.hasOwn(OPS, path) ? OPS[path as OperatorApiPath] : undefined;
      if (!isToken && !op) throw camara('NOT_FOUND', 'The specified resource is not found.');
      if (req.method !== 'POST') throw camara('METHOD_NOT_ALLOWED', `use POST for ${path}`, { allow: 'POST' });
      const xc = req.headers['x-correlator'];
      if (xc !== undefined) {
        if (typeof xc !== 'string' || !X_CORRELATOR_RE.test(xc)) {
          throw isToken ? oauth(400, 'invalid_request', 'x-correlator does not match ^[a-zA-Z0-9-_:;./<>{}]{0,256}$') : camara('INVALID_ARGUMENT', 'x-correlator does not match ^[a-zA-Z0-9-_:;./<>{}]{0,256}$');
        }
        corr = { 'x-correlator': xc };
      }
      if (isToken) {
        const t = await token(req);
        client = t.client;
        // RFC 6749 §5.1: the token response must not be cached.
        send(res, 200, t.body, { ...corr, pragma: 'no-cache' });
        counts.OK = (counts.OK ?? 0) + 1;
        log.debug('token issued', { client });
        return;
      }
      client = await authorize(req, OperatorScopes[path as OperatorApiPath]);
      if (mediaType(req) !== 'application/json') throw camara('INVALID_ARGUMENT', 'the body must be application/json');
      const raw = await readBody(req, maxBody, tooLarge);
      let body: unknown;
      try {
        body = JSON.parse(raw.toString('utf8'));
      } catch {
        throw camara('INVALID_ARGUMENT', 'the body is not JSON');
      }
      if (typeof body !== 'object' || body === null || Array.isArray(body)) throw camara('INVALID_ARGUMENT', 'the body must be a JSON object');
      const answer = await op!(ctx, body as Record<string, unknown>);
      send(res, 200, answer, corr);
      counts.OK = (counts.OK ?? 0) + 1;
    } catch (e) {
      let r: Refusal;
      if (e instanceof Refusal) r = e;
      else if (e instanceof ApiError) r = camara(e.code, e.message);
      else {
        // Our bug or a store refusing a corrupt row: logged, the caller learns only INTERNAL.
        const code = (e as { code?: string }).code ?? 'INTERNAL';
        log.error('request failed', { path: path.slice(0, 64), code, client, err: (e as Error).stack ?? String(e) });
        r = camara('INTERNAL', 'The server could not answer; try again later.');
      }
      counts[r.code] = (counts[r.code] ?? 0) + 1;
      log.info('request refused', { path: path.slice(0, 64), code: r.code, status: r.status, client });
      if (res.headersSent) return;
      send(res, r.status, r.body, { ...corr, ...r.headers });
      // A body refused unread is not drained: the connection ends after the answer.
      if (r.closeAfter) res.once('finish', () => req.socket.destroySoon());
    }
  };

  if (cfg.port === null || !tlsOpts) {
    // No port (the simulation): the caller hands requests to `handle`; closing closes the store.
    return { name, port: 0, url: `https://${cfg.host}`, store, counts: () => ({ ...counts }), handle, close: async () => void (await store.close()) };
  }
  const listenPort = cfg.port;
  const server: Server = createHttpsServer({ ...tlsOpts, minVersion: 'TLSv1.3' }, (req, res) => void handle(req, res));
  server.on('tlsClientError', () => {});
  applyPortLimits(server as unknown as import('node:http').Server, cfg.portLimits ?? PortDefaults.mobileOperator);
  let port: number;
  try {
    port = await new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(listenPort, cfg.host, () => {
        server.off('error', reject);
        resolve((server.address() as AddressInfo).port);
      });
    });
  } catch (e) {
    await store.close();
    throw e;
  }
  const hostPart = cfg.host.includes(':') ? `[${cfg.host}]` : cfg.host;
  log.info('listening', { port });
  return {
    name,
    port,
    url: `https://${hostPart}:${port}`,
    store,
    counts: () => ({ ...counts }),
    handle,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => {
          void Promise.resolve(store.close()).finally(resolve);
        });
      }),
  };
}
