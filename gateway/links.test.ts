// The gateway <-> server links under attack: a relay on the path holding no key (it can
// rewrite, inject and drop link messages), an authenticated upstream writing into sessions
// that are not its own, and close reasons too long for a WebSocket close frame.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { WebSocketServer, WebSocket } from 'ws';
import type { AddressInfo } from 'node:net';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../deploy/test-util.ts';
import { startGateway, type Gateway } from './gateway.ts';
import { startHost, type Host } from '../server-kit/host.ts';
import { LinkKind, LinkMac, encodeLink, decodeLink, clientAuthMac, serverAuthMac, linkKeyFor, linkMacKeys, type LinkSocket } from '../server-kit/link.ts';
import { UpstreamLink } from './upstream.ts';
import { StepClock as Clock, FakeLinkSocket as FakeSock } from '../server-kit/link-doubles.ts';
import { FrameSocket } from '../server-kit/test-device.ts';
import { setLogLevel } from '../server-kit/log.ts';
import { equalBytes } from '@noble/ciphers/utils.js';
import { utf8ToBytes as utf8 } from '@noble/hashes/utils.js';
import { encodeEnvelope, parseError, MsgType, decodeEnvelope } from '../protocol/messages.ts';
import type { SessionTransport } from '../server-kit/session.ts';

setLogLevel('error');
const root = new Uint8Array(32).fill(0x24);
const seen: { ip: string; seq: number }[] = [];
const transports: SessionTransport[] = [];
const frame = (dest: string, seq = 0) => encodeEnvelope(MsgType.finish, seq, dest, [new Uint8Array(32)]);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(what: () => boolean, ms = 5_000): Promise<boolean> {
  for (let t = 0; t < ms && !what(); t += 20) await sleep(20);
  return what();
}
async function sample(gw: Gateway, name: string): Promise<string> {
  return gw.metrics.registry.getSingleMetricAsString(name);
}

/** A server that records what it receives (IP, envelope seq) and echoes it. */
function echoHost(name: string, devicePort: number | null = null): Promise<Host> {
  return startHost({
    name, host: '127.0.0.1', devicePort, linkPort: 0, linkKey: linkKeyFor(root, name),
    factory: (t) => {
      transports.push(t);
      return {
        onFrame(f) {
          seen.push({ ip: t.observedIp, seq: decodeEnvelope(f).seq });
          t.send(f);
        },
        onClose() {},
      };
    },
  });
}

type Mode = 'pass' | 'rewrite-ip' | 'inject-close' | 'drop-data' | 'silent';
/**
 * A relay between the gateway and a link server, at the WebSocket message level (what a
 * machine on the path sees of an unencrypted link). It holds no key.
 */
async function relay(target: number) {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((r) => wss.once('listening', r));
  const r = { mode: 'pass' as Mode, closes: [] as { code: number; reason: string }[], port: (wss.address() as AddressInfo).port, wss };
  wss.on('connection', (down) => {
    const up = new WebSocket(`ws://127.0.0.1:${target}/`);
    const pending: Buffer[] = [];
    let connId = -1;
    let dropped = false;
    up.on('open', () => {
      for (const m of pending.splice(0)) up.send(m);
    });
    down.on('message', (d: Buffer) => {
      // silent: a cut cable or a frozen peer: both sockets stay open, nothing gets through.
      if (r.mode === 'silent') return;
      const m = Buffer.from(d);
      if (m[0] === LinkKind.OPEN) connId = m.readUInt32BE(1);
      if (r.mode === 'rewrite-ip' && m[0] === LinkKind.OPEN) {
        // The phone is in region east (127.1/16); make the server place it in the west.
        const at = m.indexOf('127.1.0.7');
        if (at >= 0) m.write('127.2.0.7', at);
      }
      if (r.mode === 'drop-data' && m[0] === LinkKind.DATA && !dropped) {
        dropped = true;
        return;
      }
      if (up.readyState === WebSocket.OPEN) up.send(m);
      else pending.push(m);
    });
    up.on('message', (d: Buffer) => {
      if (r.mode === 'silent') return;
      down.send(d);
      if (r.mode === 'inject-close' && d[0] === LinkKind.DATA && connId >= 0) {
        // A CLOSE for the session, as the server would send it (code 1000, reason 'bye').
        const c = Buffer.alloc(5 + 2 + 3);
        c[0] = LinkKind.CLOSE;
        c.writeUInt32BE(connId, 1);
        c.writeUInt16BE(1000, 5);
        c.write('bye', 7);
        down.send(c);
      }
    });
    up.on('close', (code, reason) => {
      r.closes.push({ code, reason: reason.toString() });
      down.terminate();
    });
    down.on('close', () => up.terminate());
    up.on('error', () => {});
    down.on('error', () => {});
  });
  return r;
}

