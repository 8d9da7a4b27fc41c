// Configuration of the server roles: the JSON files `usbphone serve gateway|reg|biz --config
// FILE` reads, and the embedded default (`usbphone serve all --state DIR`): gateway, reg
// primary + backup, biz-east + biz-west and the mobile operator on loopback, state files in
// one directory.
// Relative paths in a file are resolved against the file's directory. Keys are never inline:
// they are files (0600) or, for the master key, an environment variable.
import { readFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, resolve, join } from 'node:path';
import { ImplementationError } from '../protocol/errors.ts';
import { DEST_RE } from '../protocol/messages.ts';
import { linkKeyFor, heartbeatSettings } from '../server-kit/link.ts';
import { ensurePolicyKey, POLICY_KEY_FILE } from '../policy-server/keys.ts';
import type { FactoryPolicy } from '../firmware/factory/image.ts';
import { loadMasterKeyring, readKeyFile, ensureKeyFile, ensureMasterKeyFile } from '../server-kit/keyfiles.ts';
import { parseCidr } from '../server-kit/ip.ts';
import type { GatewayLimits } from '../gateway/limits.ts';
import type { GatewayConfig } from '../gateway/gateway.ts';
import type { RegConfig } from '../reg-server/server.ts';
import type { BizConfig, BankConfig } from '../biz-server/server.ts';
import type { PolicyConfig } from '../policy-server/server.ts';
import type { OperatorConfig } from '../operator-server/server.ts';
import { sharedStateConfig, type SharedStateConfig } from '../server-kit/redis.ts';
import { readPolicyKey } from '../policy-server/keys.ts';
import { attackLimits, type AttackLimits } from '../gateway/attacks.ts';
import type { StoreChoice } from '../server-kit/store-choice.ts';

export interface RegFileConfig {
  name: string;
  host?: string;
  /** Direct device port; null for none. Default none. */
  devicePort?: number | null;
  linkPort: number;
  dbFile: string;
  masterKeyFile?: string;
  /** Name of an environment variable holding the master key file's content (wins over the file). */
  masterKeyEnv?: string;
  /** Root link key of the deployment; this server's key is derived from it and its name. */
  linkKeyFile: string;
  /** Certificate and key files: the link port speaks wss://. */
  linkTls?: { cert: string; key: string };
  adminKeyFile: string;
  bizServers: { name: string; region: string; url: string; adminUrl: string }[];
  regions: { cidr: string; region: string }[];
  stepTimeoutMs?: number;
  pendingTtlMs?: number;
  healthIntervalMs?: number;
  /** S3.11: the policy server whose latest attack table goes into every credential reply. */
  policy?: { name: string; adminUrl: string; pollMs?: number };
  /** The store (issue 16): absent or { kind: 'sqlite' } = dbFile; { kind: 'postgres', url, schema? } = shared PostgreSQL. */
  store?: StoreChoice;
}

export interface BizFileConfig {
  name: string;
  region: string;
  host?: string;
  devicePort?: number | null;
  linkPort: number;
  adminPort: number;
  dbFile: string;
  /** Storage key file (32 bytes, hex): login keys are wrapped under it in dbFile. */
  storeKeyFile: string;
  linkKeyFile: string;
  linkTls?: { cert: string; key: string };
  adminKeyFile: string;
  stepTimeoutMs?: number;
  /** The store (issue 16), as RegFileConfig.store. */
  store?: StoreChoice;
}

export interface GatewayFileConfig {
  host?: string;
  port: number;
  /** GET /healthz and /metrics; absent = not served. */
  operatorPort?: number;
  linkKeyFile: string;
  /** `linkCa`: the certificate file a wss:// link server must chain to (self-signed: its own). */
  upstreams: { name: string; linkUrl: string; linkCa?: string }[];
  tls?: { cert: string; key: string };
  limits?: Partial<GatewayLimits>;
}

