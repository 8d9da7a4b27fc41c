// ServerSession's step timer (docs/protocol.md §6): a session ends TIMEOUT only when it waited a
// whole step timeout for its next frame, counted from the last frame it handled; frames that
// arrive together (a client's step sends several: finish + credRequest) leave one timer, not one
// each (issue 15: each such pair left a timer behind that fired 10 s later, built a
// ProtocolError, and kept the ended session alive until then; in a session that went on, the
// forgotten timer ended it early).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ServerSession, type SessionTimers, type SessionTransport } from './session.ts';
import { encodeEnvelope, decodeEnvelope, MsgType, parseError } from '../protocol/messages.ts';
import type { ServerExchange } from '../protocol/exchange.ts';
import { createLogger } from './log.ts';

/** A virtual clock: timers fire only when the test advances it. */
class VirtualTimers implements SessionTimers {
  now = 0;
  #next = 1;
  readonly pending = new Map<number, { at: number; fn: () => void }>();
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.#next++;
    this.pending.set(id, { at: this.now + ms, fn });
    return id;
  }
  clearTimeout(h: unknown): void {
    this.pending.delete(h as number);
  }
  advance(ms: number): void {
    const until = this.now + ms;
    for (;;) {
      const due = [...this.pending].filter(([, t]) => t.at <= until).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.pending.delete(due[0]);
      this.now = due[1].at;
      due[1].fn();
    }
    this.now = until;
  }
}

/** A session whose every frame is accepted and answered by nothing: only the timer ends it. */
class Quiet extends ServerSession {
  protected readonly exchange = { nextSendSeq: 0, abort: () => undefined } as unknown as ServerExchange<string>;
  protected step(): void {}
}

function setUp() {
  const timers = new VirtualTimers();
  const sent: Uint8Array[] = [];
  const closes: [number, string][] = [];
  const t: SessionTransport = { observedIp: '127.0.0.1', via: 'direct', send: (f) => sent.push(f), close: (c, r) => closes.push([c, r]), bufferedAmount: () => 0 };
  const s = new Quiet(t, { name: 'reg-primary', stepTimeoutMs: 10_000, log: createLogger('test'), timers });
  return { timers, sent, closes, s };
}
const frame = (seq: number) => encodeEnvelope(MsgType.finish, seq, 'reg-primary', new Uint8Array(8));
const turn = () => new Promise((r) => setImmediate(r));

test('frames that arrive together leave one step timer', async () => {
  const { timers, s } = setUp();
  s.onFrame(frame(0));
  s.onFrame(frame(1));
  await turn();
  assert.is(timers.pending.size, 1, 'one timer armed after both frames');
  s.onFrame(frame(2));
  await turn();
  assert.is(timers.pending.size, 1);
});

test('the timeout counts from the last frame handled, also after frames that came together', async () => {
  const { timers, s, sent, closes } = setUp();
  s.onFrame(frame(0));
  s.onFrame(frame(1));
  await turn();
  timers.advance(6_000);
  s.onFrame(frame(2));
  await turn();
  timers.advance(6_000); // 12 s after the pair, 6 s after the last frame: not timed out
  assert.is(s.ended, false, 'a session that heard from its peer 6 s ago is alive');
  assert.is(closes.length, 0);
  timers.advance(4_000); // 10 s after the last frame
  assert.is(s.ended, true);
  assert.equal(closes, [[1001, 'TIMEOUT']]);
  assert.is(parseError(decodeEnvelope(sent[0]!).body).code, 'TIMEOUT');
});

test('an ended session leaves no timer behind', async () => {
  const { timers, s } = setUp();
  s.onFrame(frame(0));
  s.onFrame(frame(1));
  await turn();
  s.onClose();
  assert.is(timers.pending.size, 0);
});

test.run();
