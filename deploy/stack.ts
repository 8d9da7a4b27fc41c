// The embedded default deployment, as a programmatic API (the simulator and the tests use
// it; `usbphone serve all` runs it): gateway + reg-primary + reg-backup + biz-east +
// biz-west + the mobile operator (HTTPS, its CA and certificate made in the state
// directory on first start) on loopback, SQLite files and key files in one state directory. A registration
// server can run inline or as a child process (`usbphone serve reg --config FILE`) so tests
// can kill -9 it between the steps of a rotation.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { MasterKeyring } from '../protocol/keys.ts';
import { ImplementationError } from '../protocol/errors.ts';
import { startGateway, type Gateway } from '../gateway/gateway.ts';
import type { GatewayLimits } from '../gateway/limits.ts';
import { startRegServer, type RegServer } from '../reg-server/server.ts';
import { startBizServer, type BizServer } from '../biz-server/server.ts';
import type { ScryptParams } from '../biz-server/password-verifier.ts';
import type { BankMode } from '../protocol/bank-messages.ts';
import type { Mechanism } from '../protocol/messages.ts';
import type { RegStore } from '../reg-server/store.ts';
import type { BizStore } from '../biz-server/store.ts';
import { openRegStore } from '../reg-server/pg-store.ts';
import { openBizStores } from '../biz-server/pg-store.ts';
import { storeChoiceFrom, type StoreChoice, type StorePlace } from '../server-kit/store-choice.ts';
import { stackSchemaPrefix, stackSchemas, checkStateStores } from './stack-schemas.ts';
import { startOperatorServer, type OperatorServer } from '../operator-server/server.ts';
import { newClientSecret, secretHash } from '../operator-server/tokens.ts';
import { ALL_OPERATOR_SCOPES } from '../server-kit/operator-api.ts';
import { ensureServerTls } from '../server-kit/tls-ca.ts';
import { systemRng } from '../protocol/rng.ts';
import { enrollDevices, accountsViaAdmin, accountsInStore, writeRunningBizServers, type EnrollmentRecord, type EnrollOptions, type EnrollResult } from './enroll.ts';
import { AdminClient } from '../server-kit/admin-rpc.ts';
import type { RotationStep } from '../reg-server/rotation.ts';
import { linkKeyFor } from '../server-kit/link.ts';
import type { Mutant } from '../server-kit/mutant.ts';
import { logLevel } from '../server-kit/log.ts';
import { readKeyFile, loadMasterKeyring } from '../server-kit/keyfiles.ts';
import { addLogListener } from '../server-kit/log.ts';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { FeedHub, type HealthSnapshot } from './feed-hub.ts';
import { pageRoutes } from './page-server.ts';
import { BANK_PAGE_PORT_OFFSET, DEFAULT_TOPOLOGY, portsForBase, DEFAULT_HOST, DEFAULT_GATEWAY_PORT, PARENT_PIPE_ENV, OPERATOR_PORT_OFFSET, POLICY_PORT_OFFSET, DEFAULT_POLICY_PERIOD_MS, DEFAULT_INITIAL_TABLE, factoryPolicyFor, ensureStateKeys, ensureOperatorClientFile, type RolePorts, type RegFileConfig, type OperatorClientFile } from './config.ts';
import { TableSource } from '../server-kit/table-source.ts';
import { createLogger } from '../server-kit/log.ts';
import { startPolicyServer, type PolicyServer } from '../policy-server/server.ts';
import { readPolicyKey } from '../policy-server/keys.ts';
import { adminCall, POLICY_ADMIN_LIMITS } from '../server-kit/admin-messages.ts';
import type { AttackLimits } from '../gateway/attacks.ts';
import type { FactoryPolicy } from '../firmware/factory/image.ts';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..');

export type RegName = (typeof DEFAULT_TOPOLOGY.regs)[number];

