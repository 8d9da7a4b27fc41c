// The gateway <-> server link: framing, and the challenge-response that keeps anyone without
// the link key from opening sessions with a vouched-for IP.
import { concatBytes as concat, utf8ToBytes as utf8 } from '@noble/hashes/utils.js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { WebSocket } from 'ws';
import { startHost, type Host } from './host.ts';
import { LinkKind, LinkMac, encodeLink, decodeLink, encodeClose, decodeClose, closePayload, closeReason, clientAuthMac, linkKeyFor, linkMacKeys, attachLinkServer, heartbeatSettings, LinkHeartbeatDefaults, type LinkSocket } from './link.ts';
import { StepClock as Clock, FakeLinkSocket as FakeSock } from './link-doubles.ts';
import { setLogLevel } from './log.ts';
import { ProtocolError } from '../protocol/errors.ts';

setLogLevel('error');
const key = linkKeyFor(new Uint8Array(32).fill(8), 'reg-primary');
const opened: string[] = [];
let host: Host;
test.before(async () => {
  host = await startHost({ name: 'reg-primary', host: '127.0.0.1', devicePort: null, linkPort: 0, linkKey: key, factory: (t) => {
    opened.push(t.observedIp);
    return { onFrame: (f) => t.send(f), onClose() {} };
  } });
});
test.after(() => host.close());

test('link frames encode and decode; bad ones are refused', () => {
  const f = decodeLink(encodeLink(LinkKind.DATA, 0xdeadbeef, Uint8Array.of(1, 2)));
  assert.equal([f.kind, f.connId, [...f.payload]], [LinkKind.DATA, 0xdeadbeef, [1, 2]]);
  assert.equal(decodeClose(decodeLink(encodeClose(7, 1008, 'why')).payload), { code: 1008, reason: 'why' });
  assert.throws(() => decodeLink(Uint8Array.of(2, 0)), (e: unknown) => e instanceof ProtocolError && e.code === 'LINK_BAD_FRAME');
  assert.throws(() => decodeLink(Uint8Array.of(99, 0, 0, 0, 0)), (e: unknown) => e instanceof ProtocolError && e.code === 'LINK_BAD_FRAME');
});

