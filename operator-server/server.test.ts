// The operator's API over real HTTPS on loopback: the token endpoint, SIM Swap, the card
// lookups and the validity check, every refusal path, and every answer checked against
// docs/operator-api.yaml (ajv). A hostile-input table is thrown at every endpoint; nothing it
// sends changes the store.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { connect as tlsConnect } from 'node:tls';
import { createHash } from 'node:crypto';
import { setLogSink, type LogLine } from '../server-kit/log.ts';
import { OperatorPaths, OperatorErrors } from '../server-kit/operator-api.ts';
import { operatorFixture, openApiValidator, raw, api, tokenFor, card, T0, HOUR, DAY, type Fixture, type RawAnswer } from './test-util.ts';
import { storeRows } from '../server-kit/store-backends.ts';

const oa = openApiValidator();
let f: Fixture;
let bankToken: string;
const lines: LogLine[] = [];
const prevSink = setLogSink((l) => lines.push(l), 'debug');
test.before(async () => {
  f = await operatorFixture({ monitoredPeriodDays: 60 });
  bankToken = await tokenFor(f, f.bank);
});
test.after(async () => {
  await f.stop();
  setLogSink(prevSink);
});

/** Asserts the answer conforms to the document, and returns it. */
function conforms(path: string, a: RawAnswer, method = 'post', generic?: string): RawAnswer {
  assert.equal(oa.check(path, method, a, generic), [], `${method} ${path}`);
  return a;
}
function refused(a: RawAnswer, status: number, code: string, path: string, generic?: string): void {
  conforms(path, a, 'post', generic);
  assert.is(a.status, status, a.text);
  assert.is((a.json as { code: string }).code, code, a.text);
  assert.is((a.json as { status: number }).status, status);
}
/** Everything the store holds, hashed: a refused request must leave it as it was. */
async function storeDigest(): Promise<string> {
  const rows: string[] = [];
  for (const t of ['subscriptions', 'cards', 'oauth_clients']) rows.push(JSON.stringify(await storeRows(f.server.store, `SELECT * FROM ${t} ORDER BY 1`)));
  return createHash('sha256').update(rows.join('\n')).digest('hex');
}

test('token: client credentials by HTTP Basic and in the body; a short-lived bearer token, not cached', async () => {
  const basic = 'Basic ' + Buffer.from(`${f.bank.id}:${f.bank.secret}`).toString('base64');
  const a = conforms(OperatorPaths.token, await raw(f, 'POST', OperatorPaths.token, { headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic }, body: 'grant_type=client_credentials' }));
  assert.is(a.status, 200);
  const j = a.json as { token_type: string; expires_in: number; scope: string; access_token: string };
  assert.is(j.token_type, 'Bearer');
  assert.is(j.expires_in, 300);
  assert.is(j.scope.split(' ').length, 5);
  assert.is(a.headers['cache-control'], 'no-store');
  assert.is(a.headers.pragma, 'no-cache');
  const b = await raw(f, 'POST', OperatorPaths.token, {
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', client_id: f.bank.id, client_secret: f.bank.secret, scope: 'sim-swap:check' }).toString(),
  });
  assert.is(conforms(OperatorPaths.token, b).status, 200);
  assert.is((b.json as { scope: string }).scope, 'sim-swap:check');
});

