// The cluster harness (issue 16, `make test-cluster`): the reference topology (topology.ts) on
// several hosts of one machine (hosts.ts: network namespaces, or loopback addresses when this
// machine forbids them), every role its own `usbphone serve <role> --config FILE` process, the
// stores on the real PostgreSQL in fresh schemas of this run (deploy/stack-schemas.ts, dropped
// after), reached from the namespaces through a forwarder on the bridge as Redis is, or with
// `store: 'sqlite'` (CLUSTER_STORE=sqlite) as SQLite files shared on the one filesystem (WAL
// across processes of one kernel); the shared state in the real Redis. A fleet of scripted phones (server-kit/test-device.ts: the protocol's client
// machines, a wallet of generations as a phone's flash keeps it) cycles register -> login ->
// confirm through both gateways while the harness kills -9 one gateway, one registration
// server, one business server and the policy server, and cuts one business server's link, each healed after a
// while, then freezes Redis (a proxy that accepts and never answers). Then every phone must
// register and log in again; the checks:
//   - lockouts = 0: every phone logs in after the heal;
//   - no rotation lost: a phone's newest generation is never refused (BIZ_AUTH_FAILED);
//   - no rotation doubled: a generation never reaches a phone with two different secrets (two
//     installs for one rotation), and at the end the business store's current (and confirmed)
//     generation is the one the phone used last (not one it never logged in with);
//   - the stores pass their integrity checks (PostgreSQL: every store's check(), through
//     checkStores; SQLite: PRAGMA integrity_check) and the registration store agrees with the
//     business store on every device's generations.
import { mkdirSync, writeFileSync, createWriteStream, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import Database from 'better-sqlite3';
import { HostNetwork, netnsAvailable, lockCluster, type HostMode } from './hosts.ts';
import { referenceFiles, REFERENCE_HOSTS, PORTS, type HostName, type RoleFile, type TopologyPlan } from './topology.ts';
import { ensureStateKeys, ensureOperatorClientFile } from '../config.ts';
import { enrollDevices, accountsInStore } from '../enroll.ts';
import { openRegStore } from '../../reg-server/pg-store.ts';
import { openBizStores } from '../../biz-server/pg-store.ts';
import { stackSchemas, dropStackSchemas, checkStores } from '../stack-schemas.ts';
import { testPgUrl } from '../../server-kit/pg.ts';
import type { StorePlace } from '../../server-kit/store-choice.ts';
import { newClientSecret } from '../../operator-server/tokens.ts';
import { ensureServerTls } from '../../server-kit/tls-ca.ts';
import { readKeyFile } from '../../server-kit/keyfiles.ts';
import { makeDevice, register, bizLogin, DeviceWallet, FrameSocket, SCRIPTED_FIRMWARE_HEX, type DeviceId } from '../../server-kit/test-device.ts';
import { encodeEnvelope, MsgType } from '../../protocol/messages.ts';
import { randomBytes } from 'node:crypto';
import { dropNamespace, freezableRedis, freezableProxy, testNamespace, REDIS_URL, type FaultyRedis } from '../../server-kit/redis-faults.ts';
import { systemRng } from '../../protocol/rng.ts';
import { MasterKeyring } from '../../protocol/keys.ts';

const bin = join(import.meta.dirname, '..', '..', 'bin', 'usbphone.js');

export interface ClusterOptions {
  /** Scratch directory (the deployment's files, the servers' logs). */
  dir: string;
  phones?: number;
  /** 'netns' when this machine allows it (default), else 'loopback'. */
  mode?: HostMode;
  /** Each fault lasts this long before it is healed, ms (default 4000). */
  faultMs?: number;
  /** Port of the Redis forwarder on the bridge (netns mode). */
  redisForwardPort?: number;
  /** The stores: PostgreSQL (default: fresh schemas on PG_TEST_URL, dropped after) or SQLite files. */
  store?: 'postgres' | 'sqlite';
  /** Port of the PostgreSQL forwarder on the bridge. */
  pgForwardPort?: number;
  say?: (line: string) => void;
}

export interface ClusterFigures {
  mode: HostMode;
  store: 'postgres' | 'sqlite';
  /** Why namespaces were not used, when they were not. */
  whyLoopback?: string;
  phones: number;
  kills: number;
  partitions: number;
  cycles: number;
  logins: number;
  loginsDuringFaults: number;
  registrationsDuringFaults: number;
  /** Registrations the backup served (S0.6). */
  viaBackup: number;
  /** Cycles whose registration failed and whose login used the saved generation (S0.13). */
  savedLogins: number;
  lockouts: number;
  /** A phone's newest generation refused: a rotation lost. */
  rotationsLost: number;
  /** A generation received with two secrets, or the store ahead of the phone: a rotation doubled. */
  rotationsDoubled: number;
  /** Rotations recorded by the registration store (sum over the phones). */
  rotations: number;
  /** Logins completed while Redis was frozen: the shared items failing open. */
  loginsRedisFrozen: number;
  /** An attacker alternating gateways (12 one-time-code openings, 6 each, limit 10): attacks the two gateways counted together (1 = counted once, through Redis). */
  attackerAttacks: number;
  integrity: Record<string, string>;
  problems: string[];
  ms: number;
}

export interface RoleProc { rf: RoleFile; child: ChildProcess; exited: Promise<number | null> }

/**
 * Starts `usbphone serve <role> --config DIR/<file>` on its host, its log in DIR/logs; `ready`
 * resolves on its ready line (rejects when it exits first, or after 30 s).
 */
export function spawnRole(net: HostNetwork, dir: string, rf: RoleFile, logLevel = 'info'): RoleProc & { ready: Promise<void> } {
  const logFile = join(dir, 'logs', rf.file.replace('.json', '.log'));
  mkdirSync(join(dir, 'logs'), { recursive: true });
  const log = createWriteStream(logFile, { flags: 'a' });
  const child = net.spawn(rf.host, [process.execPath, bin, 'serve', rf.role, '--config', join(dir, rf.file), '--json'], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, USBPHONE_PARENT_PIPE: '1', USBPHONE_LOG_LEVEL: logLevel },
  });
  child.stderr!.pipe(log);
  const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${rf.file}: no ready line within 30 s (see ${dir}/logs)`)), 30_000);
    createInterface({ input: child.stdout! }).once('line', () => {
      clearTimeout(timer);
      resolve();
    });
    void exited.then((c) => {
      clearTimeout(timer);
      reject(new Error(`${rf.file} exited ${c} before it was ready: ${readFileSync(logFile, 'utf8').split('\n').slice(-3).join(' | ')}`));
    });
  });
  return { rf, child, exited, ready };
}

/** A scripted phone of the harness (and of bench/cluster.bench.ts): its wallet and what it saw. */
export class Phone {
  readonly wallet = new DeviceWallet();
  lastGen = 0;
  confirmed = false;
  /** Each generation's secret as received (hex): one generation never comes with two secrets. */
  readonly received = new Map<number, string>();
  rotationsLost = 0;
  rotationsDoubled = 0;
  savedLogins = 0;
  viaBackup = 0;

  constructor(
    readonly dev: DeviceId,
    readonly ip: string,
    readonly gateways: string[],
    /** The registration servers in the order tried. */
    readonly regs: readonly string[] = ['reg-primary', 'reg-backup'],
  ) {}

  /** One cycle: register (primary, then backup, through either gateway), then log in and confirm. */
  async cycle(): Promise<{ registered: boolean; loggedIn: boolean }> {
    let registered = false;
    reg: for (const dest of this.regs) {
      for (const gw of this.gateways) {
        const r = await register(gw + dest, dest, this.dev, { localAddress: this.ip, timeoutMs: 3_000 }).catch(() => null);
        if (r?.kind === 'cred') {
          // A generation issued twice (two installs for one rotation) would come with two secrets.
          const hex = Buffer.from(r.reply.secret).toString('hex');
          const had = this.received.get(r.reply.gen);
          if (had !== undefined && had !== hex) this.rotationsDoubled++;
          this.received.set(r.reply.gen, hex);
          this.wallet.take(r.reply);
          registered = true;
          if (dest === 'reg-backup') this.viaBackup++;
          break reg;
        }
      }
    }
    if (this.wallet.user === '') return { registered, loggedIn: false };
    if (!registered) this.savedLogins++;
    for (const s of this.wallet.servers) {
      for (const gw of this.gateways) {
        const gens = this.wallet.gens();
        for (const gen of gens) {
          const r = await bizLogin(gw + s.name, s.name, { user: this.wallet.user, gen, secret: this.wallet.secrets.get(gen)! }, { localAddress: this.ip, confirm: true, timeoutMs: 3_000 }).catch(() => null);
          if (r?.kind === 'ok') {
            // (A jump of 2 is a login whose answer was lost: the server promoted, the phone timed out.)
            this.lastGen = gen;
            this.confirmed = r.confirmed;
            return { registered, loggedIn: true };
          }
          if (r?.kind === 'fail' && r.code === 'BIZ_AUTH_FAILED') {
            // The newest generation refused by a live server: the rotation it came from was lost.
            if (gen === gens[0]) this.rotationsLost++;
            continue;
          }
          break; // the server or the path failed: the next gateway, then the next server
        }
      }
    }
    return { registered, loggedIn: false };
  }
}

/**
 * The deployment's files in `dir` for `plan`: keys, the operator's certificate for its address,
 * the bank's client, the role files, and `serials` enrolled in the stores at `placeOf`.
 */
export async function prepareDeployment(dir: string, plan: TopologyPlan, serials: string[], placeOf: (role: 'reg' | 'biz', file: string) => StorePlace) {
  const f = ensureStateKeys(dir);
  await ensureServerTls(f.tlsDir, 'operator', [plan.addr.oper]);
  ensureOperatorClientFile(f.operatorClient, () => newClientSecret(systemRng));
  const storageKey = readKeyFile(f.storeKey, 'storage key');
  const reg = await openRegStore(placeOf('reg', f.regDb));
  const { store: biz } = await openBizStores(placeOf('biz', f.bizDb), storageKey);
  try {
    await enrollDevices({ reg, accounts: accountsInStore(biz) }, serials.map((serial) => ({ serial, keyVersion: 1, firmwareMeasurement: SCRIPTED_FIRMWARE_HEX })));
  } finally {
    await reg.close();
    await biz.close();
  }
  const files = referenceFiles(plan);
  for (const rf of files) writeFileSync(join(dir, rf.file), JSON.stringify(rf.config, null, 2) + '\n');
  return { f, storageKey, files, ring: MasterKeyring.parse(readFileSync(f.masterKey, 'utf8')) };
}

/** Waits (20 s at most) until every upstream link of the gateways at `hosts` is up. */
export async function gatewaysUp(hosts: string[]): Promise<void> {
  for (const h of hosts) {
    const until = Date.now() + 20_000;
    for (;;) {
      const up = await fetch(`http://${h}:${PORTS.gatewayOperator}/healthz`).then((r) => r.json() as Promise<{ upstreams: Record<string, string> }>, () => null);
      if (up && Object.values(up.upstreams).every((s) => s === 'up')) break;
      if (Date.now() > until) throw new Error(`gateway ${h}: upstreams not up: ${JSON.stringify(up)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

export async function runCluster(o: ClusterOptions): Promise<ClusterFigures> {
  const t0 = performance.now();
  const say = o.say ?? (() => {});
  const nPhones = o.phones ?? 24;
  const faultMs = o.faultMs ?? 4_000;
  const avail = netnsAvailable();
  const mode: HostMode = o.mode ?? (avail.ok ? 'netns' : 'loopback');
  const net = new HostNetwork(mode);
  const dir = o.dir;
  mkdirSync(join(dir, 'logs'), { recursive: true });
  const problems: string[] = [];
  const procs = new Map<string, RoleProc>();
  const ns = testNamespace('cluster');
  let fwd: FaultyRedis | null = null;
  const storeKind = o.store ?? 'postgres';
  // PostgreSQL: this run's own schemas (<prefix>_reg, ...), as an embedded stack names them.
  const pgUrl = testPgUrl();
  const pgPrefix = storeKind === 'postgres' ? `s_${randomBytes(6).toString('hex')}` : null;
  const schemas = pgPrefix ? stackSchemas(pgPrefix) : null;
  let pgFwd: Awaited<ReturnType<typeof freezableProxy>> | null = null;
  const unlock = await lockCluster();

  // Phones' source addresses: east 96-111, west 112-127 of the hosts' /24.
  const prefix = mode === 'netns' ? '10.77.0.' : '127.0.77.';
  const phoneIps = Array.from({ length: Math.min(nPhones, 24) }, (_, i) => `${prefix}${100 + i}`);
  const attackerIp = `${prefix}90`;
  try {
    net.setUp([...phoneIps, attackerIp]);
    for (const [h, n] of Object.entries(REFERENCE_HOSTS)) net.addHost(h, n);
    const addr = Object.fromEntries([...net.hosts.values()].map((h) => [h.name, h.address])) as Record<HostName, string>;
    // The hosts reach Redis through a proxy on the root address (the bridge's, in netns mode),
    // which the harness can also freeze: Redis accepting and never answering.
    fwd = await freezableRedis(REDIS_URL, o.redisForwardPort ?? 22379, net.rootAddress);
    const redisUrl = fwd.url;
    let hostsPgUrl = '';
    if (schemas) {
      const u = new URL(pgUrl);
      pgFwd = await freezableProxy({ host: u.hostname, port: Number(u.port || 5432) }, o.pgForwardPort ?? 22432, net.rootAddress);
      u.hostname = net.rootAddress;
      u.port = String(pgFwd.port);
      hostsPgUrl = u.toString();
    }
    const plan: TopologyPlan = {
      addr,
      phoneGatewayUrl: `ws://${addr.gw1}:${PORTS.gateway}/`,
      redis: { url: redisUrl, namespace: ns, timeoutMs: 500 },
      regions: [{ cidr: `${prefix}96/28`, region: 'east' }, { cidr: `${prefix}112/28`, region: 'west' }],
      periodMs: 10_000,
      healthIntervalMs: 1_000,
      store: schemas ? { kind: 'postgres', url: hostsPgUrl, schemas } : { kind: 'sqlite' },
    };
    // The harness's own view of a store (enrolment, the checks at the end): PostgreSQL directly.
    const placeOf = (role: 'reg' | 'biz', file: string): StorePlace => (schemas ? { kind: 'postgres', url: pgUrl, schema: schemas[role] } : { kind: 'sqlite', file });

    const serials = Array.from({ length: nPhones }, (_, i) => `SN-C${String(i).padStart(4, '0')}`);
    const { f, storageKey, files, ring } = await prepareDeployment(dir, plan, serials, placeOf);

    const start = async (rf: RoleFile): Promise<void> => {
      const p = spawnRole(net, dir, rf);
      procs.set(rf.file, p);
      await p.ready;
    };
    const kill9 = async (file: string) => {
      const p = procs.get(file)!;
      p.child.kill('SIGKILL');
      await p.exited;
    };
    say(`cluster: ${mode}${mode === 'loopback' && !avail.ok ? ` (${avail.why})` : ''}, ${files.length} hosts, ${nPhones} phones, stores on ${schemas ? `PostgreSQL (schemas ${pgPrefix}_*)` : 'SQLite'}; files and logs in ${dir}`);
    for (const rf of files) await start(rf);
    const gwUrls = [`ws://${addr.gw1}:${PORTS.gateway}/`, `ws://${addr.gw2}:${PORTS.gateway}/`];
    await gatewaysUp([addr.gw1, addr.gw2]);

    const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
    const phones = serials.map((s, i) => new Phone(makeDevice(ring, s), phoneIps[i % phoneIps.length]!, i % 2 ? [gwUrls[1]!, gwUrls[0]!] : gwUrls));

    // Warm-up: every phone once, before any fault.
    const warm = await Promise.all(phones.map((p) => p.cycle()));
    const warmFailed = warm.filter((w) => !w.loggedIn).length;
    if (warmFailed) problems.push(`${warmFailed} phones could not log in before any fault`);
    say(`  warm-up: ${nPhones - warmFailed}/${nPhones} phones logged in`);

    // An attacker alternating the gateways: 12 login openings stating otp (the phones state
    // password) from one address, 6 at each gateway, under the limit of 10 per window at each:
    // counted once, by one of them, because they share the window in Redis.
    for (let i = 0; i < 12; i++) {
      const sock = await FrameSocket.connect(gwUrls[i % 2]!, { localAddress: attackerIp });
      sock.send(encodeEnvelope(MsgType.login, 0, 'biz-east', ['otp', 'u-attacker', 1, new Map(), randomBytes(32), randomBytes(32)]));
      await pause(20);
      sock.terminate();
    }
    const otpAttacks = async () => {
      let n = 0;
      for (const h of [addr.gw1, addr.gw2]) {
        const text = await fetch(`http://${h}:${PORTS.gatewayOperator}/metrics`).then((r) => r.text(), () => '');
        n += Number(/usbphone_gateway_attacks_detected_total\{site="biz-east",mech="otp"\} (\d+)/.exec(text)?.[1] ?? 0);
      }
      return n;
    };
    let attackerAttacks = 0;
    for (let i = 0; i < 30 && attackerAttacks === 0; i++) {
      await pause(100);
      attackerAttacks = await otpAttacks();
    }
    await pause(300);
    attackerAttacks = await otpAttacks();
    if (attackerAttacks !== 1) problems.push(`an attacker alternating the gateways counted ${attackerAttacks} times, not once`);
    say(`  attacker alternating gw-1 / gw-2 (12 openings, 6 each, limit 10): ${attackerAttacks} attack counted`);

    // Faults, while the phones cycle.
    let faulting = false;
    let running = true;
    let cycles = 0, logins = warm.filter((w) => w.loggedIn).length, loginsDuringFaults = 0, registrationsDuringFaults = 0;
    const loops = phones.map(async (p) => {
      while (running) {
        const during = faulting;
        const r = await p.cycle();
        cycles++;
        if (r.loggedIn) logins++;
        if (during && r.loggedIn) loginsDuringFaults++;
        if (during && r.registered) registrationsDuringFaults++;
        await new Promise((x) => setTimeout(x, 50 + Math.random() * 100));
      }
    });
    let kills = 0, partitions = 0;
    /** Runs one fault for faultMs, heals it; returns the logins completed while it lasted. */
    const fault = async (what: string, hurt: () => Promise<void> | void, heal: () => Promise<void> | void): Promise<number> => {
      faulting = true;
      const before = logins;
      await hurt();
      say(`  fault: ${what}`);
      await pause(faultMs);
      const during = logins - before;
      await heal();
      faulting = false;
      say(`  healed: ${what} (${during} logins meanwhile)`);
      await pause(1_500);
      return during;
    };
    await pause(1_000);
    for (const [file, what] of [['gw-1.json', 'kill -9 gateway gw-1'], ['reg-primary.json', 'kill -9 registration server reg-primary'], ['biz-east.json', 'kill -9 business server biz-east'], ['policy.json', 'kill -9 policy server']] as const) {
      await fault(what, async () => {
        await kill9(file);
        kills++;
      }, () => start(procs.get(file)!.rf));
    }
    await fault(`link of biz-west cut (${mode === 'netns' ? 'veth down' : 'SIGSTOP'})`, () => {
      net.cut('biz2');
      partitions++;
    }, () => net.heal('biz2'));
    const redisFaultLogins = await fault('Redis frozen (accepts, never answers): every shared item fails open', () => fwd!.freeze(), () => fwd!.thaw());
    running = false;
    await Promise.all(loops);

    // After the heal: every phone registers and logs in again (a few tries while links and health views settle).
    let lockouts = 0;
    await Promise.all(phones.map(async (p) => {
      for (let i = 0; i < 8; i++) {
        const r = await p.cycle();
        if (r.loggedIn && r.registered) return;
        await pause(1_000);
      }
      lockouts++;
    }));
    say(`  after the heal: ${nPhones - lockouts}/${nPhones} phones registered and logged in`);

    // Stop every process cleanly (exit 0), then check the stores.
    for (const p of procs.values()) p.child.kill('SIGTERM');
    for (const [file, p] of procs) {
      const c = await Promise.race([p.exited, pause(10_000).then(() => 'timeout')]);
      if (c !== 0) problems.push(`${file} stopped with ${String(c)}`);
    }
    const integrity: Record<string, string> = {};
    if (schemas) {
      const found = await checkStores(pgUrl, schemas, storageKey);
      integrity.postgres = found.length ? found.join('; ') : 'ok';
      problems.push(...found.map((p) => `store check: ${p}`));
    }
    for (const db of schemas ? [] : ['reg.sqlite', 'biz-accounts.sqlite', 'policy.sqlite', 'operator.sqlite']) {
      const d = new Database(join(dir, db), { readonly: true });
      try {
        integrity[db] = (d.pragma('integrity_check') as { integrity_check: string }[]).map((r) => r.integrity_check).join(',');
      } finally {
        d.close();
      }
      if (integrity[db] !== 'ok') problems.push(`${db}: integrity_check ${integrity[db]}`);
    }
    let rotations = 0;
    const reg = await openRegStore(placeOf('reg', f.regDb));
    const { store: biz } = await openBizStores(placeOf('biz', f.bizDb), storageKey);
    try {
      for (const p of phones) {
        const d = (await reg.getDevice(p.dev.serial))!;
        const a = (await biz.getByUser(d.user))!;
        rotations += d.rotations;
        if (a.currentGen !== p.lastGen) {
          problems.push(`${p.dev.serial}: business store current generation ${a.currentGen}, the phone last used ${p.lastGen}`);
          if (a.currentGen > p.lastGen) p.rotationsDoubled++;
        }
        if (p.confirmed && a.confirmedGen !== p.lastGen) problems.push(`${p.dev.serial}: confirmed ${a.confirmedGen}, the phone confirmed ${p.lastGen}`);
        if (a.pendingGen !== null && a.pendingGen !== a.currentGen + 1) problems.push(`${p.dev.serial}: pending ${a.pendingGen} after current ${a.currentGen}`);
        if (d.currentGen > a.currentGen || (d.pendingGen !== null && d.pendingGen > a.currentGen + 1)) problems.push(`${p.dev.serial}: registration store (current ${d.currentGen}, pending ${d.pendingGen}) ahead of the business store (current ${a.currentGen})`);
      }
    } finally {
      await reg.close();
      await biz.close();
    }
    const sum = (k: 'rotationsLost' | 'rotationsDoubled' | 'savedLogins' | 'viaBackup') => phones.reduce((n, p) => n + p[k], 0);
    if (lockouts) problems.push(`${lockouts} phones locked out`);
    if (sum('rotationsLost')) problems.push(`${sum('rotationsLost')} rotations lost (a newest generation refused)`);
    if (sum('rotationsDoubled')) problems.push(`${sum('rotationsDoubled')} rotations doubled`);
    if (loginsDuringFaults === 0) problems.push('no login succeeded during the faults');
    if (redisFaultLogins === 0) problems.push('no login succeeded while Redis was frozen (the items must fail open)');
    return {
      mode, store: storeKind, ...(avail.ok ? {} : { whyLoopback: avail.why }), phones: nPhones, kills, partitions, cycles, logins, loginsDuringFaults, registrationsDuringFaults,
      viaBackup: sum('viaBackup'), savedLogins: sum('savedLogins'), lockouts, rotationsLost: sum('rotationsLost'), rotationsDoubled: sum('rotationsDoubled'),
      rotations, attackerAttacks, loginsRedisFrozen: redisFaultLogins, integrity, problems, ms: Math.round(performance.now() - t0),
    };
  } finally {
    for (const p of procs.values()) p.child.kill('SIGKILL');
    await Promise.all([...procs.values()].map((p) => p.exited));
    net.tearDown();
    await fwd?.close();
    await pgFwd?.close();
    if (pgPrefix) await dropStackSchemas(pgUrl, pgPrefix).catch((e: unknown) => say(`  could not drop the schemas ${pgPrefix}_*: ${(e as Error).message}`));
    unlock();
    await dropNamespace(ns).catch(() => 0);
  }
}
