// The gateway against hostile devices (S0.7 at the front door): every refusal carries its
// documented code and close code, nothing invalid reaches an upstream, and well-behaved
// devices keep being served. Upstreams here are stub servers on the real link protocol that
// record what they receive (what the gateway forwards, and the IP it vouches for).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { startGateway, type Gateway } from './gateway.ts';
import type { Host } from '../server-kit/host.ts';
import { stubUpstream, closedWith, finish, type StubSession } from './test-upstreams.ts';
import { linkKeyFor } from '../server-kit/link.ts';
import { FrameSocket } from '../server-kit/test-device.ts';
import { tempDir } from '../deploy/test-util.ts';
import { setLogLevel } from '../server-kit/log.ts';
import { encodeEnvelope, parseError, MsgType, decodeEnvelope as decodeEnv } from '../protocol/messages.ts';
import { encode } from '../protocol/cbor.ts';
import { rawUpgrade, clientFrame } from './hostile-client.ts';

setLogLevel('error');
const root = new Uint8Array(32).fill(0x42);
const seen: { dest: string; ip: string; frame: Uint8Array }[] = [];
const sessions: StubSession[] = [];
let echo: Host;
let sink: Host;
let gw: Gateway;

const stub = (name: string, reply: boolean) => stubUpstream(root, name, {
  reply, sessions,
  onFrame: (x, f) => void seen.push({ dest: name, ip: x.t.observedIp, frame: f }),
});

/** Connects, sends `frames`, returns the error frame's code (if any) and the close code. */
async function refusal(frames: (Uint8Array | string)[], opts: { url?: string; localAddress?: string } = {}): Promise<{ code: string | null; close: number }> {
  const s = await FrameSocket.connect(opts.url ?? gw.url, { localAddress: opts.localAddress });
  for (const f of frames) s.ws.send(f);
  return closedWith(s);
}
test.before(async () => {
  echo = await stub('reg-primary', true);
  sink = await stub('biz-east', false);
  gw = await startGateway({
    host: '127.0.0.1', port: 0, operatorPort: 0,
    upstreams: [
      { name: 'reg-primary', linkUrl: `ws://127.0.0.1:${echo.linkPort}/`, linkKey: linkKeyFor(root, 'reg-primary') },
      { name: 'biz-east', linkUrl: `ws://127.0.0.1:${sink.linkPort}/`, linkKey: linkKeyFor(root, 'biz-east') },
      { name: 'reg-backup', linkUrl: 'ws://127.0.0.1:1/', linkKey: linkKeyFor(root, 'reg-backup') },
    ],
    limits: { maxConnectionsPerIp: 200, framesPerSecond: 20, frameBurst: 40 },
  });
  assert.ok(await gw.waitUpstreams(5_000, ['reg-primary', 'biz-east']));
});
test.after(async () => {
  await gw.close();
  await echo.close();
  await sink.close();
});

test('a valid frame is routed by dest, relayed back, and the upstream learns the observed IP', async () => {
  const s = await FrameSocket.connect(gw.url, { localAddress: '127.3.0.7', headers: { 'x-forwarded-for': '10.9.9.9' } });
  const f = finish('reg-primary');
  s.send(f);
  const back = await s.frame();
  assert.equal(back.frame, f);
  const last = seen.filter((x) => x.dest === 'reg-primary').at(-1)!;
  assert.is(last.ip, '127.3.0.7');
  s.close();
});