let host: Host;
let rl: Awaited<ReturnType<typeof relay>>;
let gw: Gateway;
test.before(async () => {
  host = await echoHost('reg-primary', 0);
  rl = await relay(host.linkPort);
  gw = await startGateway({
    host: '127.0.0.1', port: 0,
    upstreams: [{ name: 'reg-primary', linkUrl: `ws://127.0.0.1:${rl.port}/`, linkKey: linkKeyFor(root, 'reg-primary') }],
    limits: { reconnectMinMs: 50, reconnectMaxMs: 100 },
  });
  assert.ok(await gw.waitUpstreams(5_000));
});
test.after(async () => {
  await gw.close();
  rl.wss.close();
  await host.close();
});

/** One device session through the relay; returns the close (and error code) it ended with. */
async function session(frames: number, g: Gateway = gw, dest = 'reg-primary'): Promise<{ close: number; code: string | null; echoed: number }> {
  assert.ok(await g.waitUpstreams(5_000, [dest]));
  const s = await FrameSocket.connect(g.url, { localAddress: '127.1.0.7' });
  for (let i = 0; i < frames; i++) s.send(frame(dest, i));
  let echoed = 0;
  for (;;) {
    const n = await s.next(5_000).catch(() => null);
    if (!n) {
      s.terminate();
      return { close: -1, code: null, echoed };
    }
    if ('closed' in n) return { close: n.closed, code: null, echoed };
    const env = decodeEnvelope(n.frame);
    if (env.type === MsgType.error) {
      const c = await s.closed();
      return { close: c.code, code: parseError(env.body).code, echoed };
    }
    echoed++;
    if (echoed === frames) {
      s.close();
      return { close: 0, code: null, echoed };
    }
  }
}

test('a relay without the key rewrites the observed IP: the server refuses the link (LINK_BAD_MAC, 1008) and never places the phone by the forged address', async () => {
  rl.mode = 'rewrite-ip';
  const r = await session(1);
  assert.equal({ close: r.close, code: r.code }, { close: 1013, code: 'GW_UPSTREAM_LOST' });
  assert.ok(await until(() => rl.closes.length > 0));
  assert.equal(rl.closes.at(-1), { code: 1008, reason: 'LINK_BAD_MAC' });
  assert.not.ok(seen.some((x) => x.ip === '127.2.0.7'), 'the server acted on a rewritten IP');
  rl.mode = 'pass';
  assert.equal(await session(2), { close: 0, code: null, echoed: 2 });
  assert.is(seen.at(-1)!.ip, '127.1.0.7');
});

test('a relay injects a CLOSE towards the gateway: the gateway drops the link (LINK_BAD_MAC counted), the device is told GW_UPSTREAM_LOST, not a clean 1000', async () => {
  rl.mode = 'inject-close';
  const r = await session(2);
  assert.equal({ close: r.close, code: r.code }, { close: 1013, code: 'GW_UPSTREAM_LOST' });
  assert.match(await sample(gw, 'usbphone_gateway_link_refused_total'), /code="LINK_BAD_MAC"} [1-9]/);
  rl.mode = 'pass';
  assert.equal(await session(2), { close: 0, code: null, echoed: 2 });
});

