// Business login (S0.11) at the business server: "received, verifying" first, then the
// verdict; refusals by code; the two-phase rules of S0.14 seen from the login side.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { testStack } from '../deploy/test-util.ts';
import { bizLogin, FrameSocket } from '../server-kit/test-device.ts';
import { ClientHandshake, passwordLoginKey } from '../protocol/channel.ts';
import { MsgType, parseServerProof, decodeEnvelope, parseError, parseLoginFail } from '../protocol/messages.ts';
import type { Stack } from '../deploy/stack.ts';

let stack: Stack;

/** The opaque user name enrollment gave a serial. */
const users = new Map<string, string>();
const U = (serial: string) => users.get(serial)!;
let url: string;
const secret = (b: number) => new Uint8Array(32).fill(b);
let rid = 0;
const rotationId = () => Uint8Array.from({ length: 16 }, (_, i) => (i === 0 ? ++rid : 0));
const DAY = 24 * 3600_000;

test.before(async () => {
  stack = await testStack();
  url = stack.urlFor('biz-east');
  await stack.enroll([{ serial: 'SN-B1', keyVersion: 1 }, { serial: 'SN-B2', keyVersion: 1 }, { serial: 'SN-B3', keyVersion: 1 }]);
  for (const s of ['SN-B1', 'SN-B2', 'SN-B3']) users.set(s, (await stack.regStore.getDevice(s))!.user);
});
test.after(async () => {
  await stack.stop();
});

async function install(user: string, s: Uint8Array, expiresAt = Date.now() + DAY) {
  return (await stack.bizStore.installPending(user, passwordLoginKey(s, user), new Uint8Array(72), expiresAt, rotationId()));
}

test('a login opening stating otp or fingerprint is served by the device key like password (the site offers all three by default); a wrong secret is refused all the same', async () => {
  await install(U('SN-B1'), secret(1));
  assert.equal(await bizLogin(url, 'biz-east', { user: U('SN-B1'), gen: 1, secret: secret(2) }, { mech: 'fingerprint' }), { kind: 'fail', code: 'BIZ_AUTH_FAILED' });
  assert.equal(await bizLogin(url, 'biz-east', { user: U('SN-B1'), gen: 1, secret: secret(2) }, { mech: 'otp' }), { kind: 'fail', code: 'BIZ_AUTH_FAILED' });
  // Served without a confirmation: the pending generation is promoted at the finish (S0.14), so stays usable for the next tests.
  assert.equal(await bizLogin(url, 'biz-east', { user: U('SN-B1'), gen: 1, secret: secret(1) }, { mech: 'otp' }), { kind: 'ok', confirmed: false });
  assert.equal(await bizLogin(url, 'biz-east', { user: U('SN-B1'), gen: 1, secret: secret(1) }, { mech: 'fingerprint' }), { kind: 'ok', confirmed: false });
});

test('unknown user, wrong generation and wrong secret all look the same (BIZ_AUTH_FAILED)', async () => {
  assert.equal(await bizLogin(url, 'biz-east', { user: 'u-nobody', gen: 1, secret: secret(1) }), { kind: 'fail', code: 'BIZ_AUTH_FAILED' });
  assert.equal(await bizLogin(url, 'biz-east', { user: U('SN-B1'), gen: 7, secret: secret(1) }), { kind: 'fail', code: 'BIZ_AUTH_FAILED' });
  assert.equal(await bizLogin(url, 'biz-east', { user: U('SN-B1'), gen: 1, secret: secret(2) }), { kind: 'fail', code: 'BIZ_AUTH_FAILED' });
  assert.equal(await bizLogin(url, 'biz-east', { user: U('SN-B1'), gen: 0, secret: secret(0) }), { kind: 'fail', code: 'BIZ_AUTH_FAILED' });
});