export interface StackOptions {
  stateDir: string;
  host?: string;
  /**
   * The stores (issue 16): SQLite files in stateDir (default), or PostgreSQL, each role in its
   * own schema named from a prefix kept in stateDir (deploy/stack-schemas.ts), so a restart on
   * the same stateDir finds its data. Absent: STORE_URL=postgres://... in the environment
   * selects PostgreSQL (how the stack-level stories run on PG). The policy server stays on
   * SQLite (its PostgreSQL store is not built yet).
   */
  store?: StoreChoice;
  /**
   * Gateway port, and the base of every other port (config.ts portsForBase): default 7400;
   * 0 = ephemeral, and then every server port is ephemeral too.
   */
  gatewayPort?: number;
  /** Per-server ports (device/link/admin); default portsForBase(gatewayPort), or all 0 when gatewayPort is 0. */
  ports?: Record<string, RolePorts>;
  gatewayLimits?: Partial<GatewayLimits>;
  /** Per-step timeout of reg/biz sessions (default protocol/limits.ts stepTimeoutMs). */
  stepTimeoutMs?: number;
  /** Lifetime of an issued, not yet used password (default 30 days). */
  pendingTtlMs?: number;
  /** How often the reg servers poll the business servers' health (default 2 s). */
  healthIntervalMs?: number;
  /** Run the registration servers as child processes (default inline). */
  regProcess?: 'inline' | 'child';
  /**
   * The gateway address devices are told (credReply server URLs, urlFor), when they reach
   * the gateway some other way than its listening URL (a simulated network, a proxy).
   * Must end with '/'. Default: the gateway's own URL.
   */
  advertisedUrl?: string;
  /** The mobile operator's HTTPS port: default gatewayPort + 50, 0 (ephemeral) when gatewayPort is 0. */
  operatorPort?: number;
  /** Days of card-change history the operator answers for (CAMARA monitoredPeriod); default all. */
  operatorMonitoredDays?: number | null;
  /** The attack period T of the gateway's reports and the policy server's tables (S3.5, S3.9), ms (default 60 s). */
  policyPeriodMs?: number;
  /** The gateway's attack counting (S3.4): window, limit, memory bound (gateway/attacks.ts); its period is policyPeriodMs. */
  attackLimits?: Partial<Omit<AttackLimits, 'periodMs'>>;
  /** How often the registration servers poll the latest table (default 5 s). */
  tablePollMs?: number;
  /** The policy server's security level thresholds (S3.6; default the patent's [5000, 10000]). */
  policyThresholds?: number[];
  /** How long a signed table stays valid, ms (default 3 T; must exceed policyPeriodMs). */
  policyTableLifetimeMs?: number;
  /** The bank's mode on both business servers (S4.3 / S4.4): default 1. */
  bankMode?: BankMode;
  /** The operator calls of one bank request: their deadline, ms (default 3000). */
  bankOperatorDeadlineMs?: number;
  /**
   * scrypt parameters of the bank's password verifiers (default OWASP's N=2^17, r=8, p=1).
   * TESTS ONLY may lower them, for speed (biz-server/bank.test.ts runs the real ones).
   */
  bankScrypt?: ScryptParams;
  /**
   * The person mechanisms both business servers offer, and their floor (S3.3): default all
   * three, floor 'password', as the attack table's initial entry (DEFAULT_INITIAL_TABLE).
   */
  bizMechanisms?: Mechanism[];
  bizFloor?: Mechanism;
  /**
   * TEST ONLY (conformance/mutants.test.ts): every inline reg and biz server breaks this one
   * rule (server-kit/mutant.ts). Not passed to child processes.
   */
  mutant?: Mutant;
}

export interface StartRegOptions {
  process?: 'inline' | 'child';
  /** Child only: the process stops at this rotation step and reports it (for kill -9 tests). */
  pauseAt?: RotationStep;
  /**
   * The table source this registration server polls (S3.11): default the stack's policy
   * server. The table stories (sim/attack-scenarios.ts) swap in a rogue one.
   */
  policy?: { name: string; adminUrl: string };
}