function bad(file: string, why: string): never {
  throw new ImplementationError('CFG_INVALID', `${file}: ${why}`);
}
function port(v: unknown, file: string, what: string, nullable = false): number | null {
  if (nullable && (v === null || v === undefined)) return null;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 65535) bad(file, `${what} must be a port number 0..65535`);
  return v;
}
function str(v: unknown, file: string, what: string): string {
  if (typeof v !== 'string' || v.length === 0) bad(file, `${what} must be a non-empty string`);
  return v;
}
function name(v: unknown, file: string): string {
  const n = str(v, file, 'name');
  if (!DEST_RE.test(n)) bad(file, `name '${n}' must match ${DEST_RE.source}`);
  return n;
}
function optTls(v: unknown, file: string, what: string, dir: string): { cert: string; key: string } | undefined {
  if (v === undefined) return undefined;
  const t = v as { cert?: unknown; key?: unknown };
  if (typeof v !== 'object' || v === null) bad(file, `${what} must be { cert, key }`);
  return { cert: resolve(dir, str(t.cert, file, `${what}.cert`)), key: resolve(dir, str(t.key, file, `${what}.key`)) };
}
/**
 * A role's store from its configuration: its SQLite file, or PostgreSQL (the file then unused).
 * No `store` key: no choice made here (SQLite, unless STORE_URL says PostgreSQL: store-choice.ts).
 */
function storeOf(c: Record<string, unknown>, file: string, dir: string): { dbFile: string; store?: StoreChoice } {
  const s = storeFrom(c, file, dir);
  if (s.kind === 'postgres') return { dbFile: '', store: s };
  return c.store === undefined ? { dbFile: s.file } : { dbFile: s.file, store: { kind: 'sqlite' } };
}
function optMs(v: unknown, file: string, what: string): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) bad(file, `${what} must be a whole number of milliseconds`);
  return v;
}

/**
 * A role's store (issue 16): SQLite in `dbFile` (absent `store`, or `"store": {"kind":
 * "sqlite"}`), or `"store": {"kind": "postgres", "url": "postgres://...", "schema"?}` once the
 * PostgreSQL stores are in this build (the same keys as the pg branch's optStore).
 */
export type StoreFileChoice = { kind: 'sqlite'; file: string } | { kind: 'postgres'; url: string; schema?: string; synchronousCommit?: boolean };
export function storeFrom(c: Record<string, unknown>, file: string, dir: string): StoreFileChoice {
  const o = c.store as Record<string, unknown> | undefined;
  if (o !== undefined && (typeof o !== 'object' || o === null)) bad(file, 'store must be {"kind": "sqlite"} or {"kind": "postgres", "url", "schema"?}');
  if (o !== undefined) onlyKeys(o, `${file} store`, ['kind', 'url', 'schema', 'synchronousCommit']);
  if (o === undefined || o.kind === 'sqlite') {
    const db = resolve(dir, str(c.dbFile, file, 'dbFile'));
    // A shared store in a folder that is not there is a typo, not a new deployment: the server would
    // start on an empty database and answer "unknown device" to every phone (found by review).
    if (!existsSync(dirname(db))) bad(file, `dbFile ${db}: its folder does not exist`);
    return { kind: 'sqlite', file: db };
  }
  if (o.kind === 'postgres') {
    const url = str(o.url, file, 'store.url');
    if (!/^postgres(ql)?:\/\/\S+$/.test(url)) bad(file, 'store.url must be a postgres:// URL');
    // The schema, search path and timeouts are the server's to set (server-kit/pg.ts): a URL's
    // ?options= would override them (a search_path into another role's schema).
    if (/[?&]options=/i.test(url)) bad(file, "store.url must not carry 'options' (search_path, timeouts): name the schema in store.schema");
    if (o.schema !== undefined && (typeof o.schema !== 'string' || !/^[a-z_][a-z0-9_]{0,62}$/.test(o.schema))) bad(file, 'store.schema must be a lower-case SQL identifier');
    // PostgreSQL's synchronous_commit for this store (server-kit/pg.ts): true (default) or false.
    if (o.synchronousCommit !== undefined && typeof o.synchronousCommit !== 'boolean') bad(file, 'store.synchronousCommit must be true or false');
    return { kind: 'postgres', url, ...(o.schema === undefined ? {} : { schema: o.schema as string }), ...(o.synchronousCommit === undefined ? {} : { synchronousCommit: o.synchronousCommit as boolean }) };
  }
  return bad(file, `store.kind must be "sqlite" or "postgres", not ${JSON.stringify(o.kind)}`);
}
/** `"redis": {"url", "namespace", "timeoutMs"?}` (server-kit/redis.ts), or undefined. */
function redisFrom(v: unknown, file: string): SharedStateConfig | undefined {
  if (v === undefined) return undefined;
  try {
    return sharedStateConfig(v, file);
  } catch (e) {
    if (e instanceof ImplementationError) throw new ImplementationError('CFG_INVALID', e.message.replace(/^[A-Z_]+: /, ''));
    throw e;
  }
}
/** Refuses keys a role does not read (a typo would otherwise be silently ignored). */
function onlyKeys(c: Record<string, unknown>, file: string, keys: readonly string[]): void {
  for (const k of Object.keys(c)) if (!keys.includes(k)) bad(file, `unknown key '${k.slice(0, 40)}' (this role reads: ${keys.join(', ')})`);
}