test('refusals: each bad frame gets its error code and close code, and is not forwarded', async () => {
  const before = seen.length;
  const cases: [string, (Uint8Array | string)[], string | null, number][] = [
    ['oversized (checked before decoding)', [encodeEnvelope(MsgType.credRequest, 0, 'reg-primary', new Uint8Array(20 * 1024))], 'GW_FRAME_TOO_LARGE', 1009],
    ['garbage bytes', [Uint8Array.of(0xff, 0x00, 0x13, 0x37)], 'CBOR_MALFORMED', 1002],
    ['truncated CBOR', [finish('reg-primary').subarray(0, 10)], 'CBOR_TRUNCATED', 1002],
    ['trailing bytes', [Uint8Array.of(...finish('reg-primary'), 0)], 'CBOR_TRAILING_BYTES', 1002],
    ['text frame', ['hello'], 'GW_TEXT_FRAME', 1003],
    ['not an envelope', [encode([1, 2, 3])], 'MSG_BAD_SHAPE', 1002],
    ['wrong protocol version', [encode([2, MsgType.finish, 0, 'reg-primary', [new Uint8Array(32)]])], 'MSG_VERSION', 1002],
    ['unknown type', [encode([1, 99, 0, 'reg-primary', []])], 'MSG_UNKNOWN_TYPE', 1002],
    ['server-only type', [encodeEnvelope(MsgType.helloReply, 0, 'reg-primary', [new Uint8Array(32), new Uint8Array(32)])], 'GW_BAD_DIRECTION', 1008],
    ['bad hello body', [encodeEnvelope(MsgType.hello, 0, 'reg-primary', [1, 2, 3, 4])], 'MSG_BAD_FIELD', 1002],
    ['sealed body not bytes', [encodeEnvelope(MsgType.credRequest, 0, 'reg-primary', ['x'])], 'GW_BAD_BODY', 1002],
    ['unknown dest', [finish('nowhere')], 'GW_UNKNOWN_DEST', 1008],
    ['upstream down (S0.6: try the backup)', [finish('reg-backup')], 'GW_UPSTREAM_UNAVAILABLE', 1013],
    ['dest switched mid-session', [finish('biz-east'), finish('reg-primary', 1)], 'GW_DEST_CHANGED', 1008],
  ];
  for (const [name, frames, code, close] of cases) {
    const r = await refusal(frames);
    assert.equal(r, { code, close }, name);
  }
  // Only the first frame of the 'dest switched' case was valid and forwarded.
  assert.is(seen.length - before, 1);
});

test('a frame over the limit is refused from its header, before it is buffered: GW_FRAME_TOO_LARGE, 1009', async () => {
  const r = await refusal([new Uint8Array(64 * 1024)]);
  assert.equal(r, { code: 'GW_FRAME_TOO_LARGE', close: 1009 });
});

test('a text frame of invalid UTF-8 gets GW_TEXT_FRAME (1003) like any text frame, as docs/errors.md says', async () => {
  const s = await FrameSocket.connect(gw.url);
  s.ws.send(Buffer.from([0xff, 0xfe, 0x80]), { binary: false });
  const c = await s.closed();
  assert.is(c.code, 1003);
  assert.is(parseError(decodeEnv(c.frames[0]!).body).code, 'GW_TEXT_FRAME');
});

test('a flood of frames from one connection: GW_RATE_LIMITED, and others are still served', async () => {
  const s = await FrameSocket.connect(gw.url);
  for (let i = 0; i < 200; i++) s.send(finish('biz-east', i));
  const c = await s.closed();
  assert.is(c.code, 1008);
  assert.is(parseError(decodeEnv(c.frames.at(-1)!).body).code, 'GW_RATE_LIMITED');
  const ok = await FrameSocket.connect(gw.url);
  ok.send(finish('reg-primary'));
  assert.is((await ok.frame()).env.type, MsgType.finish);
  ok.close();
});

test('a WebSocket-level violation (an unmasked frame) closes 1002 (GW_WS_PROTOCOL), also when more reads follow it', async () => {
  const c = await rawUpgrade(gw.port);
  const unmasked = Uint8Array.from(clientFrame(2, 3));
  unmasked[1]! &= 0x7f; // MASK bit off: RFC 6455 §5.1 requires the server to fail the connection
  c.sock.write(Buffer.concat([unmasked.subarray(0, 2), unmasked.subarray(6), ...Array.from({ length: 10 }, () => clientFrame(2, 3))]));
  await new Promise((r) => setTimeout(r, 50));
  if (!c.isClosed()) c.sock.write(Buffer.concat(Array.from({ length: 10 }, () => clientFrame(2, 3))));
  await Promise.race([c.closed, new Promise((r) => setTimeout(r, 5_000))]);
  assert.ok(c.isClosed());
  const got = c.received();
  // The close frame: 0x88, length, then the code 1002.
  const at = got.indexOf(0x88);
  assert.ok(at >= 0 && got.readUInt16BE(at + 2) === 1002, got.toString('hex'));
  const m = await gw.metrics.registry.getSingleMetricAsString('usbphone_gateway_errors_total');
  assert.match(m, /code="GW_WS_PROTOCOL"} [1-9]/);
});

test('every frame counts against the rate, fragments too: 30 messages in 60 frames (burst 40) get GW_RATE_LIMITED', async () => {
  const s = await FrameSocket.connect(gw.url);
  for (let i = 0; i < 30; i++) {
    const f = finish('biz-east', i);
    s.ws.send(f.subarray(0, 10), { fin: false });
    s.ws.send(f.subarray(10), { fin: true });
  }
  const c = await s.closed();
  assert.is(c.code, 1008);
  assert.is(parseError(decodeEnv(c.frames.at(-1)!).body).code, 'GW_RATE_LIMITED');
});