test('token: every refusal is RFC 6749 §5.2 with its error code', async () => {
  const form = 'application/x-www-form-urlencoded';
  const basic = (id: string, s: string) => 'Basic ' + Buffer.from(`${id}:${s}`).toString('base64');
  // Wrong secrets made from the real (random) one by changing one character to another one of
  // the same alphabet: always wrong, whatever the secret is (not 'x' + rest: right 1 run in 64).
  const wrongAt = (s: string, i: number) => s.slice(0, i) + (s[i] === 'A' ? 'B' : 'A') + s.slice(i + 1);
  const secret = f.bank.secret;
  for (const i of [0, secret.length - 1]) assert.is.not(wrongAt(secret, i), secret);
  const cases: [string, Record<string, string>, string, number, string][] = [
    ['wrong secret (first character)', { 'content-type': form, authorization: basic('bank', wrongAt(secret, 0)) }, 'grant_type=client_credentials', 401, 'invalid_client'],
    ['wrong secret (last character)', { 'content-type': form, authorization: basic('bank', wrongAt(secret, secret.length - 1)) }, 'grant_type=client_credentials', 401, 'invalid_client'],
    ['wrong secret (one character short)', { 'content-type': form, authorization: basic('bank', secret.slice(0, -1)) }, 'grant_type=client_credentials', 401, 'invalid_client'],
    ['unknown client', { 'content-type': form, authorization: basic('nobody', f.bank.secret) }, 'grant_type=client_credentials', 401, 'invalid_client'],
    ['no credentials', { 'content-type': form }, 'grant_type=client_credentials', 401, 'invalid_client'],
    ['not Basic', { 'content-type': form, authorization: 'Digest abc' }, 'grant_type=client_credentials', 401, 'invalid_client'],
    ['two methods', { 'content-type': form, authorization: basic('bank', f.bank.secret) }, `grant_type=client_credentials&client_id=bank&client_secret=${f.bank.secret}`, 400, 'invalid_request'],
    ['no grant_type', { 'content-type': form, authorization: basic('bank', f.bank.secret) }, '', 400, 'invalid_request'],
    ['other grant', { 'content-type': form, authorization: basic('bank', f.bank.secret) }, 'grant_type=password', 400, 'unsupported_grant_type'],
    ['scope not granted', { 'content-type': form, authorization: basic('narrow', f.narrow.secret) }, 'grant_type=client_credentials&scope=sim-swap:retrieve-date', 400, 'invalid_scope'],
    ['unknown scope', { 'content-type': form, authorization: basic('bank', f.bank.secret) }, 'grant_type=client_credentials&scope=admin', 400, 'invalid_scope'],
    ['repeated parameter', { 'content-type': form, authorization: basic('bank', f.bank.secret) }, 'grant_type=client_credentials&grant_type=client_credentials', 400, 'invalid_request'],
    ['JSON body', { 'content-type': 'application/json', authorization: basic('bank', f.bank.secret) }, '{"grant_type":"client_credentials"}', 400, 'invalid_request'],
    ['bad x-correlator', { 'content-type': form, authorization: basic('bank', f.bank.secret), 'x-correlator': 'a b' }, 'grant_type=client_credentials', 400, 'invalid_request'],
  ];
  for (const [what, headers, body, status, error] of cases) {
    const a = conforms(OperatorPaths.token, await raw(f, 'POST', OperatorPaths.token, { headers, body }));
    assert.is(a.status, status, what);
    assert.is((a.json as { error: string }).error, error, what);
    if (status === 401) assert.match(String(a.headers['www-authenticate']), /^Basic /, what);
  }
});

test('sim-swap check: swapped within maxAge, default 240 h, range and shape refusals', async () => {
  const p = OperatorPaths.simSwapCheck;
  const swapped = async (body: object) => (conforms(p, await api(f, p, bankToken, body)).json as { swapped: boolean }).swapped;
  assert.is(await swapped({ phoneNumber: '+447700900002', maxAge: 3 }), true);
  assert.is(await swapped({ phoneNumber: '+447700900002', maxAge: 1 }), false);
  assert.is(await swapped({ phoneNumber: '+447700900002' }), true);
  assert.is(await swapped({ phoneNumber: '+447700900001' }), false);
  assert.is(await swapped({ phoneNumber: '+447700900001', maxAge: 30 * 24 }), true);
  refused(await api(f, p, bankToken, { phoneNumber: '+447700900001', maxAge: 0 }), 400, 'OUT_OF_RANGE', p);
  refused(await api(f, p, bankToken, { phoneNumber: '+447700900001', maxAge: 2401 }), 400, 'OUT_OF_RANGE', p);
  refused(await api(f, p, bankToken, { phoneNumber: '+447700900001', maxAge: 1.5 }), 400, 'INVALID_ARGUMENT', p);
  refused(await api(f, p, bankToken, { phoneNumber: '+447700900001', maxAge: '24' }), 400, 'INVALID_ARGUMENT', p);
  refused(await api(f, p, bankToken, { maxAge: 24 }), 422, 'MISSING_IDENTIFIER', p);
  refused(await api(f, p, bankToken, { phoneNumber: '447700900001' }), 400, 'INVALID_ARGUMENT', p);
  refused(await api(f, p, bankToken, { phoneNumber: '+447700900099' }), 404, 'IDENTIFIER_NOT_FOUND', p);
});