test('a relay drops one frame of a session: the next one does not verify, and the server never acts on a session with a hole', async () => {
  rl.mode = 'drop-data';
  const before = seen.length;
  const r = await session(2);
  assert.is(r.close, 1013);
  assert.is(r.echoed, 0);
  assert.is(seen.length, before, 'the server received the frame after the dropped one');
  assert.ok(await until(() => rl.closes.at(-1)?.reason === 'LINK_BAD_MAC'));
  rl.mode = 'pass';
  assert.equal(await session(2), { close: 0, code: null, echoed: 2 });
});

test('close reasons longer than 123 bytes are cut, through the gateway and on a direct port; no socket is left behind', async () => {
  const long = 'refused: ' + '€'.repeat(100);
  for (const url of [gw.url, `ws://127.0.0.1:${host.devicePort}/`]) {
    const s = await FrameSocket.connect(url);
    s.send(frame('reg-primary'));
    await s.frame();
    transports.at(-1)!.close(1008, long);
    const c = await s.closed(5_000);
    assert.is(c.code, 1008);
    assert.ok(Buffer.byteLength(c.reason) <= 123 && long.startsWith(c.reason) && c.reason.length > 40, c.reason);
  }
  assert.ok(await until(() => gw.connections() === 0));
});

/**
 * A link server that proves the key (an authenticated upstream) and then writes into
 * connection ids it chooses: what a compromised or buggy server could do.
 */
async function hostileUpstream(name: string) {
  const key = linkKeyFor(root, name);
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((r) => wss.once('listening', r));
  const h = { port: (wss.address() as AddressInfo).port, wss, send: (_kind: number, _id: number, _p: Uint8Array) => {}, opened: [] as number[] };
  wss.on('connection', (ws) => {
    const nS = new Uint8Array(32).fill(5);
    let m: LinkMac | null = null;
    ws.send(encodeLink(LinkKind.CHALLENGE, 0, nS));
    ws.on('message', (d: Buffer) => {
      const f = m ? m.open(new Uint8Array(d)) : decodeLink(new Uint8Array(d));
      if (f.kind === LinkKind.AUTH) {
        const nG = f.payload.subarray(0, 32);
        assert.ok(equalBytes(f.payload.subarray(32, 64), clientAuthMac(key, nS, nG, name)));
        ws.send(encodeLink(LinkKind.AUTH_OK, 0, serverAuthMac(key, nS, nG, name)));
        const k = linkMacKeys(key, nS, nG, name);
        m = new LinkMac(k.toGateway, k.toServer);
        h.send = (kind, id, p) => ws.send(m!.seal(kind, id, p));
      } else if (f.kind === LinkKind.OPEN) h.opened.push(f.connId);
    });
  });
  return h;
}

test('an upstream writes into a session routed to another upstream: dropped and counted, the other session is untouched', async () => {
  const bad = await hostileUpstream('biz-west');
  gw.setUpstream({ name: 'biz-west', linkUrl: `ws://127.0.0.1:${bad.port}/`, linkKey: linkKeyFor(root, 'biz-west') });
  try {
    assert.ok(await gw.waitUpstreams(5_000));
    const victim = await FrameSocket.connect(gw.url);
    victim.send(frame('reg-primary'));
    await victim.frame();
    const own = await FrameSocket.connect(gw.url);
    own.send(frame('biz-west'));
    assert.ok(await until(() => bad.opened.length === 1));
    // The gateway numbers connections in order: the victim's id is the one before biz-west's own.
    const victimId = bad.opened[0]! - 1;
    const close = new Uint8Array(2 + 3);
    new DataView(close.buffer).setUint16(0, 1000);
    close.set(utf8('bye'), 2);
    bad.send(LinkKind.DATA, victimId, encodeEnvelope(MsgType.error, 1, 'reg-primary', ['SRV_INTERNAL', 0, 'forged']));
    bad.send(LinkKind.CLOSE, victimId, close);
    bad.send(LinkKind.DATA, bad.opened[0]!, frame('biz-west')); // its own session: delivered
    assert.is((await own.frame()).env.type, MsgType.finish);
    const m = await sample(gw, 'usbphone_gateway_link_frames_dropped_total');
    assert.match(m, /upstream="biz-west",kind="data",reason="not-routed-here"} 1/);
    assert.match(m, /upstream="biz-west",kind="close",reason="not-routed-here"} 1/);
    // The victim's session still works and got nothing forged.
    victim.send(frame('reg-primary', 1));
    const back = await victim.frame();
    assert.is(back.env.type, MsgType.finish);
    assert.is(back.env.seq, 1);
    victim.close();
    own.close();
  } finally {
    bad.wss.close();
    for (const c of bad.wss.clients) c.terminate();
  }
});

