// The relay of the path tests (sim/relay.ts) on its own: a recording WebSocket target behind it
// and a bare client in front, real sockets on loopback, every port 0. Frames pass byte for byte
// and as the kind of frame they were (binary, text); close codes and reasons pass both ways; a
// side that vanishes has the other cut as well (1006), as without the relay; a phone that closes
// before the target's connection is open still has its frames and its close delivered; the
// relay's own stop cuts both sides and stops listening.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { WebSocketServer, WebSocket } from 'ws';
import type { AddressInfo } from 'node:net';
import { createHash } from 'node:crypto';
import { startRelay, type RelayHooks } from './relay.ts';

interface Got { frames: { bytes: string; binary: boolean }[]; close: { code: number; reason: string } | null }

const rec = (): Got => ({ frames: [], close: null });
/** A frame's bytes as the tests compare them: hex, or for a long frame its length and SHA-256 (a diff stays readable). */
const hex = (b: Uint8Array | Buffer) => (b.length <= 64 ? Buffer.from(b).toString('hex') : `${b.length} bytes, sha256 ${createHash('sha256').update(b).digest('hex')}`);

/** A target that records what each connection receives and how it closed; `acceptAfterMs` delays each handshake. */
async function startTarget(acceptAfterMs = 0) {
  const conns: { ws: WebSocket; got: Got; path: string }[] = [];
  const wss = new WebSocketServer({
    host: '127.0.0.1',
    port: 0,
    perMessageDeflate: false,
    ...(acceptAfterMs ? { verifyClient: (_: unknown, cb: (ok: boolean) => void) => void setTimeout(() => cb(true), acceptAfterMs) } : {}),
  });
  await new Promise<void>((r) => wss.once('listening', () => r()));
  wss.on('connection', (ws, req) => {
    const got = rec();
    conns.push({ ws, got, path: req.url ?? '' });
    ws.on('message', (d: Buffer, binary) => got.frames.push({ bytes: hex(d), binary }));
    ws.on('close', (code, reason) => (got.close = { code, reason: reason.toString() }));
  });
  return {
    url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}/`,
    conns,
    close: () => new Promise<void>((r) => {
      for (const c of wss.clients) c.terminate();
      wss.close(() => r());
    }),
  };
}

/** A client in front of the relay, recording as the target does. */
async function client(url: string): Promise<{ ws: WebSocket; got: Got }> {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  const got = rec();
  ws.on('message', (d: Buffer, binary) => got.frames.push({ bytes: hex(d), binary }));
  ws.on('close', (code, reason) => (got.close = { code, reason: reason.toString() }));
  ws.on('error', () => {});
  await new Promise<void>((resolve, reject) => (ws.once('open', () => resolve()), ws.once('error', reject)));
  return { ws, got };
}

async function until(ok: () => boolean, what: string, ms = 1_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A target and a relay in front of it; `run` gets both; both stopped after. */
async function behindRelay(run: (t: Awaited<ReturnType<typeof startTarget>>, relay: Awaited<ReturnType<typeof startRelay>>) => Promise<void>, o: { acceptAfterMs?: number; hooks?: RelayHooks } = {}): Promise<void> {
  const t = await startTarget(o.acceptAfterMs);
  const relay = await startRelay(() => t.url, o.hooks);
  try {
    await run(t, relay);
  } finally {
    await relay.close();
    await t.close();
  }
}

const FRAMES: { data: Uint8Array | string; bytes: string; binary: boolean }[] = [
  Uint8Array.of(0x85, 0x01, 0x18, 0x33, 0x00),
  new Uint8Array(0),
  Uint8Array.from({ length: 65_536 }, (_, i) => (i * 7) & 255),
  'a text frame',
  '',
].map((d) => ({ data: d, bytes: hex(typeof d === 'string' ? Buffer.from(d) : d), binary: typeof d !== 'string' }));

test('frames pass both ways byte for byte, in order, each as the kind of frame it was sent as (binary or text; empty and 64 KiB too); the path is kept', async () => {
  await behindRelay(async (t, relay) => {
    const d = await client(relay.url + 'reg-primary');
    for (const f of FRAMES) d.ws.send(f.data, { binary: f.binary });
    await until(() => t.conns[0]?.got.frames.length === FRAMES.length, 'the target got every frame');
    assert.equal(t.conns[0]!.got.frames, FRAMES.map(({ bytes, binary }) => ({ bytes, binary })));
    assert.is(t.conns[0]!.path, '/reg-primary');
    for (const f of FRAMES) t.conns[0]!.ws.send(f.data, { binary: f.binary });
    await until(() => d.got.frames.length === FRAMES.length, 'the device got every frame');
    assert.equal(d.got.frames, FRAMES.map(({ bytes, binary }) => ({ bytes, binary })));
    assert.is(relay.connections(), 1);
  });
});

/**
 * How one side ends its connection, and what the other side must see through the relay: a close
 * with its code and reason as it was; a close frame without a code as one (1005); a side that
 * vanishes, its socket destroyed with no close frame (1006), as a cut (1006), as without the relay.
 */
const ENDS: [string, (ws: WebSocket) => void, { code: number; reason: string }][] = [
  ...([[1000, ''], [1002, 'MSG_BAD_FIELD'], [4001, 'a reason of 123 bytes'.padEnd(123, '.')]] as const).map(([code, reason]) =>
    [`a close ${code} with its reason`, (ws: WebSocket) => ws.close(code, reason), { code, reason }] as [string, (ws: WebSocket) => void, { code: number; reason: string }]),
  ['a close frame without a code (1005)', (ws) => ws.close(), { code: 1005, reason: '' }],
  ['a side that vanishes (its socket destroyed, 1006: no close frame) has the other side cut (1006)', (ws) => ws.terminate(), { code: 1006, reason: '' }],
];

for (const [what, end, seen] of ENDS) {
  test(`${what}: passes from the device to the target, and from the target to the device`, async () => {
    await behindRelay(async (t, relay) => {
      const a = await client(relay.url + 'x');
      await until(() => t.conns.length === 1, 'connected through');
      end(a.ws);
      await until(() => t.conns[0]!.got.close !== null, 'the target saw the end');
      assert.equal(t.conns[0]!.got.close, seen, 'the device ended: what the target saw');

      const b = await client(relay.url + 'y');
      await until(() => t.conns.length === 2, 'connected through');
      end(t.conns[1]!.ws);
      await until(() => b.got.close !== null, 'the device saw the end');
      assert.equal(b.got.close, seen, 'the target ended: what the device saw');
    });
  });
}

test('a device that sends and closes before the target\'s connection is open: the target gets the frames, then that close (no upstream left open)', async () => {
  await behindRelay(async (t, relay) => {
    const a = await client(relay.url + 'x');
    a.ws.send(Uint8Array.of(1, 2, 3));
    a.ws.close(4002, 'early');
    await until(() => t.conns.length === 1 && t.conns[0]!.got.close !== null, 'the target saw the close');
    assert.equal(t.conns[0]!.got, { frames: [{ bytes: '010203', binary: true }], close: { code: 4002, reason: 'early' } });
  }, { acceptAfterMs: 100 });
});

test('a lazy relay connects to the target only at the first frame that goes to it; a frame a hook keeps goes nowhere', async () => {
  await behindRelay(async (t, relay) => {
    const a = await client(relay.url + 'x');
    a.ws.send(Uint8Array.of(9));
    await new Promise((r) => setTimeout(r, 50));
    assert.is(t.conns.length, 0, 'no upstream for a kept frame');
    a.ws.send(Uint8Array.of(1));
    await until(() => t.conns[0]?.got.frames.length === 1, 'the target got the frame');
    assert.equal(t.conns[0]!.got.frames, [{ bytes: '01', binary: true }]);
  }, { hooks: { lazyUpstream: true, fromDevice: (f) => f[0] !== 9 } });
});

test('the relay\'s own stop cuts every connection on both sides (1006) and stops listening', async () => {
  const t = await startTarget();
  const relay = await startRelay(() => t.url);
  try {
    const a = await client(relay.url + 'x');
    await until(() => t.conns.length === 1, 'connected through');
    await relay.close();
    await until(() => a.got.close !== null && t.conns[0]!.got.close !== null, 'both sides ended');
    assert.is(a.got.close!.code, 1006);
    assert.is(t.conns[0]!.got.close!.code, 1006);
    await client(relay.url + 'x').then(() => assert.unreachable('a connection after the stop'), (e: NodeJS.ErrnoException) => assert.is(e.code, 'ECONNREFUSED'));
  } finally {
    await t.close();
  }
});

test.run();
