// The two exchanges' state machines against each other with no socket: the client machine of
// registration.ts / login.ts talks to the server machine, frames passed by hand. Every refusal
// is checked by code (and, on the client, by the error frame it leaves to send).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { RegistrationClient, RegistrationServer, RegMessages, type RegistrationServerDeps, type IssuedCredentials } from './registration.ts';
import { secretWrapKey, unwrapSecret } from './secret-wrap.ts';
import { LoginClient, LoginServer, LoginMessages, type LoginLookup, type LoginServerDeps } from './login.ts';
import { ClientHandshake, ServerHandshake, passwordLoginKey } from './channel.ts';
import { deriveDeviceKey, makeSerialToken, openSerialToken, MasterKeyring } from './keys.ts';
import { decodeEnvelope, encodeEnvelope, encodeError, parseError, MsgType, type CredReply, type Envelope } from './messages.ts';
import { ProtocolError, ImplementationError, CloseCode } from './errors.ts';
import { ReplayCache } from './replay.ts';
import { keystreamRng } from './seeded-rng.ts';

const master = keystreamRng('exchange master')(32);
const ring = new MasterKeyring([[1, master]]);
const serial = 'SN-0000042';
const deviceKey = deriveDeviceKey(master, serial);
const serialToken = makeSerialToken(master, 1, serial);
const secret = keystreamRng('exchange secret')(32);

/** The firmware the test server accepts, and another one. */
const firmware = keystreamRng('exchange firmware')(32);
const otherFirmware = keystreamRng('exchange other firmware')(32);

const regDeps = (log: string[] = []): RegistrationServerDeps => {
  const replay = new ReplayCache();
  return {
    acceptFirmware: (_serial, m) => {
      if (!m.every((b, i) => b === firmware[i])) throw new ProtocolError('REG_FIRMWARE_REFUSED', 'not accepted');
    },
    deviceKey: (token) => {
      const id = openSerialToken(ring, token);
      return { serial: id.serial, key: deriveDeviceKey(ring.key(id.version), id.serial) };
    },
    assertFresh: (mac) => replay.assertFresh(mac),
    recordConfirmation: (s, gen) => void log.push(`confirmed ${s} ${gen}`),
  };
};
const regClient = (o: { key?: Uint8Array; serial?: string; measurement?: Uint8Array } = {}) =>
  new RegistrationClient({ dest: 'reg-primary', deviceKey: o.key ?? deviceKey, serialToken, measurement: o.measurement ?? firmware, serial: o.serial ?? serial, localIp: '10.0.0.9', rng: keystreamRng('rc') });
const reply = (): IssuedCredentials => ({ user: 'dev-42', secret: secret.slice(), gen: 3, currentGen: 2, servers: [{ name: 'biz-east', url: 'ws://127.0.0.1:7400/', region: 'east' }] });
const code = (c: string) => (e: unknown) => e instanceof ProtocolError && e.code === c;
const impl = (c: string) => (e: unknown) => e instanceof ImplementationError && e.code === c;

/** Frames to the server machine, one by one; what it sends back, flattened. */
function feed<T extends { send: Uint8Array[] }>(server: { receive(f: Uint8Array, env: Envelope): T }, frames: Uint8Array[]) {
  const steps = frames.map((f) => server.receive(f, decodeEnvelope(f)));
  return { send: steps.flatMap((s) => s.send), steps };
}

test('registration: hello -> proof -> finish + credRequest -> the caller answers -> credReply; secret wiped once sealed', () => {
  const c = regClient();
  const s = new RegistrationServer('reg-primary', regDeps(), keystreamRng('rs'));
  const proof = feed(s, c.start().send).send;
  const auth = c.receive(proof[0]!);
  assert.is(auth.event, 'authenticated');
  assert.equal(auth.send.map((f) => decodeEnvelope(f).type), [MsgType.finish, MsgType.credRequest]);
  const asked = feed(s, auth.send);
  assert.equal(asked.steps[1]!.need, { serial, request: { serial, localIp: '10.0.0.9' } });
  const r = reply();
  const ans = s.answer({ kind: 'cred', reply: r });
  assert.equal(ans.done, { kind: 'issued', closeCode: CloseCode.normal });
  assert.ok(r.secret.every((b) => b === 0), 'the secret is wiped once sealed');
  const done = c.receive(ans.send[0]!);
  const { secret: _s, ...plain } = reply();
  const got = done.done as { kind: 'cred'; cred: CredReply };
  assert.equal({ ...got, cred: { ...got.cred, wrapped: null } }, { kind: 'cred', cred: { ...plain, wrapped: null } });
  // The secret travels wrapped for the device's chip: it opens with the device key, for this user and gen only.
  const wk = secretWrapKey(deviceKey);
  assert.equal(unwrapSecret(wk, 'dev-42', 3, got.cred.wrapped), secret);
  assert.is(unwrapSecret(wk, 'dev-42', 2, got.cred.wrapped), null);
  assert.is(unwrapSecret(secretWrapKey(new Uint8Array(32)), 'dev-42', 3, got.cred.wrapped), null);
  assert.is(c.over, true);
  assert.throws(() => c.receive(ans.send[0]!), impl('EXCHANGE_OVER'));
  assert.throws(() => s.answer({ kind: 'not-found', reason: 'x' }), impl('EXCHANGE_STATE'));
});