test('wss:// links: the server listens with a certificate and key, a gateway that trusts it (pinned CA) links up and relays; one that does not never links up', async () => {
  const t = tempDir();
  try {
    const cert = join(t.dir, 'cert.pem');
    const key = join(t.dir, 'key.pem');
    // openssl is a requirement of this suite (scripts/ensure-tools.sh): no silent skip.
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
    const tlsHost = await startHost({ name: 'biz-east', host: '127.0.0.1', devicePort: null, linkPort: 0, linkKey: linkKeyFor(root, 'biz-east'), linkTls: { cert, key }, factory: (tr) => ({ onFrame: (f) => tr.send(f), onClose() {} }) });
    const linkUrl = `wss://127.0.0.1:${tlsHost.linkPort}/`;
    const trusting = await startGateway({ host: '127.0.0.1', port: 0, upstreams: [{ name: 'biz-east', linkUrl, linkKey: linkKeyFor(root, 'biz-east'), linkCa: readFileSync(cert, 'utf8') }] });
    const other = await startGateway({ host: '127.0.0.1', port: 0, upstreams: [{ name: 'biz-east', linkUrl, linkKey: linkKeyFor(root, 'biz-east') }] });
    try {
      assert.ok(await trusting.waitUpstreams(5_000));
      const s = await FrameSocket.connect(trusting.url);
      s.send(frame('biz-east'));
      assert.equal((await s.frame()).frame, frame('biz-east'));
      s.close();
      assert.is(await other.waitUpstreams(1_000), false);
      // A plain ws:// client on the TLS port gets nowhere either.
      const plain = await startGateway({ host: '127.0.0.1', port: 0, upstreams: [{ name: 'biz-east', linkUrl: `ws://127.0.0.1:${tlsHost.linkPort}/`, linkKey: linkKeyFor(root, 'biz-east') }] });
      assert.is(await plain.waitUpstreams(500), false);
      await plain.close();
    } finally {
      await trusting.close();
      await other.close();
      await tlsHost.close();
    }
  } finally {
    t.remove();
  }
});

const HB = 1_000;
const MISSES = 3;
/** An UpstreamLink on virtual timers over fake sockets; up() plays one server handshake. */
function hbUpstream() {
  const clock = new Clock();
  const socks: FakeSock[] = [];
  const ev: string[] = [];
  const key = linkKeyFor(root, 'reg-primary');
  const link = new UpstreamLink(
    { name: 'reg-primary', url: 'ws://reg-primary.test/', key, reconnectMinMs: 100, reconnectMaxMs: 400, heartbeatMs: HB, heartbeatMisses: MISSES, timers: clock, connect: () => (socks.push(new FakeSock()), socks.at(-1)!) },
    { onData: () => {}, onClose: () => {}, onDown: () => ev.push(`down@${clock.t}`), onUp: () => ev.push(`up@${clock.t}`), onRefused: (c) => ev.push(`${c}@${clock.t}`) },
  );
  /** The server's handshake on the newest socket; returns the server's LinkMac. */
  const up = (): { sock: FakeSock; m: LinkMac } => {
    const sock = socks.at(-1)!;
    const nS = new Uint8Array(32).fill(7);
    sock.feed(encodeLink(LinkKind.CHALLENGE, 0, nS));
    const auth = decodeLink(sock.out.shift()!);
    const nG = auth.payload.slice(0, 32);
    sock.feed(encodeLink(LinkKind.AUTH_OK, 0, serverAuthMac(key, nS, nG, 'reg-primary')));
    const k = linkMacKeys(key, nS, nG, 'reg-primary');
    return { sock, m: new LinkMac(k.toGateway, k.toServer) };
  };
  link.start();
  return { clock, socks, ev, link, up };
}

