// Shared by the operator's tests and its benchmark: a server on an ephemeral loopback port
// with its own CA in a temp directory, a few lines and two clients; a raw HTTPS request
// helper; and the response validator built from docs/operator-api.yaml with ajv.
import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request as httpsRequest, Agent } from 'node:https';
import { parse as parseYaml } from 'yaml';
import { Ajv, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { ensureServerTls, type TlsFiles } from '../server-kit/tls-ca.ts';
import { systemRng } from '../protocol/rng.ts';
import { withLuhn } from '../protocol/line-ids.ts';
import { ALL_OPERATOR_SCOPES } from '../server-kit/operator-api.ts';
import { startOperatorServer, type OperatorServer, type OperatorConfig } from './server.ts';
import { newClientSecret, secretHash } from './tokens.ts';
import type { CardInfo } from './store.ts';
import { chosenBackend, storeConfig } from '../server-kit/store-backends.ts';

export const T0 = Date.UTC(2026, 5, 1, 12, 0, 0);
export const HOUR = 3_600_000;
export const DAY = 24 * HOUR;

/** Card n of the fixture: a valid ICCID (Luhn), a 15-digit IMSI. */
export const card = (n: number, cardType: CardInfo['cardType'] = 'USIM'): CardInfo => ({
  iccid: withLuhn(`89441000000000${String(n).padStart(5, '0')}`),
  imsi: `2341000000${String(n).padStart(5, '0')}`,
  cardType,
});

export interface Fixture {
  dir: string;
  tls: TlsFiles;
  server: OperatorServer;
  /** The fixture's clock (ms since the epoch): move it with `clock.t = ...`. */
  clock: { t: number };
  bank: { id: string; secret: string };
  /** A client granted only sim-swap:check. */
  narrow: { id: string; secret: string };
  agent: Agent;
  stop(): Promise<void>;
}

/**
 * Lines: +447700900001 on card 1 since T0 - 30 days (never swapped); +447700900002 on card 2,
 * swapped to card 3 at T0 - 2 h; +447700900004 on card 4, suspended. The store on the back end
 * STORE_URL selects (SQLite, or a fresh PostgreSQL schema under scripts/test-pg.mjs).
 */
export async function operatorFixture(cfg: Partial<OperatorConfig> = {}): Promise<Fixture> {
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-operator-'));
  const tls = await ensureServerTls(join(dir, 'tls'), 'operator', ['127.0.0.1', 'localhost']);
  const clock = { t: T0 };
  const B = chosenBackend();
  const server = await startOperatorServer({
    host: '127.0.0.1', port: 0, ...storeConfig(B, 'operator'), tls: { cert: tls.certFile, key: tls.keyFile },
    tokenKey: systemRng(32), now: () => clock.t, ...cfg,
  });
  const s = server.store;
  await s.createSubscription('+447700900001', card(1), T0 - 30 * DAY);
  await s.createSubscription('+447700900002', card(2, 'SIM'), T0 - 60 * DAY);
  await s.swapCard('+447700900002', card(3), T0 - 2 * HOUR);
  await s.createSubscription('+447700900004', card(4, 'R-UIM'), T0 - 10 * DAY);
  await s.setCardStatus(card(4).iccid, 'suspended');
  const bank = { id: 'bank', secret: newClientSecret(systemRng) };
  const narrow = { id: 'narrow', secret: newClientSecret(systemRng) };
  await s.putClient(bank.id, secretHash(bank.secret), [...ALL_OPERATOR_SCOPES]);
  await s.putClient(narrow.id, secretHash(narrow.secret), ['sim-swap:check']);
  const agent = new Agent({ keepAlive: true, ca: tls.caPem });
  return {
    dir, tls, server, clock, bank, narrow, agent,
    async stop() {
      agent.destroy();
      await server.close();
      await B.cleanup();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface RawAnswer { status: number; headers: Record<string, string | string[] | undefined>; text: string; json: unknown }

/** One raw HTTPS request (nothing checked): the tests see exactly what the server sent. */
export function raw(f: Fixture, method: string, path: string, opts: { headers?: Record<string, string | number>; body?: string | Buffer; chunked?: boolean } = {}): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const u = new URL(f.server.url);
    const body = opts.body ?? '';
    const headers: Record<string, string | number> = { ...opts.headers };
    if (!opts.chunked && opts.body !== undefined && headers['content-length'] === undefined) headers['content-length'] = Buffer.byteLength(body);
    const req = httpsRequest({ agent: f.agent, method, host: u.hostname, port: u.port, path, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown = undefined;
        try {
          json = JSON.parse(text);
        } catch {
          /* left undefined: the test says what it expected */
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    if (opts.chunked) {
      const b = Buffer.from(body);
      for (let i = 0; i < b.length; i += 1024) req.write(b.subarray(i, i + 1024));
      req.end();
    } else req.end(body);
  });
}

/** A bearer token for client `c` (all its scopes unless `scope`). */
export async function tokenFor(f: Fixture, c: { id: string; secret: string }, scope?: string): Promise<string> {
  const form = new URLSearchParams({ grant_type: 'client_credentials', ...(scope ? { scope } : {}) });
  const r = await raw(f, 'POST', '/oauth2/token', {
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: 'Basic ' + Buffer.from(`${c.id}:${c.secret}`).toString('base64') },
    body: form.toString(),
  });
  if (r.status !== 200) throw new Error(`token: HTTP ${r.status} ${r.text}`);
  return (r.json as { access_token: string }).access_token;
}

export function api(f: Fixture, path: string, token: string | null, body: unknown, headers: Record<string, string> = {}): Promise<RawAnswer> {
  return raw(f, 'POST', path, {
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

type Doc = { paths: Record<string, Record<string, { responses: Record<string, { $ref?: string; content?: Record<string, { schema: unknown }>; headers?: Record<string, unknown> }> }>>; components: { schemas: Record<string, unknown>; responses: Record<string, { content?: Record<string, { schema: unknown }>; headers?: Record<string, unknown> }> } };

/**
 * The OpenAPI document's response schemas compiled with ajv (+ ajv-formats for date-time):
 * `check(path, method, answer)` returns the problems with a real answer (empty when it
 * conforms): an undocumented status, a wrong content type, a body off its schema.
 */
export function openApiValidator(file = new URL('../docs/operator-api.yaml', import.meta.url)) {
  const doc = parseYaml(readFileSync(file, 'utf8')) as Doc;
  const ajv = new Ajv({ allErrors: true, strict: true });
  (addFormatsModule as unknown as (a: Ajv) => void)(ajv);
  // OpenAPI 3.0 annotations that are not JSON Schema keywords (nullable is built into ajv).
  ajv.addKeyword('example');
  const id = (name: string) => `https://usbphone.invalid/operator-api/schemas/${name}`;
  const rewrite = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(rewrite);
    if (v && typeof v === 'object') {
      const o: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) o[k] = k === '$ref' && typeof x === 'string' ? id(x.replace('#/components/schemas/', '')) : rewrite(x);
      return o;
    }
    return v;
  };
  for (const [name, schema] of Object.entries(doc.components.schemas)) ajv.addSchema(rewrite(schema) as object, id(name));
  const cache = new Map<string, ValidateFunction>();
  const compiled = (key: string, schema: unknown) => {
    let v = cache.get(key);
    if (!v) cache.set(key, (v = ajv.compile(rewrite(schema) as object)));
    return v;
  };
  const response = (path: string, method: string, status: number) => {
    const op = doc.paths[path]?.[method.toLowerCase()];
    let r = op?.responses[String(status)];
    if (r?.$ref) r = doc.components.responses[r.$ref.replace('#/components/responses/', '')];
    return r;
  };
  return {
    doc,
    /** A generic response of the components (404 for an unknown path has no path of its own). */
    component: (name: string) => doc.components.responses[name],
    check(path: string, method: string, a: RawAnswer, generic?: string): string[] {
      const r = generic ? doc.components.responses[generic] : response(path, method, a.status);
      if (!r) return [`${method} ${path}: status ${a.status} is not documented`];
      const media = r.content?.['application/json'];
      if (!media) return [`${method} ${path} ${a.status}: no JSON body documented`];
      const problems: string[] = [];
      if (!String(a.headers['content-type']).startsWith('application/json')) problems.push(`content-type ${a.headers['content-type']}`);
      const v = compiled(`${path} ${method} ${a.status} ${generic ?? ''}`, media.schema);
      if (!v(a.json)) problems.push(`${method} ${path} ${a.status}: ${ajv.errorsText(v.errors)} in ${a.text.slice(0, 200)}`);
      return problems;
    },
  };
}
