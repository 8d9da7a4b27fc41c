// The in-memory gateway <-> server link (server-kit/memory-link.ts, issue 15): a gateway and a
// server in one process link without a socket, with the same link protocol: the link key is
// proved both ways, sessions carry the observed IP, a wrong key never links up, a closed
// server ends the link and its sessions. The transport itself: order, copies, close after data.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startGateway } from './gateway.ts';
import { startHost } from '../server-kit/host.ts';
import { linkKeyFor, LinkKind } from '../server-kit/link.ts';
import { MemoryLinkSocket, memoryLinks, connectMemoryLink } from '../server-kit/memory-link.ts';
import { FrameSocket } from '../server-kit/test-device.ts';
import { setLogLevel } from '../server-kit/log.ts';
import { encodeEnvelope, decodeEnvelope, parseError, MsgType } from '../protocol/messages.ts';

setLogLevel('error');
const root = new Uint8Array(32).fill(0x31);
const finish = (dest: string, seq = 0) => encodeEnvelope(MsgType.finish, seq, dest, [new Uint8Array(32)]);

function echo(name: string, linkKey = linkKeyFor(root, name)) {
  const seen: string[] = [];
  return {
    seen,
    host: startHost({
      name, host: '127.0.0.1', devicePort: null, linkPort: 0, linkKey,
      factory: (t) => ({
        onFrame(f) {
          seen.push(t.observedIp);
          t.send(f);
        },
        onClose() {},
      }),
    }),
  };
}

test('a gateway and a server in one process link in memory; frames and the observed IP cross it; closing the server ends the link and its sessions (GW_UPSTREAM_LOST)', async () => {
  const e = echo('reg-primary');
  const host = await e.host;
  const before = memoryLinks();
  const gw = await startGateway({ host: '127.0.0.1', port: 0, upstreams: [{ name: 'reg-primary', linkUrl: `ws://127.0.0.1:${host.linkPort}/`, linkKey: linkKeyFor(root, 'reg-primary') }] });
  try {
    assert.ok(await gw.waitUpstreams(5_000));
    assert.is(memoryLinks(), before + 1, 'the link is in memory, not a socket');
    const s = await FrameSocket.connect(gw.url, { localAddress: '127.1.0.9' });
    for (let i = 0; i < 3; i++) s.send(finish('reg-primary', i));
    for (let i = 0; i < 3; i++) assert.is(decodeEnvelope((await s.frame()).frame).seq, i);
    assert.equal(e.seen, ['127.1.0.9', '127.1.0.9', '127.1.0.9']);
    await host.close();
    assert.is(memoryLinks(), before);
    const c = await s.closed();
    assert.is(c.code, 1013);
    assert.is(parseError(decodeEnvelope(c.frames.at(-1)!).body).code, 'GW_UPSTREAM_LOST');
  } finally {
    await gw.close();
    await host.close();
  }
});

test('in memory too, a server without the link key is never used (GW_UPSTREAM_UNAVAILABLE)', async () => {
  const rogue = await echo('reg-primary', new Uint8Array(32).fill(1)).host;
  const gw = await startGateway({ host: '127.0.0.1', port: 0, upstreams: [{ name: 'reg-primary', linkUrl: `ws://127.0.0.1:${rogue.linkPort}/`, linkKey: linkKeyFor(root, 'reg-primary') }] });
  try {
    assert.is(await gw.waitUpstreams(500), false);
    const s = await FrameSocket.connect(gw.url);
    s.send(finish('reg-primary'));
    const c = await s.closed();
    assert.is(c.code, 1013);
    assert.is(parseError(decodeEnvelope(c.frames.at(-1)!).body).code, 'GW_UPSTREAM_UNAVAILABLE');
  } finally {
    await gw.close();
    await rogue.close();
  }
});

test('in memory the messages after AUTH_OK carry no tag (decision 142), and are still checked: an unknown kind ends the link (LINK_BAD_FRAME)', async () => {
  const e = echo('reg-primary');
  const host = await e.host;
  const send = MemoryLinkSocket.prototype.send;
  const sent: { from: MemoryLinkSocket; bytes: Uint8Array }[] = [];
  MemoryLinkSocket.prototype.send = function (this: MemoryLinkSocket, d: Uint8Array) {
    sent.push({ from: this, bytes: Uint8Array.from(d) });
    send.call(this, d);
  };
  const gw = await startGateway({ host: '127.0.0.1', port: 0, upstreams: [{ name: 'reg-primary', linkUrl: `ws://127.0.0.1:${host.linkPort}/`, linkKey: linkKeyFor(root, 'reg-primary') }] });
  try {
    assert.ok(await gw.waitUpstreams(5_000));
    const s = await FrameSocket.connect(gw.url);
    const f = finish('reg-primary');
    s.send(f);
    assert.equal((await s.frame()).frame, f);
    const data = sent.filter((m) => m.bytes[0] === LinkKind.DATA);
    assert.is(data.length, 2, 'the frame and its echo');
    for (const m of data) assert.is(m.bytes.length, 5 + f.length, 'kind, connId, the frame: no tag');
    const gwEnd = sent.find((m) => m.bytes[0] === LinkKind.AUTH)!.from;
    const closed = new Promise<[number, string]>((r) => gwEnd.once('close', (code: number, why: Buffer) => r([code, why.toString()])));
    gwEnd.send(Uint8Array.of(0x7f, 0, 0, 0, 0));
    assert.equal(await closed, [1008, 'LINK_BAD_FRAME']);
    await s.closed();
  } finally {
    MemoryLinkSocket.prototype.send = send;
    await gw.close();
    await host.close();
  }
});

test('only a server listening in this process is linked in memory', () => {
  assert.is(connectMemoryLink('ws://127.0.0.1:1/'), null);
  assert.is(connectMemoryLink('http://127.0.0.1:1/'), null);
  assert.is(connectMemoryLink('not a url'), null);
});

test('MemoryLinkSocket: in order, in a later turn, each end its own copy; a close arrives after what was sent before it; terminate is 1006', async () => {
  const [a, b] = MemoryLinkSocket.pair();
  const got: number[] = [];
  const closes: [string, number, string][] = [];
  b.on('message', (d: Buffer, bin: boolean) => {
    assert.ok(bin);
    got.push(d[0]!);
    d[0] = 0xff; // the receiver's copy: the sender's bytes do not change
  });
  a.on('close', (code: number, r: Buffer) => closes.push(['a', code, r.toString()]));
  b.on('close', (code: number, r: Buffer) => closes.push(['b', code, r.toString()]));
  const m = Uint8Array.of(1);
  a.send(m);
  a.send(Uint8Array.of(2));
  assert.is(a.bufferedAmount, 2);
  assert.equal(got, [], 'nothing is delivered in the sending turn');
  a.close(1000, 'bye');
  a.send(Uint8Array.of(3)); // after close: not sent
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  assert.equal(got, [1, 2]);
  assert.is(m[0], 1);
  assert.equal(closes.sort(), [['a', 1000, 'bye'], ['b', 1000, 'bye']]);
  assert.is(a.readyState, 3);
  const [c, d] = MemoryLinkSocket.pair();
  const dc: number[] = [];
  d.on('close', (code: number) => dc.push(code));
  c.on('close', () => {});
  c.terminate();
  await new Promise((r) => setImmediate(r));
  assert.equal(dc, [1006]);
});

test.run();