/** The keys each role's file may hold (`usbphone serve --help` lists them). */
export const ROLE_KEYS = {
  gateway: ['name', 'host', 'port', 'operatorPort', 'linkKeyFile', 'upstreams', 'tls', 'limits', 'attacks', 'redis', 'policy', 'adminKeyFile'],
  reg: ['name', 'host', 'devicePort', 'linkPort', 'dbFile', 'store', 'masterKeyFile', 'masterKeyEnv', 'linkKeyFile', 'linkTls', 'adminKeyFile', 'bizServers', 'regions', 'stepTimeoutMs', 'pendingTtlMs', 'healthIntervalMs', 'policy', 'redis'],
  biz: ['name', 'region', 'host', 'devicePort', 'linkPort', 'adminPort', 'dbFile', 'store', 'storeKeyFile', 'linkKeyFile', 'linkTls', 'adminKeyFile', 'stepTimeoutMs', 'redis', 'bank'],
  policy: ['name', 'host', 'adminPort', 'adminKeyFile', 'dbFile', 'store', 'policyKeyFile', 'initialTable', 'periodMs', 'thresholds', 'tableLifetimeMs'],
  operator: ['name', 'host', 'port', 'dbFile', 'store', 'tls', 'tokenKeyFile', 'monitoredPeriodDays', 'clients'],
} as const;
export type Role = keyof typeof ROLE_KEYS;

export function readJsonFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ImplementationError('CFG_UNREADABLE', `${file}: ${(e as Error).message}`);
  }
  try {
    const v = JSON.parse(text);
    if (typeof v !== 'object' || v === null || Array.isArray(v)) bad(file, 'must hold a JSON object');
    return v;
  } catch (e) {
    if (e instanceof ImplementationError) throw e;
    throw new ImplementationError('CFG_INVALID', `${file}: not JSON (${(e as Error).message})`);
  }
}