export interface Stack {
  /** Where devices connect: 'ws://127.0.0.1:7400/'. */
  gatewayUrl: string;
  /** The address of a dest through the gateway: (advertisedUrl ?? gatewayUrl) + dest. */
  urlFor(dest: string): string;
  /** Direct device URL of a reg/biz server (bypassing the gateway), or null. */
  directUrl(name: string): string | null;
  dests: { regPrimary: 'reg-primary'; regBackup: 'reg-backup'; biz: string[] };
  stateDir: string;
  ring: MasterKeyring;
  gateway: Gateway;
  ports(): Record<string, RolePorts | number>;
  reg(name: RegName): RegServer | undefined;
  biz(name: string): BizServer | undefined;
  regStore: RegStore;
  bizStore: BizStore;
  /** The store choice in force (STORE_URL applied), and the PostgreSQL schema of each role's store when on PG. */
  store: { choice: StoreChoice; prefix: string | null; schemas: { reg: string; biz: string; operator: string; policy: string } | null };
  /** The mobile operator (S4), or undefined while stopped (stopOperator). */
  operator(): OperatorServer | undefined;
  /** Its base URL, https://host:port (the same across a stop and start). */
  operatorUrl: string;
  /** The CA certificate (PEM) the operator's certificate chains to: what its clients trust. */
  operatorCa: string;
  /** The bank's OAuth2 client credentials at the operator (all scopes). */
  operatorClient: OperatorClientFile;
  stopOperator(): Promise<void>;
  startOperator(): Promise<void>;
  /** The security policy server (S3.5-S3.11). */
  policy: PolicyServer;
  /** What the factory writes into phones for these servers: the policy key and the initial table (S3.10, S3.11). */
  factoryPolicy: FactoryPolicy;
  /** The live page's hub (issue 17): the gateway, the servers' log lines and the simulator feed it. */
  feed: FeedHub;
  /** The live page: 'http://host:port/' on the gateway's operator port. */
  pageUrl: string;
  stopReg(name: RegName): Promise<void>;
  startReg(name: RegName, opts?: StartRegOptions): Promise<void>;
  /** kill -9 of a child reg server (an inline one is closed abruptly instead). */
  killReg(name: RegName): Promise<void>;
  /** The process id of a child reg server (to pause it with SIGSTOP), or undefined. */
  regPid(name: RegName): number | undefined;
  /** Resolves when a child reg server reports it stopped at its pauseAt step. */
  waitPaused(name: RegName): Promise<RotationStep>;
  stopBiz(name: string): Promise<void>;
  startBiz(name: string): Promise<void>;
  /** Marks a business server unhealthy/healthy and makes the reg servers poll now. */
  setBizHealthy(name: string, healthy: boolean): Promise<void>;
  /**
   * Enrolls devices: the business account through a running business server's admin API
   * (`enrollAccount`), or, when none is running, in the accounts file directly.
   */
  enroll(records: EnrollmentRecord | EnrollmentRecord[], opts?: EnrollOptions): Promise<EnrollResult[]>;
  disable(serial: string): Promise<boolean>;
  enable(serial: string): Promise<boolean>;
  stop(): Promise<void>;
}

/** The security policy server's name: admin requests are bound to it. */
const POLICY_NAME = 'policy';

interface ChildReg { proc: ChildProcess; exited: Promise<void>; paused: Promise<RotationStep>; devicePort: number | null; linkPort: number }

