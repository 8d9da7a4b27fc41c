// Sessions in sequence on one device connection (docs/protocol.md §2.1, issue 15), at the
// gateway: asked for by the device's `sessions`, each session ended by a `sessionEnd` (the
// server's close, or the device's own) and the connection kept; a fresh link session per
// session (nothing of an ended one reaches the next); device misbehaviour still closes, the
// upstream's refusal ends the session only; a connection that did not ask keeps today's close.
// Upstreams are stub servers on the real link protocol that echo (reg-primary) or record
// (biz-east) and can end their session (SessionTransport.close).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startGateway, type Gateway } from './gateway.ts';
import type { Host } from '../server-kit/host.ts';
import { stubUpstream, inSequence, closedWith, until, finish, type StubSession } from './test-upstreams.ts';
import { linkKeyFor } from '../server-kit/link.ts';
import { FrameSocket } from '../server-kit/test-device.ts';
import { setLogLevel } from '../server-kit/log.ts';
import { encodeEnvelope, parseError, peekSessionEnd, sessionsFrame, sessionEndFrame, MsgType } from '../protocol/messages.ts';

setLogLevel('error');
const root = new Uint8Array(32).fill(0x51);
const sessions: StubSession[] = [];
let echo: Host;
let sink: Host;
let gw: Gateway;

test.before(async () => {
  echo = await stubUpstream(root, 'reg-primary', { reply: true, sessions });
  sink = await stubUpstream(root, 'biz-east', { reply: false, sessions });
  gw = await startGateway({
    host: '127.0.0.1', port: 0,
    upstreams: [
      { name: 'reg-primary', linkUrl: `ws://127.0.0.1:${echo.linkPort}/`, linkKey: linkKeyFor(root, 'reg-primary') },
      { name: 'biz-east', linkUrl: `ws://127.0.0.1:${sink.linkPort}/`, linkKey: linkKeyFor(root, 'biz-east') },
      { name: 'reg-backup', linkUrl: 'ws://127.0.0.1:1/', linkKey: linkKeyFor(root, 'reg-backup') },
    ],
    limits: { maxConnectionsPerIp: 200, framesPerSecond: 50, frameBurst: 100 },
  });
  assert.ok(await gw.waitUpstreams(5_000, ['reg-primary', 'biz-east']));
});
test.after(async () => {
  await gw.close();
  await echo.close();
  await sink.close();
});

test('two sessions in sequence on one connection: the server ends the first (sessionEnd with its close code; a normal end is 1000 with no reason, whatever the server said), the device the second; each is its own link session', async () => {
  const s = await inSequence(gw.url);
  const before = sessions.length;
  s.send(finish('reg-primary'));
  assert.equal((await s.frame()).env.dest, 'reg-primary');
  const reg = sessions[before]!;
  reg.t.close(1000, 'credential sent');
  const end = peekSessionEnd((await s.frame()).frame);
  // §2.1 rule 3: the one end a connection outlives carries nothing the device could not check.
  assert.equal(end, { n: 1, dest: 'reg-primary', code: 1000, reason: '' });
  // The next session goes to another dest on the same connection.
  s.send(finish('biz-east'));
  await until(() => sessions.length === before + 2);
  const biz = sessions[before + 1]!;
  assert.is(biz.dest, 'biz-east');
  assert.is.not(biz.t, reg.t);
  await until(() => biz.frames.length === 1);
  // The device ends it: the server's side is closed, the connection stays.
  s.send(sessionEndFrame(2, 'biz-east', 1000, ''));
  await until(() => biz.closed);
  assert.is(gw.connections(), 1);
  // A third session, back to the first dest, is a new link session too.
  s.send(finish('reg-primary'));
  assert.equal((await s.frame()).env.dest, 'reg-primary');
  assert.is(sessions.length, before + 3);
  assert.is.not(sessions[before + 2]!.t, reg.t);
  s.close();
});

test('nothing of an ended session reaches the next: a late frame or close from its server is dropped', async () => {
  const s = await inSequence(gw.url);
  const before = sessions.length;
  s.send(finish('reg-primary', 0, 1));
  await s.frame();
  const old = sessions[before]!;
  s.send(sessionEndFrame(1, 'reg-primary', 1000, ''));
  await until(() => old.closed);
  s.send(finish('reg-primary', 0, 2));
  const fresh = await s.frame();
  assert.is(fresh.frame.at(-1), 2, 'the new session answers');
  // The old session's server writes (and closes) late: neither reaches the device.
  old.t.send(finish('reg-primary', 5, 9));
  old.t.close(1008, 'late');
  s.send(finish('reg-primary', 1, 3));
  const next = await s.frame();
  assert.is(next.frame.at(-1), 3, 'the next frame the device gets is the new session\'s, not the late one');
  assert.is(gw.connections(), 1);
  s.close();
});

test("a session end that crossed: the server ended it, the device's sessionEnd for it arrives after and is ignored; a second one is refused", async () => {
  const s = await inSequence(gw.url);
  const before = sessions.length;
  s.send(finish('reg-primary'));
  await s.frame();
  sessions[before]!.t.close(1000, 'done');
  assert.equal(peekSessionEnd((await s.frame()).frame)?.n, 1);
  s.send(sessionEndFrame(1, 'reg-primary', 1000, ''));
  s.send(finish('biz-east'));
  await until(() => sessions.length === before + 2);
  await until(() => sessions[before + 1]!.frames.length === 1);
  // Session 2 is open: a sessionEnd naming session 1 again is not this connection's open session.
  s.send(sessionEndFrame(1, 'reg-primary', 1000, ''));
  assert.equal(await closedWith(s), { code: 'MSG_UNEXPECTED', close: 1002 });
  await until(() => sessions[before + 1]!.closed);
});

