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
import { LinkKind, LinkMac, encodeLink, decodeLink, clientAuthMac, serverAuthMac, linkKeyFor, linkMacKeys } from '../server-kit/link.ts';
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

type Mode = 'pass' | 'rewrite-ip' | 'inject-close' | 'drop-data';
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
async function session(frames: number): Promise<{ close: number; code: string | null; echoed: number }> {
  assert.ok(await gw.waitUpstreams(5_000));
  const s = await FrameSocket.connect(gw.url, { localAddress: '127.1.0.7' });
  for (let i = 0; i < frames; i++) s.send(frame('reg-primary', i));
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

test.run();