test('sim-swap retrieve-date: RFC 3339 with time zone; null with monitoredPeriod before the monitored period', async () => {
  const p = OperatorPaths.simSwapRetrieveDate;
  const a = conforms(p, await api(f, p, bankToken, { phoneNumber: '+447700900002' }));
  assert.equal(a.json, { latestSimChange: new Date(T0 - 2 * HOUR).toISOString() });
  assert.match((a.json as { latestSimChange: string }).latestSimChange, /Z$/);
  assert.equal((await api(f, p, bankToken, { phoneNumber: '+447700900001' })).json, { latestSimChange: new Date(T0 - 30 * DAY).toISOString() });
  f.clock.t = T0 + 80 * DAY;
  try {
    const t = await tokenFor(f, f.bank);
    const b = conforms(p, await api(f, p, t, { phoneNumber: '+447700900001' }));
    assert.equal(b.json, { latestSimChange: null, monitoredPeriod: 60 });
    // A maxAge beyond the monitored period cannot be answered.
    refused(await api(f, OperatorPaths.simSwapCheck, t, { phoneNumber: '+447700900001', maxAge: 2400 }), 400, 'OUT_OF_RANGE', OperatorPaths.simSwapCheck);
  } finally {
    f.clock.t = T0;
  }
  refused(await api(f, p, bankToken, {}), 422, 'MISSING_IDENTIFIER', p);
  refused(await api(f, p, bankToken, { phoneNumber: '+447700900099' }), 404, 'IDENTIFIER_NOT_FOUND', p);
});

test('card info <-> phone number (S4.4): both ways, replaced and suspended cards say so', async () => {
  const toN = OperatorPaths.cardToNumber;
  const toC = OperatorPaths.numberToCard;
  assert.equal(conforms(toN, await api(f, toN, bankToken, { iccid: card(1).iccid })).json, { phoneNumber: '+447700900001', cardStatus: 'active' });
  assert.equal(conforms(toN, await api(f, toN, bankToken, { imsi: card(3).imsi })).json, { phoneNumber: '+447700900002', cardStatus: 'active' });
  assert.equal(conforms(toN, await api(f, toN, bankToken, { iccid: card(2).iccid })).json, { phoneNumber: '+447700900002', cardStatus: 'replaced' });
  assert.equal(conforms(toC, await api(f, toC, bankToken, { phoneNumber: '+447700900002' })).json, { ...card(3), cardStatus: 'active' });
  assert.equal(conforms(toC, await api(f, toC, bankToken, { phoneNumber: '+447700900004' })).json, { ...card(4, 'R-UIM'), cardStatus: 'suspended' });
  refused(await api(f, toN, bankToken, {}), 422, 'MISSING_IDENTIFIER', toN);
  refused(await api(f, toN, bankToken, { iccid: card(1).iccid, imsi: card(1).imsi }), 400, 'INVALID_ARGUMENT', toN);
  refused(await api(f, toN, bankToken, { iccid: card(99).iccid }), 404, 'IDENTIFIER_NOT_FOUND', toN);
  refused(await api(f, toN, bankToken, { iccid: card(1).iccid.slice(0, -1) + String((Number(card(1).iccid.at(-1)) + 1) % 10) }), 400, 'INVALID_ARGUMENT', toN);
  refused(await api(f, toC, bankToken, { phoneNumber: '+447700900099' }), 404, 'IDENTIFIER_NOT_FOUND', toC);
});

test('card validity (S4.6): valid only when issued, active and matching; invalid says why', async () => {
  const p = OperatorPaths.checkValidity;
  const v = async (body: object) => conforms(p, await api(f, p, bankToken, body)).json;
  assert.equal(await v({ iccid: card(1).iccid }), { valid: true });
  assert.equal(await v({ iccid: card(1).iccid, imsi: card(1).imsi, phoneNumber: '+447700900001' }), { valid: true });
  assert.equal(await v({ imsi: card(3).imsi, phoneNumber: '+447700900002' }), { valid: true });
  assert.equal(await v({ iccid: card(99).iccid }), { valid: false, reason: 'UNKNOWN_CARD' });
  assert.equal(await v({ imsi: '001010123456789' }), { valid: false, reason: 'UNKNOWN_CARD' });
  assert.equal(await v({ iccid: card(2).iccid }), { valid: false, reason: 'CARD_REPLACED' });
  assert.equal(await v({ iccid: card(4).iccid }), { valid: false, reason: 'CARD_SUSPENDED' });
  assert.equal(await v({ iccid: card(1).iccid, imsi: card(3).imsi }), { valid: false, reason: 'IDENTIFIERS_MISMATCH' });
  assert.equal(await v({ iccid: card(1).iccid, phoneNumber: '+447700900002' }), { valid: false, reason: 'NUMBER_MISMATCH' });
  refused(await api(f, p, bankToken, { phoneNumber: '+447700900001' }), 422, 'MISSING_IDENTIFIER', p);
});

