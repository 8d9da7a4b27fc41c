// A fleet of virtual phones over real sockets: N phones (copy-on-write views of one base
// image, each with its own identity and loopback address) plug in, at most `concurrency`
// at a time, and the run reports logins per second, latency percentiles from plug-in to
// business login, failures by reason, memory per phone, and the cost curve: CPU per login
// of the phones' side and the servers' at 1,000, 2,000, 5,000, 10,000, ... 1,000,000 logins (issue
// 15: a million phones in one run, the cost flat). Each phone is made when its turn comes and,
// unplugged, keeps what a real one keeps (firmware/phone.ts park: its flash pages, its
// controller's NVM, its wear) to the end: the memory per phone is that, measured.
import { readFileSync } from 'node:fs';
import { startWorld, makeWorld, type World, type StackHandle } from './world.ts';
import { startExternalStack, attachStack } from './external-stack.ts';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Progress, percentile } from './trace.ts';
import type { DeviceOutcome } from '../firmware/device.ts';
import { park, type ParkedPhone } from '../firmware/phone.ts';
import type { Host } from '../firmware/hal/hal.ts';
import { useChipCrypto } from '../firmware/hal/node/chip-crypto.ts';
import { cryptoEngine, nobleEngine, useCryptoEngine } from '../protocol/crypto-engine.ts';

/** The cost of the `window` logins that ended at the `logins`-th (issue 15's cost curve). */
export interface CostPoint {
  logins: number;
  window: number;
  /** CPU of this process (the phones; with servers 'inline' the servers too) per login, ms. */
  phoneCpuMs: number;
  /** CPU of the server process per login, ms (null: servers not in a process this run knows). */
  serverCpuMs: number | null;
  /** Wall clock per login in the window (machine shared: noisier than CPU). */
  loginsPerSecond: number;
  /** Live bytes (heap + buffers, after full GCs) over the phones made so far, per phone: the memory figure of a run that has not ended yet. */
  memPerDeviceBytes: number;
}

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
  /** Told of each point of the cost curve as the run reaches it (a long run's figures before its end). */
  onCost?: (p: CostPoint) => void;
  /** Logins per cost window (default 1,000; at most the run's). */
  costWindow?: number;
  /**
   * The phones' secure controllers (issue 15): 'chip' (default), the hardware model: the
   * crypto block on node:crypto (firmware/hal/node/chip-crypto.ts), installed for this process
   * for the run and put back after, and a good boot measurement kept while the flash is
   * unwritten (SecureElement.keepMeasurementWhileUnwritten); 'noble', the reference: the pure
   * TypeScript engine, the files measured at every hello and query.
   */
  chipCrypto?: 'chip' | 'noble';
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
   * JS heap + buffers a plugged-out phone holds after its logins (chip, bus, copy-on-write
   * pages, firmware objects): live bytes at the end of the run minus before the first phone
   * was made, per phone, each reading after full garbage collections.
   */
  memPerDeviceBytes: number;
  /** The same by resident set size (RSS at the end minus before the first phone, per phone): what the OS gave. */
  rssPerDeviceBytes: number;
  /** Flash page bytes each phone holds privately over the shared base (mean). */
  privateFlashBytesPerDevice: number;
  /** CPU per login at 1,000, 2,000, 5,000, 10,000, ... 1,000,000 logins (those the run reached) and at its last. */
  curve: CostPoint[];
  /** The server process's resident set at the end (null: not a process this run knows). */
  serverRssBytes: number | null;
  concurrency: number;
  seed: number;
  servers: 'inline' | 'reg-child' | 'process' | 'attached';
  /** The crypto engine the phones ran on (protocol/crypto-engine.ts name). */
  chipCrypto: string;
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
  // The phones' chips compute on their hardware engine (the same bytes as noble, checked by
  // firmware/hal/node/chip-crypto.test.ts), for the run, then the process's engine is put
  // back. With the servers inline they share it, as they share node:crypto's otherwise.
  const engineWas = o.chipCrypto === 'noble' ? useCryptoEngine(nobleEngine) : useChipCrypto();
  const chipCrypto = cryptoEngine().name;
  // process.memoryUsage.rss() reads the resident set alone (memoryUsage() also walks the heap
  // spaces), four times a second: at 20 a second either read /proc for 2 % of the phones'
  // process CPU on a loaded machine (issue 15 profiles); the peak of a fleet moves slowly.
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 250);
  const serverPid = 'pid' in world.stack ? (world.stack as { pid: number }).pid : null;
  try {
    const page = 'pageUrl' in world.stack ? (world.stack as { pageUrl: string | null }).pageUrl : null;
    if (page) o.onPage?.(page);
    // The phones' trace goes nowhere: a million phones' steps would be gigabytes.
    const host: Host = { trace() {}, notice() {} };
    // Enroll the whole fleet first (in batches of one transaction each), records made a chunk at a time.
    for (let i = 0; i < o.devices; i += 50_000) {
      await world.stack.enroll(Array.from({ length: Math.min(50_000, o.devices - i) }, (_, j) => world.enrollment(i + j)));
    }
    const before = liveBytes();
    const rssBefore = process.memoryUsage().rss;
    // What each phone keeps between its plug-ins (park): its flash pages, NVM and wear.
    const phones: (ParkedPhone | undefined)[] = new Array(o.devices);

    const times: number[] = [];
    const failedByReason: Record<string, number> = {};
    const byServer: Record<string, number> = {};
    let ok = 0;
    let done = 0;
    const total = o.devices * rounds;
    const bar = new Progress(total, 'phones', process.stderr, o.progress ?? process.stderr.isTTY === true);
    const cost = new CostCurve(total, o.costWindow ?? 1_000, serverPid, o.onCost, (done) => Math.round(Math.max(0, liveBytes() - before) / Math.min(done, o.devices)));
    const t0 = performance.now();
    for (let round = 0; round < rounds; round++) {
      let next = 0;
      const worker = async () => {
        while (next < o.devices) {
          const i = next++;
          const was = phones[i];
          const { phone } = await world.phone(i, host, { enroll: false, ...(was ? { parked: was } : {}) });
          // Its chip keeps a good boot measurement while its flash is unwritten (issue 15; the
          // hello and the attestation query measured the same unwritten files again).
          if (o.chipCrypto !== 'noble') phone.bus.se.keepMeasurementWhileUnwritten();
          const r: DeviceOutcome = await phone.device.plugIn();
          phones[i] = park(phone);
          if (r.ok) {
            ok++;
            times.push(r.ms);
            byServer[r.server] = (byServer[r.server] ?? 0) + 1;
          } else failedByReason[r.kind] = (failedByReason[r.kind] ?? 0) + 1;
          done++;
          cost.step(done);
          bar.update(done, `${ok} ok`);
        }
      };
      await Promise.all(Array.from({ length: Math.min(concurrency, o.devices) }, worker));
    }
    const wallMs = performance.now() - t0;
    peak = Math.max(peak, process.memoryUsage().rss);
    const after = liveBytes();
    const rssAfter = process.memoryUsage().rss;
    const failed = total - ok;
    let privateBytes = 0;
    for (const p of phones) privateBytes += p?.backing.privateBytes ?? 0;
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
      maxMs: round1(times.reduce((m, x) => Math.max(m, x), 0)),
      peakRssBytes: peak,
      memPerDeviceBytes: Math.round(Math.max(0, after - before) / o.devices),
      rssPerDeviceBytes: Math.round(Math.max(0, rssAfter - rssBefore) / o.devices),
      privateFlashBytesPerDevice: Math.round(privateBytes / o.devices),
      curve: cost.points,
      serverRssBytes: serverPid === null ? null : procRss(serverPid),
      concurrency,
      seed,
      servers,
      chipCrypto,
    };
    // The phones stay referenced up to the last reading above.
    phones.length = 0;
    if (o.hold) {
      clearInterval(sampler);
      await o.hold(summary);
    }
    return summary;
  } finally {
    clearInterval(sampler);
    try {
      await world.stop();
    } finally {
      useCryptoEngine(engineWas);
    }
  }
}

