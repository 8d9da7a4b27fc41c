// The gateway <-> server link: framing, and the challenge-response that keeps anyone without
// the link key from opening sessions with a vouched-for IP.
import { concatBytes as concat, utf8ToBytes as utf8 } from '@noble/hashes/utils.js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { WebSocket } from 'ws';
import { startHost, type Host } from './host.ts';
import { LinkKind, LinkMac, encodeLink, decodeLink, encodeClose, decodeClose, closePayload, closeReason, clientAuthMac, linkKeyFor, linkMacKeys } from './link.ts';
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

test.run();
