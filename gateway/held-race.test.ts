// A held connection whose end the phone has not seen yet (docs/protocol.md §2.1): the business
// login reuses the registration's connection, and the gateway's idle timeout (GW_IDLE_TIMEOUT,
// then close 1001) crosses the login's first frame. Before the fix the login took that error as
// its server's and the try failed (`later`: a backoff round, or the next server). Now the same
// try runs again at once on a new connection, once: a new connection cannot be stale. When the
// new connection fails too, the try ends as it always did.
// A relay in front of the real gateway plays the race: after the device's sessionEnd on a
// connection, the next login on it is answered with GW_IDLE_TIMEOUT and the close.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { WebSocketServer, WebSocket } from 'ws';
import type { AddressInfo } from 'node:net';
import { startWorld, TraceHost } from '../sim/world.ts';
import { makeTempDir, removeTempDir } from '../sim/lifetime.ts';
import { setLogSink } from '../server-kit/log.ts';
import { decodeEnvelope, encodeError, MsgType } from '../protocol/messages.ts';

setLogSink(() => {});

/** `every`: every login is answered so, on a reused connection or a new one. */
async function idleRaceRelay(gateway: () => string, every = false) {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((r) => wss.once('listening', () => r()));
  const logins: { dest: string; reused: boolean }[] = [];
  wss.on('connection', (down, req) => {
    const path = (req.url ?? '/').replace(/^\//, '');
    const up = new WebSocket(gateway() + path, { perMessageDeflate: false });
    const pending: Buffer[] = [];
    let ended = false;
    up.on('open', () => pending.splice(0).forEach((f) => up.send(f)));
    down.on('message', (d: Buffer) => {
      const env = decodeEnvelope(Uint8Array.from(d));
      if (env.type === MsgType.sessionEnd) ended = true;
      if (env.type === MsgType.login) {
        logins.push({ dest: env.dest, reused: ended });
        if (ended || every) {
          // What the gateway's idle sweep sends a connection with no session open.
          down.send(encodeError(0, 'gateway', 'GW_IDLE_TIMEOUT', null, 'nothing received for 400 ms'));
          down.close(1001, 'GW_IDLE_TIMEOUT');
          up.close();
          return;
        }
      }
      if (up.readyState === WebSocket.OPEN) up.send(d);
      else pending.push(d);
    });
    up.on('message', (m: Buffer) => down.readyState === WebSocket.OPEN && down.send(m));
    up.on('close', () => down.readyState === WebSocket.OPEN && down.close());
    up.on('error', () => down.terminate());
    down.on('close', () => up.readyState === WebSocket.OPEN && up.close());
    down.on('error', () => up.terminate());
  });
  return {
    url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}/`,
    logins,
    close: () => new Promise<void>((r) => {
      for (const c of wss.clients) c.terminate();
      wss.close(() => r());
    }),
  };
}

test("the gateway's idle timeout crosses the login on the held connection: the login runs again at once on a new connection and succeeds, no failure, no backoff", async () => {
  const dir = makeTempDir('held-race');
  let gatewayUrl = '';
  const relay = await idleRaceRelay(() => gatewayUrl);
  // A backoff long enough to see: a try counted as failed would wait it (or go to another server).
  const world = await startWorld({ stateDir: dir, gatewayPort: 0, advertisedUrl: relay.url, device: { loginRounds: 2, backoffBaseMs: 20_000, backoffCapMs: 20_000 } });
  gatewayUrl = world.stack.gatewayUrl.replace(/\/?$/, '/');
  try {
    const host = new TraceHost();
    const { phone } = await world.phone(0, host);
    const out = await phone.device.plugIn();
    assert.ok(out.ok, JSON.stringify(out));
    assert.equal(relay.logins.map((l) => l.reused), [true, false], `the login on the held connection, then once on a new one (${JSON.stringify(relay.logins)})`);
    assert.is(relay.logins[0]!.dest, relay.logins[1]!.dest, 'the same server again, not the next one');
    assert.ok(out.ok && out.server === relay.logins[0]!.dest);
    const failed = host.events.filter((e) => e.feature === 'S0.11' && !e.ok);
    assert.equal(failed.map((e) => e.detail), [], 'no try failed');
    assert.ok(host.events.some((e) => /again at once on a new connection/.test(e.detail)), 'the retry is traced');
  } finally {
    await relay.close();
    await world.stop();
    removeTempDir(dir);
  }
});

test('the new connection fails too: the try ends as before (unreachable GW_IDLE_TIMEOUT), after one retry only', async () => {
  const dir = makeTempDir('held-race-fails');
  let gatewayUrl = '';
  const relay = await idleRaceRelay(() => gatewayUrl, true);
  const world = await startWorld({ stateDir: dir, gatewayPort: 0, advertisedUrl: relay.url, device: { loginRounds: 1 } });
  gatewayUrl = world.stack.gatewayUrl.replace(/\/?$/, '/');
  try {
    const host = new TraceHost();
    const { phone } = await world.phone(0, host);
    const out = await phone.device.plugIn();
    assert.ok(!out.ok, JSON.stringify(out));
    assert.match(JSON.stringify(out), /GW_IDLE_TIMEOUT/);
    const first = relay.logins[0]!;
    assert.ok(first.reused, JSON.stringify(relay.logins));
    assert.is(relay.logins.filter((l) => l.dest === first.dest).length, 2, `the first server: the held connection and one new one (${JSON.stringify(relay.logins)})`);
    assert.ok(relay.logins.slice(1).every((l) => !l.reused), 'every later login on a new connection');
  } finally {
    await relay.close();
    await world.stop();
    removeTempDir(dir);
  }
});

test.run();
