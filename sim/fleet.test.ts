// Fleets over real sockets: every phone logs in, twice (the second round changes every
// password), and each phone lands on its region's business server. SLOW=1 (make
// test-slow) runs the 1000-phone fleet of the benchmark as a test of correctness (0 failures);
// the speed targets are the benchmark's, not a test's.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runFleet } from './fleet.ts';
import { phoneIp } from './world.ts';
import { setLogSink } from '../server-kit/log.ts';
import { cryptoEngine, nobleEngine } from '../protocol/crypto-engine.ts';

setLogSink(() => {}, 'warn');

const sizes = process.env.SLOW ? [60, 1000] : [60];
for (const devices of sizes) {
  test(`a fleet of ${devices} phones, two rounds: every login succeeds`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'usbphone-fleet-test-'));
    try {
      // The servers in a process of their own, as deployed (the stories cover the inline stack).
      const was = cryptoEngine();
      const s = await runFleet({ devices, rounds: 2, concurrency: 16, stateDir: dir, progress: false, servers: 'process' });
      assert.is(s.failed, 0, JSON.stringify(s.failedByReason));
      // The phones computed on their chips' hardware engine (issue 15), and the process has its own back.
      assert.is(s.chipCrypto, 'chip (node:crypto)');
      assert.is(cryptoEngine(), was);
      assert.is(s.ok, devices * 2);
      assert.ok(s.p99Ms >= s.p50Ms && s.p50Ms > 0);
      // Even phones are in region east, odd ones in west: each region's server took its half.
      assert.equal(s.byServer, { 'biz-east': devices, 'biz-west': devices });
      // Copy-on-write by page: a phone holds the pages its logins changed (about 1.1 KiB after one), not whole sectors.
      assert.ok(s.privateFlashBytesPerDevice > 0 && s.privateFlashBytesPerDevice <= 4 * 1024, `at most 4 KiB private flash per phone, got ${s.privateFlashBytesPerDevice}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('a fleet on the noble reference engine (chipCrypto: noble) logs in alike', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-fleet-test-'));
  try {
    const s = await runFleet({ devices: 12, concurrency: 6, stateDir: dir, progress: false, servers: 'process', chipCrypto: 'noble' });
    assert.is(s.chipCrypto, nobleEngine.name);
    assert.is(s.failed, 0, JSON.stringify(s.failedByReason));
    assert.is(s.ok, 12);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('phone addresses: distinct, alternating regions east (127.1/16) and west (127.2/16)', () => {
  const ips = Array.from({ length: 2000 }, (_, i) => phoneIp(i));
  assert.is(new Set(ips).size, ips.length);
  assert.ok(ips.every((ip, i) => ip.startsWith(i % 2 ? '127.2.' : '127.1.')));
  assert.ok(ips.every((ip) => !/\.(0|255)$/.test(ip)));
});

test.run();