export function regConfigFrom(c: Record<string, unknown>, file: string): RegConfig {
  const dir = dirname(resolve(file));
  const p = (v: unknown, what: string) => resolve(dir, str(v, file, what));
  onlyKeys(c, file, ROLE_KEYS.reg);
  const n = name(c.name, file);
  if (!Array.isArray(c.bizServers) || c.bizServers.length === 0) bad(file, 'bizServers must be a non-empty array');
  if (!Array.isArray(c.regions)) bad(file, 'regions must be an array');
  const bizServers = c.bizServers.map((s: Record<string, unknown>, i: number) => ({
    name: name(s?.name, `${file} bizServers[${i}]`),
    region: str(s?.region, file, `bizServers[${i}].region`),
    url: str(s?.url, file, `bizServers[${i}].url`),
    adminUrl: str(s?.adminUrl, file, `bizServers[${i}].adminUrl`),
  }));
  const regions = c.regions.map((r: Record<string, unknown>, i: number) => {
    const cidr = str(r?.cidr, file, `regions[${i}].cidr`);
    parseCidr(cidr);
    return { cidr, region: str(r?.region, file, `regions[${i}].region`) };
  });
  return {
    name: n,
    host: typeof c.host === 'string' ? c.host : '127.0.0.1',
    devicePort: port(c.devicePort, file, 'devicePort', true),
    linkPort: port(c.linkPort, file, 'linkPort')!,
    ...storeOf(c, file, dir),
    ring: loadMasterKeyring({ file: c.masterKeyFile === undefined ? undefined : p(c.masterKeyFile, 'masterKeyFile'), env: typeof c.masterKeyEnv === 'string' ? c.masterKeyEnv : undefined }),
    linkKey: linkKeyFor(readKeyFile(p(c.linkKeyFile, 'linkKeyFile'), 'link key'), n),
    linkTls: optTls(c.linkTls, file, 'linkTls', dir),
    adminKey: readKeyFile(p(c.adminKeyFile, 'adminKeyFile'), 'admin key'),
    bizServers,
    regions,
    stepTimeoutMs: optMs(c.stepTimeoutMs, file, 'stepTimeoutMs'),
    pendingTtlMs: optMs(c.pendingTtlMs, file, 'pendingTtlMs'),
    healthIntervalMs: optMs(c.healthIntervalMs, file, 'healthIntervalMs'),
    ...(c.policy === undefined ? {} : { policy: policyRef(c.policy, file) }),
    ...(c.redis === undefined ? {} : { redis: redisFrom(c.redis, file) }),
  };
}

/** A reg config's `policy`: {name, adminUrl (http(s)://), pollMs?}. */
function policyRef(v: unknown, file: string): { name: string; adminUrl: string; pollMs?: number } {
  const o = v as Record<string, unknown>;
  if (typeof v !== 'object' || v === null) bad(file, 'policy must be {name, adminUrl, pollMs?}');
  const adminUrl = str(o.adminUrl, file, 'policy.adminUrl');
  if (!/^https?:\/\/\S+$/.test(adminUrl)) bad(file, 'policy.adminUrl must be an http:// or https:// URL');
  const pollMs = optMs(o.pollMs, file, 'policy.pollMs');
  return { name: name(o.name, `${file} policy`), adminUrl, ...(pollMs === undefined ? {} : { pollMs }) };
}

export function bizConfigFrom(c: Record<string, unknown>, file: string): BizConfig {
  const dir = dirname(resolve(file));
  const p = (v: unknown, what: string) => resolve(dir, str(v, file, what));
  onlyKeys(c, file, ROLE_KEYS.biz);
  const n = name(c.name, file);
  return {
    name: n,
    region: str(c.region, file, 'region'),
    host: typeof c.host === 'string' ? c.host : '127.0.0.1',
    devicePort: port(c.devicePort, file, 'devicePort', true),
    linkPort: port(c.linkPort, file, 'linkPort')!,
    adminPort: port(c.adminPort, file, 'adminPort')!,
    ...storeOf(c, file, dir),
    storageKey: readKeyFile(p(c.storeKeyFile, 'storeKeyFile'), 'storage key'),
    linkKey: linkKeyFor(readKeyFile(p(c.linkKeyFile, 'linkKeyFile'), 'link key'), n),
    linkTls: optTls(c.linkTls, file, 'linkTls', dir),
    adminKey: readKeyFile(p(c.adminKeyFile, 'adminKeyFile'), 'admin key'),
    stepTimeoutMs: optMs(c.stepTimeoutMs, file, 'stepTimeoutMs'),
    ...(c.redis === undefined ? {} : { redis: redisFrom(c.redis, file) }),
    ...(c.bank === undefined ? {} : { bank: bankFrom(c.bank, file, dir) }),
  };
}

/**
 * A business server's bank (S4): `{"mode": 1|2, "httpPort": N, "operator"?: {"url": "https://...",
 * "caFile": "tls/ca.pem", "clientFile": "operator-client.json"}, "operatorDeadlineMs"?}`.
 */