/**
 * The logins at which the curve is read: 1, 2 and 5 times the powers of ten from 1,000 (1,000,
 * 2,000, 5,000, 10,000, ... 1,000,000: a run stopped early still has its curve so far), and
 * the run's last.
 */
export function costCheckpoints(total: number, window: number): number[] {
  const out: number[] = [];
  for (let p = 1_000; p <= total; p *= 10) for (const m of [1, 2, 5]) if (m * p <= total && m * p >= window) out.push(m * p);
  if (total >= window && out[out.length - 1] !== total) out.push(total);
  return out;
}

/**
 * CPU time read every `window` logins (this process by process.cpuUsage(), the server
 * process from /proc/PID/stat), so each checkpoint's cost is that of the window of logins
 * ending there: the cost at the millionth login, not the average since the first.
 */
class CostCurve {
  readonly points: CostPoint[] = [];
  readonly #checkpoints: Set<number>;
  #last: { phone: number; server: number | null; wall: number } | null = null;
  readonly #window: number;
  constructor(total: number, window: number, private readonly serverPid: number | null, private readonly tell: ((p: CostPoint) => void) | undefined, private readonly memPerDevice: (done: number) => number) {
    this.#window = Math.max(1, Math.min(window, total));
    this.#checkpoints = new Set(costCheckpoints(total, this.#window));
    this.#last = this.#sample();
  }
  #sample() {
    const u = process.cpuUsage();
    return { phone: (u.user + u.system) / 1000, server: this.serverPid === null ? null : procCpuMs(this.serverPid), wall: performance.now() };
  }
  step(done: number): void {
    if (done % this.#window !== 0 && !this.#checkpoints.has(done)) return;
    const now = this.#sample();
    const was = this.#last!;
    this.#last = now;
    if (!this.#checkpoints.has(done)) return;
    // A checkpoint that is not on the window's grid (the run's last) covers the logins since the previous reading.
    const w = done % this.#window === 0 ? this.#window : done % this.#window;
    const p: CostPoint = {
      logins: done,
      window: w,
      phoneCpuMs: round3((now.phone - was.phone) / w),
      serverCpuMs: now.server === null || was.server === null ? null : round3((now.server - was.server) / w),
      loginsPerSecond: round1((w / (now.wall - was.wall)) * 1000),
      memPerDeviceBytes: this.memPerDevice(done),
    };
    // The full collections of that reading are not charged to the next window.
    this.#last = this.#sample();
    this.points.push(p);
    this.tell?.(p);
  }
}

/** CPU time (user + system) of a process and its waited-for children, ms, from /proc (Linux); null elsewhere. */
function procCpuMs(pid: number): number | null {
  try {
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
    return (ticks * 1000) / CLOCK_TICKS;
  } catch {
    return null;
  }
}
/** sysconf(_SC_CLK_TCK) on Linux (every architecture Node runs on there). */
const CLOCK_TICKS = 100;

function procRss(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;
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
