// The live page's feed (deploy/feed-hub.ts -> page/page.js): one JSON Schema for every
// message, checked with ajv before a message leaves the hub. Besides the shapes it is a last
// tripwire for secrets: no object takes a property it does not list, every text field is
// short and printable, and no text may hold a run of 32 hex digits or 40 base64 characters
// (a key, a secret, a MAC or a token would; a user name is 'u-' + 20 hex digits), nor a number
// of 8 digits or more standing alone (an ICCID, an IMSI, a phone or account number would; not
// digits inside a hex name: the hub masks such numbers to their last 4, feed-hub.ts maskIds). The notes of
// the calls between servers (the bank's operator calls, the table reaching the registration
// server) take a narrow alphabet and no run of 5 digits: no ICCID, IMSI or number, at most the
// last 4 digits of one.
import { Ajv, type ValidateFunction } from 'ajv';

/** Bumped when a message changes shape; the page refuses a feed of another version. */
export const FEED_VERSION = 2;

const safeText = (maxLength: number) => ({
  type: 'string',
  maxLength,
  pattern: '^[^\\u0000-\\u001f\\u007f]*$',
  not: { anyOf: [{ pattern: '[0-9a-fA-F]{32}' }, { pattern: '[A-Za-z0-9+/_-]{40}' }, { pattern: '(^|[^0-9A-Za-z])[0-9]{8,}([^0-9A-Za-z]|$)' }] },
});
const name = { type: 'string', pattern: '^[a-z0-9][a-z0-9-]{0,31}$' };
const code = { type: 'string', pattern: '^[A-Z0-9_]{1,64}$|^unreadable$' };
const ip = { type: 'string', pattern: '^[0-9a-fA-F.:]{2,45}$' };
const user = { type: 'string', pattern: '^u-[0-9a-f]{20}$' };
const feature = { type: 'string', pattern: '^S[0-9]\\.[0-9]{1,2}$' };
const time = { type: 'number', minimum: 0 };
const gen = { type: 'integer', minimum: 0 };
const nullable = (s: object) => ({ anyOf: [s, { type: 'null' }] });
const msg = (kind: string, properties: Record<string, unknown>, required: string[]) => ({
  type: 'object',
  additionalProperties: false,
  required: ['kind', 't', ...required],
  properties: { kind: { const: kind }, t: time, ...properties },
});

export const PHONE_STATES = ['connecting', 'registering', 'registered', 'logging in', 'logged in', 'refused', 'not found'] as const;
/** The sequence diagram's lifelines (issue 17): the page lays them out in its own order. */
export const LIFELINES = ['phone', 'gateway', 'registration', 'business', 'operator', 'policy'] as const;

const phone = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'state', 'lastLogin', 'server', 'gen', 'user', 'lastCode', 'logins'],
  properties: {
    id: ip,
    label: safeText(40),
    state: { enum: [...PHONE_STATES] },
    lastLogin: nullable(time),
    server: nullable(name),
    gen: nullable(gen),
    user: nullable(user),
    lastCode: nullable(code),
    logins: { type: 'integer', minimum: 0 },
  },
};

const frameItem = {
  type: 'object',
  additionalProperties: false,
  required: ['t', 'kind', 'from', 'to', 'type', 'dest', 'feature', 'refused'],
  properties: {
    t: time,
    kind: { const: 'frame' },
    from: { enum: [...LIFELINES] },
    to: { enum: [...LIFELINES] },
    type: { type: 'string', pattern: '^[a-zA-Z0-9-]{1,20}$' },
    dest: name,
    feature,
    code,
    refused: { type: 'boolean' },
  },
};
/**
 * A message between servers the gateway does not relay (issue 17): the bank's operator calls
 * (S4.4, S4.6; `op` the CAMARA operation, the answer a verdict) and the attack table reaching
 * the registration server for this phone's credential reply (S3.11, `op` 'table vN').
 */
const callItem = {
  type: 'object',
  additionalProperties: false,
  required: ['t', 'kind', 'from', 'to', 'op', 'feature', 'refused'],
  properties: {
    t: time,
    kind: { const: 'call' },
    from: { enum: [...LIFELINES] },
    to: { enum: [...LIFELINES] },
    op: { type: 'string', pattern: '^[a-z0-9][a-z0-9 -]{0,23}$' },
    feature,
    answer: { type: 'string', pattern: '^[A-Za-z0-9 .\u2026-]{1,40}$', not: { pattern: '[0-9]{5}' } },
    code,
    ms: time,
    refused: { type: 'boolean' },
  },
};
const stepItem = {
  type: 'object',
  additionalProperties: false,
  required: ['t', 'kind', 'feature', 'step', 'detail', 'ok'],
  properties: { t: time, kind: { const: 'step' }, feature, step: safeText(60), detail: safeText(160), ok: { type: 'boolean' } },
};

