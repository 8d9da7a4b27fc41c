// The admin API's cost per call over HTTP on loopback (issue 15): the password install a
// registration makes at a business server in another process, one request per call vs the
// calls of one event-loop turn in one batch (AdminClient `batch`). Both ends run in this
// process, so the figure is the CPU of both per call (process.cpuUsage), with k calls made in
// each turn; rounds alternate the two clients. The op echoes installPending-sized arguments,
// so the figure is the transport's, without the business store.
// Run: npx tsx bench/admin.bench.ts   (BENCH_ROUNDS, BENCH_ROUND_MS)
import type { AddressInfo } from 'node:net';
import { cpus } from 'node:os';
import { createAdminServer, AdminClient } from '../server-kit/admin-rpc.ts';
import { setLogLevel } from '../server-kit/log.ts';

setLogLevel('error');
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 7);
const ROUND_MS = Number(process.env.BENCH_ROUND_MS ?? 600);
const key = new Uint8Array(32).fill(7);
const server = createAdminServer({ key, name: 'biz-east', ops: { echo: (a) => a } });
await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/admin`;
// http: true: the endpoint is in this process, but the bench is about the HTTP transport.
const plain = new AdminClient({ target: 'biz-east', url, key, http: true });
const batched = new AdminClient({ target: 'biz-east', url, key, http: true, batch: true });
const args = ['u-0123456789abcdef', new Uint8Array(32), new Uint8Array(72), Date.now() + 60_000, new Uint8Array(16)];

/** CPU µs per call with k calls made per turn, for ROUND_MS. */
async function round(c: AdminClient, k: number): Promise<number> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  let n = 0;
  while (performance.now() - t0 < ROUND_MS) {
    await Promise.all(Array.from({ length: k }, () => c.call('echo', args)));
    n += k;
  }
  const u = process.cpuUsage(c0);
  return (u.user + u.system) / n;
}
const median = (x: number[]) => [...x].sort((a, b) => a - b)[x.length >> 1]!;

console.log(`machine: ${cpus().length} cores, node ${process.version}, ${new Date().toISOString().slice(0, 10)}; ${ROUNDS} alternating rounds of ${ROUND_MS} ms; CPU of both ends per call`);
console.log('calls per turn  one request each  batched  batched/one (median of rounds)');
for (const k of [1, 2, 4, 8]) {
  await round(plain, k);
  await round(batched, k);
  const a: number[] = [], b: number[] = [], r: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const [x, y] = i % 2 ? [await round(plain, k), await round(batched, k)] : [0, 0];
    const [y2, x2] = i % 2 ? [y, x] : [await round(batched, k), await round(plain, k)];
    a.push(x2);
    b.push(y2);
    r.push(y2 / x2);
  }
  console.log(`${String(k).padEnd(16)}${`${median(a).toFixed(0)} µs`.padEnd(18)}${`${median(b).toFixed(0)} µs`.padEnd(9)}${median(r).toFixed(2)}x`);
}
plain.close();
batched.close();
server.close();
