// The bank's client of the operator over real HTTPS: typed answers, the token fetched once
// and renewed when the server stops taking it, and bounded, coded, retryable failures when
// the operator is down or slow, never a hang; an operator whose certificate is not of our CA
// is refused (not retryable).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import { createServer as createHttpsServer } from 'node:https';
import { join } from 'node:path';
import { OperatorClient, OperatorError } from './operator-client.ts';
import { ensureServerTls } from './tls-ca.ts';
import { setLogLevel } from './log.ts';
import { ImplementationError } from '../protocol/errors.ts';
import { operatorFixture, card, T0, HOUR, type Fixture } from '../operator-server/test-util.ts';

setLogLevel('error');
let f: Fixture;
let client: OperatorClient;
test.before(async () => {
  f = await operatorFixture();
  client = new OperatorClient({ url: f.server.url, ca: f.tls.caPem, clientId: f.bank.id, clientSecret: f.bank.secret, timeoutMs: 1_000 });
});
test.after(async () => {
  client.close();
  await f.stop();
});

async function failure(p: Promise<unknown>): Promise<OperatorError> {
  try {
    await p;
  } catch (e) {
    assert.instance(e, OperatorError);
    return e as OperatorError;
  }
  throw new Error('expected a failure');
}

test('typed answers for every operation; one token for many calls', async () => {
  assert.is(await client.checkSimSwap('+447700900002', 3), true);
  assert.is(await client.checkSimSwap('+447700900001'), false);
  assert.equal(await client.retrieveSimSwapDate('+447700900002'), { latestSimChange: new Date(T0 - 2 * HOUR) });
  assert.equal(await client.phoneNumberOf({ iccid: card(2).iccid }), { phoneNumber: '+447700900002', cardStatus: 'replaced' });
  assert.equal(await client.cardOf('+447700900002'), { ...card(3), cardStatus: 'active' });
  assert.equal(await client.checkValidity({ iccid: card(4).iccid }), { valid: false, reason: 'CARD_SUSPENDED' });
  assert.equal(await client.checkValidity({ imsi: card(1).imsi, phoneNumber: '+447700900001' }), { valid: true });
  const e = await failure(client.cardOf('+447700900099'));
  assert.equal([e.code, e.status, e.retryable], ['IDENTIFIER_NOT_FOUND', 404, false]);
  assert.is(f.server.counts().OK, 8, 'one token request, then seven calls');
  assert.throws(() => new OperatorClient({ url: 'http://127.0.0.1:1', ca: '', clientId: 'a', clientSecret: 'b' }), (x: unknown) => x instanceof ImplementationError && x.code === 'OPERATOR_BAD_URL');
});

test('a token the server no longer takes is replaced once, transparently; wrong credentials are OPERATOR_AUTH', async () => {
  // The client's cached token lapses on the server's clock (5 min) before the client's margin.
  f.clock.t = T0 + 400_000;
  try {
    assert.is(await client.checkSimSwap('+447700900001'), false);
  } finally {
    f.clock.t = T0;
  }
  const wrong = new OperatorClient({ url: f.server.url, ca: f.tls.caPem, clientId: f.bank.id, clientSecret: 'not-the-secret', timeoutMs: 1_000 });
  const e = await failure(wrong.checkSimSwap('+447700900001'));
  assert.equal([e.code, e.retryable, e.status], ['OPERATOR_AUTH', false, 401]);
  assert.not.ok(e.message.includes('not-the-secret'));
  wrong.close();
});

async function listen(s: TcpServer): Promise<number> {
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  return (s.address() as { port: number }).port;
}

test('operator down: OPERATOR_UNREACHABLE, retryable, at once', async () => {
  const s = createTcpServer();
  const port = await listen(s);
  await new Promise<void>((r) => s.close(() => r()));
  const c = new OperatorClient({ url: `https://127.0.0.1:${port}`, ca: f.tls.caPem, clientId: 'bank', clientSecret: 'x', timeoutMs: 1_000 });
  const t = performance.now();
  const e = await failure(c.checkSimSwap('+447700900001'));
  assert.equal([e.code, e.retryable], ['OPERATOR_UNREACHABLE', true]);
  assert.ok(performance.now() - t < 500);
  c.close();
});

test('operator slow (accepts, never answers; or answers the handshake, never the request): OPERATOR_TIMEOUT within the deadline', async () => {
  const socks: Socket[] = [];
  const silent = createTcpServer((s) => socks.push(s));
  const silentPort = await listen(silent);
  const tls = await ensureServerTls(join(f.dir, 'tls'), 'operator', ['127.0.0.1']);
  const mute = createHttpsServer({ cert: tls.certPem, key: tls.keyPem }, () => {});
  const mutePort = await listen(mute as unknown as TcpServer);
  for (const port of [silentPort, mutePort]) {
    const c = new OperatorClient({ url: `https://127.0.0.1:${port}`, ca: f.tls.caPem, clientId: 'bank', clientSecret: 'x', timeoutMs: 300 });
    const t = performance.now();
    const e = await failure(c.retrieveSimSwapDate('+447700900001'));
    const ms = performance.now() - t;
    assert.equal([e.code, e.retryable], ['OPERATOR_TIMEOUT', true]);
    assert.ok(ms >= 290 && ms < 800, `${ms} ms`);
    c.close();
  }
  for (const s of socks) s.destroy();
  mute.closeAllConnections();
  await new Promise<void>((r) => mute.close(() => r()));
  await new Promise<void>((r) => silent.close(() => r()));
});

test('an operator whose certificate is not of our CA is refused: OPERATOR_TLS, not retryable', async () => {
  const other = await ensureServerTls(join(f.dir, 'other-ca'), 'operator', ['127.0.0.1']);
  const c = new OperatorClient({ url: f.server.url, ca: other.caPem, clientId: f.bank.id, clientSecret: f.bank.secret, timeoutMs: 1_000 });
  const e = await failure(c.checkSimSwap('+447700900001'));
  assert.equal([e.code, e.retryable], ['OPERATOR_TLS', false]);
  c.close();
  // The name must match too: a certificate of our CA issued for another address is refused.
  const c2 = new OperatorClient({ url: f.server.url.replace('127.0.0.1', 'localhost'), ca: f.tls.caPem, clientId: f.bank.id, clientSecret: f.bank.secret, timeoutMs: 1_000 });
  assert.is(await c2.checkSimSwap('+447700900001'), false, 'localhost is in the certificate');
  c2.close();
  const stranger = await ensureServerTls(join(f.dir, 'tls'), 'stranger', ['10.9.9.9']);
  assert.is(stranger.caPem, f.tls.caPem);
  const s = createHttpsServer({ cert: stranger.certPem, key: stranger.keyPem }, (_q, r) => r.end('{}'));
  const port = await listen(s as unknown as TcpServer);
  const c3 = new OperatorClient({ url: `https://127.0.0.1:${port}`, ca: f.tls.caPem, clientId: f.bank.id, clientSecret: f.bank.secret, timeoutMs: 1_000 });
  const e3 = await failure(c3.checkSimSwap('+447700900001'));
  assert.equal([e3.code, e3.retryable], ['OPERATOR_TLS', false]);
  c3.close();
  s.closeAllConnections();
  await new Promise<void>((r) => s.close(() => r()));
});

test.run();
