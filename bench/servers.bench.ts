// Server benchmarks (docs/benchmarks.md §"Servers"). Each role runs in its own process, as
// in a deployment; this process only drives devices.
//   1. frames/s through the gateway vs the same sessions sent straight to the reg server
//      (hello, finish, credRequest -> helloReply, notFound: 5 frames, real crypto and a
//      SQLite read; no rotation), measured in one run, phases interleaved
//   2. registration logins/s (handshake + credential + rotation: admin call + SQLite
//      writes), through the gateway, each device registering for the first time
//   3. gateway memory per idle connection with 10,000 connections (RSS of the gateway
//      process before and after)
// Run: npx tsx bench/servers.bench.ts   (BENCH_QUICK=1 for a short run)
import { spawn, execSync, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { MasterKeyring } from '../protocol/keys.ts';
import { makeDevice, register, FrameSocket, SCRIPTED_FIRMWARE_HEX, type DeviceId } from '../server-kit/test-device.ts';
import { SqliteRegStore } from '../reg-server/store.ts';
import { SqliteBizStore } from '../biz-server/store.ts';
import { enrollDevices, accountsInStore } from '../deploy/enroll.ts';
import { ensureStateKeys } from '../deploy/config.ts';
import { readKeyFile } from '../server-kit/keyfiles.ts';

const QUICK = !!process.env.BENCH_QUICK;
const bin = join(import.meta.dirname, '..', 'bin', 'usbphone.js');
const dir = mkdtempSync(join(tmpdir(), 'usbphone-bench-'));
const procs: ChildProcess[] = [];
process.on('exit', () => {
  for (const p of procs) p.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

function serve(...args: string[]): Promise<{ proc: ChildProcess; ev: Record<string, any> }> {
  const proc = spawn(process.execPath, [bin, 'serve', ...args], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, USBPHONE_LOG_LEVEL: 'error' } });
  procs.push(proc);
  return new Promise((resolve, reject) => {
    createInterface({ input: proc.stdout! }).once('line', (l) => resolve({ proc, ev: JSON.parse(l) }));
    proc.once('exit', (c) => reject(new Error(`serve ${args[0]} exited ${c}`)));
  });
}

async function loop(concurrency: number, ms: number, one: (i: number) => Promise<number>): Promise<{ frames: number; sessions: number; secs: number }> {
  const until = performance.now() + ms;
  let frames = 0, sessions = 0, n = 0;
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < until) {
      // Not `frames += await ...`: that reads `frames` before the await and loses updates.
      const f = await one(n++);
      frames += f;
      sessions++;
    }
  }));
  return { frames, sessions, secs: (performance.now() - started) / 1000 };
}

/** CPU seconds (user + system) a process has used so far. */
function cpuSecs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (CLK_TCK 100)
}
const rss = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
const fmt = (n: number) => n.toLocaleString('en-US', { maximumFractionDigits: 0 });

console.log(`machine: ${cpus().length} cores, ${cpus()[0]?.model}, node ${process.version}, ${new Date().toISOString().slice(0, 10)}`);

// ---- 1 + 2: the embedded default in one child process ----
const state = join(dir, 'state');
const files = ensureStateKeys(state);
const devices = QUICK ? 300 : 3000;
{
  const reg = new SqliteRegStore(files.regDb);
  const biz = new SqliteBizStore(files.bizDb, readKeyFile(files.storeKey, 'storage key'));
  await enrollDevices({ reg, accounts: accountsInStore(biz) }, Array.from({ length: devices }, (_, i) => ({ serial: `SN-B${i}`, keyVersion: 1, firmwareMeasurement: SCRIPTED_FIRMWARE_HEX })));
  reg.close();
  biz.close();
}
const stack = await serve('all', '--state', state, '--port', '0');
const gw: string = stack.ev.gatewayUrl;
const direct = `ws://127.0.0.1:${stack.ev.ports['reg-primary'].device}/`;
const ring = MasterKeyring.parse(readFileSync(files.masterKey, 'utf8'));
const nobody = makeDevice(ring, 'SN-NOT-ENROLLED');