test('registration: pwConfirm once before credRequest is recorded and acknowledged; a second one is MSG_UNEXPECTED', () => {
  // The firmware never sends it during registration; a device may (docs/protocol.md §6.2): a
  // hand-driven client handshake plays that device.
  const hs = new ClientHandshake('reg-primary', deviceKey, keystreamRng('pc'));
  const log: string[] = [];
  const s = new RegistrationServer('reg-primary', regDeps(log), keystreamRng('ps'));
  const p = feed(s, [hs.opening(MsgType.hello, RegMessages.hello.fields({ token: serialToken, measurement: firmware }))]).send[0]!;
  const penv = decodeEnvelope(p);
  const { finish, channel } = hs.acceptProof(p, penv, RegMessages.helloReply.decode(penv.body));
  const ack = feed(s, [finish, channel.seal(MsgType.pwConfirm, RegMessages.pwConfirm.encode({ gen: 7 }))]);
  assert.equal(ack.steps[1]!.event, { kind: 'confirmed', serial, gen: 7 });
  assert.equal(RegMessages.pwConfirmAck.decode(channel.open(decodeEnvelope(ack.send[0]!))), { gen: 7 });
  assert.equal(log, [`confirmed ${serial} 7`]);
  assert.throws(() => feed(s, [channel.seal(MsgType.pwConfirm, [7])]), code('MSG_UNEXPECTED'));
});

test('registration refusals: a wrong device key (HS_BAD_CLIENT_PROOF), a replayed hello (HS_REPLAY), another serial in credRequest (MSG_BAD_FIELD)', () => {
  const deps = regDeps();
  assert.throws(() => feed(new RegistrationServer('reg-primary', deps), regClient({ key: new Uint8Array(32).fill(1) }).start().send), code('HS_BAD_CLIENT_PROOF'));
  const hello = regClient().start().send;
  feed(new RegistrationServer('reg-primary', deps), hello);
  assert.throws(() => feed(new RegistrationServer('reg-primary', deps), hello), code('HS_REPLAY'));
  const c = regClient({ serial: 'SN-0000043' });
  const s = new RegistrationServer('reg-primary', regDeps());
  const auth = c.receive(feed(s, c.start().send).send[0]!);
  assert.throws(() => feed(s, auth.send), code('MSG_BAD_FIELD'));
});

test('registration client: an altered proof, an out-of-state frame and a malformed frame end it as invalid, with the error frame to send', () => {
  const run = (tamper: (proof: Uint8Array) => Uint8Array) => {
    const c = regClient();
    const proof = feed(new RegistrationServer('reg-primary', regDeps()), c.start().send).send[0]!;
    const step = c.receive(tamper(proof));
    assert.is(c.over, true);
    return step;
  };
  const altered = run((p) => (p[p.length - 1]! ^= 1, p));
  assert.is(altered.done?.kind, 'invalid');
  assert.equal(altered.done, { kind: 'invalid', code: 'HS_BAD_SERVER_PROOF', reason: 'the server does not hold this key (or the transcript was altered)', closeCode: CloseCode.policy });
  assert.is(parseError(decodeEnvelope(altered.send[0]!).body).code, 'HS_BAD_SERVER_PROOF');
  const early = run(() => encodeEnvelope(MsgType.loginAck, 0, 'reg-primary', []));
  assert.equal([early.done?.kind, early.done && 'code' in early.done && early.done.code], ['invalid', 'MSG_UNEXPECTED']);
  assert.equal(parseError(decodeEnvelope(early.send[0]!).body), { code: 'MSG_UNEXPECTED', prevSeq: null, reason: 'MSG_UNEXPECTED: loginAck is not accepted in state hello' });
  const junk = run(() => Uint8Array.of(0xff));
  assert.is(junk.done && 'code' in junk.done && junk.done.code.startsWith('CBOR_'), true);
});

