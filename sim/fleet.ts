// A fleet of virtual phones over real sockets: N phones (copy-on-write views of one base
// image, each with its own identity and loopback address) plug in, at most `concurrency`
// at a time, and the run reports logins per second, latency percentiles from plug-in to
// business login, failures by reason, and memory.
import { startWorld, makeWorld, TraceHost, type World, type StackHandle } from './world.ts';
import { startExternalStack, attachStack } from './external-stack.ts';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Progress, percentile } from './trace.ts';
import type { DeviceOutcome } from '../firmware/device.ts';
import type { Phone } from '../firmware/phone.ts';

export interface FleetOptions {
  devices: number;
  seed?: number;
  concurrency?: number;
  stateDir: string;
  /** Progress bar on stderr (default: when stderr is a terminal). */
  progress?: boolean;
  /** Plug every phone in a second time after the first round (a rotation for each). */
  rounds?: number;
  /**
   * Where the servers run: 'inline' (this process), 'reg-child' (the registration servers
   * in child processes), or 'process' (the whole stack in one process of its own, so the
   * phones and the servers each get a core), or 'attached': a stack that already runs, at
   * `gateway`, whose state directory is `stateDir` (its keys, its databases).
   */
  servers?: 'inline' | 'reg-child' | 'process' | 'attached';
  /** With servers 'attached': the running stack's gateway URL. */
  gateway?: string;
  /**
   * Told the live page's address once the servers run, before the first phone plugs in (the
   * in-process stack's page, or the server process's): its fleet charts (logins/s, latency)
   * are fed by the gateway's frames as the fleet runs. Not called for 'attached' servers.
   */
  onPage?: (url: string) => void;
  /** Awaited with the summary after the last round, before the servers stop (usbphone sim --devices N --watch). */
  hold?: (summary: FleetSummary) => Promise<void>;
}

export interface FleetSummary {
  devices: number;
  rounds: number;
  ok: number;
  failed: number;
  failedByReason: Record<string, number>;
  /** Logins per business server (phones on 127.1/16 belong to region east, 127.2/16 west). */
  byServer: Record<string, number>;
  wallMs: number;
  loginsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  peakRssBytes: number;
  /**
   * JS heap + buffers a plugged-out phone holds (chip, bus, copy-on-write sectors, firmware
   * objects): live bytes after making the fleet minus before, per phone, each reading after
   * full garbage collections.
   */
  memPerDeviceBytes: number;
  /** Flash sectors each phone holds privately over the shared base (mean). */
  privateFlashBytesPerDevice: number;
  concurrency: number;
  seed: number;
  servers: 'inline' | 'reg-child' | 'process' | 'attached';
}

export async function runFleet(o: FleetOptions): Promise<FleetSummary> {
  const seed = o.seed ?? 1;
  const concurrency = Math.max(1, o.concurrency ?? 64);
  const rounds = Math.max(1, o.rounds ?? 1);
  let peak = process.memoryUsage().rss;
  const servers = o.servers ?? 'inline';
  const world: World<StackHandle> =
    servers === 'attached'
      ? await makeWorld(attachStack(o.stateDir, o.gateway!), { seed })
      : servers === 'process'
      ? await makeWorld(await startExternalStack(o.stateDir), { seed })
      : await startWorld({ stateDir: o.stateDir, gatewayPort: 0, seed, gatewayLimits: { maxConnections: 100_000, maxConnectionsPerIp: 64 }, regProcess: servers === 'reg-child' ? 'child' : 'inline' });
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 50);
  try {
    const page = 'pageUrl' in world.stack ? (world.stack as { pageUrl: string | null }).pageUrl : null;
    if (page) o.onPage?.(page);
    const host = new TraceHost();
    // Enroll the whole fleet in one batch, then make the phones.
    await world.stack.enroll(Array.from({ length: o.devices }, (_, i) => world.enrollment(i)));
    const before = liveBytes();
    let phones: { phone: Phone; ip: string }[] = await Promise.all(Array.from({ length: o.devices }, (_, i) => world.phone(i, host, { enroll: false })));
    const after = liveBytes();

    const times: number[] = [];
    const failedByReason: Record<string, number> = {};
    const byServer: Record<string, number> = {};
    let ok = 0;
    const total = o.devices * rounds;
    const bar = new Progress(total, 'phones', process.stderr, o.progress ?? process.stderr.isTTY === true);
    const t0 = performance.now();
    for (let round = 0; round < rounds; round++) {
      if (round > 0) phones = phones.map((p) => ({ ...p, phone: world.replug(p.phone, host, p.ip) }));
      let next = 0;
      const worker = async () => {
        while (next < phones.length) {
          const { phone } = phones[next++]!;
          const r: DeviceOutcome = await phone.device.plugIn();
          if (r.ok) {
            ok++;
            times.push(r.ms);
            byServer[r.server] = (byServer[r.server] ?? 0) + 1;
          } else failedByReason[r.kind] = (failedByReason[r.kind] ?? 0) + 1;
          bar.update(ok + Object.values(failedByReason).reduce((a, b) => a + b, 0), `${ok} ok`);
        }
      };
      await Promise.all(Array.from({ length: Math.min(concurrency, phones.length) }, worker));
    }
    const wallMs = performance.now() - t0;
    peak = Math.max(peak, process.memoryUsage().rss);
    const failed = total - ok;
    const summary: FleetSummary = {
      devices: o.devices,
      rounds,
      ok,
      failed,
      failedByReason,
      byServer,
      wallMs: Math.round(wallMs),
      loginsPerSecond: Math.round((ok / wallMs) * 1000 * 10) / 10,
      p50Ms: round1(percentile(times, 50)),
      p99Ms: round1(percentile(times, 99)),
      maxMs: round1(times.length ? Math.max(...times) : 0),
      peakRssBytes: peak,
      memPerDeviceBytes: Math.round(Math.max(0, after - before) / o.devices),
      privateFlashBytesPerDevice: Math.round(phones.reduce((n, p) => n + p.phone.backing.privateBytes, 0) / o.devices),
      concurrency,
      seed,
      servers,
    };
    if (o.hold) {
      clearInterval(sampler);
      await o.hold(summary);
    }
    return summary;
  } finally {
    clearInterval(sampler);
    await world.stop();
  }
}

const round1 = (x: number) => Math.round(x * 10) / 10;

/** A full garbage collection, also without --expose-gc (V8 exposes gc to a new context). */
function collector(): () => void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g) return g;
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

function liveBytes(): number {
  const gc = collector();
  for (let i = 0; i < 3; i++) gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}