test('pending -> current on first use; confirmation recorded; a confirmation of another generation is refused', async () => {
  assert.equal(await bizLogin(url, 'biz-east', { user: U('SN-B1'), gen: 1, secret: secret(1) }, { confirm: true }), { kind: 'ok', confirmed: true });
  const a = (await stack.bizStore.getByUser(U('SN-B1')))!;
  assert.equal([a.currentGen, a.pendingGen, a.confirmedGen], [1, null, 1]);
  // pwConfirm for a generation that is not current.
  const s = await FrameSocket.connect(url);
  const hs = new ClientHandshake('biz-east', passwordLoginKey(secret(1), U('SN-B1')));
  s.send(hs.opening(MsgType.login, ['password', U('SN-B1'), 1, new Map()]));
  const ack = await s.frame();
  hs.receiveClear(ack.frame, ack.env);
  const ok = await s.frame();
  const { finish, channel } = hs.acceptProof(ok.frame, ok.env, parseServerProof(ok.env.body, 'loginOk'));
  s.send(finish);
  s.send(channel.seal(MsgType.pwConfirm, [5]));
  const c = await s.closed();
  assert.is(parseError(decodeEnvelope(c.frames[0]!).body).code, 'BIZ_CONFIRM_MISMATCH');
  assert.is(c.code, 1008);
});

test('an expired pending secret is refused while a current one exists; with no current one it never expires', async () => {
  await install(U('SN-B1'), secret(3), Date.now() - 1);
  assert.equal(await bizLogin(url, 'biz-east', { user: U('SN-B1'), gen: 2, secret: secret(3) }), { kind: 'fail', code: 'BIZ_AUTH_FAILED' });
  assert.is((await bizLogin(url, 'biz-east', { user: U('SN-B1'), gen: 1, secret: secret(1) })).kind, 'ok');
  await install(U('SN-B2'), secret(4), Date.now() - 1);
  assert.is((await bizLogin(url, 'biz-east', { user: U('SN-B2'), gen: 1, secret: secret(4) })).kind, 'ok');
});

test('a disabled account is refused after authentication (BIZ_ACCOUNT_DISABLED)', async () => {
  await install(U('SN-B3'), secret(5));
  await stack.bizStore.setStatus(U('SN-B3'), 'disabled');
  assert.equal(await bizLogin(url, 'biz-east', { user: U('SN-B3'), gen: 1, secret: secret(5) }), { kind: 'fail', code: 'BIZ_ACCOUNT_DISABLED' });
  await stack.bizStore.setStatus(U('SN-B3'), 'active');
  assert.is((await bizLogin(url, 'biz-east', { user: U('SN-B3'), gen: 1, secret: secret(5) })).kind, 'ok');
});

test('S0.7: a replayed login (HS_REPLAY) and an out-of-state frame (MSG_UNEXPECTED) end the session', async () => {
  const hs = new ClientHandshake('biz-east', passwordLoginKey(secret(1), U('SN-B1')));
  const login = hs.opening(MsgType.login, ['password', U('SN-B1'), 1, new Map()]);
  const s1 = await FrameSocket.connect(url);
  s1.send(login);
  assert.is((await s1.frame()).env.type, MsgType.loginAck);
  s1.close();
  const s2 = await FrameSocket.connect(url);
  s2.send(login);
  const c2 = await s2.closed();
  // The ack goes out first (S0.11); the replay is detected once the MAC verified.
  assert.equal(c2.frames.map((f) => decodeEnvelope(f).type), [MsgType.loginAck, MsgType.error]);
  assert.is(parseError(decodeEnvelope(c2.frames[1]!).body).code, 'HS_REPLAY');
  assert.is(c2.code, 1008);

  const s3 = await FrameSocket.connect(stack.directUrl('biz-east')!);
  s3.send(new ClientHandshake('reg-primary', secret(1)).opening(MsgType.hello, [new Uint8Array(60)]));
  const c3 = await s3.closed();
  const e3 = decodeEnvelope(c3.frames[0]!);
  assert.is(parseError(e3.body).code, 'MSG_UNEXPECTED');
  assert.is(c3.code, 1002);
  void parseLoginFail;
});

test('a login for another server (wrong dest) is refused (HS_WRONG_DEST)', async () => {
  const s = await FrameSocket.connect(stack.directUrl('biz-east')!);
  const hs = new ClientHandshake('biz-west', passwordLoginKey(secret(1), U('SN-B1')));
  s.send(hs.opening(MsgType.login, ['password', U('SN-B1'), 1, new Map()]));
  const c = await s.closed();
  assert.is(parseError(decodeEnvelope(c.frames[0]!).body).code, 'HS_WRONG_DEST');
});

test.run();