export async function startStack(opts: StackOptions): Promise<Stack> {
  if (opts.advertisedUrl !== undefined && !/^wss?:\/\/\S+\/$/.test(opts.advertisedUrl)) {
    throw new ImplementationError('STACK_BAD_URL', 'advertisedUrl must be a ws:// or wss:// URL ending with /');
  }
  const host = opts.host ?? DEFAULT_HOST;
  const gatewayPort = opts.gatewayPort ?? DEFAULT_GATEWAY_PORT;
  const ephemeral = gatewayPort === 0;
  const base = portsForBase(gatewayPort);
  const portsOf = (name: string): RolePorts => opts.ports?.[name] ?? (ephemeral ? { device: 0, link: 0, admin: 0 } : base[name]!);
  // A directory whose stores are on the other back end is refused before anything is made in it.
  const storeChoice = storeChoiceFrom(opts.store);
  checkStateStores(opts.stateDir, storeChoice);
  const files = ensureStateKeys(opts.stateDir);
  // The operator's CA and certificate (first start), before any store is open: nothing to undo if it fails.
  const tls = await ensureServerTls(files.tlsDir, 'operator', [host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host, 'localhost']);
  const ring = loadMasterKeyring({ file: files.masterKey });
  const rootLink = readKeyFile(files.linkKey, 'link key');
  const adminKey = readKeyFile(files.adminKey, 'admin key');
  const storageKey = readKeyFile(files.storeKey, 'storage key');
  const prefix = storeChoice.kind === 'postgres' ? storeChoice.schema ?? stackSchemaPrefix(opts.stateDir) : null;
  const schemas = prefix ? stackSchemas(prefix) : null;
  /**
   * A role's store choice: SQLite (its file in stateDir), or PostgreSQL in its own schema, with
   * everything else the stack's choice says (synchronousCommit) as a role file's would.
   */
  const roleStore = (role: 'reg' | 'biz' | 'operator' | 'policy'): StoreChoice => (storeChoice.kind === 'sqlite' ? storeChoice : { ...storeChoice, schema: schemas![role] });
  const placeOfRole = (role: 'reg' | 'biz', file: string): StorePlace => { const c = roleStore(role); return c.kind === 'sqlite' ? { kind: 'sqlite', file } : c; };
  const regStore = await openRegStore(placeOfRole('reg', files.regDb));
  let bizStore: BizStore;
  try {
    bizStore = (await openBizStores(placeOfRole('biz', files.bizDb), storageKey)).store;
  } catch (e) {
    await regStore.close();
    throw e;
  }
  const operatorTokenKey = readKeyFile(files.operatorTokenKey, 'operator token key');
  const operatorClient = ensureOperatorClientFile(files.operatorClient, () => newClientSecret(systemRng));

  const bizServers = new Map<string, BizServer>();
  const bankPorts = new Map<string, number>();
  const operatorUrl = () => `https://${host.includes(':') ? `[${host}]` : host}:${operatorPort}`;
  const regs = new Map<RegName, RegServer>();
  const children = new Map<RegName, ChildReg>();
  const actual: Record<string, RolePorts | number> = {};

  const startBiz = async (name: string) => {
    const b = DEFAULT_TOPOLOGY.biz.find((x) => x.name === name);
    if (!b) throw new ImplementationError('STACK_UNKNOWN_SERVER', `no business server '${name}'`);
    const p = portsOf(name);
    const prev = actual[name] as RolePorts | undefined;
    const s = await startBizServer({
      name, region: b.region, host,
      devicePort: p.device, linkPort: prev && ephemeral ? prev.link : p.link, adminPort: prev && ephemeral ? prev.admin! : p.admin ?? 0,
      dbFile: files.bizDb, store: roleStore('biz'), storageKey, linkKey: linkKeyFor(rootLink, name), adminKey, stepTimeoutMs: opts.stepTimeoutMs, mutant: opts.mutant,
      mechanisms: opts.bizMechanisms, floor: opts.bizFloor,
      // The bank (S4): its operator client over HTTPS with the deployment's CA and the bank's
      // OAuth2 credentials; the account pages on device port + 3 (BASE+33, BASE+43), kept across a restart.
      bank: {
        mode: opts.bankMode ?? 1,
        operator: { url: operatorUrl(), ca: tls.caPem, clientId: operatorClient.clientId, clientSecret: operatorClient.clientSecret },
        operatorDeadlineMs: opts.bankOperatorDeadlineMs,
        httpPort: bankPorts.get(name) ?? (ephemeral || p.device === null ? 0 : p.device + BANK_PAGE_PORT_OFFSET),
        scrypt: opts.bankScrypt,
        // The live page: each operator call of a bank request, in the diagram of the phone that made it.
        onOperatorCall: (e) => feed.operatorCall(e),
      },
    });
    if (s.bank) bankPorts.set(name, Number(new URL(s.bank.pageUrl).port));
    bizServers.set(name, s);
    actual[name] = { device: s.devicePort, link: s.linkPort, admin: s.adminPort };
    publishBiz();
    return s;
  };
  // `usbphone enroll --state DIR` finds the running business servers' admin endpoints here.
  const publishBiz = () => writeRunningBizServers(opts.stateDir, [...bizServers.values()].map((b) => ({ name: b.name, adminUrl: b.adminUrl })));
  let gateway: Gateway | null = null;
  let policy: PolicyServer | null = null;
  let gatewayTables: TableSource | null = null;
  const periodMs = opts.policyPeriodMs ?? DEFAULT_POLICY_PERIOD_MS;
  let operator: OperatorServer | undefined;
  // Its port is kept across a stop and start (an ephemeral one too), so its URL stays valid.
  let operatorPort = opts.operatorPort ?? (ephemeral ? 0 : gatewayPort + OPERATOR_PORT_OFFSET);
  const startOperator = async () => {
    if (operator) return;
    operator = await startOperatorServer({
      host, port: operatorPort, dbFile: files.operatorDb, store: roleStore('operator'), tls: { cert: tls.certFile, key: tls.keyFile },
      tokenKey: operatorTokenKey, monitoredPeriodDays: opts.operatorMonitoredDays ?? null,
    });
    operatorPort = operator.port;
    actual.operator = operator.port;
    // The bank's client is (re)registered with every scope: the credentials file is the truth.
    await operator.store.putClient(operatorClient.clientId, secretHash(operatorClient.clientSecret), [...ALL_OPERATOR_SCOPES]);
  };
  const abort = async (e: unknown): Promise<never> => {
    gatewayTables?.close();
    await gateway?.close();
    await policy?.close();
    await operator?.close();
    for (const r of regs.values()) await r.close();
    for (const c of children.values()) {
      c.proc.kill('SIGKILL');
      await c.exited;
    }
    for (const b of bizServers.values()) await b.close();
    writeRunningBizServers(opts.stateDir, null);
    await regStore.close();
    await bizStore.close();
    throw e;
  };
  // The live page: its hub hears the gateway's frames and every server log line of this
  // process, and polls the health below once a second.
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  let cpu = process.cpuUsage();
  let cpuAt = performance.now();
  const health = (): HealthSnapshot => {
    const used = process.cpuUsage(cpu);
    const now = performance.now();
    const cpuPercent = Math.round(((used.user + used.system) / 1000 / Math.max(1, now - cpuAt)) * 1000) / 10;
    cpu = process.cpuUsage();
    cpuAt = now;
    const p99 = Math.round(loop.percentile(99) / 1e4) / 100;
    loop.reset();
    const mem = process.memoryUsage();
    const linkUp = (n: string) => gateway?.upstream(n)?.up ?? false;
    return {
      servers: [
        { name: 'gateway', role: 'gateway', running: gateway !== null, linkUp: null, sessions: gateway?.connections() ?? 0 },
        ...DEFAULT_TOPOLOGY.regs.map((n) => ({ name: n, role: 'registration' as const, running: regs.has(n) || children.has(n), linkUp: linkUp(n), sessions: regs.get(n)?.sessions() ?? null })),
        ...DEFAULT_TOPOLOGY.biz.map((b) => ({ name: b.name, role: 'business' as const, running: bizServers.has(b.name), linkUp: linkUp(b.name), sessions: bizServers.get(b.name)?.sessions() ?? null })),
        { name: 'operator', role: 'operator', running: operator !== undefined, linkUp: null, sessions: null },
      ],
      load: { rssMiB: Math.round(mem.rss / 104857.6) / 10, heapMiB: Math.round(mem.heapUsed / 104857.6) / 10, cpuPercent, eventLoopP99Ms: p99, connections: gateway?.connections() ?? 0 },
    };
  };
  const feed = new FeedHub({ servers: ['gateway', ...DEFAULT_TOPOLOGY.regs, ...DEFAULT_TOPOLOGY.biz.map((b) => b.name), 'operator'], health });
  const page = pageRoutes(feed);
  const removeLogListener = addLogListener((line) => feed.log(line));
  const stopFeed = () => {
    removeLogListener();
    feed.stop();
    loop.disable();
  };
  try {
    // The operator first: the banks need its URL (an ephemeral port is known once it listens).
    await startOperator();
    for (const b of DEFAULT_TOPOLOGY.biz) await startBiz(b.name);
    policy = await startPolicyServer({
      name: POLICY_NAME, host, adminPort: ephemeral ? 0 : gatewayPort + POLICY_PORT_OFFSET, adminKey, dbFile: files.policyDb, store: roleStore('policy'),
      privateKey: readPolicyKey(files.policyKey).privateKey, initialTable: DEFAULT_INITIAL_TABLE, periodMs,
      thresholds: opts.policyThresholds, tableLifetimeMs: opts.policyTableLifetimeMs,
      // The live page's S3 view: every table published, with the attacks of its period.
      onTable: (t) => feed.table(t),
    });
    actual.policy = policy.adminPort;
    // S3.5: each period's attack report goes to the policy server over the sealed admin API.
    const policyClient = new AdminClient({ target: POLICY_NAME, url: policy.adminUrl, key: adminKey, limits: POLICY_ADMIN_LIMITS });
    gateway = await startGateway({
      host, port: gatewayPort, operatorPort: ephemeral ? 0 : gatewayPort + 1, upstreams: [], limits: opts.gatewayLimits,
      observe: (f) => feed.frame(f), operatorRoutes: page.routes,
      attacks: { ...opts.attackLimits, periodMs },
      attackReports: { gateway: 'gateway', send: (r) => adminCall(policyClient, 'reportAttacks', r) },
    });
    // S3.11: each new table the policy server signs is pushed to the devices connected now.
    const g = gateway;
    gatewayTables = new TableSource({ client: policyClient, intervalMs: opts.tablePollMs, log: createLogger('gateway/tables'), onUpdate: (t) => void g.pushTable(t) });
    await gatewayTables.start();
  } catch (e) {
    stopFeed();
    return abort(e);
  }
  const gw = gateway;
  actual.gateway = gw.port;
  actual['gateway-operator'] = Number(new URL(gw.operatorUrl!).port);
  const gatewayUrl = gw.url;
  const advertised = opts.advertisedUrl ?? gatewayUrl;
  const linkUrl = (port: number) => `ws://${host}:${port}/`;
  for (const [name, s] of bizServers) gw.setUpstream({ name, linkUrl: linkUrl(s.linkPort), linkKey: linkKeyFor(rootLink, name) });

  const policyRef = (o: StartRegOptions = {}) => ({ ...(o.policy ?? { name: POLICY_NAME, adminUrl: policy!.adminUrl }), ...(opts.tablePollMs === undefined ? {} : { pollMs: opts.tablePollMs }) });
  const regBizList = () => DEFAULT_TOPOLOGY.biz.map((b) => {
    const p = actual[b.name] as RolePorts;
    return { name: b.name, region: b.region, url: advertised + b.name, adminUrl: `http://${host}:${p.admin}/admin` };
  });

  const startReg = async (name: RegName, o: StartRegOptions = {}) => {
    if (regs.has(name) || children.has(name)) throw new ImplementationError('STACK_RUNNING', `${name} is already running`);
    const p = portsOf(name);
    const mode = o.process ?? opts.regProcess ?? 'inline';
    let devicePort: number | null;
    let lp: number;
    if (mode === 'inline') {
      const r = await startRegServer({
        name, host, devicePort: p.device, linkPort: p.link, dbFile: files.regDb, store: roleStore('reg'), ring, linkKey: linkKeyFor(rootLink, name), adminKey,
        bizServers: regBizList(), regions: DEFAULT_TOPOLOGY.regions,
        stepTimeoutMs: opts.stepTimeoutMs, pendingTtlMs: opts.pendingTtlMs, healthIntervalMs: opts.healthIntervalMs, mutant: opts.mutant,
        policy: policyRef(o),
      });
      regs.set(name, r);
      devicePort = r.devicePort;
      lp = r.linkPort;
    } else {
      const c = await spawnReg(name, p, o.pauseAt, policyRef(o));
      children.set(name, c);
      devicePort = c.devicePort;
      lp = c.linkPort;
    }
    actual[name] = { device: devicePort, link: lp };
    gw.setUpstream({ name, linkUrl: linkUrl(lp), linkKey: linkKeyFor(rootLink, name) });
    await gw.waitUpstreams(5_000, [name]);
  };

  const spawnReg = async (name: RegName, p: RolePorts, pauseAt: RotationStep | undefined, policyOf: ReturnType<typeof policyRef>): Promise<ChildReg> => {
    const cfg: RegFileConfig = {
      name, host, devicePort: p.device, linkPort: p.link, dbFile: files.regDb, store: roleStore('reg'), masterKeyFile: files.masterKey,
      linkKeyFile: files.linkKey, adminKeyFile: files.adminKey, bizServers: regBizList(), regions: DEFAULT_TOPOLOGY.regions,
      stepTimeoutMs: opts.stepTimeoutMs, pendingTtlMs: opts.pendingTtlMs, healthIntervalMs: opts.healthIntervalMs,
      policy: policyOf,
    };
    const runDir = join(opts.stateDir, 'run');
    mkdirSync(runDir, { recursive: true });
    const cfgFile = join(runDir, `${name}.json`);
    writeFileSync(cfgFile, JSON.stringify(cfg, null, 2));
    // stdin is a pipe the child watches (PARENT_PIPE_ENV): it stops when this process dies.
    const env = { ...process.env, USBPHONE_LOG_LEVEL: logLevel(), [PARENT_PIPE_ENV]: '1', ...(pauseAt ? { USBPHONE_TEST_PAUSE_AT: pauseAt } : {}) };
    const proc = spawn(process.execPath, [join(repoRoot, 'bin', 'usbphone.js'), 'serve', 'reg', '--config', cfgFile, '--json'], { env, stdio: ['pipe', 'pipe', 'inherit'] });
    const exited = new Promise<void>((r) => proc.once('exit', () => r()));
    let onPaused: (s: RotationStep) => void = () => {};
    const paused = new Promise<RotationStep>((r) => (onPaused = r));
    const ports = await new Promise<{ devicePort: number | null; linkPort: number }>((resolve, reject) => {
      const lines = createInterface({ input: proc.stdout! });
      lines.on('line', (line) => {
        let ev: { event?: string; devicePort?: number | null; linkPort?: number; step?: RotationStep };
        try {
          ev = JSON.parse(line);
        } catch {
          return;
        }
        if (ev.event === 'listening') resolve({ devicePort: ev.devicePort ?? null, linkPort: ev.linkPort! });
        if (ev.event === 'paused') onPaused(ev.step!);
      });
      proc.once('exit', (code) => reject(new ImplementationError('STACK_CHILD_EXITED', `${name} exited with ${code} before listening`)));
    });
    return { proc, exited, paused, ...ports };
  };

  try {
    for (const r of DEFAULT_TOPOLOGY.regs) await startReg(r);
    await gw.waitUpstreams(5_000);
  } catch (e) {
    stopFeed();
    return abort(e);
  }

  const stopReg = async (name: RegName) => {
    const r = regs.get(name);
    if (r) {
      regs.delete(name);
      await r.close();
    }
    const c = children.get(name);
    if (c) {
      children.delete(name);
      c.proc.kill('SIGTERM');
      await c.exited;
    }
  };

  const stack: Stack = {
    gatewayUrl,
    urlFor: (dest) => advertised + dest,
    directUrl(name) {
      const p = actual[name];
      return typeof p === 'object' && p.device ? `ws://${host}:${p.device}/` : null;
    },
    dests: { regPrimary: 'reg-primary', regBackup: 'reg-backup', biz: DEFAULT_TOPOLOGY.biz.map((b) => b.name) },
    stateDir: opts.stateDir,
    ring,
    gateway: gw,
    ports: () => ({ ...actual }),
    reg: (name) => regs.get(name),
    biz: (name) => bizServers.get(name),
    regStore,
    bizStore,
    store: { choice: storeChoice, prefix, schemas },
    operator: () => operator,
    operatorUrl: operatorUrl(),
    operatorCa: tls.caPem,
    operatorClient,
    policy: policy!,
    factoryPolicy: factoryPolicyFor(opts.stateDir),
    feed,
    pageUrl: gw.operatorUrl!,
    async stopOperator() {
      const o = operator;
      operator = undefined;
      await o?.close();
    },
    startOperator,
    stopReg,
    startReg,
    async killReg(name) {
      const c = children.get(name);
      if (c) {
        children.delete(name);
        c.proc.kill('SIGKILL');
        await c.exited;
        return;
      }
      await stopReg(name);
    },
    regPid: (name) => children.get(name)?.proc.pid,
    waitPaused(name) {
      const c = children.get(name);
      if (!c) return Promise.reject(new ImplementationError('STACK_NOT_CHILD', `${name} is not a child process`));
      return c.paused;
    },
    async stopBiz(name) {
      const s = bizServers.get(name);
      if (!s) return;
      bizServers.delete(name);
      publishBiz();
      await s.close();
    },
    async startBiz(name) {
      if (bizServers.has(name)) return;
      const s = await startBiz(name);
      gw.setUpstream({ name, linkUrl: linkUrl(s.linkPort), linkKey: linkKeyFor(rootLink, name) });
      await gw.waitUpstreams(5_000, [name]);
    },
    async setBizHealthy(name, healthy) {
      bizServers.get(name)?.setDraining(!healthy);
      await Promise.all([...regs.values()].map((r) => r.pollHealth()));
    },
    async enroll(records, o) {
      const list = Array.isArray(records) ? records : [records];
      const running = [...bizServers.values()];
      if (running.length === 0) return enrollDevices({ reg: regStore, accounts: accountsInStore(bizStore) }, list, o);
      const clients = running.map((b) => new AdminClient({ target: b.name, url: b.adminUrl, key: adminKey }));
      try {
        return await enrollDevices({ reg: regStore, accounts: accountsViaAdmin(clients) }, list, o);
      } finally {
        for (const c of clients) c.close();
      }
    },
    disable: async (serial) => regStore.setDeviceStatus(serial, 'disabled'),
    enable: async (serial) => regStore.setDeviceStatus(serial, 'active'),
    async stop() {
      stopFeed();
      gatewayTables?.close();
      await gw.close();
      for (const n of [...regs.keys(), ...children.keys()]) await stopReg(n);
      for (const s of bizServers.values()) await s.close();
      bizServers.clear();
      await operator?.close();
      operator = undefined;
      await policy?.close();
      writeRunningBizServers(opts.stateDir, null);
      await regStore.close();
      await bizStore.close();
    },
  };
  return stack;
}