test('a server error frame ends the client exchange as peer-error, with the code prefix dropped from the reason', () => {
  const c = regClient();
  c.start();
  assert.equal(c.receive(encodeError(0, 'reg-primary', 'REG_NO_BIZ_SERVER', 0, 'REG_NO_BIZ_SERVER: no healthy business server')), {
    send: [], done: { kind: 'peer-error', code: 'REG_NO_BIZ_SERVER', reason: 'no healthy business server' },
  });
});

// ---- business login ----

const user = 'dev-42';
const loginKey = passwordLoginKey(secret, user);
function loginDeps(o: { lookup?: LoginLookup; promote?: boolean; current?: number } = {}): LoginServerDeps & { log: string[] } {
  const log: string[] = [];
  return {
    log,
    lookup: (l) => o.lookup ?? (l.user === user ? { kind: 'found', key: loginKey.slice(), active: true, pending: false } : { kind: 'unknown' }),
    assertFresh: () => {},
    promote: (u, gen) => (log.push(`promote ${u} ${gen}`), o.promote ?? true),
    confirm: (u, gen) => (log.push(`confirm ${u} ${gen}`), gen === (o.current ?? 3)),
  };
}
const loginClient = (o: { secret?: Uint8Array; mech?: 'password' | 'otp' } = {}) =>
  new LoginClient({ dest: 'biz-east', user, gen: 3, secret: o.secret ?? secret, mech: o.mech, rng: keystreamRng('lc') });

test('login: ack, proof, finish; the caller confirms after saving; pwConfirmAck ends it confirmed', () => {
  const c = loginClient();
  const deps = loginDeps({ lookup: { kind: 'found', key: loginKey.slice(), active: true, pending: true } });
  const s = new LoginServer('biz-east', deps, keystreamRng('ls'));
  const answer = feed(s, c.start().send);
  assert.is(answer.steps[0]!.event?.kind, 'verified');
  assert.equal(deps.log, [], 'nothing promoted on the opening alone (issue 9)');
  assert.is(c.receive(answer.send[0]!).event, 'acknowledged');
  const proved = c.receive(answer.send[1]!);
  assert.is(proved.event, 'logged-in');
  const conf = c.afterLogin(true);
  const ack = feed(s, [...proved.send, ...conf.send]);
  const done = ack.steps[0]!.event;
  assert.ok(done?.kind === 'logged-in' && done.promoted, 'promoted on the finish');
  assert.equal(ack.steps[1]!.event, { kind: 'confirmed', user, gen: 3 });
  assert.equal(c.receive(ack.send[0]!).done, { kind: 'ok', confirmed: true });
  assert.equal(deps.log, [`promote ${user} 3`, `confirm ${user} 3`]);
  // Without a confirmation the exchange ends at once.
  const c2 = loginClient();
  const a2 = feed(new LoginServer('biz-east', loginDeps()), c2.start().send).send;
  c2.receive(a2[0]!);
  assert.throws(() => loginClient().afterLogin(false), impl('EXCHANGE_STATE'));
  c2.receive(a2[1]!);
  assert.equal(c2.afterLogin(false), { send: [], done: { kind: 'ok', confirmed: false } });
});

test('a login delivered late (its opening verifies, nobody can finish it) promotes nothing; a pending lost before the finish is BIZ_AUTH_FAILED after loginOk', () => {
  const deps = loginDeps({ lookup: { kind: 'found', key: loginKey.slice(), active: true, pending: true } });
  const late = loginClient().start().send[0]!;
  const st = new LoginServer('biz-east', deps).receive(late, decodeEnvelope(late));
  assert.equal(st.send.map((f) => decodeEnvelope(f).type), [MsgType.loginAck, MsgType.loginOk]);
  assert.equal(deps.log, [], 'no promotion without the finish');
  // The pending expired (or was promoted by another login) between opening and finish.
  const c = loginClient();
  const lost = loginDeps({ lookup: { kind: 'found', key: loginKey.slice(), active: true, pending: true }, promote: false });
  const srv = new LoginServer('biz-east', lost, keystreamRng('ls'));
  const a = feed(srv, c.start().send).send;
  c.receive(a[0]!);
  const fin = c.receive(a[1]!).send;
  assert.throws(() => feed(srv, fin), code('BIZ_AUTH_FAILED'));
});

