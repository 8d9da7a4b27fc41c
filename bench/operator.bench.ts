// Operator benchmark (docs/benchmarks.md §"Operator API"): lookups per second over HTTPS
// (TLS 1.3) keep-alive, as the bank makes them: the typed client (server-kit/operator-client.ts),
// one cached bearer token, 16 calls in flight on a pool of keep-alive connections, against
// 10,000 lines in the operator's SQLite file. Server and client share this process (and so
// the machine's cores): a figure for the whole round trip, JSON and TLS on both ends.
// Each operation runs for a fixed time; latency percentiles are per call.
// Run: npx tsx bench/operator.bench.ts   (BENCH_QUICK=1 for a short run)
import { cpus } from 'node:os';
import { setLogLevel } from '../server-kit/log.ts';
import { OperatorClient } from '../server-kit/operator-client.ts';
import { operatorFixture, card } from '../operator-server/test-util.ts';
import type { SqliteOperatorStore } from '../operator-server/store.ts';

setLogLevel('error');
const QUICK = !!process.env.BENCH_QUICK;
const LINES = 10_000;
const CONCURRENCY = 16;
const MS = QUICK ? 1_000 : 5_000;

const f = await operatorFixture();
const store = f.server.store as SqliteOperatorStore;
store.db.transaction(() => {
  for (let i = 0; i < LINES; i++) store.createSubscription(`+4477009${String(10_000 + i).padStart(5, '0')}`, card(1_000 + i));
})();
const client = new OperatorClient({ url: f.server.url, ca: f.tls.caPem, clientId: f.bank.id, clientSecret: f.bank.secret, timeoutMs: 5_000 });
const number = (i: number) => `+4477009${String(10_000 + (i % LINES)).padStart(5, '0')}`;

async function run(name: string, one: (i: number) => Promise<unknown>): Promise<void> {
  // Warm-up: the token, the connections, the prepared statements.
  for (let i = 0; i < 200; i++) await one(i);
  const lat: number[] = [];
  let n = 0;
  const t0 = performance.now();
  const until = t0 + MS;
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (performance.now() < until) {
      const i = n++;
      const s = performance.now();
      await one(i);
      lat.push(performance.now() - s);
    }
  }));
  const secs = (performance.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  const pct = (p: number) => lat[Math.min(lat.length - 1, Math.floor(lat.length * p))]!.toFixed(2);
  console.log(`${name.padEnd(36)} ${(lat.length / secs).toFixed(0).padStart(6)} /s   p50 ${pct(0.5)} ms   p99 ${pct(0.99)} ms   (${lat.length} calls)`);
}

console.log(`operator lookups over HTTPS keep-alive: ${LINES} lines, ${CONCURRENCY} in flight, ${MS / 1000} s each; node ${process.version}, ${cpus().length} x ${cpus()[0]?.model ?? '?'}`);
await run('retrieve-card (number -> card)', (i) => client.cardOf(number(i)));
await run('retrieve-phone-number (card -> number)', (i) => client.phoneNumberOf({ iccid: card(1_000 + (i % LINES)).iccid }));
await run('check-validity', (i) => client.checkValidity({ iccid: card(1_000 + (i % LINES)).iccid, phoneNumber: number(i) }));
await run('sim-swap check', (i) => client.checkSimSwap(number(i), 24));
client.close();
await f.stop();