const mech = { enum: ['password', 'otp', 'fingerprint'] };
const count = { type: 'integer', minimum: 0 };
const perMech = { type: 'object', additionalProperties: false, required: ['password', 'otp', 'fingerprint'], properties: { password: count, otp: count, fingerprint: count } };
/** One site of a published attack table (S3.10) and the attacks of the period it states (S3.5): names, rates and counts only. */
const tableSite = {
  type: 'object',
  additionalProperties: false,
  required: ['site', 'level', 'floor', 'degreePpm', 'mechs', 'attacks'],
  properties: {
    site: name,
    level: { type: 'integer', minimum: 1, maximum: 16 },
    floor: mech,
    degreePpm: { type: 'integer', minimum: 0, maximum: 1_000_000 },
    mechs: { type: 'array', maxItems: 3, items: { type: 'object', additionalProperties: false, required: ['mech', 'ratePpm'], properties: { mech, ratePpm: { type: 'integer', minimum: 0, maximum: 1_000_000 } } } },
    attacks: { type: 'object', additionalProperties: false, required: ['total', 'password', 'otp', 'fingerprint'], properties: { total: count, password: count, otp: count, fingerprint: count } },
  },
};

export const feedSchema = {
  $id: 'usbphone/feed',
  oneOf: [
    msg('hello', { version: { const: FEED_VERSION }, watching: nullable(ip), servers: { type: 'array', maxItems: 16, items: name } }, ['version', 'watching', 'servers']),
    msg('phones', { total: { type: 'integer', minimum: 0 }, phones: { type: 'array', maxItems: 200, items: phone } }, ['total', 'phones']),
    msg('trace', { phone: ip, item: { oneOf: [frameItem, callItem, stepItem] } }, ['phone', 'item']),
    msg(
      'server',
      {
        server: name,
        event: { enum: ['credentials issued', 'device not found', 'generation confirmed', 'login ok', 'login refused', 'password promoted', 'password confirmed', 'rotation fallback', 'session refused', 'device refused', 'server healthy', 'server unhealthy', 'link up', 'link down'] },
        code,
        user,
        gen,
        phone: ip,
      },
      ['server', 'event'],
    ),
    msg(
      'health',
      {
        servers: {
          type: 'array',
          maxItems: 16,
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['name', 'role', 'running', 'linkUp', 'sessions'],
            properties: { name, role: { enum: ['gateway', 'registration', 'business', 'operator'] }, running: { type: 'boolean' }, linkUp: nullable({ type: 'boolean' }), sessions: nullable({ type: 'integer', minimum: 0 }) },
          },
        },
        load: {
          type: 'object',
          additionalProperties: false,
          required: ['rssMiB', 'heapMiB', 'cpuPercent', 'eventLoopP99Ms', 'connections'],
          properties: { rssMiB: time, heapMiB: time, cpuPercent: time, eventLoopP99Ms: time, connections: { type: 'integer', minimum: 0 } },
        },
      },
      ['servers', 'load'],
    ),
    // S3: each table the policy server publishes, and the logins counted while the previous one was the latest.
    msg('table', { version: count, periodId: count, issuedAt: time, expiresAt: time, sites: { type: 'array', maxItems: 64, items: tableSite } }, ['version', 'periodId', 'issuedAt', 'expiresAt', 'sites']),
    msg(
      'choices',
      { version: count, sites: { type: 'array', maxItems: 64, items: { type: 'object', additionalProperties: false, required: ['site', 'logins'], properties: { site: name, logins: perMech } } } },
      ['version', 'sites'],
    ),
    msg('stats', { loginsPerSec: time, refusalsPerSec: time, p50Ms: nullable(time), p99Ms: nullable(time) }, ['loginsPerSec', 'refusalsPerSec', 'p50Ms', 'p99Ms']),
  ],
} as const;

export type FeedMessage = { kind: string; t: number; [k: string]: unknown };

let compiled: ValidateFunction | null = null;
/** The compiled validator (compiled once per process). */
export function feedValidator(): ValidateFunction {
  compiled ??= new Ajv({ allErrors: false, strict: true }).compile(feedSchema);
  return compiled;
}
