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
import { startRelay } from '../sim/relay.ts';
import { TraceHost } from '../sim/world.ts';
import { withWorldBehindRelay } from '../sim/relay-world.ts';
import { setLogSink } from '../server-kit/log.ts';
import { decodeEnvelope, encodeError, MsgType } from '../protocol/messages.ts';

setLogSink(() => {});

/** `every`: every login is answered so, on a reused connection or a new one. */
async function idleRaceRelay(gateway: () => string, every = false) {
  const logins: { dest: string; reused: boolean }[] = [];
  const ended = new Set<number>();
  const relay = await startRelay(gateway, {
    fromDevice: (f, c) => {
      const env = decodeEnvelope(f);
      if (env.type === MsgType.sessionEnd) ended.add(c.n);
      if (env.type !== MsgType.login) return true;
      logins.push({ dest: env.dest, reused: ended.has(c.n) });
      if (!ended.has(c.n) && !every) return true;
      // What the gateway's idle sweep sends a connection with no session open.
      c.toDevice(encodeError(0, 'gateway', 'GW_IDLE_TIMEOUT', null, 'nothing received for 400 ms'));
      c.end({ code: 1001, reason: 'GW_IDLE_TIMEOUT' });
      return false;
    },
  });
  return { url: relay.url, logins, close: relay.close };
}

test("the gateway's idle timeout crosses the login on the held connection: the login runs again at once on a new connection and succeeds, no failure, no backoff", async () => {
  // A backoff long enough to see: a try counted as failed would wait it (or go to another server).
  await withWorldBehindRelay('held-race', (gw) => idleRaceRelay(gw), { loginRounds: 2, backoffBaseMs: 20_000, backoffCapMs: 20_000 }, async (world, relay) => {
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
  });
});

test('the new connection fails too: the try ends as before (unreachable GW_IDLE_TIMEOUT), after one retry only', async () => {
  await withWorldBehindRelay('held-race-fails', (gw) => idleRaceRelay(gw, true), { loginRounds: 1 }, async (world, relay) => {
    const host = new TraceHost();
    const { phone } = await world.phone(0, host);
    const out = await phone.device.plugIn();
    assert.ok(!out.ok, JSON.stringify(out));
    assert.match(JSON.stringify(out), /GW_IDLE_TIMEOUT/);
    const first = relay.logins[0]!;
    assert.ok(first.reused, JSON.stringify(relay.logins));
    assert.is(relay.logins.filter((l) => l.dest === first.dest).length, 2, `the first server: the held connection and one new one (${JSON.stringify(relay.logins)})`);
    assert.ok(relay.logins.slice(1).every((l) => !l.reused), 'every later login on a new connection');
  });
});

test.run();