// Each connection costs two descriptors here (client and gateway in one process): scale down
// under a small `ulimit -n` rather than fail with EMFILE.
const fdLimit = (() => {
  try {
    return Number(execFileSync('bash', ['-c', 'ulimit -n']).toString().trim()) || 1024;
  } catch {
    return 1024;
  }
})();
const MANY = Math.min(1000, Math.floor((fdLimit - 300) / 2));

test(`${MANY} idle connections from one IP: those over the per-IP limit (200) get GW_TOO_MANY_PER_IP; other IPs are served`, async () => {
  const opened = await Promise.all(Array.from({ length: MANY }, () => FrameSocket.connect(gw.url, { localAddress: '127.4.0.1' })));
  const outcomes = opened.map((s) => s.closed(60_000).then((c) => (c.frames[0] ? parseError(decodeEnv(c.frames[0]).body).code : 'none'), () => 'open'));
  let closed = 0;
  for (const o of outcomes) void o.then(() => closed++);
  for (let waited = 0; closed < MANY - 200 && waited < 20_000; waited += 20) await new Promise((r) => setTimeout(r, 20));
  await new Promise((r) => setTimeout(r, 100));
  assert.is(closed, MANY - 200);
  assert.is(gw.connections(), 200);
  const codes = await Promise.all(outcomes.filter((_, i) => opened[i]!.ws.readyState === WebSocket.CLOSED));
  assert.ok(codes.every((c) => c === 'GW_TOO_MANY_PER_IP'));
  const ok = await FrameSocket.connect(gw.url, { localAddress: '127.4.0.2' });
  ok.send(finish('reg-primary'));
  assert.is((await ok.frame()).env.type, MsgType.finish);
  ok.close();
  for (const s of opened) s.terminate();
});

test('a device that does not read is dropped (GW_SLOW_PEER) instead of buffering without bound', async () => {
  const s = await FrameSocket.connect(gw.url);
  s.send(finish('biz-east'));
  await new Promise((r) => setTimeout(r, 100));
  const t = sessions.at(-1)!.t;
  s.ws.pause();
  const big = encodeEnvelope(MsgType.credReply, 1, 'biz-east', new Uint8Array(15 * 1024));
  for (let i = 0; i < 1200 && gw.connections() > 0; i++) {
    t.send(big);
    if (i % 50 === 0) await new Promise((r) => setTimeout(r, 5));
  }
  s.ws.resume();
  const c = await s.closed(10_000);
  assert.is(c.code, 1006);
  const m = await gw.metrics.registry.getSingleMetricAsString('usbphone_gateway_errors_total');
  assert.match(m, /code="GW_SLOW_PEER"} [1-9]/);
});

test('the link to an upstream goes down: its sessions get GW_UPSTREAM_LOST (1013)', async () => {
  const extra = await stub('biz-west', true);
  gw.setUpstream({ name: 'biz-west', linkUrl: `ws://127.0.0.1:${extra.linkPort}/`, linkKey: linkKeyFor(root, 'biz-west') });
  assert.ok(await gw.waitUpstreams(5_000, ['biz-west']));
  const s = await FrameSocket.connect(gw.url);
  s.send(finish('biz-west'));
  await s.frame();
  await extra.close();
  const c = await s.closed();
  assert.is(c.code, 1013);
  assert.is(parseError(decodeEnv(c.frames.at(-1)!).body).code, 'GW_UPSTREAM_LOST');
});

test('an upstream that cannot prove the link key is never used', async () => {
  const rogue = await stubUpstream(root, 'reg-primary', { reply: false, sessions: [], linkKey: new Uint8Array(32).fill(1) });
  const g2 = await startGateway({ host: '127.0.0.1', port: 0, upstreams: [{ name: 'reg-primary', linkUrl: `ws://127.0.0.1:${rogue.linkPort}/`, linkKey: linkKeyFor(root, 'reg-primary') }] });
  try {
    assert.is(await g2.waitUpstreams(500), false);
    assert.equal(await refusal([finish('reg-primary')], { url: g2.url }), { code: 'GW_UPSTREAM_UNAVAILABLE', close: 1013 });
  } finally {
    await g2.close();
    await rogue.close();
  }
});

