// The CPU cost of one full login (issue 15), side by side with what a user could run instead,
// in one run: docs/benchmarks.md §"Login cost (issue 15)".
//
//   ours      registration with a password change (hello, helloReply, finish, credRequest,
//             credReply; the rotation's install at the business server) + business login with
//             its confirmation (login, loginAck, loginOk, finish, pwConfirm, pwConfirmAck),
//             through the gateway: `usbphone serve all` in its own process; both sessions in
//             sequence on one WebSocket (docs/protocol.md §2.1), as the firmware runs them
//   ours 2ws  the same login on two WebSockets, one per session (§2: what a device that does
//             not ask for sessions in sequence does, and what every login did before issue 15)
//   tls+ws    a TLS 1.3 external-PSK handshake + WebSocket upgrade + one message each way
//             (bench/tls-psk-peer.ts in its own process)
//   tls       a bare TLS 1.3 PSK handshake + one message each way (same process)
//   ws floor  the transport our login cannot do without: a plain WebSocket upgrade on loopback,
//             the login's 9 frames up and 7 down (128 bytes each) in its 4 round trips and a last
//             frame, a close (the same peer process, an echo server: no crypto, no storage, no
//             validation); the frames as the gateway counts them for a phone's login (§2.1)
//   floor     every HKDF / HMAC / SHA-256 / AEAD / CBOR operation of one login's server side
//             (bench/login-floor.ts), with noble and with node:crypto, no I/O
//   store     the store calls of one login on real SQLite files (reg + biz), in a tight loop
//   client floor  the device side's HKDF / HMAC / SHA-256 / AEAD / CBOR operations of the same
//             login on node:crypto (the chip engine of a fleet's phones), no I/O
//
// ws floor's client side + client floor is the same for a phone (its flash writes not counted).
// ws floor + floor node + store is a lower bound on the server CPU of any implementation of this
// login on this machine and runtime: the transport, the computation and the storage the
// protocol requires, each with nothing else around it (printed as "protocol floor").
//
// The servers' CPU is read from /proc/<pid>/stat (utime + stime: all their threads, GC and
// libuv included); the client side's from this process (process.cpuUsage()). Rounds alternate
// the peers in a rotating order; figures are medians over rounds, and the ratios are medians
// of each round's own ratio, so a burst of load from elsewhere hits both sides of a ratio.
//
// Run: npx tsx bench/login-cost.bench.ts   (BENCH_QUICK=1: short; BENCH_ROUNDS, BENCH_PHASE_MS; BENCH_PEERS;
// BENCH_PROF=<dir>: the server processes write --cpu-prof profiles there; BENCH_BASELINE=<dir>:
// a checkout of an earlier commit, whose `serve all` runs as one more peer, "before", so that
// a change's gain is measured side by side too:  git archive <commit> | tar -x -C <dir>, with
// <dir>/node_modules linked to this tree's; BENCH_BASELINE_SESSIONS=1: the earlier tree runs both
// sessions on one WebSocket too, as "ours" does (a tree from 6c2a02d on), so that "ours / before"
// compares the same login; without it "before" runs one WebSocket per session, like "ours 2ws")
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, mkdtempSync, rmSync, cpSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { connect as tlsConnect } from 'node:tls';
import { WebSocket, type ClientOptions } from 'ws';
import { MasterKeyring } from '../protocol/keys.ts';
import { nobleEngine } from '../protocol/crypto-engine.ts';
import { nodeEngine } from '../protocol/native-crypto.ts';
import { makeDevice, register, bizLogin, FrameSocket, SCRIPTED_FIRMWARE_HEX, type DeviceId } from '../server-kit/test-device.ts';
import { RegistrationClient } from '../protocol/registration.ts';
import { LoginClient } from '../protocol/login.ts';
import { secretWrapKey, unwrapSecret } from '../protocol/secret-wrap.ts';
import { isSessionsFrame, peekSessionEnd, peekTablePush, sessionEndFrame, sessionsFrame } from '../protocol/messages.ts';
import type { ClientExchange, ClientEnd, Step } from '../protocol/exchange.ts';
import { SqliteRegStore } from '../reg-server/store.ts';
import { SqliteBizStore } from '../biz-server/store.ts';
import { enrollDevices, accountsInStore } from '../deploy/enroll.ts';
import { ensureStateKeys } from '../deploy/config.ts';
import { readKeyFile } from '../server-kit/keyfiles.ts';
import { PSK, PSK_IDENTITY, PSK_CIPHERS } from './tls-psk-peer.ts';
import { loginFloor, clientLoginFloor } from './login-floor.ts';

