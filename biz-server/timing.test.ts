// Issue 10, "Side channels": the time the business server takes to refuse a login must not
// tell a prober whether the user exists or whether the generation it names is live. A prober
// holds no login key, so every login here carries a wrong MAC; what differs is what it names:
// an unknown user, a generation the account never had, its current generation, its usable
// pending generation, an expired pending generation. Each is handled in-process by the real
// session (BizServerSession: mechanism table, SQLite store, handshake, logs) and timed around
// the server's step only (process.hrtime), so neither the network nor the client's work adds
// noise. The kinds are interleaved in a shuffled order in every round, so a load spike or a
// garbage collection hits all of them alike, and compared by their medians.
//
// The bound: the medians of all kinds within BOUND_FRACTION of the overall median, or
// BOUND_FLOOR_US, whichever is larger. Before the fix an unknown user skipped the row's key
// unwraps and the MAC, a wrong generation the MAC (docs/benchmarks.md: tens of µs apart, far
// outside the bound); after it the kinds differ by about a microsecond.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { ClientHandshake, passwordLoginKey } from '../protocol/channel.ts';
import { decodeEnvelope, MsgType, type Envelope } from '../protocol/messages.ts';
import { ReplayCache } from '../protocol/replay.ts';
import { createLogger, setLogSink, setLogLevel, logLevel } from '../server-kit/log.ts';
import type { SessionTransport } from '../server-kit/session.ts';
import { tempDir } from '../deploy/test-util.ts';
import { BizServerSession } from './session.ts';
import { SqliteBizStore } from './store.ts';

const ROUNDS = Number(process.env.TIMING_ROUNDS ?? 1500);
const WARMUP = 200;
const USERS = 64;
const BOUND_FRACTION = 0.06;
const BOUND_FLOOR_US = 4;
/** Measurements taken before the test fails: a real leak is over the bound in each of them. */
const ATTEMPTS = 3;
const DEST = 'biz-t';

const t = tempDir();
const store = new SqliteBizStore(join(t.dir, 'biz.sqlite'), new Uint8Array(32).fill(7));
const replay = new ReplayCache();
const log = createLogger(DEST);
const DAY = 24 * 3600_000;
const key = (i: number, gen: number) => Uint8Array.from({ length: 32 }, (_, j) => (i * 31 + gen * 7 + j) & 0xff);

// Accounts as a deployment has them: current generation 1, generation 2 pending (usable);
// every 2nd account's pending one has expired (a rotation the device never picked up).
for (let i = 0; i < USERS; i++) {
  const u = `u-t${i}`;
  store.createAccount(`acct-t${i}`, u);
  store.installPending(u, passwordLoginKey(key(i, 1), u), new Uint8Array(72), Date.now() + DAY, Uint8Array.of(1, i, ...new Array(14).fill(0)));
  store.promote(u, 1);
  store.installPending(u, passwordLoginKey(key(i, 2), u), new Uint8Array(72), Date.now() + (i % 2 ? -1 : DAY), Uint8Array.of(2, i, ...new Array(14).fill(0)));
}

type Kind = 'unknown user' | 'never-issued generation' | 'current generation' | 'pending generation' | 'expired pending generation';
const KINDS: Kind[] = ['unknown user', 'never-issued generation', 'current generation', 'pending generation', 'expired pending generation'];

/** A prober's login: it names a user and generation but holds no key (random key: wrong MAC). */
function probe(kind: Kind, n: number): { frame: Uint8Array; env: Envelope } {
  // Expired pending generations live on odd accounts; the rest use even ones.
  const i = kind === 'expired pending generation' ? (n * 2 + 1) % USERS : (n * 2) % USERS;
  const user = kind === 'unknown user' ? `u-ghost${i}` : `u-t${i}`;
  const gen = kind === 'never-issued generation' ? 7 : kind === 'current generation' || kind === 'unknown user' ? 1 : 2;
  const hs = new ClientHandshake(DEST, crypto.getRandomValues(new Uint8Array(32)));
  const frame = hs.opening(MsgType.login, ['password', user, gen, new Map()]);
  return { frame, env: decodeEnvelope(frame) };
}

const transport = (): SessionTransport & { closed: string | null } => ({
  observedIp: '192.0.2.1',
  via: 'gateway',
  closed: null,
  send() {},
  close(_c, reason) {
    this.closed = reason;
  },
  bufferedAmount: () => 0,
});

/** Server-side time (µs) of one login's step: lookup, MAC, ack and loginFail, log line. */
function serve(kind: Kind, n: number): number {
  const { frame, env } = probe(kind, n);
  const tr = transport();
  const s = new BizServerSession(tr, { name: DEST, stepTimeoutMs: 60_000, log }, { store, replay });
  const step = (s as unknown as { step(f: Uint8Array, e: Envelope): void }).step.bind(s);
  const t0 = process.hrtime.bigint();
  step(frame, env);
  const dt = Number(process.hrtime.bigint() - t0) / 1000;
  if (tr.closed !== 'BIZ_AUTH_FAILED') throw new Error(`${kind}: expected a BIZ_AUTH_FAILED refusal, got ${tr.closed}`);
  return dt;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return (s[(s.length - 1) >> 1]! + s[s.length >> 1]!) / 2;
};

test('a refused login takes the same time whether the user exists and whichever generation it names', () => {
  // Log lines built as deployed (info level) but not written: the write is not the server's step.
  const prevSink = setLogSink(() => {});
  const prevLevel = logLevel();
  setLogLevel('info');
  try {
    // A measurement whose spread a burst of the machine's other load pushed over the bound is
    // taken again, up to ATTEMPTS times; the leak this test is for (an unknown user or generation
    // skipping work: tens of µs) is over the bound in every attempt.
    const failures: string[] = [];
    for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
      const samples = new Map<Kind, number[]>(KINDS.map((k) => [k, []]));
      for (let r = 0; r < WARMUP + ROUNDS; r++) {
        const order = [...KINDS].sort(() => Math.random() - 0.5);
        for (const k of order) {
          const dt = serve(k, r);
          if (r >= WARMUP) samples.get(k)!.push(dt);
        }
      }
      const medians = KINDS.map((k) => [k, median(samples.get(k)!)] as const);
      const all = median([...samples.values()].flat());
      const spread = Math.max(...medians.map(([, m]) => m)) - Math.min(...medians.map(([, m]) => m));
      const bound = Math.max(BOUND_FLOOR_US, BOUND_FRACTION * all);
      const report = medians.map(([k, m]) => `${k} ${m.toFixed(1)} µs`).join(', ');
      console.log(`  attempt ${attempt}: server-side medians over ${ROUNDS} interleaved rounds: ${report}; spread ${spread.toFixed(1)} µs, bound ${bound.toFixed(1)} µs`);
      if (spread < bound) return;
      failures.push(`medians differ by ${spread.toFixed(1)} µs (bound ${bound.toFixed(1)} µs): ${report}`);
    }
    assert.unreachable(`over the bound in all ${ATTEMPTS} attempts: ${failures.join('; ')}`);
  } finally {
    setLogSink(prevSink);
    setLogLevel(prevLevel);
  }
});

test.after(() => {
  store.close();
  t.remove();
});

test.run();