function bankFrom(v: unknown, file: string, dir: string): BankConfig {
  const o = v as Record<string, unknown>;
  if (typeof v !== 'object' || v === null) bad(file, 'bank must be {mode, httpPort, operator?}');
  if (o.mode !== 1 && o.mode !== 2) bad(file, 'bank.mode must be 1 (by the SIM, S4.3) or 2 (through the operator, S4.4)');
  let operator: BankConfig['operator'];
  if (o.operator !== undefined) {
    const op = o.operator as Record<string, unknown>;
    if (typeof op !== 'object' || op === null) bad(file, 'bank.operator must be {url, caFile, clientFile}');
    const url = str(op.url, file, 'bank.operator.url');
    if (!/^https:\/\/\S+$/.test(url)) bad(file, 'bank.operator.url must be an https:// URL');
    const caFile = resolve(dir, str(op.caFile, file, 'bank.operator.caFile'));
    let ca: string;
    try {
      ca = readFileSync(caFile, 'utf8');
    } catch (e) {
      throw new ImplementationError('CFG_UNREADABLE', `${file}: bank.operator.caFile: ${(e as Error).message}`);
    }
    const client = readJsonFile(resolve(dir, str(op.clientFile, file, 'bank.operator.clientFile')));
    if (typeof client.clientId !== 'string' || typeof client.clientSecret !== 'string') bad(file, 'bank.operator.clientFile must hold {"clientId", "clientSecret"}');
    operator = { url, ca, clientId: client.clientId, clientSecret: client.clientSecret };
  }
  return {
    mode: o.mode,
    httpPort: port(o.httpPort, file, 'bank.httpPort')!,
    ...(operator ? { operator } : {}),
    ...(o.operatorDeadlineMs === undefined ? {} : { operatorDeadlineMs: optMs(o.operatorDeadlineMs, file, 'bank.operatorDeadlineMs') }),
  };
}

/** What a gateway's file adds to GatewayConfig: its name in attack reports and its policy server (deploy/roles.ts wires them). */
export interface GatewayFileExtras {
  /** The gateway's name in its attack reports (default 'gateway'): distinct per gateway. */
  name: string;
  /** S3.5 / S3.11: where attack reports go and tables come from, with the admin key. */
  policy?: { name: string; adminUrl: string; pollMs?: number; adminKey: Uint8Array };
}

export function gatewayExtrasFrom(c: Record<string, unknown>, file: string): GatewayFileExtras {
  const dir = dirname(resolve(file));
  const n = c.name === undefined ? 'gateway' : name(c.name, file);
  if (c.policy === undefined) return { name: n };
  const ref = policyRef(c.policy, file);
  return { name: n, policy: { ...ref, adminKey: readKeyFile(resolve(dir, str(c.adminKeyFile, file, 'adminKeyFile (needed with policy)')), 'admin key') } };
}

export function gatewayConfigFrom(c: Record<string, unknown>, file: string): GatewayConfig {
  onlyKeys(c, file, ROLE_KEYS.gateway);
  const dir = dirname(resolve(file));
  const root = readKeyFile(resolve(dir, str(c.linkKeyFile, file, 'linkKeyFile')), 'link key');
  if (!Array.isArray(c.upstreams) || c.upstreams.length === 0) bad(file, 'upstreams must be a non-empty array');
  const tls = c.tls as { cert?: unknown; key?: unknown } | undefined;
  return {
    host: typeof c.host === 'string' ? c.host : '127.0.0.1',
    port: port(c.port, file, 'port')!,
    operatorPort: c.operatorPort === undefined ? undefined : port(c.operatorPort, file, 'operatorPort')!,
    upstreams: c.upstreams.map((u: Record<string, unknown>, i: number) => {
      const n = name(u?.name, `${file} upstreams[${i}]`);
      const linkCa = u?.linkCa === undefined ? undefined : resolve(dir, str(u.linkCa, file, `upstreams[${i}].linkCa`));
      return { name: n, linkUrl: str(u?.linkUrl, file, `upstreams[${i}].linkUrl`), linkKey: linkKeyFor(root, n), linkCa };
    }),
    tls: tls ? { cert: resolve(dir, str(tls.cert, file, 'tls.cert')), key: resolve(dir, str(tls.key, file, 'tls.key')) } : undefined,
    limits: limitsFrom(c.limits, file),
    ...(c.attacks === undefined ? {} : { attacks: attacksFrom(c.attacks, file) }),
    ...(c.redis === undefined ? {} : { redis: redisFrom(c.redis, file) }),
  };
}