const QUICK = !!process.env.BENCH_QUICK;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? (QUICK ? 3 : 7));
const PHASE_MS = Number(process.env.BENCH_PHASE_MS ?? (QUICK ? 1_000 : 2_500));
const CONC = 8;
const PROF = process.env.BENCH_PROF;
const bin = join(import.meta.dirname, '..', 'bin', 'usbphone.js');
const dir = mkdtempSync(join(tmpdir(), 'usbphone-login-cost-'));
const procs: ChildProcess[] = [];
process.on('exit', () => {
  for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

/** A child process whose first stdout line is JSON (its ports). */
function child(args: string[]): Promise<{ proc: ChildProcess; ev: Record<string, any> }> {
  const flags = PROF ? ['--cpu-prof', '--cpu-prof-dir', PROF] : [];
  const proc = spawn(process.execPath, [...flags, ...args], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, USBPHONE_LOG_LEVEL: 'error' } });
  procs.push(proc);
  return new Promise((resolve, reject) => {
    createInterface({ input: proc.stdout! }).once('line', (l) => resolve({ proc, ev: JSON.parse(l) }));
    proc.once('exit', (c) => reject(new Error(`${args.join(' ')} exited ${c}`)));
  });
}

/** CPU seconds (user + system, all threads) a process has used so far. */
function procCpu(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (CLK_TCK 100)
}
const selfCpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};
const median = (x: number[]) => {
  const s = [...x].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

// ---- the servers: `serve all` on an enrolled state directory ----
const state = join(dir, 'state');
const files = ensureStateKeys(state);
const DEVICES = 64;
{
  const reg = new SqliteRegStore(files.regDb);
  const biz = new SqliteBizStore(files.bizDb, readKeyFile(files.storeKey, 'storage key'));
  await enrollDevices({ reg, accounts: accountsInStore(biz) }, Array.from({ length: DEVICES }, (_, i) => ({ serial: `SN-L${i}`, keyVersion: 1, firmwareMeasurement: SCRIPTED_FIRMWARE_HEX })));
  reg.close();
  biz.close();
}
// The earlier tree's stack (BENCH_BASELINE) gets a copy of the same enrolled state, taken before either runs.
const BASE = process.env.BENCH_BASELINE;
const bstate = join(dir, 'state-before');
if (BASE) cpSync(state, bstate, { recursive: true });
const stack = await child([bin, 'serve', 'all', '--state', state, '--port', '0', '--json']);
const gw: string = stack.ev.gatewayUrl;
const ring = MasterKeyring.parse(readFileSync(files.masterKey, 'utf8'));
const devs: DeviceId[] = Array.from({ length: DEVICES }, (_, i) => makeDevice(ring, `SN-L${i}`));
const before = BASE ? await child([join(BASE, 'bin', 'usbphone.js'), 'serve', 'all', '--state', bstate, '--port', '0', '--json']) : null;
const peer = await child(['--import', 'tsx', join(import.meta.dirname, 'tls-psk-peer.ts')]);

/** One full login of device `d`: registration (a new password) then the business login that confirms it. */
async function ourLogin(d: DeviceId, url = gw): Promise<void> {
  const r = await register(url, 'reg-primary', d);
  if (r.kind !== 'cred') throw new Error(`registration: ${JSON.stringify(r)}`);
  const l = await bizLogin(url, r.reply.servers[0]!.name, r.reply, { confirm: true });
  if (l.kind !== 'ok' || !l.confirmed) throw new Error(`business login: ${JSON.stringify(l)}`);
}

/** Runs a client machine on `s` until it ends; frames outside the session (sessions, sessionEnd, tablePush) are skipped. */
async function driveOn<Ev, Out>(s: FrameSocket, m: ClientExchange<Ev, Out>, onEvent: (e: Ev) => Step<Ev, Out | ClientEnd> | undefined = () => undefined): Promise<Out | ClientEnd> {
  let step = m.start();
  for (;;) {
    for (const f of step.send) s.send(f);
    const next = step.event === undefined ? undefined : onEvent(step.event);
    if (next) {
      step = next;
      continue;
    }
    if (step.done) return step.done;
    let i = await s.next();
    while ('frame' in i && (isSessionsFrame(i.frame) || peekSessionEnd(i.frame) || peekTablePush(i.frame))) i = await s.next();
    if (!('frame' in i)) throw new Error(`closed ${i.closed} ${i.reason}`);
    step = m.receive(i.frame);
  }
}

/** The same full login with both sessions in sequence on one WebSocket (docs/protocol.md §2.1), as the firmware runs it. */
async function ourLoginOneWs(d: DeviceId, url = gw): Promise<void> {
  const s = await FrameSocket.connect(url);
  try {
    s.send(sessionsFrame());
    const r = await driveOn(s, new RegistrationClient({ dest: 'reg-primary', deviceKey: d.key, serialToken: d.token, measurement: d.measurement, serial: d.serial, localIp: '192.168.1.20' }));
    if (r.kind !== 'cred') throw new Error(`registration: ${JSON.stringify(r)}`);
    // The registration server ends its session (sessionEnd 1); its frame may come while the login starts.
    s.send(sessionEndFrame(1, 'reg-primary', 1000, ''));
    const wk = secretWrapKey(d.key);
    const secret = unwrapSecret(wk, r.cred.user, r.cred.gen, r.cred.wrapped)!;
    wk.fill(0);
    const dest = r.cred.servers[0]!.name;
    const m = new LoginClient({ dest, user: r.cred.user, gen: r.cred.gen, secret });
    const l = await driveOn(s, m, (e) => (e === 'logged-in' ? m.afterLogin(true) : undefined));
    if (l.kind !== 'ok' || !l.confirmed) throw new Error(`business login: ${JSON.stringify(l)}`);
    s.send(sessionEndFrame(2, dest, 1000, ''));
  } finally {
    s.close();
  }
}

const tlsOpts = { host: '127.0.0.1', minVersion: 'TLSv1.3' as const, ciphers: PSK_CIPHERS, pskCallback: () => ({ psk: PSK, identity: PSK_IDENTITY }), checkServerIdentity: () => undefined };
const MSG = new Uint8Array(64).fill(7);
function tlsLogin(): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ ...tlsOpts, port: peer.ev.tls });
    s.once('secureConnect', () => s.write(MSG));
    s.once('data', () => s.end());
    s.once('close', () => resolve());
    s.once('error', reject);
  });
}
function wsLogin(): Promise<void> {
  return new Promise((resolve, reject) => {
    // ws hands its options on to tls.connect: the PSK callback and suites reach the handshake.
    const { checkServerIdentity: _, ...psk } = tlsOpts;
    const ws = new WebSocket(`wss://127.0.0.1:${peer.ev.ws}/`, { ...psk, perMessageDeflate: false, checkServerIdentity: () => true } as ClientOptions);
    ws.once('open', () => ws.send(MSG));
    ws.once('close', () => resolve());
    ws.once('error', reject);
  });
}