test('heartbeat, gateway end: a server that goes silent (socket open) is pinged once per period and dropped after the misses (LINK_HEARTBEAT_TIMEOUT): its sessions told (onDown), relinked on the backoff', () => {
  const u = hbUpstream();
  const { sock, m } = u.up();
  assert.equal(u.ev, ['up@0']);
  const pings: number[] = [];
  while (!sock.ended && u.clock.t < 20 * HB) {
    u.clock.advance(50);
    for (const d of sock.out.splice(0)) {
      const f = m.open(d);
      assert.equal([f.kind, f.connId, f.payload.length], [LinkKind.PING, 0, 0]);
      pings.push(u.clock.t);
    }
  }
  assert.equal(pings, [HB, 2 * HB, 3 * HB]);
  assert.is(sock.ended?.terminated, true);
  assert.equal(u.ev, ['up@0', `LINK_HEARTBEAT_TIMEOUT@${(MISSES + 1) * HB}`, `down@${(MISSES + 1) * HB}`]);
  assert.is(u.link.up, false);
  u.clock.advance(100);
  assert.is(u.socks.length, 2, 'relinked after reconnectMinMs');
  u.up();
  assert.is(u.link.up, true);
  u.link.stop();
});

test('heartbeat, gateway end: a server that answers stays linked over 200 periods; a server PING gets a tagged PONG; a server silent in the handshake is dropped (LINK_AUTH_TIMEOUT) and retried', () => {
  const u = hbUpstream();
  const { sock, m } = u.up();
  for (let i = 0; i < 200; i++) {
    u.clock.advance(HB);
    for (const d of sock.out.splice(0)) {
      assert.is(m.open(d).kind, LinkKind.PING);
      sock.feed(m.seal(LinkKind.PONG, 0));
    }
  }
  assert.equal([sock.ended, u.ev], [null, ['up@0']]);
  sock.feed(m.seal(LinkKind.PING, 0));
  assert.equal(sock.out.splice(0).map((d) => m.open(d)).map((f) => [f.kind, f.connId, f.payload.length]), [[LinkKind.PONG, 0, 0]]);
  u.link.stop();
  // A server that accepts the connection and says nothing: no CHALLENGE.
  const v = hbUpstream();
  v.clock.advance((MISSES + 1) * HB);
  assert.equal([v.socks[0]!.ended?.terminated, v.ev], [true, [`LINK_AUTH_TIMEOUT@${(MISSES + 1) * HB}`]]);
  v.clock.advance(100);
  assert.is(v.socks.length, 2);
  v.up();
  assert.is(v.link.up, true);
  v.link.stop();
});

