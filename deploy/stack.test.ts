// The S0 server side end to end, through the gateway, with a scripted device: registration
// (S0.5, S0.8), business login (S0.11), rotation and a second login with the new secret
// (S0.14), not found (S0.9), region choice by observed IP (S0.8).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { testStack } from './test-util.ts';
import { makeDevice, register, bizLogin, DeviceWallet, FrameSocket } from '../server-kit/test-device.ts';
import { ClientHandshake } from '../protocol/channel.ts';
import { MsgType, decodeEnvelope, parseServerProof, parseCredReply } from '../protocol/messages.ts';
import type { Stack } from './stack.ts';

let stack: Stack;
test.before(async () => {
  stack = await testStack();
  await stack.enroll([{ serial: 'SN-E2E-1', keyVersion: 1 }, { serial: 'SN-E2E-2', keyVersion: 1 }, { serial: 'SN-E2E-3', keyVersion: 1 }, { serial: 'SN-OFF', keyVersion: 1 }]);
});
/** The opaque user name enrollment gave a serial. */
const U = async (serial: string) => (await stack.regStore.getDevice(serial))!.user;

test.after(async () => {
  await stack.stop();
});

test('S0.5/S0.8/S0.11/S0.14: register, log in, register again (rotation), log in with the new secret', async () => {
  const dev = makeDevice(stack.ring, 'SN-E2E-1');
  const r1 = await register(stack.gatewayUrl, 'reg-primary', dev, { localAddress: '127.1.0.10' });
  assert.is(r1.kind, 'cred');
  if (r1.kind !== 'cred') return;
  assert.is(r1.reply.user, await U('SN-E2E-1'));
  assert.is(r1.reply.currentGen, 0);
  assert.is(r1.reply.gen, 1);
  assert.is(r1.reply.servers[0]!.name, 'biz-east');
  assert.is(r1.reply.servers[0]!.url, stack.urlFor('biz-east'));
  const w = new DeviceWallet();
  w.take(r1.reply);

  const first = r1.reply.servers[0]!;
  const ok = await bizLogin(first.url, first.name, { user: w.user, gen: 1, secret: w.secrets.get(1)! }, { confirm: true });
  assert.equal(ok, { kind: 'ok', confirmed: true });
  let acct = (await stack.bizStore.getByUser(await U('SN-E2E-1')))!;
  assert.is(acct.currentGen, 1);
  assert.is(acct.pendingGen, null);
  assert.is(acct.confirmedGen, 1);

  const r2 = await register(stack.gatewayUrl, 'reg-primary', dev, { localAddress: '127.1.0.10' });
  assert.is(r2.kind, 'cred');
  if (r2.kind !== 'cred') return;
  assert.is(r2.reply.gen, 2);
  assert.is(r2.reply.currentGen, 1);
  assert.not.equal(r2.reply.secret, r1.reply.secret);
  w.take(r2.reply);
  assert.equal(w.gens(), [2, 1]);
  // Two-phase: the old secret still works until the new one is used...
  assert.is((await bizLogin(first.url, first.name, { user: w.user, gen: 1, secret: w.secrets.get(1)! })).kind, 'ok');
  // ...the new one works and becomes current...
  assert.is((await bizLogin(first.url, first.name, { user: w.user, gen: 2, secret: w.secrets.get(2)! }, { confirm: true })).kind, 'ok');
  acct = (await stack.bizStore.getByUser(await U('SN-E2E-1')))!;
  assert.is(acct.currentGen, 2);
  // ...and then the old one is refused.
  assert.equal(await bizLogin(first.url, first.name, { user: w.user, gen: 1, secret: w.secrets.get(1)! }), { kind: 'fail', code: 'BIZ_AUTH_FAILED' });
  const dev2 = (await stack.regStore.getDevice('SN-E2E-1'))!;
  assert.is(dev2.currentGen, 1);
  assert.is(dev2.pendingGen, 2);
  assert.is(dev2.rotations, 2);
});

test('S0.11: loginAck ("received, verifying") comes before the verdict; a wrong secret gets loginFail and the end', async () => {
  const s = await FrameSocket.connect(stack.urlFor('biz-east'));
  const hs = new ClientHandshake('biz-east', new Uint8Array(32).fill(5));
  s.send(hs.opening(MsgType.login, ['password', await U('SN-E2E-2'), 0, new Map()]));
  const a = await s.frame();
  assert.is(a.env.type, MsgType.loginAck);
  const f = await s.frame();
  assert.is(f.env.type, MsgType.loginFail);
  assert.equal(f.env.body, ['BIZ_AUTH_FAILED', 'authentication failed']);
  const c = await s.closed();
  assert.is(c.code, 1008);
});

