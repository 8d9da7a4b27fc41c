// The scale run's accounting (issue 15), at a size make test affords: 1,500 phones, servers in
// their own process, 0 failed; memory per phone measured (live heap + buffers after the run
// minus before the first phone, per phone): at least the flash pages the phones hold, and at
// most 8 KiB here (the code compiled and the caches filled by the first logins are spread over
// only 1,500 phones: 5-6 KiB; 2.65 KiB at 10,000, docs/benchmarks.md); the cost curve read at
// 1,000 logins and at the run's last, each from the phones' CPU and the server process's (from
// /proc), windows of 500 logins.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runFleet, costCheckpoints, type CostPoint } from './fleet.ts';
import { setLogSink } from '../server-kit/log.ts';

setLogSink(() => {}, 'warn');

test('where the curve is read: 1, 2 and 5 times 1,000, 10,000, 100,000, then 1,000,000, and the last login; none under one window', () => {
  assert.equal(costCheckpoints(1_000_000, 1000), [1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000]);
  assert.equal(costCheckpoints(250_000, 1000), [1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 250_000]);
  assert.equal(costCheckpoints(1_500, 500), [1_000, 1_500]);
  assert.equal(costCheckpoints(20_000, 5000), [5_000, 10_000, 20_000]);
  assert.equal(costCheckpoints(400, 500), []);
});

test('1,500 phones: 0 failed, memory per phone measured (>= its flash pages, <= 8 KiB at this size), the cost curve at 1,000 and 1,500 logins', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-fleet-scale-'));
  try {
    const told: CostPoint[] = [];
    const s = await runFleet({ devices: 1_500, concurrency: 64, stateDir: dir, progress: false, servers: 'process', costWindow: 500, onCost: (p) => told.push(p) });
    assert.is(s.failed, 0, JSON.stringify(s.failedByReason));
    assert.ok(s.memPerDeviceBytes >= s.privateFlashBytesPerDevice && s.privateFlashBytesPerDevice > 0, `memory per phone ${s.memPerDeviceBytes} B below its ${s.privateFlashBytesPerDevice} B of flash pages`);
    assert.ok(s.rssPerDeviceBytes > 0);
    assert.ok(s.serverRssBytes !== null && s.serverRssBytes > 0);
    assert.equal(s.curve.map((p) => [p.logins, p.window]), [[1_000, 500], [1_500, 500]]);
    assert.equal(told, s.curve, 'each point told as it was reached');
    // Before parking (the running objects kept) this was 12-35 KiB.
    assert.ok(s.memPerDeviceBytes <= 8 * 1024, `memory per phone ${s.memPerDeviceBytes} B > 8 KiB`);
    for (const p of s.curve) {
      assert.ok(p.phoneCpuMs > 0.1 && p.phoneCpuMs < 1_000, `phones' CPU per login ${p.phoneCpuMs} ms`);
      assert.ok(p.serverCpuMs !== null && p.serverCpuMs > 0.1 && p.serverCpuMs < 1_000, `server CPU per login ${p.serverCpuMs} ms`);
      assert.ok(p.loginsPerSecond > 0 && p.memPerDeviceBytes > 0);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