test('authentication and scope: missing, malformed, forged, expired tokens are 401; a missing scope is 403', async () => {
  const p = OperatorPaths.simSwapRetrieveDate;
  const body = { phoneNumber: '+447700900001' };
  const none = await api(f, p, null, body);
  refused(none, 401, 'UNAUTHENTICATED', p);
  assert.is(none.headers['www-authenticate'], 'Bearer realm="operator"');
  const [payload, tag] = bankToken.split('.');
  // A token whose payload claims more (another client) under the old tag.
  const forgedPayload = Buffer.from(JSON.stringify({ v: 1, sub: 'narrow', scope: 'sim-swap:retrieve-date', exp: 9e9, jti: '00' })).toString('base64url');
  for (const [what, t] of [
    ['garbage', 'garbage'],
    ['tag cut', `${payload}.${tag!.slice(1)}`],
    ['tag flipped', `${payload}.${(tag![0] === 'A' ? 'B' : 'A') + tag!.slice(1)}`],
    ['payload swapped', `${forgedPayload}.${tag}`],
    ['huge', 'a'.repeat(5000) + '.' + tag],
  ] as const) {
    const a = await api(f, p, t, body);
    refused(a, 401, 'UNAUTHENTICATED', p);
    assert.match(String(a.headers['www-authenticate']), /error="invalid_token"/, what);
  }
  refused(await raw(f, 'POST', p, { headers: { 'content-type': 'application/json', authorization: `Basic ${bankToken}` }, body: JSON.stringify(body) }), 401, 'UNAUTHENTICATED', p);
  // Expired: the clock passes the token's lifetime.
  f.clock.t = T0 + 301_000;
  try {
    refused(await api(f, p, bankToken, body), 401, 'UNAUTHENTICATED', p);
  } finally {
    f.clock.t = T0;
  }
  // Scope: the narrow client's token opens check only; a bank token limited to check likewise.
  const narrow = await tokenFor(f, f.narrow);
  assert.is((await api(f, OperatorPaths.simSwapCheck, narrow, body)).status, 200);
  const denied = await api(f, p, narrow, body);
  refused(denied, 403, 'PERMISSION_DENIED', p);
  assert.match(String(denied.headers['www-authenticate']), /insufficient_scope/);
  const checkOnly = await tokenFor(f, f.bank, 'sim-swap:check');
  refused(await api(f, OperatorPaths.cardToNumber, checkOnly, { iccid: card(1).iccid }), 403, 'PERMISSION_DENIED', OperatorPaths.cardToNumber);
  // A client stripped of a scope loses it at once, before its token lapses.
  await f.server.store.putClient('narrow', (await f.server.store.getClient('narrow'))!.secretSha256, []);
  refused(await api(f, OperatorPaths.simSwapCheck, narrow, body), 403, 'PERMISSION_DENIED', OperatorPaths.simSwapCheck);
  await f.server.store.putClient('narrow', (await f.server.store.getClient('narrow'))!.secretSha256, ['sim-swap:check']);
});

test('x-correlator: a valid one is echoed on successes and errors; an invalid one is refused and not echoed', async () => {
  const p = OperatorPaths.simSwapCheck;
  const ok = await api(f, p, bankToken, { phoneNumber: '+447700900001' }, { 'x-correlator': 'b4333c46-49c0-4f62-80d7-f0ef930f1c46' });
  assert.is(ok.headers['x-correlator'], 'b4333c46-49c0-4f62-80d7-f0ef930f1c46');
  const err = await api(f, p, bankToken, { phoneNumber: '+447700900099' }, { 'x-correlator': 'req:1/2{x}' });
  assert.is(err.headers['x-correlator'], 'req:1/2{x}');
  const unauth = await api(f, p, null, {}, { 'x-correlator': 'c-1' });
  assert.is(unauth.headers['x-correlator'], 'c-1');
  for (const bad of ['has space', 'x'.repeat(257), 'quote"', 'semi;ok-but-é']) {
    const a = await api(f, p, bankToken, { phoneNumber: '+447700900001' }, { 'x-correlator': bad });
    refused(a, 400, 'INVALID_ARGUMENT', p);
    assert.is(a.headers['x-correlator'], undefined);
  }
});