test('heartbeat, gateway end: forged ones are refused: an untagged PONG or PING (LINK_BAD_MAC), a tagged one on another connId or with a payload (LINK_BAD_FRAME); a forged PONG does not keep a silent server linked', () => {
  for (const [frame, code] of [
    [(_m: LinkMac) => encodeLink(LinkKind.PONG, 0), 'LINK_BAD_MAC'],
    [(_m: LinkMac) => encodeLink(LinkKind.PING, 0), 'LINK_BAD_MAC'],
    [(m: LinkMac) => m.seal(LinkKind.PING, 3), 'LINK_BAD_FRAME'],
    [(m: LinkMac) => m.seal(LinkKind.PONG, 0, Uint8Array.of(0)), 'LINK_BAD_FRAME'],
  ] as const) {
    const u = hbUpstream();
    const { sock, m } = u.up();
    u.clock.advance(HB);
    assert.is(m.open(sock.out.shift()!).kind, LinkKind.PING);
    sock.feed(frame(m));
    assert.equal([sock.ended?.terminated, u.ev], [true, ['up@0', `${code}@${HB}`, `down@${HB}`]]);
    assert.equal(sock.out, [], 'nothing answered');
    u.link.stop();
  }
});

test('heartbeat over sockets: an idle link stays up over many periods; a silent path (relay drops everything, sockets open) ends the session with GW_UPSTREAM_LOST within the bound, the other upstream serves, and the link returns when the path heals', async () => {
  const primary = await echoHost('reg-primary');
  const backup = await echoHost('reg-backup');
  const path = await relay(primary.linkPort);
  const H = 50;
  const g = await startGateway({
    host: '127.0.0.1', port: 0,
    upstreams: [
      { name: 'reg-primary', linkUrl: `ws://127.0.0.1:${path.port}/`, linkKey: linkKeyFor(root, 'reg-primary') },
      { name: 'reg-backup', linkUrl: `ws://127.0.0.1:${backup.linkPort}/`, linkKey: linkKeyFor(root, 'reg-backup') },
    ],
    limits: { reconnectMinMs: 50, reconnectMaxMs: 100, linkHeartbeatMs: H, linkHeartbeatMisses: MISSES },
  });
  try {
    assert.ok(await g.waitUpstreams(5_000));
    const s = await FrameSocket.connect(g.url, { localAddress: '127.1.0.7' });
    s.send(frame('reg-primary', 0));
    assert.is((await s.frame()).env.seq, 0);
    // 40 idle periods: the heartbeat keeps the link (the session on it would have been lost).
    await sleep(40 * H);
    s.send(frame('reg-primary', 1));
    assert.is((await s.frame()).env.seq, 1);
    assert.not.match(await sample(g, 'usbphone_gateway_link_refused_total'), /LINK_HEARTBEAT_TIMEOUT/);
    path.mode = 'silent';
    const t0 = Date.now();
    const n = await s.next(5_000);
    const ms = Date.now() - t0;
    assert.ok('frame' in n && parseError(decodeEnvelope(n.frame).body).code === 'GW_UPSTREAM_LOST', JSON.stringify(n));
    assert.is((await s.closed()).code, 1013);
    // Dead within (misses + 2) periods of the last message heard; slack for a loaded machine.
    assert.ok(ms <= (MISSES + 2) * H + 400, `detected after ${ms} ms`);
    assert.match(await sample(g, 'usbphone_gateway_link_refused_total'), /upstream="reg-primary",code="LINK_HEARTBEAT_TIMEOUT"} [1-9]/);
    // What the phone does next (S0.6): the backup, whose link is healthy.
    assert.equal(await session(1, g, 'reg-backup'), { close: 0, code: null, echoed: 1 });
    // The silent path lets new links connect but never answers: they time out, they are retried.
    let retried = false;
    for (let i = 0; i < 100 && !retried; i++, await sleep(20)) retried = /upstream="reg-primary",code="LINK_AUTH_TIMEOUT"} [1-9]/.test(await sample(g, 'usbphone_gateway_link_refused_total'));
    assert.ok(retried, 'a relink over the silent path timed out in its handshake');
    path.mode = 'pass';
    assert.ok(await g.waitUpstreams(5_000, ['reg-primary']));
    assert.equal(await session(1, g, 'reg-primary'), { close: 0, code: null, echoed: 1 });
  } finally {
    await g.close();
    path.wss.close();
    for (const c of path.wss.clients) c.terminate();
    await primary.close();
    await backup.close();
  }
});

test.run();