test('the total connection limit: GW_TOO_MANY_CONNECTIONS (1013)', async () => {
  const g2 = await startGateway({ host: '127.0.0.1', port: 0, upstreams: [], limits: { maxConnections: 3 } });
  try {
    const open = await Promise.all([1, 2, 3].map(() => FrameSocket.connect(g2.url)));
    assert.equal(await refusal([], { url: g2.url }), { code: 'GW_TOO_MANY_CONNECTIONS', close: 1013 });
    open[0]!.close();
    await open[0]!.closed();
    for (let i = 0; i < 100 && g2.connections() > 2; i++) await new Promise((r) => setTimeout(r, 10));
    const again = await FrameSocket.connect(g2.url);
    assert.is(g2.connections(), 3);
    for (const s of [...open, again]) s.terminate();
  } finally {
    await g2.close();
  }
});

test('idle connections are closed with GW_IDLE_TIMEOUT', async () => {
  const g2 = await startGateway({ host: '127.0.0.1', port: 0, upstreams: [], limits: { idleTimeoutMs: 200 } });
  try {
    const s = await FrameSocket.connect(g2.url);
    const c = await s.closed(5_000);
    assert.is(c.code, 1001);
    assert.is(parseError(decodeEnv(c.frames[0]!).body).code, 'GW_IDLE_TIMEOUT');
  } finally {
    await g2.close();
  }
});

test('GET /healthz and GET /metrics on the operator port only: the device port answers 404', async () => {
  const dev = gw.url.replace(/^ws/, 'http');
  assert.is((await fetch(dev + 'metrics')).status, 404);
  assert.is((await fetch(dev + 'healthz')).status, 404);
  assert.ok(gw.operatorUrl && gw.operatorUrl !== dev);
});

test('GET /healthz and GET /metrics: Prometheus text that counts what happened', async () => {
  const base = gw.operatorUrl!;
  const h = (await (await fetch(base + 'healthz')).json()) as { ok: boolean; upstreams: Record<string, string> };
  assert.is(h.ok, true);
  assert.is(h.upstreams['reg-primary'], 'up');
  assert.is(h.upstreams['reg-backup'], 'down');
  const res = await fetch(base + 'metrics');
  assert.match(res.headers.get('content-type') ?? '', /text\/plain/);
  const text = await res.text();
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || /^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* /.test(line)) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (-?[0-9.e+-]+|NaN|\+Inf|-Inf)$/.exec(line);
    assert.ok(m, `not Prometheus text: ${line}`);
    samples.set(m![1]! + (m![2] ?? ''), Number(m![3]));
  }
  assert.ok(samples.get('usbphone_gateway_errors_total{code="GW_RATE_LIMITED"}')! >= 1);
  assert.ok(samples.get('usbphone_gateway_errors_total{code="GW_FRAME_TOO_LARGE"}')! >= 2);
  assert.ok(samples.get('usbphone_gateway_errors_total{code="GW_TOO_MANY_PER_IP"}')! >= MANY - 200);
  assert.ok(samples.get('usbphone_gateway_frames_in_total{type="finish"}')! >= 1);
  assert.ok(samples.get('usbphone_gateway_frames_out_total{type="error"}')! >= 10);
  assert.ok(samples.get('usbphone_gateway_upstream_latency_seconds_count{upstream="reg-primary"}')! >= 1);
  assert.is(samples.get('usbphone_gateway_upstream_up{upstream="reg-primary"}'), 1);
  assert.ok(samples.has('usbphone_gateway_connections'));
});

test('wss:// when given a certificate and key', async () => {
  const t = tempDir();
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', join(t.dir, 'key.pem'), '-out', join(t.dir, 'cert.pem'), '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
  } catch {
    t.remove();
    return; // no openssl on this machine: nothing to test with
  }
  const g2 = await startGateway({ host: '127.0.0.1', port: 0, upstreams: [{ name: 'reg-primary', linkUrl: `ws://127.0.0.1:${echo.linkPort}/`, linkKey: linkKeyFor(root, 'reg-primary') }], tls: { cert: join(t.dir, 'cert.pem'), key: join(t.dir, 'key.pem') } });
  try {
    assert.match(g2.url, /^wss:\/\//);
    await g2.waitUpstreams();
    const ws = new WebSocket(g2.url, { ca: execFileSync('cat', [join(t.dir, 'cert.pem')]) });
    const got = await new Promise<Buffer>((resolve, reject) => {
      ws.once('open', () => ws.send(finish('reg-primary')));
      ws.once('message', (d) => resolve(d as Buffer));
      ws.once('error', reject);
    });
    assert.equal(new Uint8Array(got), finish('reg-primary'));
    ws.close();
  } finally {
    await g2.close();
    t.remove();
  }
});

test.run();
