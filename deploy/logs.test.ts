// No log line contains a secret: run the full S0 flow (registration, login, rotation,
// confirmation, refusals) with every server's log captured at debug level, then scan every
// line for every key and secret involved, in hex and base64.
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { testStack } from './test-util.ts';
import { setLogSink, type LogLine } from '../server-kit/log.ts';
import { makeDevice, register, bizLogin, DeviceWallet } from '../server-kit/test-device.ts';
import { linkKeyFor } from '../server-kit/link.ts';
import { passwordLoginKey } from '../protocol/channel.ts';
import { MasterKeyring } from '../protocol/keys.ts';

test('a full flow logs no key, secret or login key', async () => {
  const lines: LogLine[] = [];
  process.env.USBPHONE_LOG_LEVEL = 'debug';
  setLogSink((l) => lines.push(l), 'debug');
  const stack = await testStack();
  const secrets: Uint8Array[] = [];
  try {
    await stack.enroll([{ serial: 'SN-LOG-1', keyVersion: 1 }]);
    const dev = makeDevice(stack.ring, 'SN-LOG-1');
    secrets.push(dev.key, dev.token);
    const w = new DeviceWallet();
    for (let i = 0; i < 3; i++) {
      const r = await register(stack.gatewayUrl, i % 2 ? 'reg-backup' : 'reg-primary', dev, { localAddress: '127.1.0.9' });
      assert.ok(r.kind === 'cred');
      if (r.kind !== 'cred') return;
      w.take(r.reply);
      secrets.push(r.reply.secret, passwordLoginKey(r.reply.secret, r.reply.user));
      assert.ok((await w.login(stack.urlFor('biz-east'), 'biz-east', { confirm: true })) !== null);
    }
    await bizLogin(stack.urlFor('biz-west'), 'biz-west', { user: w.user, gen: 99, secret: new Uint8Array(32) });
    await register(stack.gatewayUrl, 'reg-primary', makeDevice(stack.ring, 'SN-LOG-NONE'));
    const f = (n: string) => readFileSync(join(stack.stateDir, n), 'utf8');
    const master = MasterKeyring.parse(f('master.key'));
    const root = hexToBytes(f('link.key').trim());
    secrets.push(master.key(1), root, hexToBytes(f('admin.key').trim()));
    for (const n of ['reg-primary', 'reg-backup', 'biz-east', 'biz-west']) secrets.push(linkKeyFor(root, n));
  } finally {
    await stack.stop();
    setLogSink(null, 'info');
  }
  assert.ok(lines.length > 20, `captured ${lines.length} lines`);
  assert.ok(lines.some((l) => l.msg === 'credentials issued'));
  assert.ok(lines.some((l) => l.msg === 'login ok'));
  const text = lines.map((l) => JSON.stringify(l)).join('\n').toLowerCase();
  for (const s of secrets) {
    const hex = bytesToHex(s);
    for (const needle of [hex, hex.slice(0, 16), Buffer.from(s).toString('base64').toLowerCase().slice(0, 16), Buffer.from(s).toString('base64url').toLowerCase().slice(0, 16)]) {
      assert.not.ok(text.includes(needle), `a log line holds secret material (${needle.slice(0, 6)}...)`);
    }
  }
});

test.run();
