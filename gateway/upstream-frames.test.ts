// Two guarantees of the gateway's device side (reviewer findings on issue 15, docs/protocol.md §2.1):
// - a server never reaches the device with a frame only the gateway sends (tablePush, sessions,
//   sessionEnd): the frame is dropped and counted, and the session ends with GW_UPSTREAM_BAD_FRAME
//   (in sequence: error frame then sessionEnd 1011, the connection stays; otherwise close 1011);
// - ids are never two alike while alive: after the counter wraps, an id still live (a held
//   connection's) is skipped. Before the fix the repeat overwrote the held connection and its
//   OPEN made the server drop the whole link.
// Upstreams are stub servers on the real link protocol that echo, and can send anything down.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startGateway, type Gateway, type FrameSeen } from './gateway.ts';
import type { Host } from '../server-kit/host.ts';
import { stubUpstream, inSequence, until, finish, type StubSession } from './test-upstreams.ts';
import { linkKeyFor } from '../server-kit/link.ts';
import { FrameSocket } from '../server-kit/test-device.ts';
import { setLogLevel } from '../server-kit/log.ts';
import { encodeEnvelope, decodeEnvelope, parseError, peekSessionEnd, sessionsFrame, sessionEndFrame, MsgType } from '../protocol/messages.ts';

setLogLevel('error');
const root = new Uint8Array(32).fill(0x52);
const seen: StubSession[] = [];
const observed: FrameSeen[] = [];
const ids = { next: 1 };
let echo: Host;
let gw: Gateway;

const dropped = async () => (await gw.metrics.linkDropped.get()).values.filter((v) => v.labels.reason === 'gateway-only-type').reduce((n, v) => n + v.value, 0);

test.before(async () => {
  echo = await stubUpstream(root, 'reg-primary', { reply: true, sessions: seen });
  gw = await startGateway({
    host: '127.0.0.1', port: 0,
    upstreams: [{ name: 'reg-primary', linkUrl: `ws://127.0.0.1:${echo.linkPort}/`, linkKey: linkKeyFor(root, 'reg-primary') }],
    limits: { maxConnectionsPerIp: 200, framesPerSecond: 50, frameBurst: 100 },
    observe: (f) => void observed.push(f),
    ids,
  });
  assert.ok(await gw.waitUpstreams(5_000, ['reg-primary']));
});
test.after(async () => {
  await gw.close();
  await echo.close();
});

const gatewayOnly: [string, () => Uint8Array][] = [
  ['sessionEnd', () => sessionEndFrame(1, 'reg-primary', 1000, 'from the server')],
  ['tablePush', () => encodeEnvelope(MsgType.tablePush, 0, 'gateway', [new Uint8Array(8)])],
  ['sessions', () => sessionsFrame()],
];

test('a server sending a gateway-only frame down (in sequence): never delivered; error GW_UPSTREAM_BAD_FRAME, sessionEnd 1011; the connection and the next session go on', async () => {
  for (const [name, make] of gatewayOnly) {
    const d0 = await dropped();
    const s = await inSequence(gw.url);
    const before = seen.length;
    s.send(finish('reg-primary'));
    assert.is((await s.frame()).env.type, MsgType.finish, name);
    const srv = seen[before]!;
    srv.t.send(make());
    const err = await s.frame();
    assert.is(err.env.type, MsgType.error, `${name}: the device gets the gateway's error, not the server's frame`);
    assert.is(parseError(err.env.body).code, 'GW_UPSTREAM_BAD_FRAME', name);
    assert.equal(peekSessionEnd((await s.frame()).frame), { n: 1, dest: 'reg-primary', code: 1011, reason: 'GW_UPSTREAM_BAD_FRAME' }, name);
    await until(() => srv.closed);
    assert.is(await dropped() - d0, 1, `${name}: counted`);
    // The connection stays and the next session works.
    s.send(finish('reg-primary', 0, 7));
    assert.is((await s.frame()).frame.at(-1), 7, name);
    s.close();
  }
});

test('a server sending sessionEnd down on a connection that did not ask: not delivered; error frame, close 1011', async () => {
  const s = await FrameSocket.connect(gw.url);
  const before = seen.length;
  s.send(finish('reg-primary'));
  await s.frame();
  seen[before]!.t.send(sessionEndFrame(1, 'reg-primary', 1000, ''));
  const c = await s.closed();
  assert.is(c.code, 1011);
  assert.equal(c.frames.map((f) => f[2] === 0x18 ? f[3] : f[2]), [MsgType.error], 'only the error frame reached the device');
  assert.is(parseError(decodeEnvelope(c.frames[0]!).body).code, 'GW_UPSTREAM_BAD_FRAME');
  await until(() => seen[before]!.closed);
});

test('ids after the wrap skip one still live: a held connection with id 1 keeps it, the next connection gets another, both sessions work', async () => {
  // A connection opened first is held (no session) while the counter wraps.
  await gw.close();
  observed.length = 0;
  ids.next = 1;
  gw = await startGateway({
    host: '127.0.0.1', port: 0,
    upstreams: [{ name: 'reg-primary', linkUrl: `ws://127.0.0.1:${echo.linkPort}/`, linkKey: linkKeyFor(root, 'reg-primary') }],
    observe: (f) => void observed.push(f),
    ids,
  });
  assert.ok(await gw.waitUpstreams(5_000, ['reg-primary']));
  const held = await inSequence(gw.url);
  held.send(finish('reg-primary', 0, 1));
  assert.is((await held.frame()).frame.at(-1), 1);
  const heldId = observed.find((f) => f.dir === 'up')!.conn;
  assert.is(heldId, 1);
  // The counter at the top: the next connection takes 0xffffffff, the one after wraps.
  ids.next = 0xffffffff;
  const a = await FrameSocket.connect(gw.url);
  a.send(finish('reg-primary', 0, 2));
  assert.is((await a.frame()).frame.at(-1), 2);
  const b = await FrameSocket.connect(gw.url);
  b.send(finish('reg-primary', 0, 3));
  assert.is((await b.frame()).frame.at(-1), 3, 'the new connection after the wrap gets its answer');
  const upIds = observed.filter((f) => f.dir === 'up').map((f) => f.conn);
  assert.equal(upIds, [1, 0xffffffff, 2], 'the id still live (1) is skipped');
  // The held connection's session was not taken over: it still gets its own answers.
  held.send(finish('reg-primary', 1, 4));
  assert.is((await held.frame()).frame.at(-1), 4, 'the held connection still works');
  assert.is(gw.connections(), 3);
  held.close();
  a.close();
  b.close();
});

test.run();
