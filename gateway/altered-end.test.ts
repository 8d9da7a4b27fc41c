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
import { WebSocketServer, WebSocket } from 'ws';
import type { AddressInfo } from 'node:net';
import { startWorld, TraceHost } from '../sim/world.ts';
import { makeTempDir, removeTempDir } from '../sim/lifetime.ts';
import { setLogSink } from '../server-kit/log.ts';
import { decodeEnvelope, peekSessionEnd, sessionEndFrame, MsgType } from '../protocol/messages.ts';

setLogSink(() => {});

interface Altered { dest: string; typesAfter: number[]; closedBy: number | null }

/** `alter`: what the relay delivers instead of the gateway's crossing end of session 1. */
async function alteringRelay(gateway: () => string, alter: (n: number, dest: string) => Uint8Array) {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((r) => wss.once('listening', () => r()));
  const altered: Altered[] = [];
  let connections = 0;
  wss.on('connection', (down, req) => {
    connections++;
    const path = (req.url ?? '/').replace(/^\//, '');
    const up = new WebSocket(gateway() + path, { perMessageDeflate: false });
    const pending: Buffer[] = [];
    /** Frames for the device held back behind the gateway's end of session 1 (null: none held). */
    let held: Uint8Array[] | null = null;
    let end: { n: number; dest: string } | null = null;
    let mine: Altered | null = null;
    let done = false;
    const toDevice = (f: Uint8Array) => down.readyState === WebSocket.OPEN && down.send(f);
    up.on('open', () => pending.splice(0).forEach((f) => up.send(f)));
    up.on('message', (m: Buffer) => {
      const f = Uint8Array.from(m);
      if (held) return void held.push(f);
      const e = done ? null : peekSessionEnd(f);
      if (e && e.n === 1 && e.code === 1000) {
        end = { n: e.n, dest: e.dest };
        held = [];
        return;
      }
      toDevice(f);
    });
    down.on('message', (d: Buffer) => {
      const f = Uint8Array.from(d);
      if (mine) mine.typesAfter.push(decodeEnvelope(f).type);
      if (up.readyState === WebSocket.OPEN) up.send(d);
      else pending.push(d);
      // The phone's next session began (its first frame after its own end went up): the end crosses.
      const env = decodeEnvelope(f);
      if (held && end && env.type !== MsgType.sessionEnd && env.dest !== end.dest) {
        mine = { dest: end.dest, typesAfter: [], closedBy: null };
        altered.push(mine);
        toDevice(alter(end.n, end.dest));
        for (const x of held) toDevice(x);
        held = null;
        done = true;
      }
    });
    up.on('close', () => down.readyState === WebSocket.OPEN && down.close());
    up.on('error', () => down.terminate());
    down.on('close', (code) => {
      if (mine) mine.closedBy = code;
      if (up.readyState === WebSocket.OPEN) up.close();
    });
    down.on('error', () => up.terminate());
  });
  return {
    url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}/`,
    altered,
    connections: () => connections,
    close: () => new Promise<void>((r) => {
      for (const c of wss.clients) c.terminate();
      wss.close(() => r());
    }),
  };
}

const cases: [string, (n: number, dest: string) => Uint8Array][] = [
  // The soak's frame: an older gateway's "done", one bit flipped.
  ['its reason altered (done -> dmne)', (n, dest) => sessionEndFrame(n, dest, 1000, 'dmne')],
  // A reason at all: rule 3 says a normal end has none, so the phone cannot tell it from an altered one.
  ['a reason where rule 3 has none', (n, dest) => sessionEndFrame(n, dest, 1000, 'done')],
];

for (const [name, alter] of cases) {
  test(`the gateway's crossing sessionEnd arrives with ${name}: the phone sends nothing more on that connection (close 1002) and logs in on a new one`, async () => {
    const dir = makeTempDir('altered-end');
    let gatewayUrl = '';
    const relay = await alteringRelay(() => gatewayUrl, alter);
    const world = await startWorld({ stateDir: dir, gatewayPort: 0, advertisedUrl: relay.url, device: { loginRounds: 2, backoffBaseMs: 50 } });
    gatewayUrl = world.stack.gatewayUrl.replace(/\/?$/, '/');
    try {
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
    } finally {
      await relay.close();
      await world.stop();
      removeTempDir(dir);
    }
  });
}

test.run();