test("a device's crossing end with a reason (altered on the way) is refused, not ignored: MSG_BAD_FIELD, close 1002", async () => {
  const s = await inSequence(gw.url);
  const before = sessions.length;
  s.send(finish('reg-primary'));
  await s.frame();
  sessions[before]!.t.close(1000, 'done');
  assert.equal(peekSessionEnd((await s.frame()).frame), { n: 1, dest: 'reg-primary', code: 1000, reason: '' });
  s.send(sessionEndFrame(1, 'reg-primary', 1000, 'dmne'));
  assert.equal(await closedWith(s), { code: 'MSG_BAD_FIELD', close: 1002 });
});

test("the upstream's refusal ends the session only: GW_UPSTREAM_UNAVAILABLE, then sessionEnd 1013, and the next session works", async () => {
  const s = await inSequence(gw.url);
  s.send(finish('reg-backup'));
  const err = await s.frame();
  assert.is(err.env.type, MsgType.error);
  assert.is(parseError(err.env.body).code, 'GW_UPSTREAM_UNAVAILABLE');
  assert.equal(peekSessionEnd((await s.frame()).frame), { n: 1, dest: 'reg-backup', code: 1013, reason: 'GW_UPSTREAM_UNAVAILABLE' });
  s.send(finish('reg-primary'));
  assert.is((await s.frame()).env.dest, 'reg-primary');
  s.close();
});

test("the device's misbehaviour still closes the connection, in sequence as before", async () => {
  const cases: [string, Uint8Array[], string, number][] = [
    ['dest switched mid-session', [finish('reg-primary'), finish('biz-east', 1)], 'GW_DEST_CHANGED', 1008],
    ['a sessionEnd for a session not open', [finish('biz-east'), sessionEndFrame(2, 'biz-east', 1000, '')], 'MSG_UNEXPECTED', 1002],
    ['a sessionEnd naming another dest', [finish('biz-east'), sessionEndFrame(1, 'reg-primary', 1000, '')], 'MSG_UNEXPECTED', 1002],
    ['sessions twice', [sessionsFrame()], 'MSG_UNEXPECTED', 1002],
    ['unknown dest', [finish('nowhere')], 'GW_UNKNOWN_DEST', 1008],
    ['a sessionEnd with a bad body', [encodeEnvelope(MsgType.sessionEnd, 1, 'biz-east', [1000])], 'MSG_BAD_SHAPE', 1002],
    // §2.1 rule 4: a device ends a session with [1000, ""] only; anything else was altered on the way.
    ['a sessionEnd with a reason', [finish('biz-east'), sessionEndFrame(1, 'biz-east', 1000, 'dmne')], 'MSG_BAD_FIELD', 1002],
    ['a sessionEnd with another code', [finish('biz-east'), sessionEndFrame(1, 'biz-east', 1001, '')], 'MSG_BAD_FIELD', 1002],
  ];
  for (const [name, frames, code, close] of cases) {
    const s = await inSequence(gw.url);
    for (const f of frames) s.send(f);
    assert.equal(await closedWith(s), { code, close }, name);
  }
});

test("a connection that did not ask keeps today's rule: the server's end closes it, and sessions / sessionEnd after a session began are refused", async () => {
  const s = await FrameSocket.connect(gw.url);
  const before = sessions.length;
  s.send(finish('reg-primary'));
  await s.frame();
  sessions[before]!.t.close(1000, 'credential sent');
  const c = await s.closed();
  assert.equal([c.code, c.reason, c.frames.length], [1000, 'credential sent', 0]);
  const late = await FrameSocket.connect(gw.url);
  late.send(finish('biz-east'));
  late.send(sessionsFrame());
  assert.equal(await closedWith(late), { code: 'MSG_UNEXPECTED', close: 1002 });
  const noAsk = await FrameSocket.connect(gw.url);
  noAsk.send(finish('biz-east'));
  noAsk.send(sessionEndFrame(1, 'biz-east', 1000, ''));
  assert.equal(await closedWith(noAsk), { code: 'MSG_UNEXPECTED', close: 1002 });
});

test('a held connection with no session is closed by the idle sweep (GW_IDLE_TIMEOUT), and receives table pushes until then', async () => {
  const idle = await startGateway({
    host: '127.0.0.1', port: 0, limits: { idleTimeoutMs: 300 },
    upstreams: [{ name: 'reg-primary', linkUrl: `ws://127.0.0.1:${echo.linkPort}/`, linkKey: linkKeyFor(root, 'reg-primary') }],
  });
  try {
    assert.ok(await idle.waitUpstreams(5_000));
    const s = await FrameSocket.connect(idle.url);
    s.send(sessionsFrame());
    await s.frame();
    const before = sessions.length;
    s.send(finish('reg-primary'));
    await s.frame();
    sessions[before]!.t.close(1000, 'done');
    await s.frame();
    assert.is(idle.pushTable(new Uint8Array(8).fill(7)), 1);
    assert.is((await s.frame()).env.type, MsgType.tablePush);
    assert.equal(await closedWith(s), { code: 'GW_IDLE_TIMEOUT', close: 1001 });
  } finally {
    await idle.close();
  }
});

test.run();
