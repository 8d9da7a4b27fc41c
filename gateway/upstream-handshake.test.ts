// The gateway's LINK_AUTH_TIMEOUT bound ((misses + 1) * heartbeatMs) runs from the WebSocket's
// 'open', not from when the connection is initiated: a link server whose HTTP upgrade takes
// 300 ms still links with linkHeartbeatMs 100, misses 1 (a 200 ms bound), because its
// CHALLENGE follows the upgrade at once. The failure path: a server that opens and then says
// nothing is still refused LINK_AUTH_TIMEOUT within that bound after the open.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { WebSocketServer } from 'ws';
import { attachLinkServer, linkKeyFor } from '../server-kit/link.ts';
import { UpstreamLink } from './upstream.ts';

const key = linkKeyFor(new Uint8Array(32).fill(1), 'reg-primary');

async function server(upgradeDelayMs: number, silent: boolean) {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', verifyClient: (_i, cb) => setTimeout(() => cb(true), upgradeDelayMs) });
  await new Promise((r) => wss.once('listening', r));
  if (!silent) attachLinkServer(wss, { name: 'reg-primary', key }, () => ({ onFrame() {}, onClose() {} }));
  return { wss, port: (wss.address() as { port: number }).port };
}

function link(port: number, heartbeatMs: number, refused: string[]) {
  return new UpstreamLink(
    { name: 'reg-primary', url: `ws://127.0.0.1:${port}/`, key, reconnectMinMs: 50, reconnectMaxMs: 100, heartbeatMs, heartbeatMisses: 1, connect: () => null as never },
    { onData() {}, onClose() {}, onDown() {}, onRefused: (c) => refused.push(c) },
  );
}

test('a 300 ms upgrade links with a 200 ms handshake bound (the bound starts at open)', async () => {
  const { wss, port } = await server(300, false);
  const refused: string[] = [];
  const u = link(port, 100, refused);
  u.start();
  try {
    assert.ok(await u.waitUp(2500), `link up; refusals: ${refused.join(' ') || 'none'}`);
    assert.equal(refused, []);
  } finally {
    u.stop();
    wss.close();
  }
});

test('a server that opens and says nothing is refused LINK_AUTH_TIMEOUT', async () => {
  const { wss, port } = await server(0, true);
  const refused: string[] = [];
  const u = link(port, 100, refused);
  u.start();
  try {
    const t0 = Date.now();
    while (refused.length === 0 && Date.now() - t0 < 2000) await new Promise((r) => setTimeout(r, 20));
    assert.is(refused[0], 'LINK_AUTH_TIMEOUT');
    assert.not.ok(await u.waitUp(50));
  } finally {
    u.stop();
    wss.close();
  }
});

test.run();
