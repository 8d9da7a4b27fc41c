// The embedded stack runs the mobile operator (S4): its CA and certificate, token key, bank
// credentials and SQLite file in the state directory (keys 0600), /healthz over HTTPS, the
// bank's client logging in with the stack's credentials; stopped, the client fails fast
// and retryably; started again at the same URL; a second start reuses the CA and secret.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { statSync, existsSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { startStack } from './stack.ts';
import { tempDir } from './test-util.ts';
import { stateFiles } from './config.ts';
import { setLogLevel } from '../server-kit/log.ts';
import { OperatorClient, OperatorError } from '../server-kit/operator-client.ts';
import { withLuhn } from '../protocol/line-ids.ts';

setLogLevel('error');
const t = tempDir();
test.after(() => t.remove());

function healthz(url: string, ca: string): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const u = new URL('/healthz', url);
    const req = request({ host: u.hostname, port: u.port, path: u.pathname, ca }, (res) => {
      let text = '';
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('the stack starts the operator: state files, /healthz over HTTPS, the bank client works; stop and start keep the URL; a restart reuses CA and secret', async () => {
  const stack = await startStack({ stateDir: t.dir, gatewayPort: 0 });
  let stopped = false;
  try {
    const f = stateFiles(t.dir);
    // The operator's SQLite file is private too (on PostgreSQL, STORE_URL, there is none).
    const db = stack.store.choice.kind === 'sqlite' ? [f.operatorDb] : [];
    for (const k of [f.operatorTokenKey, f.operatorClient, join(f.tlsDir, 'ca-key.pem'), join(f.tlsDir, 'operator-key.pem'), ...db]) {
      assert.is(statSync(k).mode & 0o777, 0o600, k);
    }
    assert.ok(existsSync(join(f.tlsDir, 'ca.pem')));
    assert.match(stack.operatorUrl, /^https:\/\/127\.0\.0\.1:\d+$/);
    assert.is(stack.ports().operator, Number(new URL(stack.operatorUrl).port));
    assert.equal(await healthz(stack.operatorUrl, stack.operatorCa), { status: 200, body: { status: 'ok', name: 'operator' } });

    const iccid = withLuhn('894400000000000042');
    await stack.operator()!.store.createSubscription('+447700900042', { iccid, imsi: '234150000000042', cardType: 'USIM' });
    const c = new OperatorClient({ url: stack.operatorUrl, ca: stack.operatorCa, clientId: stack.operatorClient.clientId, clientSecret: stack.operatorClient.clientSecret, timeoutMs: 1_000 });
    assert.equal(await c.phoneNumberOf({ iccid }), { phoneNumber: '+447700900042', cardStatus: 'active' });

    await stack.stopOperator();
    assert.is(stack.operator(), undefined);
    const t0 = performance.now();
    try {
      await c.checkSimSwap('+447700900042');
      assert.unreachable('the operator is stopped');
    } catch (e) {
      assert.instance(e, OperatorError);
      assert.equal([(e as OperatorError).code, (e as OperatorError).retryable], ['OPERATOR_UNREACHABLE', true]);
    }
    assert.ok(performance.now() - t0 < 1_000);
    await stack.startOperator();
    assert.is(await c.checkSimSwap('+447700900042', 1), true, 'activated just now');
    c.close();
    const ca = stack.operatorCa;
    const secret = stack.operatorClient.clientSecret;
    await stack.stop();
    stopped = true;

    const again = await startStack({ stateDir: t.dir, gatewayPort: 0 });
    try {
      assert.is(again.operatorCa, ca);
      assert.is(again.operatorClient.clientSecret, secret);
      const c2 = new OperatorClient({ url: again.operatorUrl, ca, clientId: 'bank', clientSecret: secret, timeoutMs: 1_000 });
      assert.equal(await c2.cardOf('+447700900042'), { iccid, imsi: '234150000000042', cardType: 'USIM', cardStatus: 'active' });
      c2.close();
    } finally {
      await again.stop();
    }
  } finally {
    if (!stopped) await stack.stop();
  }
});

test.run();
