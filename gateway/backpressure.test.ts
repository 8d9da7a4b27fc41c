// Backpressure from an upstream to devices: when the link to a server is congested (the
// server stops reading), the gateway stops reading the devices that feed it instead of
// buffering without bound, and resumes when the link drains; nothing is dropped or reordered.
// The upstream is a minimal link server written here so that its socket can be paused.
import { equalBytes } from '@noble/ciphers/utils.js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { WebSocketServer, type WebSocket } from 'ws';
import type { AddressInfo } from 'node:net';
import type { Socket } from 'node:net';
import { startGateway } from './gateway.ts';
import { LinkKind, LinkMac, encodeLink, decodeLink, clientAuthMac, serverAuthMac, linkKeyFor, linkMacKeys } from '../server-kit/link.ts';
import { FrameSocket } from '../server-kit/test-device.ts';
import { setLogLevel } from '../server-kit/log.ts';
import { encodeEnvelope, MsgType } from '../protocol/messages.ts';

setLogLevel('error');

test('a congested link pauses the devices feeding it; everything arrives, in order, once it drains', async () => {
  const key = linkKeyFor(new Uint8Array(32).fill(1), 'biz-east');
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', maxPayload: 64 * 1024 });
  await new Promise((r) => wss.once('listening', r));
  const got: number[] = [];
  let link: WebSocket | null = null;
  wss.on('connection', (ws) => {
    const nS = new Uint8Array(32).fill(7);
    ws.send(encodeLink(LinkKind.CHALLENGE, 0, nS));
    let lmac: LinkMac | null = null;
    ws.on('message', (d: Buffer) => {
      const f = lmac ? lmac.open(new Uint8Array(d)) : decodeLink(new Uint8Array(d));
      if (f.kind === LinkKind.AUTH) {
        const nG = f.payload.subarray(0, 32);
        assert.ok(equalBytes(f.payload.subarray(32, 64), clientAuthMac(key, nS, nG, 'biz-east')));
        ws.send(encodeLink(LinkKind.AUTH_OK, 0, serverAuthMac(key, nS, nG, 'biz-east')));
        const k = linkMacKeys(key, nS, nG, 'biz-east');
        lmac = new LinkMac(k.toGateway, k.toServer);
        link = ws;
      } else if (f.kind === LinkKind.DATA) {
        got.push(f.payload[f.payload.length - 1]!);
      }
    });
  });
  const port = (wss.address() as AddressInfo).port;
  const gw = await startGateway({
    host: '127.0.0.1', port: 0,
    upstreams: [{ name: 'biz-east', linkUrl: `ws://127.0.0.1:${port}/`, linkKey: key }],
    limits: { framesPerSecond: 100_000, frameBurst: 100_000, linkHighWaterBytes: 64 * 1024 },
  });
  try {
    assert.ok(await gw.waitUpstreams());
    const sock = (link as unknown as { _socket: Socket })._socket;
    sock.pause();
    const dev = await FrameSocket.connect(gw.url);
    const N = 5000; // 20 MB: more than loopback's socket buffers absorb
    for (let i = 0; i < N; i++) {
      const body = new Uint8Array(4000); // protocol limit on one byte string: 4096
      body[body.length - 1] = i & 255;
      // The last byte of the frame is the last byte of the body: the stub reads it back.
      dev.send(encodeEnvelope(MsgType.credRequest, i, 'biz-east', body));
    }
    await new Promise((r) => setTimeout(r, 500));
    const up = gw.upstream('biz-east')!;
    // 20 MB were sent; the gateway holds at most the high-water mark plus what it had read.
    assert.ok(up.bufferedAmount < 1024 * 1024, `link buffer ${up.bufferedAmount}`);
    assert.ok(got.length < N);
    sock.resume();
    for (let i = 0; i < 1000 && got.length < N; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(got, Array.from({ length: N }, (_, i) => i & 255));
    assert.is(dev.ws.readyState, dev.ws.OPEN);
    dev.close();
  } finally {
    await gw.close();
    wss.close();
  }
});

test.run();
