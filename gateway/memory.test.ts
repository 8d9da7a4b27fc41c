// What hostile connections cost the gateway in memory, measured in a gateway process of its
// own (after a full GC: heap + external buffers, the memory a connection's objects and
// buffered reads take; RSS reported beside it, noisier): the unfinished-fragments attack of issue 10 is refused at once
// (GW_FRAGMENTED) and costs next to nothing; the worst a connection may hold within the
// limits (one message of maxFrameBytes, unfinished, in as many reads as allowed) stays under
// the bound docs/architecture.md states (WORST_PER_CONNECTION).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { clientFrame, rawUpgrade, startProbeGateway, type ProbeGateway, type RawClient } from './hostile-client.ts';
import { DeviceDefaults } from '../server-kit/limits.ts';

/** docs/architecture.md §"Memory per connection": the stated worst case, with margin. */
export const WORST_PER_CONNECTION = 48 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const MiB = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;

let gw: ProbeGateway;
test.before(async () => {
  // The message timeout is long here so the worst case is measured while it is held.
  gw = await startProbeGateway({ limits: { messageTimeoutMs: 120_000, idleTimeoutMs: 120_000 } });
  // Warm up (code compiled, heap grown, socket paths taken) so the baseline is not the cold process.
  const warm = await openMany(300, '127.7.9');
  for (const c of warm) c.sock.destroy();
  await sleep(300);
});
test.after(() => gw.stop());

/** Live JS heap plus buffers outside it: what connections' objects and buffered reads cost. */
const used = (m: { heapUsed: number; external: number }) => m.heapUsed + m.external;

async function openMany(n: number, ipBase: string): Promise<RawClient[]> {
  const out: RawClient[] = [];
  for (let i = 0; i < n; i += 50) {
    // 50 per address keeps every test under the per-IP cap.
    out.push(...(await Promise.all(Array.from({ length: Math.min(50, n - i) }, (_, j) => rawUpgrade(gw.port, `${ipBase}.${1 + ((i + j) % 200)}`)))));
  }
  return out;
}

test('200 connections each send a frame without FIN and then 16,000 one-byte continuations: each refused (GW_FRAGMENTED, 1008), gateway memory flat', async () => {
  const N = 200;
  const before = await gw.memory();
  const conns = await openMany(N, '127.7.0');
  const attack = Buffer.concat([clientFrame(2, 1, false), ...Array.from({ length: 16_000 }, () => clientFrame(0, 1, false))]);
  for (const c of conns) c.sock.write(attack);
  await Promise.race([Promise.all(conns.map((c) => c.closed)), sleep(15_000)]);
  const after = await gw.memory();
  const growth = used(after) - used(before);
  console.log(`  fragments attack, ${N} connections: heap+external ${MiB(used(before))} -> ${MiB(used(after))}, RSS ${MiB(before.rss)} -> ${MiB(after.rss)}`);
  const refused = conns.filter((c) => c.isClosed() && c.received().includes('GW_FRAGMENTED')).length;
  for (const c of conns) c.sock.destroy();
  assert.is(refused, N, `${refused} of ${N} refused with GW_FRAGMENTED`);
  assert.ok(growth < N * WORST_PER_CONNECTION, `grew ${MiB(growth)}`);
  // RSS keeps pages once touched; the bound is loose, the old gateway grew ~1.9 MiB per connection.
  assert.ok(after.rss - before.rss < N * 4 * WORST_PER_CONNECTION, `RSS grew ${MiB(after.rss - before.rss)}`);
});

test(`300 connections each hold the largest unfinished message the limits allow: under ${WORST_PER_CONNECTION / 1024} KiB per connection`, async () => {
  const N = 300;
  const before = await gw.memory();
  const conns = await openMany(N, '127.7.1');
  const size = DeviceDefaults.maxFrameBytes;
  const whole = clientFrame(2, size - 1, true, size); // declares size, sends one byte less
  const pieces = DeviceDefaults.maxReadsPerMessage - 2;
  const step = Math.ceil(whole.length / pieces);
  // Each piece in its own round, so each arrives as its own read: the most buffers allowed.
  for (let off = 0; off < whole.length; off += step) {
    for (const c of conns) c.sock.write(whole.subarray(off, off + step));
    await sleep(15);
  }
  await sleep(500);
  const after = await gw.memory();
  const per = (used(after) - used(before)) / N;
  console.log(`  worst allowed partial message, ${N} connections: ${(per / 1024).toFixed(1)} KiB per connection (heap ${MiB(after.heapUsed - before.heapUsed)}, buffers ${MiB(after.arrayBuffers - before.arrayBuffers)}; RSS ${MiB(before.rss)} -> ${MiB(after.rss)}, ${((after.rss - before.rss) / N / 1024).toFixed(1)} KiB per connection)`);
  const open = conns.filter((c) => !c.isClosed()).length;
  for (const c of conns) c.sock.destroy();
  assert.is(open, N, 'a connection within the limits was refused');
  assert.is(after.connections, N);
  assert.ok(per < WORST_PER_CONNECTION, `${(per / 1024).toFixed(1)} KiB per connection`);
});

test.run();
