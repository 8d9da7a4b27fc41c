// New firmware in front of a gateway that does not know sessions in sequence (docs/protocol.md
// §2.1 rule 1, §15): such a peer refuses the `sessions` frame (type 51) with MSG_UNKNOWN_TYPE and
// closes 1002. Before the fix the phone's first session ended `refused` on that error (retry
// class never) and the phone never logged in. Now the phone marks that gateway as "no sessions
// in sequence" for the boot and retries the session at once on a new connection without asking,
// once: one connection per session afterwards. An old peer that also refuses the plain session
// still ends refused, after exactly one retry.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startRelay } from '../sim/relay.ts';
import { TraceHost } from '../sim/world.ts';
import { withWorldBehindRelay } from '../sim/relay-world.ts';
import { setLogSink } from '../server-kit/log.ts';
import { decodeEnvelope, encodeError, MsgType } from '../protocol/messages.ts';

setLogSink(() => {});

/**
 * A relay in front of the gateway playing an old gateway: a first frame of type 51 is refused as
 * §15 says (error MSG_UNKNOWN_TYPE, close 1002); with `refuseAll` every connection's first frame is.
 */
async function oldGateway(gateway: () => string, refuseAll = false, errorFrame = true) {
  const seen = { connections: [] as string[], refusedSessions: 0, sessionsForwarded: 0 };
  const counted = new Set<number>();
  const later = new Set<number>();
  const relay = await startRelay(gateway, {
    lazyUpstream: true,
    fromDevice: (f, c) => {
      if (!counted.has(c.n)) {
        counted.add(c.n);
        seen.connections.push(c.path);
      }
      const env = decodeEnvelope(f);
      const first = !later.has(c.n);
      later.add(c.n);
      if (first && (refuseAll || env.type === MsgType.sessions)) {
        if (env.type === MsgType.sessions) seen.refusedSessions++;
        // A direct device port refuses without an error frame: close 1002, the code as reason.
        if (errorFrame) c.toDevice(encodeError(0, env.dest, 'MSG_UNKNOWN_TYPE', env.seq, `unknown message type ${env.type}`));
        c.end({ code: 1002, reason: 'MSG_UNKNOWN_TYPE' });
        return false;
      }
      if (env.type === MsgType.sessions) seen.sessionsForwarded++;
      return true;
    },
  });
  return { url: relay.url, seen, close: relay.close };
}

test('an old gateway refuses `sessions` (MSG_UNKNOWN_TYPE, 1002): the phone retries at once without it and logs in, one connection per session', async () => {
  await withWorldBehindRelay('old-gateway', (gateway) => oldGateway(gateway), undefined, async (world, relay) => {
    const host = new TraceHost();
    const { phone } = await world.phone(0, host);
    const t0 = Date.now();
    const out = await phone.device.plugIn();
    assert.ok(out.ok && out.via === 'registration', JSON.stringify(out));
    assert.is(relay.seen.refusedSessions, 1, 'asked once; after the refusal never again this boot');
    assert.is(relay.seen.sessionsForwarded, 0);
    // The refused connection, its retry on the same URL, then one connection per later session.
    const c = relay.seen.connections;
    assert.is(c[0], c[1], `the same session retried on the same URL (${c.join(', ')})`);
    assert.is(new Set(c.slice(1)).size, c.length - 1, `one connection per session after the retry (${c.join(', ')})`);
    assert.ok(c.some((d) => d.startsWith('biz')), `the business login ran (${c.join(', ')})`);
    assert.ok(Date.now() - t0 < 5_000, 'no backoff round');
  });
});

test('an old peer that refuses `sessions` with a bare close 1002 (no error frame, as a direct device port does): the same retry, the phone logs in', async () => {
  await withWorldBehindRelay('old-port', (gateway) => oldGateway(gateway, false, false), undefined, async (world, relay) => {
    const { phone } = await world.phone(0, new TraceHost());
    const out = await phone.device.plugIn();
    assert.ok(out.ok && out.via === 'registration', JSON.stringify(out));
    assert.is(relay.seen.refusedSessions, 1);
    const c = relay.seen.connections;
    assert.is(c[0], c[1], `the same session retried on the same URL (${c.join(', ')})`);
    assert.is(new Set(c.slice(1)).size, c.length - 1, `one connection per session after the retry (${c.join(', ')})`);
  });
});

test('an old peer that refuses the plain session too: the session still ends refused, after one retry only (no loop)', async () => {
  await withWorldBehindRelay('old-gateway-refuses', (gateway) => oldGateway(gateway, true), { regRounds: 1, loginRounds: 1 }, async (world, relay) => {
    const host = new TraceHost();
    const { phone } = await world.phone(0, host);
    const out = await phone.device.plugIn();
    assert.ok(!out.ok, JSON.stringify(out));
    assert.match(JSON.stringify(out), /MSG_UNKNOWN_TYPE/);
    assert.is(relay.seen.refusedSessions, 1, 'sessions asked once, on the first connection only');
    const perUrl = new Map<string, number>();
    for (const d of relay.seen.connections) perUrl.set(d, (perUrl.get(d) ?? 0) + 1);
    const first = relay.seen.connections[0]!;
    assert.is(perUrl.get(first), 2, `the refused session: its connection and one retry (${relay.seen.connections.join(', ')})`);
  });
});

test.run();