test('login refusals are loginAck then loginFail, close 1008: mechanism, unknown user, wrong secret, disabled', () => {
  const cases: [string, () => LoginClient, LoginServerDeps, string][] = [
    ['otp', () => loginClient({ mech: 'otp' }), loginDeps({ lookup: { kind: 'unsupported' } }), 'BIZ_MECH_UNSUPPORTED'],
    ['unknown', () => loginClient(), loginDeps({ lookup: { kind: 'unknown' } }), 'BIZ_AUTH_FAILED'],
    ['wrong secret', () => loginClient({ secret: new Uint8Array(32) }), loginDeps(), 'BIZ_AUTH_FAILED'],
    ['disabled', () => loginClient(), loginDeps({ lookup: { kind: 'found', key: loginKey.slice(), active: false, pending: false } }), 'BIZ_ACCOUNT_DISABLED'],
  ];
  for (const [what, client, deps, want] of cases) {
    const c = client();
    const login = c.start().send[0]!;
    const step = new LoginServer('biz-east', deps).receive(login, decodeEnvelope(login));
    assert.equal(step.send.map((f) => decodeEnvelope(f).type), [MsgType.loginAck, MsgType.loginFail], what);
    assert.equal([step.done?.code, step.done?.closeCode], [want, CloseCode.policy], what);
    assert.is(c.receive(step.send[0]!).event, 'acknowledged', what);
    const end = c.receive(step.send[1]!).done;
    assert.equal(end && end.kind === 'failed' && end.code, want, what);
  }
});

test('a replayed login is refused after the ack it is owed (HS_REPLAY, close 1008)', () => {
  const replay = new ReplayCache();
  const deps = { ...loginDeps(), assertFresh: (mac: Uint8Array) => replay.assertFresh(mac) };
  const login = loginClient().start().send[0]!;
  assert.is(new LoginServer('biz-east', deps).receive(login, decodeEnvelope(login)).refuse, undefined);
  const again = new LoginServer('biz-east', deps).receive(login, decodeEnvelope(login));
  assert.equal(again.send.map((f) => decodeEnvelope(f).type), [MsgType.loginAck]);
  assert.ok(code('HS_REPLAY')(again.refuse) && again.refuse!.closeCode === CloseCode.policy);
});

test('after the login: a confirmation of another generation is BIZ_CONFIRM_MISMATCH at the server; a pwConfirmAck of another generation is MSG_UNEXPECTED at the client', () => {
  const c = loginClient();
  const s = new LoginServer('biz-east', loginDeps({ current: 9 }));
  const a = feed(s, c.start().send).send;
  c.receive(a[0]!);
  const fin = c.receive(a[1]!).send;
  assert.throws(() => feed(s, [...fin, ...c.afterLogin(true).send]), code('BIZ_CONFIRM_MISMATCH'));

  // A server that acknowledges another generation: played by a hand-driven server handshake.
  const c2 = loginClient();
  const hs = new ServerHandshake('biz-east', keystreamRng('forger'));
  const login = c2.start().send[0]!;
  const env = decodeEnvelope(login);
  hs.acceptOpening(login, env, LoginMessages.login.opening(LoginMessages.login.decode(env.body)), loginKey);
  c2.receive(hs.clear(MsgType.loginAck, []));
  const finish = c2.receive(hs.proof(MsgType.loginOk)).send[0]!;
  const ch = hs.acceptFinish(finish, decodeEnvelope(finish));
  c2.afterLogin(true);
  const end = c2.receive(ch.seal(MsgType.pwConfirmAck, LoginMessages.pwConfirmAck.encode({ gen: 4 })));
  assert.equal(end.done && 'code' in end.done && end.done.code, 'MSG_UNEXPECTED');
  assert.is(parseError(decodeEnvelope(end.send[0]!).body).code, 'MSG_UNEXPECTED');
});

test('attestation: a hello whose MAC-covered measurement is not accepted firmware is refused with REG_FIRMWARE_REFUSED; an edited measurement fails the MAC first', () => {
  const refused = new RegistrationServer('reg-primary', regDeps(), keystreamRng('fw1'));
  const hello = regClient({ measurement: otherFirmware }).start().send[0]!;
  assert.throws(() => refused.receive(hello, decodeEnvelope(hello)), code('REG_FIRMWARE_REFUSED'));
  // A host that swaps the accepted measurement into another firmware's hello breaks its MAC.
  const env = decodeEnvelope(hello);
  const body = env.body as unknown[];
  const swapped = encodeEnvelope(env.type, env.seq, env.dest, [body[0], firmware, body[2], body[3]] as never);
  const s2 = new RegistrationServer('reg-primary', regDeps(), keystreamRng('fw2'));
  assert.throws(() => s2.receive(swapped, decodeEnvelope(swapped)), code('HS_BAD_CLIENT_PROOF'));
  // The accepted firmware gets the server's proof.
  const okHello = regClient().start().send[0]!;
  assert.is(new RegistrationServer('reg-primary', regDeps(), keystreamRng('fw3')).receive(okHello, decodeEnvelope(okHello)).send.length, 1);
});

test.run();