function connect(): Promise<{ ws: WebSocket; challenge: Uint8Array; next(): Promise<Uint8Array | { closed: number; reason: string }> }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${host.linkPort}/`);
    const q: (Uint8Array | { closed: number; reason: string })[] = [];
    const waiters: ((v: Uint8Array | { closed: number; reason: string }) => void)[] = [];
    const push = (v: Uint8Array | { closed: number; reason: string }) => (waiters.length ? waiters.shift()!(v) : q.push(v));
    let first = true;
    ws.on('message', (d: Buffer) => {
      if (first) {
        first = false;
        resolve({ ws, challenge: decodeLink(new Uint8Array(d)).payload.slice(), next: () => (q.length ? Promise.resolve(q.shift()!) : new Promise((r) => waiters.push(r))) });
        return;
      }
      push(new Uint8Array(d));
    });
    ws.on('close', (c, r) => push({ closed: c, reason: r.toString() }));
    ws.on('error', reject);
  });
}

test('a wrong link key is refused (LINK_AUTH_FAILED) and nothing is opened', async () => {
  const c = await connect();
  const nG = new Uint8Array(32).fill(1);
  c.ws.send(encodeLink(LinkKind.AUTH, 0, concat(nG, clientAuthMac(new Uint8Array(32), c.challenge, nG, 'reg-primary'), utf8('reg-primary'))));
  assert.equal(await c.next(), { closed: 1008, reason: 'LINK_AUTH_FAILED' });
});

test('OPEN before AUTH is refused; the right key for another name too', async () => {
  const c = await connect();
  c.ws.send(encodeLink(LinkKind.OPEN, 1, utf8('127.1.0.1')));
  assert.equal(await c.next(), { closed: 1008, reason: 'LINK_AUTH_FAILED' });
  const c2 = await connect();
  const nG = new Uint8Array(32).fill(2);
  c2.ws.send(encodeLink(LinkKind.AUTH, 0, concat(nG, clientAuthMac(key, c2.challenge, nG, 'reg-backup'), utf8('reg-backup'))));
  assert.equal(await c2.next(), { closed: 1008, reason: 'LINK_AUTH_FAILED' });
  assert.is(opened.length, 0);
});

test('an AUTH with the right proof on a connId other than 0 (altered on the way: connId is outside the proof) is refused', async () => {
  const c = await connect();
  const nG = new Uint8Array(32).fill(3);
  c.ws.send(encodeLink(LinkKind.AUTH, 1 << 16, concat(nG, clientAuthMac(key, c.challenge, nG, 'reg-primary'), utf8('reg-primary'))));
  assert.equal(await c.next(), { closed: 1008, reason: 'LINK_AUTH_FAILED' });
  assert.is(opened.length, 0);
});

test('authenticated: sessions are multiplexed by connId with the vouched-for IP', async () => {
  const c = await connect();
  const nG = new Uint8Array(32).fill(3);
  c.ws.send(encodeLink(LinkKind.AUTH, 0, concat(nG, clientAuthMac(key, c.challenge, nG, 'reg-primary'), utf8('reg-primary'))));
  const ok = await c.next();
  assert.ok(ok instanceof Uint8Array && decodeLink(ok).kind === LinkKind.AUTH_OK);
  const k = linkMacKeys(key, c.challenge, nG, 'reg-primary');
  const m = new LinkMac(k.toServer, k.toGateway);
  c.ws.send(m.seal(LinkKind.OPEN, 5, utf8('127.1.0.5')));
  c.ws.send(m.seal(LinkKind.OPEN, 6, utf8('127.2.0.6')));
  c.ws.send(m.seal(LinkKind.DATA, 6, Uint8Array.of(6)));
  c.ws.send(m.seal(LinkKind.DATA, 5, Uint8Array.of(5)));
  const a = m.open((await c.next()) as Uint8Array);
  const b = m.open((await c.next()) as Uint8Array);
  assert.equal([a.connId, [...a.payload], b.connId, [...b.payload]], [6, [6], 5, [5]]);
  assert.equal(opened, ['127.1.0.5', '127.2.0.6']);
  assert.is(host.sessions(), 2);
  c.ws.send(m.seal(LinkKind.CLOSE, 5, closePayload(1000, 'bye')));
  await new Promise((r) => setTimeout(r, 50));
  assert.is(host.sessions(), 1);
  c.ws.close();
  await new Promise((r) => setTimeout(r, 50));
  assert.is(host.sessions(), 0);
});

/** An authenticated link connection driven by hand; `m` seals and opens its frames. */
async function authed(): Promise<{ c: Awaited<ReturnType<typeof connect>>; m: LinkMac }> {
  const c = await connect();
  const nG = new Uint8Array(32).fill(9);
  c.ws.send(encodeLink(LinkKind.AUTH, 0, concat(nG, clientAuthMac(key, c.challenge, nG, 'reg-primary'), utf8('reg-primary'))));
  await c.next();
  const k = linkMacKeys(key, c.challenge, nG, 'reg-primary');
  return { c, m: new LinkMac(k.toServer, k.toGateway) };
}

test('after AUTH_OK a frame without the tag, with a forged tag, or replayed closes the link (LINK_BAD_MAC, 1008); nothing is opened', async () => {
  const before = opened.length;
  const plain = await authed();
  plain.c.ws.send(encodeLink(LinkKind.OPEN, 7, utf8('127.2.0.7')));
  assert.equal(await plain.c.next(), { closed: 1008, reason: 'LINK_BAD_MAC' });
  const forged = await authed();
  const f = forged.m.seal(LinkKind.OPEN, 8, utf8('127.1.0.8'));
  f[f.length - 1]! ^= 1;
  forged.c.ws.send(f);
  assert.equal(await forged.c.next(), { closed: 1008, reason: 'LINK_BAD_MAC' });
  const replayed = await authed();
  const once = replayed.m.seal(LinkKind.OPEN, 9, utf8('127.1.0.9'));
  replayed.c.ws.send(once);
  replayed.c.ws.send(once);
  assert.equal(await replayed.c.next(), { closed: 1008, reason: 'LINK_BAD_MAC' });
  // The first, genuine OPEN was served; the forged and unsealed ones never were.
  assert.equal(opened.slice(before), ['127.1.0.9']);
});

test('LinkMac: each direction has its own key and its own count; a dropped frame breaks the next tag', () => {
  const k = linkMacKeys(key, new Uint8Array(32).fill(1), new Uint8Array(32).fill(2), 'reg-primary');
  const gw = new LinkMac(k.toServer, k.toGateway);
  const srv = new LinkMac(k.toGateway, k.toServer);
  const a = gw.seal(LinkKind.DATA, 1, Uint8Array.of(1));
  const b = gw.seal(LinkKind.DATA, 1, Uint8Array.of(1));
  assert.not.equal([...a], [...b]); // same message, next sequence number
  const isBadMac = (e: unknown) => e instanceof ProtocolError && e.code === 'LINK_BAD_MAC' && e.closeCode === 1008;
  assert.throws(() => gw.open(a), isBadMac); // reflected back at its sender
  assert.throws(() => srv.open(b), isBadMac); // a dropped
  assert.equal([...srv.open(a).payload], [1]);
  assert.equal([...srv.open(b).payload], [1]);
  assert.throws(() => srv.open(Uint8Array.of(2, 0, 0, 0, 1)), isBadMac);
});

test('close reasons are cut to 123 UTF-8 bytes on a code point boundary', () => {
  assert.is(closeReason('short'), 'short');
  const euro = closeReason('€'.repeat(100)); // 3 bytes each
  assert.is(euro, '€'.repeat(41));
  const mixed = closeReason('a' + '€'.repeat(60));
  assert.ok(utf8(mixed).length <= 123 && mixed === 'a' + '€'.repeat(40));
  const astral = closeReason('😀'.repeat(40)); // 4 bytes each, surrogate pairs in JS
  assert.is(astral, '😀'.repeat(30));
  assert.is(decodeClose(decodeLink(encodeClose(1, 1000, 'é'.repeat(200))).payload).reason, 'é'.repeat(61));
});

const H = 1_000;
const MISSES = 3;
/** A link server on virtual timers with one authenticated connection; m seals/opens as the gateway. */
function hbLink() {
  const clock = new Clock();
  const refused: string[] = [];
  const closedSessions: number[] = [];
  const srv = attachLinkServer(null, { name: 'reg-primary', key, timers: clock, heartbeatMs: H, heartbeatMisses: MISSES, onRefused: (c) => refused.push(c) }, (t) => ({
    onFrame: (f) => t.send(f),
    onClose: () => closedSessions.push(clock.t),
  }));
  const sock = new FakeSock();
  srv.accept(sock, '127.0.0.1');
  const nS = decodeLink(sock.out.shift()!).payload;
  const nG = new Uint8Array(32).fill(4);
  sock.feed(encodeLink(LinkKind.AUTH, 0, concat(nG, clientAuthMac(key, nS, nG, 'reg-primary'), utf8('reg-primary'))));
  assert.is(decodeLink(sock.out.shift()!).kind, LinkKind.AUTH_OK);
  const k = linkMacKeys(key, nS, nG, 'reg-primary');
  const m = new LinkMac(k.toServer, k.toGateway);
  /** What the server sent since the last call, opened (every one must carry the next tag). */
  const drain = () => sock.out.splice(0).map((d) => m.open(d));
  return { clock, refused, closedSessions, srv, sock, m, drain };
}

test('heartbeat, server end: a gateway that goes silent is pinged once per period (tagged, connId 0) and the link is terminated after the misses (LINK_HEARTBEAT_TIMEOUT); its sessions end', () => {
  const l = hbLink();
  l.sock.feed(l.m.seal(LinkKind.OPEN, 1, utf8('127.1.0.1')));
  assert.is(l.srv.sessions(), 1);
  // From here on the gateway says nothing (a frozen process, a cut cable: the socket stays open).
  // The OPEN was heard in the first period (at 0, just after the heartbeat started): the worst
  // case, dead (misses + 2) periods after the last message heard.
  const pings: number[] = [];
  for (let t = 0; t < (MISSES + 2) * H - 100; t += 100) {
    l.clock.advance(100);
    for (const f of l.drain()) {
      assert.equal([f.kind, f.connId, f.payload.length], [LinkKind.PING, 0, 0]);
      pings.push(l.clock.t);
    }
  }
  assert.equal(pings, [2 * H, 3 * H, 4 * H], 'one PING per silent period, the misses of them');
  assert.is(l.sock.ended, null, 'not dead before misses + 1 silent periods');
  assert.is(l.srv.sessions(), 1);
  l.clock.advance(100);
  assert.equal(l.sock.ended, { code: 1006, reason: '', terminated: true }, 'terminated at once: a silent peer would not finish a close handshake');
  assert.equal(l.refused, ['LINK_HEARTBEAT_TIMEOUT']);
  assert.equal(l.closedSessions, [(MISSES + 2) * H]);
  assert.is(l.srv.sessions(), 0);
});

test('heartbeat, server end: a gateway that answers the PINGs keeps the link over 200 periods; a busy link carries no PING; a gateway PING gets a tagged PONG', () => {
  const l = hbLink();
  let pings = 0;
  for (let i = 0; i < 200; i++) {
    l.clock.advance(H);
    for (const f of l.drain()) {
      assert.is(f.kind, LinkKind.PING);
      pings++;
      l.sock.feed(l.m.seal(LinkKind.PONG, 0));
    }
  }
  assert.is(l.sock.ended, null);
  assert.is(pings, 100, 'the PONG of one period counts as heard for the next: a PING every other period');
  // Busy: a device frame each period, answered. Nothing else on the link.
  l.sock.feed(l.m.seal(LinkKind.OPEN, 2, utf8('127.1.0.2')));
  for (let i = 0; i < 50; i++) {
    l.sock.feed(l.m.seal(LinkKind.DATA, 2, Uint8Array.of(i)));
    l.clock.advance(H);
    assert.equal(l.drain().map((f) => f.kind), [LinkKind.DATA]);
  }
  l.sock.feed(l.m.seal(LinkKind.PING, 0));
  assert.equal(l.drain().map((f) => [f.kind, f.connId, f.payload.length]), [[LinkKind.PONG, 0, 0]]);
  assert.is(l.sock.ended, null);
  assert.equal(l.refused, []);
});

test('heartbeat, server end: forged ones are refused: untagged PING or PONG (LINK_BAD_MAC), a tagged one on another connId or with a payload (LINK_BAD_FRAME), a PING before AUTH (LINK_AUTH_FAILED)', async () => {
  for (const [frame, code] of [
    [(l: ReturnType<typeof hbLink>) => encodeLink(LinkKind.PONG, 0), 'LINK_BAD_MAC'],
    [(l: ReturnType<typeof hbLink>) => encodeLink(LinkKind.PING, 0), 'LINK_BAD_MAC'],
    [(l: ReturnType<typeof hbLink>) => l.m.seal(LinkKind.PING, 5), 'LINK_BAD_FRAME'],
    [(l: ReturnType<typeof hbLink>) => l.m.seal(LinkKind.PONG, 0, Uint8Array.of(1)), 'LINK_BAD_FRAME'],
  ] as const) {
    const l = hbLink();
    l.sock.feed(frame(l));
    assert.equal([l.refused, l.sock.ended?.code, l.sock.ended?.reason], [[code], 1008, code]);
    assert.equal(l.drain(), [], 'no PONG to a refused heartbeat');
  }
  const c = await connect();
  c.ws.send(encodeLink(LinkKind.PING, 0));
  assert.equal(await c.next(), { closed: 1008, reason: 'LINK_AUTH_FAILED' });
  // A relay holding no key cannot keep a silent link alive with PONGs of its own.
  const l = hbLink();
  l.clock.advance(H);
  assert.is(l.drain()[0]!.kind, LinkKind.PING);
  const forged = l.m.seal(LinkKind.PONG, 0);
  forged[forged.length - 1]! ^= 1;
  l.sock.feed(forged);
  assert.equal(l.refused, ['LINK_BAD_MAC']);
});

test('heartbeat settings: defaults 2 s and 3 misses; out of range refused', () => {
  assert.equal(heartbeatSettings({}), { heartbeatMs: 2_000, heartbeatMisses: 3 });
  assert.equal(LinkHeartbeatDefaults, { heartbeatMs: 2_000, heartbeatMisses: 3 });
  assert.throws(() => heartbeatSettings({ heartbeatMs: 0 }), /heartbeatMs/);
  assert.throws(() => heartbeatSettings({ heartbeatMs: 1.5 }), /heartbeatMs/);
  assert.throws(() => heartbeatSettings({ heartbeatMisses: 0 }), /heartbeatMisses/);
});

test.run();