const session = (url: string) => async () => {
  const r = await register(url, 'reg-primary', nobody);
  if (r.kind !== 'notFound') throw new Error(`unexpected ${r.kind}`);
  return 5;
};
const phaseMs = QUICK ? 1_000 : 4_000;
const conc = 32;
await loop(conc, 500, session(direct));
await loop(conc, 500, session(gw));
const totals = { direct: { f: 0, s: 0, cpu: 0 }, gateway: { f: 0, s: 0, cpu: 0 } };
for (let i = 0; i < 2; i++) {
  for (const [name, url] of [['direct', direct], ['gateway', gw]] as const) {
    const c0 = cpuSecs(stack.proc.pid!);
    const r = await loop(conc, phaseMs, session(url));
    totals[name].cpu += cpuSecs(stack.proc.pid!) - c0;
    totals[name].f += r.frames;
    totals[name].s += r.secs;
    if (process.env.BENCH_DEBUG) console.log(name, r);
  }
}
const fd = totals.direct.f / totals.direct.s;
const fg = totals.gateway.f / totals.gateway.s;
console.log(`frames/s straight to reg-primary: ${fmt(fd)}   through the gateway: ${fmt(fg)}   ratio: ${(fg / fd).toFixed(2)}   (${conc} sessions in flight, 5 frames each; bound by the device side on 2 cores)`);
// Capacity: frames per CPU-second of the serving process (gateway + servers live in it).
const kd = totals.direct.f / totals.direct.cpu;
const kg = totals.gateway.f / totals.gateway.cpu;
console.log(`frames per CPU-second of the serving process: straight ${fmt(kd)}   through the gateway ${fmt(kg)}   ratio: ${(kg / kd).toFixed(2)}`);

const devs: DeviceId[] = Array.from({ length: devices }, (_, i) => makeDevice(ring, `SN-B${i}`));
let next = 0;
const regRun = await loop(16, QUICK ? 1_000 : 5_000, async () => {
  const d = devs[next++ % devs.length]!;
  const r = await register(gw, 'reg-primary', d);
  if (r.kind !== 'cred') throw new Error(`unexpected ${r.kind}`);
  return 5;
});
if (next > devices) console.log(`(note: ${next - devices} registrations re-issued an unused secret instead of rotating)`);
console.log(`registration logins/s (handshake + credential + rotation, SQLite, via the gateway): ${fmt(regRun.sessions / regRun.secs)}   (16 in flight, ${regRun.sessions} logins)`);
stack.proc.kill('SIGTERM');

// ---- 3: gateway memory per idle connection ----
// 10,000 connections need 10,000 descriptors in each process: under this machine's
// 20,000 (ulimit -n); a process cannot raise its own limit from Node, so the bench checks.
const nofile = Number(execSync('ulimit -n', { shell: '/bin/bash' }).toString().trim());
if (nofile < 10_500) console.log(`warning: ulimit -n is ${nofile}; run 'ulimit -n 20000' first`);
writeFileSync(join(dir, 'link.key'), readFileSync(files.linkKey));
writeFileSync(join(dir, 'gw.json'), JSON.stringify({ port: 0, operatorPort: 0, linkKeyFile: 'link.key', upstreams: [{ name: 'reg-primary', linkUrl: 'ws://127.0.0.1:1/' }], limits: { maxConnections: 20_000, maxConnectionsPerIp: 20_000, idleTimeoutMs: 600_000 } }));
const g = await serve('gateway', '--config', join(dir, 'gw.json'));
const N = QUICK ? 2_000 : 10_000;
await new Promise((r) => setTimeout(r, 500));
const before = rss(g.proc.pid!);
const socks: FrameSocket[] = [];
for (let i = 0; i < N; i += 200) {
  socks.push(...(await Promise.all(Array.from({ length: Math.min(200, N - i) }, (_, j) => FrameSocket.connect(g.ev.url, { localAddress: `127.5.${((i + j) >> 8) & 255}.${(i + j) & 255 || 1}` })))));
}
await new Promise((r) => setTimeout(r, 1_500));
const after = rss(g.proc.pid!);
const health = (await (await fetch(g.ev.operatorUrl + 'healthz')).json()) as { connections: number };
console.log(`gateway idle connections: ${health.connections}   RSS ${(before / 2 ** 20).toFixed(1)} MiB -> ${(after / 2 ** 20).toFixed(1)} MiB   per connection: ${((after - before) / N / 1024).toFixed(1)} KiB`);
for (const s of socks) s.terminate();
g.proc.kill('SIGTERM');
process.exit(0);