test('transport refusals: body too large (declared and chunked), wrong media type, not JSON, unknown path, wrong method', async () => {
  const p = OperatorPaths.simSwapCheck;
  const big = JSON.stringify({ phoneNumber: '+447700900001', pad: 'x'.repeat(5000) });
  const declared = await api(f, p, bankToken, big);
  refused(declared, 400, 'INVALID_ARGUMENT', p);
  assert.match((declared.json as { message: string }).message, /larger than 4096/);
  assert.is(declared.headers.connection, 'close');
  const chunked = await raw(f, 'POST', p, { headers: { 'content-type': 'application/json', authorization: `Bearer ${bankToken}` }, body: big, chunked: true });
  refused(chunked, 400, 'INVALID_ARGUMENT', p);
  refused(await raw(f, 'POST', p, { headers: { 'content-type': 'text/plain', authorization: `Bearer ${bankToken}` }, body: '{}' }), 400, 'INVALID_ARGUMENT', p);
  const nf = await raw(f, 'POST', '/sim-swap/v1/check', { headers: { 'content-type': 'application/json' }, body: '{}' });
  refused(nf, 404, 'NOT_FOUND', p, 'Generic404');
  const m = await raw(f, 'GET', p);
  refused(m, 405, 'METHOD_NOT_ALLOWED', p, 'Generic405');
  assert.is(m.headers.allow, 'POST');
  const h = await raw(f, 'GET', '/healthz');
  assert.is(h.status, 200);
  conforms('/healthz', h, 'get');
});

test('TLS 1.3 only: a TLS 1.2 client is refused at the handshake', async () => {
  const u = new URL(f.server.url);
  const err = await new Promise<Error | null>((resolve) => {
    const s = tlsConnect({ host: u.hostname, port: Number(u.port), ca: f.tls.caPem, maxVersion: 'TLSv1.2' }, () => {
      s.end();
      resolve(null);
    });
    s.on('error', resolve);
  });
  assert.ok(err, 'a TLS 1.2 handshake must fail');
});

test('hostile inputs at every endpoint: a stable documented code, the store unchanged', async () => {
  const before = await storeDigest();
  const iccid = card(1).iccid;
  const common: unknown[] = [
    'null', '[]', '[{"phoneNumber":"+447700900001"}]', '"+447700900001"', '42', 'true', '{', '{"a":1,}', '', '\u0000', '{"__proto__":{"x":1}}',
    '{"constructor":{"prototype":{}}}', `{"phoneNumber":"+447700900001","phoneNumber":"+447700900002","extra":1}`,
    { phoneNumber: 447700900001 }, { phoneNumber: null }, { phoneNumber: ['+447700900001'] }, { phoneNumber: { n: '+447700900001' } },
    { phoneNumber: '+447700900001\n' }, { phoneNumber: ' +447700900001' }, { phoneNumber: '+４４7700900001' }, { phoneNumber: '+447700900001'.padEnd(400, '1') },
    { iccid: 8944 }, { iccid: iccid + '\u0000' }, { iccid: iccid.replace('8', '٨') }, { iccid: '' }, { imsi: -1 }, { imsi: '2341000000000O1' }, { imsi: '1'.repeat(16) },
    { maxAge: 1e309 }, { maxAge: -1 }, { maxAge: null }, { maxAge: true },
    JSON.stringify({ phoneNumber: 'x'.repeat(4000) }),
    '{"a":' + '['.repeat(1000) + ']'.repeat(1000) + '}',
  ];
  const paths = [OperatorPaths.simSwapCheck, OperatorPaths.simSwapRetrieveDate, OperatorPaths.cardToNumber, OperatorPaths.numberToCard, OperatorPaths.checkValidity];
  let n = 0;
  for (const p of paths) {
    for (const body of common) {
      const a = await api(f, p, bankToken, body as object);
      conforms(p, a);
      n++;
      const c = (a.json as { code?: string }).code;
      // Each hostile body is refused with a client error the document names, or (where the
      // junk happens to be a well-formed question) answered 200/404 like any other.
      assert.ok(a.status === 200 || (a.status >= 400 && a.status < 500 && c && c in OperatorErrors), `${p} ${JSON.stringify(body).slice(0, 80)} -> ${a.status} ${a.text.slice(0, 120)}`);
      assert.ok(a.status !== 200 || typeof body === 'object', `${p}: ${String(body).slice(0, 40)} answered 200`);
    }
  }
  assert.ok(n >= 150);
  // A few requests no schema covers must still be refused with a documented code.
  refused(await raw(f, 'POST', OperatorPaths.checkValidity, { headers: { 'content-type': 'application/json; charset=utf-16', authorization: `Bearer ${bankToken}` }, body: '{}' }), 422, 'MISSING_IDENTIFIER', OperatorPaths.checkValidity);
  assert.is(await storeDigest(), before);
  assert.is(f.server.counts().INTERNAL, undefined);
});

test('no client secret, token or Authorization header in any log line', () => {
  assert.ok(lines.length > 20, `${lines.length} lines captured`);
  const text = lines.map((l) => JSON.stringify(l)).join('\n');
  for (const secret of [f.bank.secret, f.narrow.secret, bankToken, bankToken.split('.')[1]!]) assert.not.ok(text.includes(secret), 'a secret in the log');
  assert.not.match(text, /Bearer |Basic /);
});

test.run();