/**
 * A gateway config's `limits` (gateway/limits.ts GatewayLimits). The link settings are checked
 * here: `linkHeartbeatMs` (a PING per silent period, 10 ms..1 h) and `linkHeartbeatMisses`
 * (unanswered PINGs before a link is dead, 1..100); docs/architecture.md §"Link protocol".
 */
function limitsFrom(v: unknown, file: string): Partial<GatewayLimits> | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'object' || v === null || Array.isArray(v)) bad(file, 'limits must be an object');
  const l = v as Partial<GatewayLimits>;
  try {
    heartbeatSettings({ heartbeatMs: l.linkHeartbeatMs, heartbeatMisses: l.linkHeartbeatMisses });
  } catch (e) {
    bad(file, `limits.link${(e as Error).message.replace(/^h/, 'H')}`);
  }
  return l;
}

function attacksFrom(v: unknown, file: string): Partial<AttackLimits> {
  if (typeof v !== 'object' || v === null) bad(file, 'attacks must be {enabled?, windowMs?, limit?, periodMs?, maxTrackedIps?}');
  try {
    attackLimits(v as Partial<AttackLimits>);
  } catch (e) {
    bad(file, (e as Error).message.replace(/^[A-Z_]+: /, ''));
  }
  return v as Partial<AttackLimits>;
}

/**
 * The security policy server (S3.5-S3.11): `{"name"?, "host"?, "adminPort", "adminKeyFile",
 * "dbFile" | "store", "policyKeyFile", "initialTable": {sites: [...]}, "periodMs", "thresholds"?,
 * "tableLifetimeMs"?}`.
 */
export function policyConfigFrom(c: Record<string, unknown>, file: string): PolicyConfig {
  onlyKeys(c, file, ROLE_KEYS.policy);
  const dir = dirname(resolve(file));
  const p = (v: unknown, what: string) => resolve(dir, str(v, file, what));
  if (typeof c.initialTable !== 'object' || c.initialTable === null) bad(file, 'initialTable must be {"sites": [{site, mechanisms, floor, degree}, ...]} (docs/architecture.md)');
  const periodMs = optMs(c.periodMs, file, 'periodMs');
  if (periodMs === undefined || periodMs < 1_000) bad(file, 'periodMs must be a whole number of ms, at least 1000');
  if (c.thresholds !== undefined && (!Array.isArray(c.thresholds) || !c.thresholds.every((x) => Number.isInteger(x) && x > 0))) bad(file, 'thresholds must be an array of positive whole numbers (ppm)');
  return {
    ...(c.name === undefined ? {} : { name: name(c.name, file) }),
    host: typeof c.host === 'string' ? c.host : '127.0.0.1',
    adminPort: port(c.adminPort, file, 'adminPort')!,
    adminKey: readKeyFile(p(c.adminKeyFile, 'adminKeyFile'), 'admin key'),
    ...storeOf(c, file, dir),
    privateKey: readPolicyKey(p(c.policyKeyFile, 'policyKeyFile')).privateKey,
    initialTable: c.initialTable,
    periodMs,
    ...(c.thresholds === undefined ? {} : { thresholds: c.thresholds as number[] }),
    ...(c.tableLifetimeMs === undefined ? {} : { tableLifetimeMs: optMs(c.tableLifetimeMs, file, 'tableLifetimeMs') }),
  };
}

/** The OAuth2 clients an operator registers at start: each a {clientId, clientSecret} file (the bank's), with all scopes. */
export interface OperatorFileExtras { clients: OperatorClientFile[] }

/**
 * The mobile operator (S4): `{"name"?, "host"?, "port", "dbFile" | "store", "tls": {cert, key},
 * "tokenKeyFile", "monitoredPeriodDays"?, "clients"?: ["operator-client.json", ...]}`.
 */
