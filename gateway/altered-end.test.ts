// A frame altered on the way on a connection that runs sessions in sequence (docs/protocol.md
// §2.1 rules 3-4; found by the deterministic simulation, issue 14, seeds 7329 and 7435:
// `no-half-validated-frame`). The gateway's `sessionEnd` for the registration crosses the
// phone's own end and arrives while the business login already runs on the connection; one bit
// of it flipped on the way, in its reason ("done" -> "dmne"). The phone checked only its number,
// `dest` and code, ignored it as the expected crossing end, and went on sending the login on a
// connection that had carried a frame it could not check whole. Now a crossing end is ignored
// only when it is exactly [1000, ""]; anything else gives the connection up (close 1002) and the
// login runs again on a new connection: nothing more is sent on the one that carried it.
// A relay in front of the real gateway plays the fault: it holds the gateway's sessionEnd of
// session 1 (and what follows it) until the phone's next session's first frame has gone up, so
// the end crosses for sure, then delivers it altered.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startRelay } from '../sim/relay.ts';
import { TraceHost } from '../sim/world.ts';
import { withWorldBehindRelay } from '../sim/relay-world.ts';
import { setLogSink } from '../server-kit/log.ts';
import { decodeEnvelope, peekSessionEnd, sessionEndFrame, MsgType } from '../protocol/messages.ts';

setLogSink(() => {});

interface Altered { dest: string; typesAfter: number[]; closedBy: number | null }

/** `alter`: what the relay delivers instead of the gateway's crossing end of session 1. */
async function alteringRelay(gateway: () => string, alter: (n: number, dest: string) => Uint8Array) {
  const altered: Altered[] = [];
  interface State { held: Uint8Array[] | null; end: { n: number; dest: string } | null; mine: Altered | null; done: boolean }
  const states = new Map<number, State>();
  const st = (n: number) => states.get(n) ?? states.set(n, { held: null, end: null, mine: null, done: false }).get(n)!;
  const relay = await startRelay(gateway, {
    // Frames for the device are held back behind the gateway's end of session 1.
    fromUpstream: (f, c) => {
      const s = st(c.n);
      if (s.held) {
        s.held.push(f);
        return false;
      }
      const e = s.done ? null : peekSessionEnd(f);
      if (e && e.n === 1 && e.code === 1000) {
        s.end = { n: e.n, dest: e.dest };
        s.held = [];
        return false;
      }
      return true;
    },
    fromDevice: (f, c) => {
      const s = st(c.n);
      if (s.mine) s.mine.typesAfter.push(decodeEnvelope(f).type);
      c.toUpstream(f);
      // The phone's next session began (its first frame after its own end went up): the end crosses.
      const env = decodeEnvelope(f);
      if (s.held && s.end && env.type !== MsgType.sessionEnd && env.dest !== s.end.dest) {
        s.mine = { dest: s.end.dest, typesAfter: [], closedBy: null };
        altered.push(s.mine);
        c.toDevice(alter(s.end.n, s.end.dest));
        for (const x of s.held) c.toDevice(x);
        s.held = null;
        s.done = true;
      }
      return false;
    },
    onDeviceClose: (code, c) => {
      const s = st(c.n);
      if (s.mine) s.mine.closedBy = code;
    },
  });
  return { url: relay.url, altered, connections: relay.connections, close: relay.close };
}

const cases: [string, (n: number, dest: string) => Uint8Array][] = [
  // The soak's frame: an older gateway's "done", one bit flipped.
  ['its reason altered (done -> dmne)', (n, dest) => sessionEndFrame(n, dest, 1000, 'dmne')],
  // A reason at all: rule 3 says a normal end has none, so the phone cannot tell it from an altered one.
  ['a reason where rule 3 has none', (n, dest) => sessionEndFrame(n, dest, 1000, 'done')],
];

for (const [name, alter] of cases) {
  test(`the gateway's crossing sessionEnd arrives with ${name}: the phone sends nothing more on that connection (close 1002) and logs in on a new one`, async () => {
    await withWorldBehindRelay('altered-end', (gateway) => alteringRelay(gateway, alter), { loginRounds: 2, backoffBaseMs: 50 }, async (world, relay) => {
      const host = new TraceHost();
      const { phone } = await world.phone(0, host);
      const out = await phone.device.plugIn();
      assert.is(relay.altered.length, 1, 'the relay altered the crossing end of the registration once');
      const a = relay.altered[0]!;
      // Old firmware: the login went on here (finish, pwConfirm: types 3 and 30).
      assert.equal(a.typesAfter, [], `nothing sent on the connection after the altered frame (sent: ${a.typesAfter.join(', ')})`);
      assert.is(a.closedBy, 1002, 'the phone gave the connection up (1002)');
      assert.ok(out.ok && out.via === 'registration', JSON.stringify(out));
      assert.ok(relay.connections() >= 2, 'the login ran on a new connection');
    });
  });
}

test.run();