/**
 * The frames of one login by round trip (docs/protocol.md §2.1, as the gateway counts them for a
 * phone): up sessions + hello, down sessions + helloReply; up finish + credRequest, down credReply
 * + sessionEnd; up sessionEnd + login, down loginAck + loginOk; up finish + pwConfirm, down
 * pwConfirmAck; up sessionEnd, then the close. Each entry: the frames up, and how many of them
 * the echo server answers (a first byte of 1).
 */
const FLOOR_ROUNDS: [up: number, down: number][] = [[2, 2], [2, 2], [2, 2], [2, 1], [1, 0]];
const ANSWERED = new Uint8Array(128).fill(1), UNANSWERED = new Uint8Array(128).fill(0);
function wsFloorLogin(): Promise<void> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${peer.ev.plain}/`, { perMessageDeflate: false });
    let round = 0, owed = 0;
    const next = () => {
      for (;;) {
        if (round === FLOOR_ROUNDS.length) return ws.close(1000);
        const [up, down] = FLOOR_ROUNDS[round++]!;
        for (let i = 0; i < up; i++) ws.send(i < down ? ANSWERED : UNANSWERED);
        if ((owed = down) > 0) return;
      }
    };
    ws.once('open', next);
    ws.on('message', () => {
      if (--owed === 0) next();
    });
    ws.once('close', () => resolve());
    ws.once('error', reject);
  });
}

interface Phase { server: number; client: number; perSec: number }
/** CONC logins in flight for `ms`; the server's and this process's CPU per login, and logins per second. */
async function network(pid: number, ms: number, one: (w: number) => Promise<void>): Promise<Phase> {
  const s0 = procCpu(pid), c0 = selfCpu(), t0 = performance.now();
  const until = t0 + ms;
  let n = 0;
  await Promise.all(Array.from({ length: CONC }, async (_, w) => {
    while (performance.now() < until) {
      await one(w);
      n++;
    }
  }));
  const secs = (performance.now() - t0) / 1000;
  return { server: (procCpu(pid) - s0) / n, client: (selfCpu() - c0) / n, perSec: n / secs };
}
/** A synchronous operation in a tight loop for `ms`: its CPU per call. */
function local(ms: number, one: () => void): Phase {
  const c0 = selfCpu(), t0 = performance.now();
  let n = 0;
  while (performance.now() - t0 < ms) {
    for (let i = 0; i < 8; i++) one();
    n += 8;
  }
  const cpu = (selfCpu() - c0) / n;
  return { server: cpu, client: 0, perSec: n / ((performance.now() - t0) / 1000) };
}

// ---- the store calls of one login, on a copy of the same schema in this process ----
const sstate = join(dir, 'store-floor');
const sfiles = ensureStateKeys(sstate);
const sreg = new SqliteRegStore(sfiles.regDb);
const sbiz = new SqliteBizStore(sfiles.bizDb, readKeyFile(sfiles.storeKey, 'storage key'));
await enrollDevices({ reg: sreg, accounts: accountsInStore(sbiz) }, [{ serial: 'SN-S1', keyVersion: 1, firmwareMeasurement: SCRIPTED_FIRMWARE_HEX }]);
const sdev = sreg.getDevice('SN-S1')!;
const skey = new Uint8Array(32).fill(3), ssealed = new Uint8Array(72).fill(4);
/** What reg-server/session.ts, reg-server/rotation.ts and biz-server/session.ts ask of the stores for one login. */
function storeLogin(): void {
  sreg.firmwareAccepted(SCRIPTED_FIRMWARE_HEX);
  const d = sreg.getDevice('SN-S1')!;
  sreg.listRegions();
  sreg.listServers();
  const now = Date.now();
  const r = sbiz.installPending(d.user, skey, ssealed, now + 60_000, crypto.getRandomValues(new Uint8Array(16)), now);
  sreg.recordRotation(d.serial, r.currentGen, r.pendingGen, now);
  sbiz.loginKey(d.user, r.pendingGen, now)?.key.fill(0);
  sbiz.promote(d.user, r.pendingGen, now);
  sbiz.confirm(d.user, r.pendingGen, now);
  sbiz.getByUser(d.user);
}
void sdev;

const floorNoble = loginFloor(nobleEngine);
const floorNode = loginFloor(nodeEngine);
const floorClient = clientLoginFloor(nodeEngine);

// ---- warm-up, then the rounds ----
console.log(`machine: ${cpus().length} cores, ${cpus()[0]?.model}, node ${process.version}, ${new Date().toISOString().slice(0, 10)}; ${ROUNDS} rounds of ${PHASE_MS} ms per peer, ${CONC} logins in flight`);
const ours = (w: number) => ourLoginOneWs(devs[w]!);
await network(stack.proc.pid!, 1_500, ours);
await network(stack.proc.pid!, 500, (w) => ourLogin(devs[w]!));
await network(peer.proc.pid!, 500, () => wsLogin());
await network(peer.proc.pid!, 500, () => tlsLogin());
await network(peer.proc.pid!, 500, () => wsFloorLogin());
local(300, floorNoble);
local(300, floorNode);
local(300, storeLogin);
local(300, floorClient);

const BEFORE_ONE_WS = !!process.env.BENCH_BASELINE_SESSIONS;
const beforeLogin = (w: number) => (BEFORE_ONE_WS ? ourLoginOneWs(devs[w]!, before!.ev.gatewayUrl) : ourLogin(devs[w]!, before!.ev.gatewayUrl));
// The same warm-up as "ours" had (its own 1.5 s, and the 0.5 s of "ours 2ws").
if (before) await network(before.proc.pid!, 2_000, beforeLogin);

const allNames = ['ours', 'ours 2ws', 'before', 'tls+ws', 'tls', 'ws floor', 'floor noble', 'floor node', 'store', 'client floor'] as const;
type Name = (typeof allNames)[number];
// BENCH_PEERS=ours,before,tls+ws: only these peers (shorter rounds, so more of them in the same time).
const only = process.env.BENCH_PEERS?.split(',');
const names = allNames.filter((n) => (n !== 'before' || before) && (!only || n === 'ours' || only.includes(n)));
const runs: Record<Name, () => Promise<Phase>> = {
  ours: () => network(stack.proc.pid!, PHASE_MS, ours),
  'ours 2ws': () => network(stack.proc.pid!, PHASE_MS, (w) => ourLogin(devs[w]!)),
  before: () => network(before!.proc.pid!, PHASE_MS, beforeLogin),
  'tls+ws': () => network(peer.proc.pid!, PHASE_MS, () => wsLogin()),
  tls: () => network(peer.proc.pid!, PHASE_MS, () => tlsLogin()),
  'ws floor': () => network(peer.proc.pid!, PHASE_MS, () => wsFloorLogin()),
  'floor noble': async () => local(PHASE_MS / 3, floorNoble),
  'floor node': async () => local(PHASE_MS / 3, floorNode),
  store: async () => local(PHASE_MS / 3, storeLogin),
  'client floor': async () => local(PHASE_MS / 3, floorClient),
};
const got = Object.fromEntries(names.map((n) => [n, [] as Phase[]])) as Record<Name, Phase[]>;
const ratios: { ws: number[]; tls: number[]; floor: number[]; before: number[]; two: number[]; proto: number[]; protoWs: number[] } = { ws: [], tls: [], floor: [], before: [], two: [], proto: [], protoWs: [] };
const protoFloor: number[] = [];
for (let r = 0; r < ROUNDS; r++) {
  // A rotating order: each peer runs first, middle and last in turn.
  const order = names.map((_, i) => names[(i + r) % names.length]!);
  const round = {} as Record<Name, Phase>;
  for (const n of order) round[n] = await runs[n]();
  for (const n of names) got[n].push(round[n]);
  if (round['tls+ws']) ratios.ws.push(round.ours.server / round['tls+ws'].server);
  if (round.tls) ratios.tls.push(round.ours.server / round.tls.server);
  if (round['floor node'] && round.store) ratios.floor.push(round.ours.server / (round['floor node'].server + round.store.server));
  if (round['ws floor'] && round['floor node'] && round.store) {
    const f = round['ws floor'].server + round['floor node'].server + round.store.server;
    protoFloor.push(f);
    ratios.proto.push(round.ours.server / f);
    if (round['tls+ws']) ratios.protoWs.push(f / round['tls+ws'].server);
  }
  if (round.before) ratios.before.push(round.ours.server / round.before.server);
  if (round['ours 2ws']) ratios.two.push(round.ours.server / round['ours 2ws'].server);
  if (process.env.BENCH_DEBUG) console.log(r, Object.fromEntries(names.map((n) => [n, (round[n].server * 1e3).toFixed(3)])));
}

const ms = (s: number) => `${(s * 1e3).toFixed(3)} ms`;
const rows = names.map((n) => {
  const server = median(got[n].map((p) => p.server));
  const client = median(got[n].map((p) => p.client));
  const rate = median(got[n].map((p) => p.perSec));
  const net = n === 'ours' || n === 'ours 2ws' || n === 'before' || n === 'tls+ws' || n === 'tls' || n === 'ws floor';
  return [n, ms(server), net ? `${Math.round(1 / server)}` : '', net ? ms(client) : '', net ? `${Math.round(rate)}` : ''];
});
const head = ['', 'server CPU/login', 'logins per server-CPU-s', 'client CPU/login', 'logins/s (wall)'];
const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ');
console.log(`${line(head)}\n${rows.map(line).join('\n')}`);
const rr = (x: number[]) => `${median(x).toFixed(2)}x (rounds: ${x.map((v) => v.toFixed(2)).join(' ')})`;
if (ratios.ws.length) console.log(`ours / tls+ws (server CPU): ${rr(ratios.ws)}`);
if (ratios.tls.length) console.log(`ours / tls    (server CPU): ${rr(ratios.tls)}`);
if (ratios.floor.length) console.log(`ours / (floor node + store) (server CPU): ${rr(ratios.floor)}`);
if (ratios.before.length) console.log(`ours / before (${BASE}${BEFORE_ONE_WS ? ', one WebSocket' : ', one WebSocket per session'}) (server CPU): ${rr(ratios.before)}`);
if (ratios.two.length) console.log(`ours / ours 2ws (one WebSocket per login vs one per session, server CPU): ${rr(ratios.two)}`);
if (protoFloor.length) {
  console.log(`protocol floor (ws floor + floor node + store, server CPU): ${ms(median(protoFloor))} (rounds: ${protoFloor.map((v) => (v * 1e3).toFixed(3)).join(' ')})`);
  console.log(`ours / protocol floor (server CPU): ${rr(ratios.proto)}`);
  if (ratios.protoWs.length) console.log(`protocol floor / tls+ws (server CPU): ${rr(ratios.protoWs)}`);
  // The client's side of the same transport is a floor for a phone (its crypto not counted), and
  // the two sides' floors bound what two cores can do: cores / (server floor + client floor).
  const clientFloor = median(got['ws floor'].map((p) => p.client));
  console.log(`client side of the ws floor: ${ms(clientFloor)} (a phone's transport alone); logins/s the ${cpus().length} cores could do at the two floors: ${Math.round(cpus().length / (median(protoFloor) + clientFloor))}`);
  if (got['client floor']) {
    const phone = got['ws floor'].map((p, i) => p.client + got['client floor'][i]!.server);
    console.log(`phone floor (client side of the ws floor + client floor): ${ms(median(phone))} (rounds: ${phone.map((v) => (v * 1e3).toFixed(3)).join(' ')}); with the server's floor, logins/s on ${cpus().length} cores: ${Math.round(cpus().length / (median(protoFloor) + median(phone)))}`);
  }
}
console.log('targets (issue 15): ours <= 0.6 ms and <= tls+ws; a phone <= 0.8 ms; 1,000 logins/s');
sreg.close();
sbiz.close();
// SIGTERM: the servers exit cleanly (and write their profiles under BENCH_PROF).
const servers = [stack.proc, peer.proc, ...(before ? [before.proc] : [])];
for (const p of servers) p.kill('SIGTERM');
await Promise.all(servers.map((p) => (p.exitCode !== null ? null : new Promise((r) => p.once('exit', r)))));
process.exit(0);