export function operatorConfigFrom(c: Record<string, unknown>, file: string): OperatorConfig & OperatorFileExtras {
  onlyKeys(c, file, ROLE_KEYS.operator);
  const dir = dirname(resolve(file));
  const p = (v: unknown, what: string) => resolve(dir, str(v, file, what));
  const tls = optTls(c.tls, file, 'tls', dir);
  if (!tls) bad(file, 'tls must be {cert, key}: the operator speaks HTTPS only');
  if (c.monitoredPeriodDays !== undefined && c.monitoredPeriodDays !== null && (!Number.isInteger(c.monitoredPeriodDays) || (c.monitoredPeriodDays as number) < 1)) bad(file, 'monitoredPeriodDays must be a whole number of days, or null');
  if (c.clients !== undefined && !Array.isArray(c.clients)) bad(file, 'clients must be an array of client files');
  const clients = ((c.clients as unknown[] | undefined) ?? []).map((f, i) => {
    const v = readJsonFile(p(f, `clients[${i}]`));
    if (typeof v.clientId !== 'string' || typeof v.clientSecret !== 'string' || v.clientSecret.length < 32) bad(file, `clients[${i}] must hold {"clientId", "clientSecret"} (a secret of 32+ characters)`);
    return { clientId: v.clientId, clientSecret: v.clientSecret };
  });
  return {
    ...(c.name === undefined ? {} : { name: name(c.name, file) }),
    host: typeof c.host === 'string' ? c.host : '127.0.0.1',
    port: port(c.port, file, 'port')!,
    ...storeOf(c, file, dir),
    tls,
    tokenKey: readKeyFile(p(c.tokenKeyFile, 'tokenKeyFile'), 'operator token key'),
    monitoredPeriodDays: (c.monitoredPeriodDays as number | null | undefined) ?? null,
    clients,
  };
}

// ---- the embedded default ----

export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_GATEWAY_PORT = 7400;
/** The gateway's operator port (/healthz, /metrics), off the device-facing port. */
export const DEFAULT_OPERATOR_PORT = 7401;

export interface RolePorts { device: number | null; link: number; admin?: number }
export interface StackPorts {
  gateway: number;
  [server: string]: number | RolePorts;
}

export const DEFAULT_TOPOLOGY = {
  regs: ['reg-primary', 'reg-backup'] as const,
  biz: [
    { name: 'biz-east', region: 'east' },
    { name: 'biz-west', region: 'west' },
  ],
  regions: [
    { cidr: '127.1.0.0/16', region: 'east' },
    { cidr: '127.2.0.0/16', region: 'west' },
  ],
};

/**
 * The embedded default's ports from a base port (`usbphone serve all --port BASE`): the
 * gateway on BASE, reg-primary BASE+10/+11, reg-backup BASE+20/+21, biz-east BASE+30/+31/+32,
 * biz-west BASE+40/+41/+42 (device/link/admin); the mobile operator's API is BASE+50
 * (OPERATOR_PORT_OFFSET). Tests use 0 (ephemeral) everywhere.
 */
export function portsForBase(base: number): Record<string, RolePorts> {
  return {
    'reg-primary': { device: base + 10, link: base + 11 },
    'reg-backup': { device: base + 20, link: base + 21 },
    'biz-east': { device: base + 30, link: base + 31, admin: base + 32 },
    'biz-west': { device: base + 40, link: base + 41, admin: base + 42 },
  };
}
/** A business server's bank account pages (S4, HTTP): its device port + 3 (BASE+33, BASE+43). */
export const BANK_PAGE_PORT_OFFSET = 3;
/** The mobile operator's HTTPS API (operator-server/, S4): BASE+50. */
export const OPERATOR_PORT_OFFSET = 50;
/** The security policy server's admin API (policy-server/, S3): BASE+45. */
export const POLICY_PORT_OFFSET = 45;
/** The embedded stack's attack period T (S3.5, S3.9), ms: the gateway's reports and the policy server's tables. */
export const DEFAULT_POLICY_PERIOD_MS = 60_000;

/**
 * The configured initial attack statistics table (S3.10) of the embedded stack: each business
 * server offers the three mechanisms (S3.3), password the floor, degree 0.3 each (the patent's
 * example). The policy server starts from it and the phones ship with it (UPMON.CFG).
 */
