// `usbphone sim --devices 1000` end to end over real sockets (issue 5's benchmark): logins
// per second, p50/p99 from plug-in to business login, failures, memory per phone.
// Targets: 0 failures, >= 500 logins/s, p99 < 1 s on a 2-core machine.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { join } from 'node:path';
import { runFleet } from '../sim/fleet.ts';
import { setLogSink } from '../server-kit/log.ts';

setLogSink(() => {}, 'warn'); // also the servers' child processes: warnings only
const devices = Number(process.env.FLEET_DEVICES ?? 1000);
console.log(`fleet bench: ${devices} phones, node ${process.version}, ${cpus().length} x ${cpus()[0]?.model}`);
for (const [concurrency, servers] of [[64, 'inline'], [16, 'inline'], [64, 'reg-child'], [64, 'process'], [16, 'process']] as const) {
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-fleet-bench-'));
  try {
    const s = await runFleet({ devices, stateDir: dir, concurrency, progress: false, servers });
    console.log(
      `concurrency ${String(concurrency).padStart(3)}, servers ${servers.padEnd(9)}: ${s.ok} ok, ${s.failed} failed, ${s.loginsPerSecond} logins/s, ` +
        `p50 ${s.p50Ms} ms, p99 ${s.p99Ms} ms, peak RSS ${(s.peakRssBytes / 1048576).toFixed(0)} MiB, ` +
        `${(s.memPerDeviceBytes / 1024).toFixed(1)} KiB live memory per phone (of which ${(s.privateFlashBytesPerDevice / 1024).toFixed(1)} KiB private flash sectors)`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