test('S0.9: unknown and disabled serials get the sealed "not found" notice and a normal close', async () => {
  const unknown = await register(stack.gatewayUrl, 'reg-primary', makeDevice(stack.ring, 'SN-NOBODY'));
  assert.equal(unknown, { kind: 'notFound', reason: 'device not registered' });
  await stack.disable('SN-OFF');
  const off = await register(stack.gatewayUrl, 'reg-backup', makeDevice(stack.ring, 'SN-OFF'));
  assert.equal(off, { kind: 'notFound', reason: 'device disabled' });
  await stack.enable('SN-OFF');
  assert.is((await register(stack.gatewayUrl, 'reg-backup', makeDevice(stack.ring, 'SN-OFF'))).kind, 'cred');
});

test('S0.8: observed IPs in different CIDRs get different business servers first; the claimed IP plays no part', async () => {
  const dev = makeDevice(stack.ring, 'SN-E2E-3');
  const east = await register(stack.gatewayUrl, 'reg-primary', dev, { localAddress: '127.1.2.3', localIp: '127.2.9.9' });
  const west = await register(stack.gatewayUrl, 'reg-primary', dev, { localAddress: '127.2.2.3', localIp: '127.1.9.9' });
  const other = await register(stack.gatewayUrl, 'reg-primary', dev, { localAddress: '127.0.0.1' });
  assert.ok(east.kind === 'cred' && west.kind === 'cred' && other.kind === 'cred');
  if (east.kind !== 'cred' || west.kind !== 'cred' || other.kind !== 'cred') return;
  assert.equal(east.reply.servers.map((s) => s.name), ['biz-east', 'biz-west']);
  assert.equal(west.reply.servers.map((s) => s.name), ['biz-west', 'biz-east']);
  assert.is(other.reply.servers.length, 2);
});

test('S0.8: an unhealthy business server is skipped', async () => {
  const dev = makeDevice(stack.ring, 'SN-E2E-3');
  await stack.setBizHealthy('biz-east', false);
  try {
    const r = await register(stack.gatewayUrl, 'reg-primary', dev, { localAddress: '127.1.2.3' });
    assert.ok(r.kind === 'cred');
    if (r.kind === 'cred') assert.equal(r.reply.servers.map((s) => s.name), ['biz-west']);
  } finally {
    await stack.setBizHealthy('biz-east', true);
  }
  const r = await register(stack.gatewayUrl, 'reg-primary', dev, { localAddress: '127.1.2.3' });
  assert.ok(r.kind === 'cred' && r.reply.servers[0]!.name === 'biz-east');
});

test('a device cannot claim another IP: headers such as X-Forwarded-For are ignored', async () => {
  const dev = makeDevice(stack.ring, 'SN-E2E-3');
  const s = await FrameSocket.connect(stack.gatewayUrl, { localAddress: '127.2.0.44', headers: { 'x-forwarded-for': '127.1.0.1', forwarded: 'for=127.1.0.1' } });
  const hs = new ClientHandshake('reg-primary', dev.key);
  s.send(hs.opening(MsgType.hello, [dev.token, dev.measurement]));
  const r = await s.frame();
  const { finish, channel } = hs.acceptProof(r.frame, r.env, parseServerProof(r.env.body));
  s.send(finish);
  s.send(channel.seal(MsgType.credRequest, ['SN-E2E-3', '127.1.0.1']));
  const c = await s.frame();
  const reply = parseCredReply(channel.open(c.env));
  assert.is(reply.servers[0]!.name, 'biz-west');
  assert.is((await s.closed()).code, 1000);
});

test('direct device ports serve the same flow (observed IP = the socket address)', async () => {
  const dev = makeDevice(stack.ring, 'SN-E2E-3');
  const r = await register(stack.directUrl('reg-backup')!, 'reg-backup', dev, { localAddress: '127.2.0.5' });
  assert.ok(r.kind === 'cred');
  if (r.kind !== 'cred') return;
  assert.is(r.reply.servers[0]!.name, 'biz-west');
  const w = new DeviceWallet();
  w.take(r.reply);
  assert.is(await w.login(stack.directUrl('biz-west')!, 'biz-west'), r.reply.gen);
  void decodeEnvelope;
});

test('advertisedUrl: what devices are told when they reach the gateway another way', async () => {
  const other = await testStack({ advertisedUrl: 'ws://gateway.sim/' });
  try {
    await other.enroll({ serial: 'SN-ADV', keyVersion: 1 });
    assert.is(other.urlFor('reg-backup'), 'ws://gateway.sim/reg-backup');
    const r = await register(other.gatewayUrl, 'reg-backup', makeDevice(other.ring, 'SN-ADV'));
    assert.ok(r.kind === 'cred' && r.reply.servers.every((s) => s.url === `ws://gateway.sim/${s.name}`));
  } finally {
    await other.stop();
  }
});

test.run();