export const DEFAULT_INITIAL_TABLE = {
  sites: DEFAULT_TOPOLOGY.biz.map((b) => ({ site: b.name, mechanisms: ['password', 'otp', 'fingerprint'], floor: 'password', degree: 0.3 })),
};

/**
 * What the factory writes into a phone made for the servers of `stateDir` (S3.10, S3.11): the
 * policy server's public key (made in the state directory on first need) and the initial table.
 */
export function factoryPolicyFor(stateDir: string): FactoryPolicy {
  return { key: ensurePolicyKey(stateFiles(stateDir).policyKey).publicKey, initialTable: DEFAULT_INITIAL_TABLE };
}
/** The highest offset added to the base (portsForBase, OPERATOR_PORT_OFFSET). */
export const BASE_PORT_SPAN = OPERATOR_PORT_OFFSET;

/** The embedded default's fixed ports (base 7400). */
export const DEFAULT_PORTS: Record<string, RolePorts> = portsForBase(DEFAULT_GATEWAY_PORT);

/** Set in a child server's environment, with its stdin a pipe: the child stops when that pipe closes (its parent died). */
export const PARENT_PIPE_ENV = 'USBPHONE_PARENT_PIPE';

export const stateFiles = (stateDir: string) => ({
  masterKey: join(stateDir, 'master.key'),
  linkKey: join(stateDir, 'link.key'),
  adminKey: join(stateDir, 'admin.key'),
  regDb: join(stateDir, 'reg.sqlite'),
  bizDb: join(stateDir, 'biz-accounts.sqlite'),
  /** The business servers' storage key: login keys are wrapped under it in bizDb. */
  storeKey: join(stateDir, 'store.key'),
  /** The mobile operator's subscriptions, cards and OAuth2 clients (operator-server/store.ts). */
  operatorDb: join(stateDir, 'operator.sqlite'),
  /** Signs the operator's bearer tokens (operator-server/tokens.ts). */
  operatorTokenKey: join(stateDir, 'operator-token.key'),
  /** The deployment CA and the operator's certificate (server-kit/tls-ca.ts): ca.pem is what the bank trusts. */
  tlsDir: join(stateDir, 'tls'),
  /** The bank's OAuth2 client credentials at the operator ({clientId, clientSecret}, JSON, 0600). */
  operatorClient: join(stateDir, 'operator-client.json'),
  /** The policy server's Ed25519 seed (policy-server/keys.ts): its public key goes into every phone. */
  policyKey: join(stateDir, POLICY_KEY_FILE),
  /** The policy server's reports and signed tables (policy-server/store.ts). */
  policyDb: join(stateDir, 'policy.sqlite'),
});

/** Creates the state directory's key files when missing (master.key, link.key, admin.key, store.key, operator-token.key). */
export function ensureStateKeys(stateDir: string): ReturnType<typeof stateFiles> {
  const f = stateFiles(stateDir);
  ensureMasterKeyFile(f.masterKey);
  ensureKeyFile(f.linkKey);
  ensureKeyFile(f.adminKey);
  ensureKeyFile(f.storeKey);
  ensureKeyFile(f.operatorTokenKey);
  ensurePolicyKey(f.policyKey);
  return f;
}

/** The bank's credentials at the operator, as the embedded stack keeps them. */
export interface OperatorClientFile { clientId: string; clientSecret: string }

/**
 * The bank's OAuth2 client credentials at the operator: read from `file`, or made (a random
 * 256-bit secret) and written 0600 when missing. `make` gives a new secret.
 */
export function ensureOperatorClientFile(file: string, make: () => string, clientId = 'bank'): OperatorClientFile {
  if (existsSync(file)) {
    const v = readJsonFile(file);
    if (typeof v.clientId !== 'string' || typeof v.clientSecret !== 'string' || v.clientSecret.length < 32) bad(file, 'must hold {"clientId": ..., "clientSecret": ...} (a secret of 32+ characters)');
    return { clientId: v.clientId, clientSecret: v.clientSecret };
  }
  mkdirSync(dirname(file), { recursive: true });
  const c = { clientId, clientSecret: make() };
  writeFileSync(file, JSON.stringify(c) + '\n', { mode: 0o600, flag: 'wx' });
  return c;
}
