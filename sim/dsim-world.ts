// The parties of one deterministic simulation run (issue 14), all in this process on one
// virtual scheduler and the simulated network of dsim-net.ts: phones (the real firmware on the
// simulated HAL and flash chip), the real gateway, the registration primary and backup, the
// two business servers and the security policy server. The servers run their real code
// (RegServerSession, BizServerSession: the protocol machines, rotation, placement, the health
// view; the admin API's sealing and replay cache; the policy server's period update and signed
// tables) over their real SQLite stores, files in a temporary directory. What is simulated: time
// (session step timers, health and table polls, the policy period, every clock a server or phone
// reads), the network and the hardware.
//
// A crash drops a server's incarnation without its shutdown: its connections die, its timers
// and pending admin calls are fenced off (they never run or answer), its store connection is
// closed with whatever was not committed lost; the restart opens new stores from the same
// files. A crash inside a store transaction is a temporary trigger on that incarnation's
// connection that throws from inside the statement: SQLite rolls the transaction back.
//
// The gateway is the real one (gateway/gateway.ts through its sockets seam, GatewayConfig.io):
// devices connect to it on the simulated network, it links to every server over the real
// authenticated link (server-kit/link.ts, both ends: challenge, tags, reconnection), counts login
// openings as attacks, reports them to the policy server and pushes its tables (sim/dsim-gateway.ts).
// Not run: its frame meter (no raw socket bytes), backpressure (the net has no buffers).
//
// The bank and the operator (S4): each business server is also the bank (biz-server/bank.ts,
// its real SqliteBankStore in biz.sqlite), in the run's mode (1 or 2); it asks the real operator
// server (operator-server/server.ts without its HTTPS port: `port: null`, its request handler
// served over the simulated network) through the real OperatorClient (OAuth2 token, CAMARA
// calls; its `post` seam carries each request). TLS is modelled by what it guarantees: a
// request or answer changed on the way is a reset connection, never a changed answer (a digest
// over each message). Each phone has a SIM card the operator issued and a person who registers
// at the bank, logs in, and re-binds after the line moved to a new card (a SIM swap the run's
// plan makes at the operator and in the phone's slot).
import { equalBytes } from '@noble/ciphers/utils.js';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { AsyncLocalStorage } from 'node:async_hooks';
import { MasterKeyring } from '../protocol/keys.ts';
import { encodeEnvelope, MsgType, type Mechanism } from '../protocol/messages.ts';
import { Limits } from '../protocol/limits.ts';
import { SqliteRegStore } from '../reg-server/store.ts';
import { SqliteBizStore } from '../biz-server/store.ts';
import { RegServerSession } from '../reg-server/session.ts';
import { withTablesCache } from '../reg-server/tables-cache.ts';
import { BizServerSession } from '../biz-server/session.ts';
import { HealthPoller, withHealthView } from '../reg-server/health.ts';
import type { RotationStep } from '../reg-server/rotation.ts';
import { bizAdminHandlers } from '../biz-server/server.ts';
import { adminHandler, AdminClient } from '../server-kit/admin-rpc.ts';
import { adminOps, POLICY_ADMIN_LIMITS } from '../server-kit/admin-messages.ts';
import { TableSource } from '../server-kit/table-source.ts';
import { startPolicyServer } from '../policy-server/server.ts';
import { readPolicyKey } from '../policy-server/keys.ts';
import type { CborLimits } from '../protocol/limits.ts';
import { attachLinkServer, linkKeyFor } from '../server-kit/link.ts';
import { startGateway, type Gateway } from '../gateway/gateway.ts';
import { adminCall, type SiteAttacks } from '../server-kit/admin-messages.ts';
import type { AttackTable } from '../protocol/attack-table.ts';
import { DsimSocket, linkUrlOf, linkTargetOf } from './dsim-gateway.ts';
import { replayCacheFor, keepOldPasswords, type Mutant } from '../server-kit/mutant.ts';
import type { Logger, LogField } from '../server-kit/log.ts';
import type { SessionFactory, SessionTimers, SessionTransport } from '../server-kit/session.ts';
import { DEFAULT_TOPOLOGY, DEFAULT_INITIAL_TABLE, factoryPolicyFor } from '../deploy/config.ts';
import { ensureKeyFile } from '../server-kit/keyfiles.ts';
import { stateFiles } from '../deploy/config.ts';
import { enrollDevices, accountsInStore } from '../deploy/enroll.ts';
import { buildImage } from '../firmware/factory/image.ts';
import { makePhone, replug, tableOf, type Phone } from '../firmware/phone.ts';
import { defaultDeviceConfig, type DeviceConfig } from '../firmware/device.ts';
import type { DeviceMutant } from '../firmware/mutant.ts';
import { Scheduler, simRng } from '../firmware/hal/sim-hal.ts';
import type { HalBase, Network, Rng, TraceEvent } from '../firmware/hal/hal.ts';
import { fusesOf, vendorKeyOf, phoneIp, TraceHost } from './world.ts';
import type { Fuses } from '../firmware/flash/fuses.ts';
import { DsimNet } from './dsim-net.ts';
import { Readable } from 'node:stream';
import { createHash, scryptSync, timingSafeEqual } from 'node:crypto';
import { SqliteBankStore, type BankStore } from '../biz-server/bank-store.ts';
import { Bank, type OperatorApi } from '../biz-server/bank.ts';
import { PasswordHasher } from '../biz-server/password-verifier.ts';
import { OperatorClient } from '../server-kit/operator-client.ts';
import { BoundedPostError } from '../server-kit/bounded-post.ts';
import { ALL_OPERATOR_SCOPES } from '../server-kit/operator-api.ts';
import { startOperatorServer, type OperatorServer } from '../operator-server/server.ts';
import { SqliteOperatorStore } from '../operator-server/store.ts';
import { secretHash } from '../operator-server/tokens.ts';
import { SimSlot, type SimCardSpec } from '../firmware/hal/sim-card.ts';
import type { PersonEntry } from '../firmware/hal/person.ts';
import type { BankMode } from '../protocol/bank-messages.ts';
import { TimeoutError } from '../protocol/errors.ts';
import { storyCard, storyNumber } from './bank-scenarios.ts';
import { SIM_EPOCH_MS } from '../firmware/hal/sim-hal.ts';
import { currentRecord } from './held-secrets.ts';

/** The gateway's name on the simulated network, and the origin phones dial. */
export const GATEWAY = 'gateway';
const ORIGIN = 'ws://gateway.sim';
export const REGS = [...DEFAULT_TOPOLOGY.regs] as string[];
export const BIZ = DEFAULT_TOPOLOGY.biz.map((b) => b.name);
export const SERVERS = [...REGS, ...BIZ];
/** The security policy server (S3.5-S3.11): not a gateway dest; the registration servers poll its table. */
export const POLICY = 'policy';
/** The mobile operator (S4.4, S4.6, SIM swap): the banks (the business servers) ask it. */
export const OPERATOR = 'operator';
/** Every server a fault may crash, stall or skew. */
export const ALL_SERVERS = [...SERVERS, POLICY, OPERATOR];
/** The bank's OAuth2 client at the operator. */
const BANK_CLIENT_ID = 'bank';
/** The deadline of one operator call of the bank's client (server-kit/operator-client.ts default). */
export const OPERATOR_CALL_MS = 2_000;
/** The attack period T in the simulation (60 s in a deployment): tables change within a run. */
export const SIM_POLICY_PERIOD_MS = 10_000;
/** How often a registration server polls the latest table (deploy default). */
const TABLE_POLL_MS = 5_000;
/** The most phones a run has (their images and fuses are made once per process). */
export const MAX_PHONES = 3;
/** Health poll period of the registration servers, virtual ms (reg-server/server.ts default). */
const HEALTH_MS = 2_000;
/**
 * How long an issued, unused pending password stays usable, virtual ms: short (the deployment
 * default is 30 days) so that runs reach the expiry paths; the rotation rules must hold for any.
 */
export const SIM_PENDING_TTL_MS = 15_000;
/** The admin calls' deadline (reg-server/server.ts default). */
const ADMIN_TIMEOUT_MS = 3_000;

/**
 * What every run shares, made once per process from a fixed seed: the keys, the base image, the
 * phones' fuses, and store files with the topology and the phones enrolled (copied per run).
 * A run's own seed then decides everything that happens.
 */
interface Template {
  dir: string;
  ring: MasterKeyring;
  adminKey: Uint8Array;
  storageKey: Uint8Array;
  policyKey: Uint8Array;
  base: Uint8Array;
  fuses: Fuses[];
  serials: string[];
  users: string[];
  /** The root of the gateway <-> server link keys (server-kit/link.ts linkKeyFor). */
  linkRoot: Uint8Array;
  /** The operator's bearer-token key and the bank's client secret there. */
  operatorTokenKey: Uint8Array;
  bankClientSecret: string;
}
let template: Template | null = null;
const WORLD_SEED = 14;

async function makeTemplate(): Promise<Template> {
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-dsim-template-'));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  const rng = simRng(WORLD_SEED, 'dsim keys');
  const ring = new MasterKeyring([[1, rng(32)]]);
  const adminKey = rng(32);
  const storageKey = rng(32);
  ensureKeyFile(stateFiles(dir).policyKey, () => rng(32));
  const { image: base, enrollment } = buildImage({
    serial: 'SN-TEMPLATE', fuses: fusesOf(WORLD_SEED, -1), keyring: ring, vendorKey: vendorKeyOf(WORLD_SEED),
    regPrimary: `${ORIGIN}/reg-primary`, regBackup: `${ORIGIN}/reg-backup`, policy: factoryPolicyFor(dir),
  });
  const reg = new SqliteRegStore(join(dir, 'reg.sqlite'));
  const biz = new SqliteBizStore(join(dir, 'biz.sqlite'), storageKey);
  const serials = Array.from({ length: MAX_PHONES }, (_, i) => `SN-DSIM-${String(i).padStart(6, '0')}`);
  let users: string[];
  try {
    reg.syncTopology(bizRecords(), DEFAULT_TOPOLOGY.regions);
    reg.userNameKey(rng(32));
    const records = serials.map((serial) => ({ serial, keyVersion: ring.current, firmwareMeasurement: enrollment.firmwareMeasurement, firmwareVersion: enrollment.firmwareVersion }));
    users = (await enrollDevices({ reg, accounts: accountsInStore(biz) }, records)).map((r) => r.user);
  } finally {
    // Closed, so the files are complete (WAL checkpointed) before each run copies them.
    reg.close();
    biz.close();
  }
  const fuses = serials.map((_, i) => fusesOf(WORLD_SEED, i));
  // Drawn last: every key drawn before it is what it was before the link keys existed.
  const linkRoot = rng(32);
  // The operator (S4): every phone's line on its first card, and the bank enrolled as its client (all scopes).
  const operatorTokenKey = rng(32);
  const bankClientSecret = Buffer.from(rng(24)).toString('base64url');
  const op = new SqliteOperatorStore(join(dir, 'operator.sqlite'));
  try {
    for (let i = 0; i < MAX_PHONES; i++) await op.createSubscription(lineOf(i).number, lineOf(i).card, SIM_EPOCH_MS - 86_400_000);
    await op.putClient(BANK_CLIENT_ID, secretHash(bankClientSecret), [...ALL_OPERATOR_SCOPES], SIM_EPOCH_MS - 86_400_000);
  } finally {
    op.close();
  }
  return { operatorTokenKey, bankClientSecret, linkRoot, dir, ring, adminKey, storageKey, policyKey: readPolicyKey(stateFiles(dir).policyKey).privateKey, base, fuses, serials, users };
}

async function getTemplate(): Promise<Template> {
  template ??= await makeTemplate();
  return template;
}

/** Phone i's line: its number, its first card (no number written on it: mode 2 asks the operator) and the card a SIM swap moves it to. */
export function lineOf(i: number): { number: string; card: SimCardSpec; next: SimCardSpec } {
  return { number: storyNumber(100 + i), card: storyCard(100 + i), next: storyCard(200 + i) };
}

/**
 * The bank's password hasher in the simulation: the real verifier format and checks, at the
 * lowest parameters it accepts (N = 2^10, r = 1, p = 1), computed synchronously: the real one
 * runs scrypt on libuv's thread pool, whose completion would land at a virtual time that
 * depends on the machine's load, not on the seed.
 */
class SimHasher extends PasswordHasher {
  static readonly P = { ln: 10, r: 1, p: 1 };
  /** Set while the base class's constructor runs (see hash). */
  static #constructing = false;
  #dummy: string | null = null;
  /**
   * `memo`: scrypt's outputs of this run by (parameters, salt, password), shared by the run's
   * banks: a person logs in with the same password against the same verifier at every plug-in,
   * and scrypt is a pure function, so the same inputs give the same key without computing it.
   */
  static create(memo: Map<string, Buffer>): SimHasher {
    SimHasher.#constructing = true;
    try {
      return new SimHasher(memo);
    } finally {
      SimHasher.#constructing = false;
    }
  }
  private constructor(private readonly memo: Map<string, Buffer>) {
    super(SimHasher.P, 1_000_000, 1_000_000);
  }
  override async hash(password: string): Promise<string> {
    if (SimHasher.#constructing) {
      // The base class's own dummy verifier, which only its verify (overridden below, with a
      // dummy of its own) reads: the random bytes it takes are drawn as before (the salt here,
      // the password by the base), so the seed's stream does not move; its scrypt is not run.
      globalThis.crypto.getRandomValues(new Uint8Array(16));
      return '$scrypt$unread';
    }
    return SimHasher.make(password);
  }
  static make(password: string): string {
    const salt = globalThis.crypto.getRandomValues(new Uint8Array(16));
    const k = scryptSync(Buffer.from(password, 'utf8'), salt, 32, { N: 1 << SimHasher.P.ln, r: SimHasher.P.r, p: SimHasher.P.p });
    const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64').replace(/=+$/, '');
    return `$scrypt$ln=${SimHasher.P.ln},r=${SimHasher.P.r},p=${SimHasher.P.p}$${b64(salt)}$${b64(k)}`;
  }
  override async verify(password: Uint8Array | string, stored: string | null): Promise<boolean> {
    const v = stored ?? (this.#dummy ??= SimHasher.make('dsim dummy password'));
    const m = /^\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/]{22})\$([A-Za-z0-9+/]{43})$/.exec(v);
    if (!m) throw new Error('dsim: not a $scrypt$ verifier');
    const pw = typeof password === 'string' ? Buffer.from(password, 'utf8') : Buffer.from(password);
    const key = `${m[1]},${m[2]},${m[3]},${m[4]},${pw.toString('hex')}`;
    let k = this.memo.get(key);
    if (!k) this.memo.set(key, (k = scryptSync(pw, Buffer.from(m[4]!, 'base64'), 32, { N: 1 << Number(m[1]), r: Number(m[2]), p: Number(m[3]), maxmem: 256 * 1024 * 1024 })));
    return timingSafeEqual(k, Buffer.from(m[5]!, 'base64')) && stored !== null;
  }
}

/** TLS in the model: what it guarantees, a message changed on the way is refused whole (a digest first; null when it does not match). */
function sealMsg(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(32 + body.length);
  out.set(createHash('sha256').update(body).digest());
  out.set(body, 32);
  return out;
}
function openMsg(b: Uint8Array): Uint8Array | null {
  if (b.length < 32) return null;
  const body = b.subarray(32);
  return Buffer.compare(createHash('sha256').update(body).digest(), Buffer.from(b.subarray(0, 32))) === 0 ? Uint8Array.from(body) : null;
}

/** One HTTP request into the operator server's real handler (operator-server/server.ts), without a socket. */
function callOperator(srv: OperatorServer, r: { p: string; h: Record<string, string>; b: string }): Promise<{ status: number; body: Uint8Array }> {
  return new Promise((resolve) => {
    const body = Buffer.from(r.b, 'utf8');
    const headers: Record<string, string> = { 'content-length': String(body.length) };
    for (const [k, v] of Object.entries(r.h)) headers[k.toLowerCase()] = v;
    const req = Object.assign(Readable.from([body]), { url: r.p, method: 'POST', headers, socket: { destroySoon() {} } });
    let status = 0;
    const res = {
      headersSent: false,
      writeHead(st: number) {
        status = st;
        this.headersSent = true;
        return this;
      },
      end(text: string) {
        resolve({ status, body: Buffer.from(text, 'utf8') });
      },
      once() {
        return this;
      },
    };
    void srv.handle(req as never, res as never);
  });
}

/**
 * TEST ONLY: a rule of the bank broken on purpose, for the S4 invariants' tests.
 *   'stale-swap-date'   the bank keeps the operator's first SIM-swap answer for a line and uses
 *                       it ever after (a stale answer trusted), and does not see which card its
 *                       accounts are bound to (bindingsOf without the ICCID rows): a card change
 *                       goes unnoticed
 *   'rebind-keeps-old'  a re-binding adds the new card's identifiers without removing the old
 *                       ones: the account ends bound to two cards
 */
export type BankMutant = 'stale-swap-date' | 'rebind-keeps-old';

/**
 * TEST ONLY: a rule of S3 broken on purpose, for the attack-in-table invariant's test.
 *   'report-wrong-mech'  the gateway's period report puts every attack of a site under
 *                        'fingerprint', whatever mechanism the openings stated (S3.5's per-mechanism counts)
 */
export type S3Mutant = 'report-wrong-mech';

/**
 * TEST ONLY: a rule of the phone broken on purpose in the simulation (the firmware stays as
 * shipped: the break wraps the device's push handler), for no-half-validated-frame's test.
 *   'keep-unchecked-push'  a table the gateway pushed (S3.11) is written into the saved login
 *                          as it came, without its signature, version or expiry checked
 *                          (firmware/policy-table.ts keepPushedTable skipped)
 */
export type PhoneMutant = 'keep-unchecked-push';

function bizRecords() {
  return DEFAULT_TOPOLOGY.biz.map((b) => ({ name: b.name, region: b.region, url: `${ORIGIN}/${b.name}`, adminUrl: `http://${b.name}.sim/admin` }));
}

/** A logger into the run's trace (only when tracing: the lines cost). */
function partyLogger(party: string, out: ((line: string) => void) | null): Logger {
  const emit = (level: string) => (msg: string, f?: Record<string, LogField>) => out?.(`${party} ${level} ${msg}${f && Object.keys(f).length ? ' ' + JSON.stringify(f) : ''}`);
  return { debug: () => {}, info: emit('info'), warn: emit('warn'), error: emit('error') };
}

/**
 * TEST ONLY: a rule of the business store broken on purpose, for the store-integrity
 * invariant's test. 'pending-not-above-current': an installed pending generation is numbered
 * as the current one (docs/protocol.md §10: "a pending generation is always above the current one").
 */
export type StoreMutant = 'pending-not-above-current';

function mutateBizStore(store: SqliteBizStore, m: StoreMutant | undefined): void {
  if (m !== 'pending-not-above-current') return;
  const install = store.installPending.bind(store);
  store.installPending = (user, ...rest) => {
    const r = install(user, ...rest);
    if (r.installed) store.db.prepare('UPDATE accounts SET pending_gen = current_gen WHERE user = ?').run(user);
    return r;
  };
}

/** One incarnation of a server: everything a crash throws away. */
interface Incarnation {
  alive: boolean;
  n: number;
  closeStores(): void;
  sessionStore?: SqliteBizStore;
  regStore?: SqliteRegStore;
  bizStore?: SqliteBizStore;
}

export interface WorldOptions {
  seed: number;
  phones: number;
  /** TEST ONLY: every server breaks this rule (server-kit/mutant.ts). */
  mutant?: Mutant;
  /** TEST ONLY: every phone breaks this rule (firmware/mutant.ts). */
  deviceMutant?: DeviceMutant;
  /** TEST ONLY: the business store breaks this rule (StoreMutant). */
  storeMutant?: StoreMutant;
  /** The run's event log: every line (null: none kept, faster). */
  log: ((line: string) => void) | null;
  /** TEST ONLY: the real gateway holds link keys from another root than the servers' (every link refused). */
  linkKeyMismatch?: boolean;
  /** The banks' mode (S4.3 mode 1, S4.4 mode 2; default 2). */
  bankMode?: BankMode;
  /** TEST ONLY: the banks break this rule (BankMutant). */
  bankMutant?: BankMutant;
  /** TEST ONLY: the gateway's period report breaks this rule (S3Mutant). */
  s3Mutant?: S3Mutant;
  /** TEST ONLY: every phone breaks this rule (PhoneMutant). */
  phoneMutant?: PhoneMutant;
  /**
   * TEST ONLY: after every frame a phone sends it, the gateway pushes the newest table it holds
   * to every connected device (S3.11), so pushes land inside sessions. A deployment pushes only
   * when the policy server publishes a new table (every 10 s here), which a seed's short
   * sessions rarely meet: no-half-validated-frame's test needs corrupted pushes mid-session.
   */
  pushEveryFrame?: boolean;
}

/** Where the person of a phone is with the bank: what they ask for at the next plug-in. */
export type BankState = 'new' | 'bound' | 'rebind';

export interface SimPhone {
  index: number;
  party: string;
  ip: string;
  serial: string;
  user: string;
  phone: Phone;
  host: TraceHost;
  hal(): HalBase;
  /** Its SIM card slot (S4.2) and line; the virtual time of the line's card change, if any. */
  slot: SimSlot;
  line: ReturnType<typeof lineOf>;
  swappedAt: number | null;
  /** The person at it (S4.1): their bank login name and password (a needle: never on the wire in clear). */
  person: { name: string; password: string };
  bank: BankState;
}

/**
 * One answer of the operator a bank's login used (card-info or sim-swap), as the operator produced
 * it: when (virtual ms) and how many of the run's SIM swaps (World.swapLog) had happened by then.
 * An answer is delivered later than that (the network, a stalled operator): the bank acts on the
 * truth of that moment, not of its own.
 */
export interface OperatorAnswer { path: string; at: number; swaps: number }

/** A bank answer let a login in (BankPage), as the bank decided it: the S4 invariants' hook. */
export interface BankPageEvent {
  server: string;
  deviceUser: string;
  name: string;
  mode: BankMode;
  /** The operator's answers this login used (mode 2), in the order they reached the bank. */
  answers: OperatorAnswer[];
}

/** A SIM swap of the run, as the operator's staff made it: the line, its card before and after, when (virtual ms). */
export interface SwapRecord { number: string; from: string; to: string; at: number }

/** The operator answers each bank login uses, collected across the login's awaits (the bank's calls carry no login id). */
const loginAnswers = new AsyncLocalStorage<OperatorAnswer[]>();

/** A frame on its way, for the invariants: the net's observer and its deliveries. */
export type FrameHook = (e: { conn: number; from: string; to: string; sent: Uint8Array; bytes: Uint8Array; fate: string; kind: string }) => void;

export class World {
  readonly sched: Scheduler;
  readonly net: DsimNet;
  readonly dir: string;
  readonly phones: SimPhone[] = [];
  readonly incarnations = new Map<string, Incarnation>();
  /** Per-party clock offsets (skew), ms. */
  readonly skew = new Map<string, number>();
  /** Parties whose next store write throws inside its transaction (a crash point). */
  readonly crashInTx = new Set<string>();
  /** Registration servers that crash when a rotation reaches this step (reg-server/rotation.ts pauseAt). */
  readonly crashAtStep = new Map<string, RotationStep>();
  /** Secrets handed out by a rotation (the registration servers' rng draws): needles for the wire scan. */
  readonly secrets: Uint8Array[] = [];
  crashes = 0;
  restarts = 0;
  /** Store integrity checks run (after every restart and at the end). */
  integrityChecks = 0;
  onWire: FrameHook = () => {};
  onDeliver: (conn: number, to: string, bytes: Uint8Array) => void = () => {};
  /** Told after every restart (the store-integrity invariant). */
  onRestart: (party: string) => void = () => {};
  /** Told when a bank lets a login in (the bank-swap-confirmed invariant). */
  onBankPage: (e: BankPageEvent) => void = () => {};
  /** Told when a phone has handled a table the gateway pushed (the no-half-validated-frame invariant): the table it was handed, and whether its saved record changed while it handled it. */
  onTablePush: (p: SimPhone, table: Uint8Array, recordChanged: boolean) => void = () => {};
  /** The run's SIM swaps, in the order they happened (an OperatorAnswer counts how many came before it). */
  readonly swapLog: SwapRecord[] = [];
  /** The operator's answer to each admin call it served (by the net's call number), until the caller takes it. */
  readonly #operatorAnswered = new Map<number, { at: number; swaps: number }>();
  /** Operator calls in flight, failed at the end of the run so that nothing waits on a real timer. */
  readonly #operatorCalls = new Set<(e: Error) => void>();
  /** The real gateway (gateway/gateway.ts), on the simulated network. */
  gateway!: Gateway;
  /** Tables the policy server published that the real gateway pushed, and to how many devices. */
  tablePushes: { version: number; devices: number; table: Uint8Array }[] = [];
  /** The gateways' period reports the policy server took (S3.5), as counted, and when the answer came back (virtual ms). */
  readonly attackReports: { periodId: number; sites: SiteAttacks[]; ackAt: number }[] = [];
  /** The tables the policy server published (S3.10), with the period whose statistics they state + 1, and when. */
  readonly policyTables: { periodId: number; version: number; at: number; table: AttackTable }[] = [];
  #serverRng: Rng;
  #t!: Template;
  /** scrypt's outputs of this run (SimHasher): the banks' verifications of one password against one verifier. */
  readonly #scryptMemo = new Map<string, Buffer>();

  private constructor(readonly o: WorldOptions) {
    // The simulated date (SIM_EPOCH_MS at virtual 0): every clock of the run reads it (sim/dsim.ts installs it as Date.now).
    this.sched = new Scheduler();
    this.dir = mkdtempSync(join(tmpdir(), `usbphone-dsim-${o.seed}-`));
    this.#serverRng = simRng(o.seed, 'servers');
    this.net = new DsimNet(this.sched, simRng(o.seed, 'net'), (e) => {
      this.onWire(e);
      if (o.pushEveryFrame && e.kind === 'frame' && e.to === GATEWAY && e.from.startsWith('phone-')) this.sched.at(0, () => this.#pushAgain());
    }, (l) => this.log(l));
    this.net.onDeliver = (conn, to, bytes) => this.onDeliver(conn, to, bytes);
  }

  /** Makes what every run shares (once per process), before a run seeds the platform's randomness. */
  static async prepare(): Promise<void> {
    await getTemplate();
  }

  static async create(o: WorldOptions): Promise<World> {
    const w = new World(o);
    w.#t = await getTemplate();
    copyFileSync(join(w.#t.dir, 'reg.sqlite'), join(w.dir, 'reg.sqlite'));
    copyFileSync(join(w.#t.dir, 'biz.sqlite'), join(w.dir, 'biz.sqlite'));
    copyFileSync(join(w.#t.dir, 'operator.sqlite'), join(w.dir, 'operator.sqlite'));
    await w.#gateway();
    // As the stack starts them: the policy, operator and business servers first, so the registration servers' first polls find them.
    for (const s of [POLICY, OPERATOR, ...BIZ, ...REGS]) w.start(s);
    for (let i = 0; i < o.phones; i++) w.#phone(i);
    return w;
  }

  log(line: string): void {
    this.o.log?.(`${String(this.sched.now()).padStart(7)} ${line}`);
  }

  /** The wall clock of `party`: the virtual date plus its skew. */
  clockOf(party: string): () => number {
    return () => this.sched.epochAtStartMs + this.sched.now() + (this.skew.get(party) ?? 0);
  }

  /** Session step timers on the scheduler, fenced to one incarnation. */
  #timers(inc: Incarnation): SessionTimers {
    return {
      setTimeout: (fn, ms) => this.sched.at(ms, () => inc.alive && fn()),
      clearTimeout: (h) => {
        if (h) (h as { dead: boolean }).dead = true;
      },
    };
  }

  /** An admin client of `from` for `to` over the simulated network, fenced to `inc`. */
  #adminClient(from: string, to: string, inc: Incarnation, limits?: CborLimits): AdminClient {
    return new AdminClient({
      target: to, url: `http://${to}.sim/admin`, key: this.#t.adminKey, timeoutMs: ADMIN_TIMEOUT_MS, now: this.clockOf(from), limits,
      post: (body, timeoutMs) => (inc.alive ? this.net.adminPost(from, to, body, timeoutMs).then((r) => (inc.alive ? r : new Promise<never>(() => {}))) : new Promise<never>(() => {})),
    });
  }

  /**
   * Serves `factory`'s sessions behind the real link server (server-kit/link.ts): each simulated
   * connection to `name` is a gateway link, authenticated and tagged; its sessions fenced to `inc`.
   */
  #serve(name: string, inc: Incarnation, factory: SessionFactory): void {
    const fenced: SessionFactory = (t) => {
      const h = factory({
        ...t,
        send: (f) => {
          if (inc.alive) t.send(f);
        },
        close: (code, reason) => {
          if (inc.alive) t.close(code, reason);
        },
      });
      return {
        onFrame: (f) => {
          if (inc.alive) h.onFrame(f);
        },
        onClose: () => {
          if (inc.alive) h.onClose();
        },
      };
    };
    const link = attachLinkServer(null, { name, key: linkKeyFor(this.#t.linkRoot, name), timers: this.#timers(inc) }, fenced);
    this.net.listen(name, (end, meta) => {
      if (!inc.alive) return end.close(1006, 'connection lost');
      link.accept(new DsimSocket(end), meta.from);
    });
  }

  /**
   * The crash point of `party`'s store connection `db`: once armed (armCrashInTx), its next
   * write to `tables` throws inside the transaction, and the party is down from that instant.
   * The triggers go onto the connection only when armed (now, if it already is, or at
   * armCrashInTx): most runs arm none, and a trigger on every write of every store cost each
   * run its set-up (eight CREATE TEMP TRIGGERs per start) and a function call per write.
   */
  #crashPoint(party: string, db: SqliteRegStore['db'], tables: string[]): void {
    let installed = false;
    const install = () => {
      if (installed || !db.open) return;
      installed = true;
      db.function('dsim_crash_point', () => {
        if (!this.crashInTx.has(party)) return 0;
        this.crashInTx.delete(party);
        this.log(`${party} CRASH inside a store transaction`);
        this.crash(party);
        // No stack: the server logs the error it gets, and a trace must not hold the checkout's
        // path or this file's line numbers (a seed's trace is the same in any checkout).
        const crash = new Error('dsim: crashed inside a store transaction');
        crash.stack = `Error: ${crash.message}`;
        throw crash;
      });
      for (const t of tables) {
        for (const op of ['INSERT', 'UPDATE']) db.exec(`CREATE TEMP TRIGGER dsim_crash_${t}_${op.toLowerCase()} AFTER ${op} ON main.${t} BEGIN SELECT dsim_crash_point(); END`);
      }
    };
    this.#crashPoints.set(party, install);
    if (this.crashInTx.has(party)) install();
  }
  /** Each store-holding server's crash-point installer, for its live connection. */
  readonly #crashPoints = new Map<string, () => void>();

  /** The fault crash-in-tx: `party`'s next store write throws inside its transaction (#crashPoint). */
  armCrashInTx(party: string): void {
    this.crashInTx.add(party);
    this.#crashPoints.get(party)?.();
  }

  /** Starts (or restarts) a server from its files. */
  start(name: string): void {
    const prev = this.incarnations.get(name);
    const inc: Incarnation = { alive: true, n: (prev?.n ?? 0) + 1, closeStores: () => {} };
    this.incarnations.set(name, inc);
    this.net.down.delete(name);
    const log = partyLogger(name, this.o.log ? (l) => this.log(l) : null);
    const sessionOpts = { name, stepTimeoutMs: Limits.stepTimeoutMs, log, mutant: this.o.mutant, timers: this.#timers(inc) };
    if (REGS.includes(name)) {
      const store = new SqliteRegStore(join(this.dir, 'reg.sqlite'));
      inc.regStore = store;
      inc.closeStores = () => store.close();
      this.#crashPoint(name, store.db, ['devices']);
      const clients = new Map<string, AdminClient>();
      const adminClient = (s: { name: string }) => {
        let c = clients.get(s.name);
        if (!c) clients.set(s.name, (c = this.#adminClient(name, s.name, inc)));
        return c;
      };
      const poller = new HealthPoller(store, adminClient, log, 0);
      const poll = () => {
        if (!inc.alive) return;
        void poller.poll();
        this.sched.at(HEALTH_MS, poll);
      };
      poll();
      // The rotation's secrets from the run's rng, each remembered as a needle (no-secret-on-wire).
      const rng: Rng = (n) => {
        const b = this.#serverRng(n);
        if (n === 32) this.secrets.push(Uint8Array.from(b));
        return b;
      };
      // A crash in the middle of a rotation: at the step the schedule names, the process dies there.
      const pauseAt = (step: RotationStep): void | Promise<void> => {
        if (!inc.alive) return new Promise(() => {});
        if (this.crashAtStep.get(name) !== step) return;
        this.crashAtStep.delete(name);
        this.log(`${name} CRASH at rotation step ${step}`);
        this.crash(name);
        return new Promise(() => {});
      };
      // S3.11: the latest signed table, polled from the policy server, goes into every credential reply.
      const tables = new TableSource({ client: this.#adminClient(name, POLICY, inc, POLICY_ADMIN_LIMITS), log });
      const pollTable = () => {
        if (!inc.alive) return;
        void tables.refresh();
        this.sched.at(TABLE_POLL_MS, pollTable);
      };
      pollTable();
      const deps = {
        // As reg-server/server.ts wires it: the tables cache under the health view (decision 141).
        store: withHealthView(withTablesCache(store), poller), ring: this.#t.ring, replay: replayCacheFor(this.o.mutant), adminClient, pendingTtlMs: SIM_PENDING_TTL_MS, log, rng, now: this.clockOf(name), pauseAt,
        table: () => tables.current(), tableVersion: () => tables.version(),
      };
      this.#serve(name, inc, (t) => new RegServerSession(t, sessionOpts, deps));
    } else if (name === POLICY) {
      // Its period timer on the scheduler (fenced), its store a file of its own; no HTTP port: its
      // admin operations are served over the simulated network by the real admin endpoint.
      const clock = {
        now: this.clockOf(name),
        setTimer: (fn: () => void, ms: number) => {
          const h = this.sched.at(ms, () => inc.alive && fn());
          return () => void (h.dead = true);
        },
      };
      const ready = startPolicyServer({
        name, host: '127.0.0.1', adminPort: null, adminKey: this.#t.adminKey, dbFile: join(this.dir, 'policy.sqlite'), privateKey: this.#t.policyKey,
        initialTable: DEFAULT_INITIAL_TABLE, periodMs: SIM_POLICY_PERIOD_MS, clock,
        onTable: (p) => {
          if (inc.alive) this.policyTables.push({ periodId: p.periodId, version: p.table.version, at: this.sched.now(), table: p.table });
        },
      });
      ready.catch(() => {});
      inc.closeStores = () => void ready.then((p) => p.store.close(), () => {});
      let handle: ((body: Uint8Array) => Promise<{ status: number; body?: Uint8Array }>) | null = null;
      this.net.serveAdmin(name, async (body) => {
        if (!inc.alive) return new Promise(() => {});
        handle ??= adminHandler({ key: this.#t.adminKey, name, now: this.clockOf(name), limits: POLICY_ADMIN_LIMITS, ops: (await ready).ops });
        return handle(body);
      });
    } else if (name === OPERATOR) {
      // The real operator server without its HTTPS port; its handler served over the simulated
      // network, each message sealed as TLS would (a changed one is a reset connection: status 0).
      const ready = startOperatorServer({ name, host: 'operator.sim', port: null, tls: null, dbFile: join(this.dir, 'operator.sqlite'), tokenKey: this.#t.operatorTokenKey, now: this.clockOf(name) });
      ready.catch(() => {});
      inc.closeStores = () => void ready.then((o) => o.store.close(), () => {});
      this.net.serveAdmin(name, async (bytes, call) => {
        if (!inc.alive) return new Promise(() => {});
        const msg = openMsg(bytes);
        if (!msg) return { status: 0 };
        const srv = await ready;
        const q = JSON.parse(Buffer.from(msg).toString('utf8')) as { p: string; h: Record<string, string>; b: string };
        const r = await callOperator(srv, q);
        this.log(`${name} ${q.p} -> ${r.status}`);
        if (!inc.alive) return new Promise(() => {});
        // The first answer to a call is the one that travels back (a duplicate's meets a closed socket).
        if (!this.#operatorAnswered.has(call)) this.#operatorAnswered.set(call, { at: this.sched.now(), swaps: this.swapLog.length });
        return { status: r.status, body: sealMsg(r.body) };
      });
    } else {
      const store = new SqliteBizStore(join(this.dir, 'biz.sqlite'), this.#t.storageKey);
      inc.bizStore = store;
      inc.closeStores = () => store.close();
      this.#crashPoint(name, store.db, ['accounts', 'bank_accounts', 'bank_bindings']);
      mutateBizStore(store, this.o.storeMutant);
      const sessionStore = this.o.mutant === 'keep-old-password' ? keepOldPasswords(store) : store;
      inc.sessionStore = sessionStore;
      let sessions = 0;
      const region = DEFAULT_TOPOLOGY.biz.find((b) => b.name === name)!.region;
      const handle = adminHandler({ key: this.#t.adminKey, name, now: this.clockOf(name), ops: adminOps(bizAdminHandlers(store, log, () => ({ healthy: true, sessions, region }))) });
      this.net.serveAdmin(name, (body) => (inc.alive ? handle(body) : new Promise(() => {})));
      const deps = { store: sessionStore, replay: replayCacheFor(this.o.mutant), now: this.clockOf(name), bank: this.#bank(name, inc, store, log) };
      this.#serve(name, inc, (t) => {
        sessions++;
        return new BizServerSession(t, sessionOpts, deps);
      });
    }
    if (prev) {
      this.restarts++;
      this.log(`${name} RESTART (incarnation ${inc.n})`);
      this.onRestart(name);
    }
  }

  /**
   * The bank of business server `name` (S4): the real Bank over its SqliteBankStore (the
   * business store's database), asking the operator through the real OperatorClient whose
   * requests travel the simulated network. The bank's own deadline is left to the client's
   * (OPERATOR_CALL_MS per call, virtual): the bank's is a real timer.
   */
  #bank(name: string, inc: Incarnation, store: SqliteBizStore, log: Logger): Bank {
    const sqliteBankStore = new SqliteBankStore(store.db, this.#t.storageKey);
    // stale-swap-date: the bank's own record of the bound card is hidden from it too (its ICCID
    // rows), or the bank would refuse the changed card by that record (Bank #checkBoundCard)
    // without asking the operator's date at all, and the mutant would break no rule.
    const bankStore: BankStore = this.o.bankMutant === 'stale-swap-date'
      ? new Proxy(sqliteBankStore, {
        get: (t, k) => {
          if (k === 'bindingsOf') return (accountNo: string) => t.bindingsOf(accountNo).filter((b) => b.kind !== 'iccid');
          const v = Reflect.get(t, k, t) as unknown;
          // The store's methods read its private fields: called on the store, not the proxy.
          return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
        },
      })
      : sqliteBankStore;
    if (this.o.bankMutant === 'rebind-keeps-old') {
      sqliteBankStore.rebind = (accountNo, ids, deviceUser, now) => {
        for (const i of ids) store.db.prepare('INSERT OR IGNORE INTO bank_bindings (id_kind, id_value, account_no, device_user, bound_at) VALUES (?, ?, ?, ?, ?)').run(i.kind, i.value, accountNo, deviceUser, now);
        return 'ok';
      };
    }
    const client = new OperatorClient({
      url: 'https://operator.sim', ca: '', clientId: BANK_CLIENT_ID, clientSecret: this.#t.bankClientSecret, timeoutMs: OPERATOR_CALL_MS,
      post: (r) => {
        if (inc.alive && r.timeoutMs <= 0) return Promise.reject(new BoundedPostError('timeout', undefined, 'no time left'));
        const bytes = sealMsg(new TextEncoder().encode(JSON.stringify({ p: r.path, h: r.headers, b: r.body })));
        // The login this call is made for (none for a registration or a re-binding).
        const used = loginAnswers.getStore();
        // Every call is registered until it settles: one of a crashed incarnation never does
        // within the run, and the run's end fails it (the bank's real deadline timer ends with it).
        return new Promise((resolve, reject) => {
          const fail = (e: Error) => {
            this.#operatorCalls.delete(fail);
            reject(e);
          };
          this.#operatorCalls.add(fail);
          if (!inc.alive) return;
          this.net.adminPost(name, OPERATOR, bytes, r.timeoutMs).then((res) => {
            if (!inc.alive) return;
            this.#operatorCalls.delete(fail);
            const body = res.status === 0 ? null : openMsg(res.buf);
            const answered = this.#operatorAnswered.get(res.call);
            this.#operatorAnswered.delete(res.call);
            if (!body) reject(new BoundedPostError('lost', 'ECONNRESET', 'connection reset (a record failed its check)'));
            else {
              if (used && answered && !r.path.startsWith('/oauth2/')) used.push({ path: r.path, ...answered });
              resolve({ status: res.status, body });
            }
          }, (e: unknown) => {
            if (!inc.alive) return;
            this.#operatorCalls.delete(fail);
            reject(e instanceof TimeoutError ? new BoundedPostError('timeout', undefined, 'no answer in time') : new BoundedPostError('network', 'ECONNREFUSED', 'connection refused'));
          });
        });
      },
    });
    let operator: OperatorApi = client;
    if (this.o.bankMutant === 'stale-swap-date') {
      const seen = new Map<string, Awaited<ReturnType<OperatorApi['retrieveSimSwapDate']>>>();
      operator = {
        checkValidity: (q) => client.checkValidity(q),
        phoneNumberOf: (c) => client.phoneNumberOf(c),
        retrieveSimSwapDate: async (n) => {
          const had = seen.get(n);
          if (had) return had;
          const r = await client.retrieveSimSwapDate(n);
          seen.set(n, r);
          return r;
        },
      };
    }
    const bank = new Bank({ store: bankStore, hasher: SimHasher.create(this.#scryptMemo), mode: this.o.bankMode ?? 2, operator, operatorDeadlineMs: 2 ** 31 - 1, log, now: this.clockOf(name), site: name });
    // The S4 invariants see each login the bank lets in, at the instant it decides.
    const login = bank.login.bind(bank);
    bank.login = async (who, req, binding) => {
      const answers: OperatorAnswer[] = [];
      const a = await loginAnswers.run(answers, () => login(who, req, binding));
      if (this.o.bankMutant === 'stale-swap-date' && a.kind === 'page' && a.page.binding.ids.idKind === 'sim' && !a.page.binding.ids.iccid) {
        // The page shows the binding as stored (the card the mutant did not see).
        const card = sqliteBankStore.bindingsOf(sqliteBankStore.accountByName(req.name)!.accountNo).find((b) => b.kind === 'iccid');
        if (card) a.page.binding.ids.iccid = card.value;
      }
      if (inc.alive && a.kind === 'page') this.onBankPage({ server: name, deviceUser: who.deviceUser, name: req.name, mode: a.page.mode, answers });
      return a;
    };
    return bank;
  }

  /**
   * A SIM swap (S4): the operator moves phone i's line to its next card (its staff writing the
   * operator's database, whether the server is up or not) and the new card goes into the phone.
   */
  swapCard(p: SimPhone): void {
    const op = new SqliteOperatorStore(join(this.dir, 'operator.sqlite'));
    try {
      const from = op.byPhoneNumber(p.line.number)!.card.iccid;
      op.swapCard(p.line.number, p.line.next, this.clockOf(OPERATOR)());
      this.swapLog.push({ number: p.line.number, from, to: p.line.next.iccid, at: this.sched.now() });
    } finally {
      op.close();
    }
    p.slot.swap(p.line.next);
    p.swappedAt = this.sched.now();
    this.log(`${OPERATOR} SIM SWAP: ${p.party}'s line moved to a new card; the card goes into the phone`);
  }

  /** kill -9: the incarnation is gone; nothing it had not committed survives. */
  crash(name: string): void {
    const inc = this.incarnations.get(name);
    if (!inc?.alive) return;
    inc.alive = false;
    this.crashes++;
    this.net.down.add(name);
    this.net.killConnections(name);
    this.log(`${name} CRASH`);
    // The process's file handles go with it. A statement running right now (a crash point
    // inside a transaction) finishes unwinding first: close after this turn.
    queueMicrotask(() => {
      try {
        inc.closeStores();
      } catch {
        // already closed
      }
    });
  }

  isDown(name: string): boolean {
    return !this.incarnations.get(name)?.alive;
  }

  /**
   * The real gateway on the simulated network: devices dial it, it links to every server by
   * name, its timers and clock are the scheduler's. Its attack reports go to the policy server's
   * admin endpoint, and the policy server's new tables are pushed to connected devices (S3.5,
   * S3.11), as deploy/stack.ts wires them.
   */
  async #gateway(): Promise<void> {
    const prev = this.incarnations.get(GATEWAY);
    const inc: Incarnation = { alive: true, n: (prev?.n ?? 0) + 1, closeStores: () => {} };
    this.incarnations.set(GATEWAY, inc);
    this.net.down.delete(GATEWAY);
    const timers = { ...this.#timers(inc), now: this.clockOf(GATEWAY) };
    const policy = this.#adminClient(GATEWAY, POLICY, inc, POLICY_ADMIN_LIMITS);
    let gw: Gateway | null = null;
    // Listening from the start: a device that dials before the gateway is ready finds it refusing.
    this.net.listen(GATEWAY, (end, meta) => (inc.alive && gw ? gw.accept(new DsimSocket(end), meta.observedIp) : end.close(1006, 'connection lost')));
    const started = await startGateway({
      host: GATEWAY, port: 0,
      upstreams: SERVERS.map((name) => ({ name, linkUrl: linkUrlOf(name), linkKey: linkKeyFor(this.o.linkKeyMismatch ? this.#t.adminKey : this.#t.linkRoot, name) })),
      // A crashed incarnation dials nowhere (its reconnect timers are fenced anyway).
      io: { connectLink: (url) => new DsimSocket(this.net.connect(GATEWAY, inc.alive ? linkTargetOf(url) : 'unknown:crashed', GATEWAY, () => {})), timers },
      // 4,096 address groups: lru-cache allocates its `max` entries when made (the default 100,000
      // cost ~13 ms of CPU per seed) and a run has a handful of groups, far from any eviction.
      attacks: { periodMs: SIM_POLICY_PERIOD_MS, maxTrackedIps: 4_096 },
      attackReports: {
        gateway: GATEWAY,
        send: async (r) => {
          const sent = this.o.s3Mutant === 'report-wrong-mech' ? { ...r, sites: r.sites.map((x) => ({ ...x, perMech: { fingerprint: x.total } })) } : r;
          const res = await adminCall(policy, 'reportAttacks', sent);
          if (inc.alive && res.accepted) this.attackReports.push({ periodId: r.periodId, sites: r.sites, ackAt: this.sched.now() });
          return res;
        },
      },
    });
    gw = started;
    this.#gateways.push(started);
    this.gateway = started;
    const tables = new TableSource({
      client: policy, log: partyLogger(`${GATEWAY}/tables`, this.o.log ? (l) => this.log(l) : null),
      onUpdate: (t) => {
        if (!inc.alive) return;
        const devices = started.pushTable(t);
        this.tablePushes.push({ version: tables.version() ?? -1, devices, table: t });
        this.log(`${GATEWAY} pushed table v${tables.version()} to ${devices} device(s)`);
      },
    });
    this.#newestTable = () => tables.current();
    const poll = () => {
      if (!inc.alive) return;
      void tables.refresh();
      this.sched.at(TABLE_POLL_MS, poll);
    };
    poll();
    if (prev) {
      this.restarts++;
      this.log(`${GATEWAY} RESTART (incarnation ${inc.n})`);
    }
  }
  readonly #gateways: Gateway[] = [];
  /** The newest table the gateway polled from the policy server (pushEveryFrame pushes it again). */
  #newestTable: () => Uint8Array | null = () => null;

  #pushAgain(): void {
    const t = this.#newestTable();
    if (t && !this.isDown(GATEWAY)) this.gateway.pushTable(t);
  }

  /**
   * The gateway process killed: every device connection and every link dies with it, its
   * timers and pending calls are fenced off; it holds no store, so nothing else is lost. The
   * phones retry on their next plug-in; the servers' sessions of the dead links end.
   */
  crashGateway(): void {
    const inc = this.incarnations.get(GATEWAY);
    if (!inc?.alive) return;
    inc.alive = false;
    this.crashes++;
    this.net.down.add(GATEWAY);
    this.net.killConnections(GATEWAY);
    this.log(`${GATEWAY} CRASH: every device connection and link lost`);
  }

  /** A new gateway process: it links to every server again (its reconnect backoff) before it routes. */
  restartGateway(): Promise<void> {
    return this.#gateway();
  }

  #phone(i: number): void {
    const party = `phone-${i}`;
    const ip = phoneIp(i);
    const host = new TraceHost(this.o.log ? (e: TraceEvent) => this.log(`${party} ${e.ok ? 'ok  ' : 'FAIL'} ${e.feature} ${e.step}: ${e.detail}`) : undefined);
    const rng = simRng(this.o.seed, `phone/${i}`);
    const clock = this.sched.clock();
    const epoch = this.clockOf(party);
    const net: Network = {
      localIp: ip,
      connect: (url, h) => {
        const origin = /^(wss?:\/\/[^/]+)/.exec(url)?.[1] ?? url;
        const end = this.net.connect(party, origin === ORIGIN ? GATEWAY : `unknown:${origin}`, ip, () => h.onOpen());
        end.onMessage = (d) => h.onMessage(d);
        end.onClose = (c, r) => h.onClose(c, r);
        return { send: (d) => end.send(d), close: (c, r) => end.close(c, r) };
      },
    };
    const line = lineOf(i);
    const slot = new SimSlot(line.card);
    const person = { name: `person${i}.dsim`, password: `dsim-${this.o.seed}-${i}-lantern` };
    const entry = (): PersonEntry | null => {
      const sp = this.phones[i];
      if (!sp) return null;
      return { action: sp.bank === 'new' ? 'register' : sp.bank === 'rebind' ? 'rebind' : 'login', name: person.name, password: person.password };
    };
    const hal = (): HalBase => ({ clock: { ...clock, epochMs: epoch }, rng, net, host, sim: slot, person: { bankEntry: entry } });
    const config: DeviceConfig = this.o.deviceMutant ? { ...defaultDeviceConfig, mutant: this.o.deviceMutant } : defaultDeviceConfig;
    const t = this.#t;
    const phone = makePhone({
      base: t.base, table: tableOf(t.base), fuses: t.fuses[i]!, hal: hal(), config, chipSeed: this.o.seed * 1_000_003 + i,
      personalize: { serial: t.serials[i]!, keyVersion: t.ring.current, master: t.ring.key(t.ring.current) },
    });
    const sp: SimPhone = { index: i, party, ip, serial: t.serials[i]!, user: t.users[i]!, phone, host, hal, slot, line, swappedAt: null, person, bank: 'new' };
    this.phones.push(sp);
    this.#watchPushes(sp);
  }

  /**
   * A password-guessing bot (sim/attacker.ts) on the simulated network: `n` login openings of
   * `mech` to `site` from `ip`, one connection each, one after the other, each with a nonce and a
   * MAC it cannot compute (the run's rng). Resolves with how many got an answer (a frame or a
   * close) within 5 virtual seconds.
   */
  async guess(ip: string, site: string, mech: Mechanism, n: number, user = 'admin'): Promise<number> {
    const rng = (this.#attackRng ??= simRng(this.o.seed, 'attacker'));
    let answered = 0;
    for (let i = 0; i < n; i++) {
      answered += await new Promise<number>((resolve) => {
        let done = false;
        const finish = (got: number) => {
          if (done) return;
          done = true;
          timer.dead = true;
          end.close(1000, 'bye');
          resolve(got);
        };
        const timer = this.sched.at(5_000, () => finish(0));
        let opened = 0;
        const end = this.net.connect('attacker', GATEWAY, ip, () => {
          opened = 1;
          end.send(encodeEnvelope(MsgType.login, 0, site, [mech, user, 1, new Map(), rng(32), rng(32)]));
        });
        end.onMessage = () => finish(1);
        end.onClose = () => finish(opened);
      });
    }
    return answered;
  }
  #attackRng: Rng | null = null;

  /**
   * Resolves once the gateway's links to `names` are up again (true), or after
   * timeoutMs virtual ms (false). A partition that ended took the links with it; the gateway
   * relinks on its backoff (gateway/limits.ts reconnectMinMs..reconnectMaxMs), and until then it
   * refuses sessions to those servers (GW_UPSTREAM_UNAVAILABLE), as a deployment's would.
   */
  linksUp(names: string[], timeoutMs: number): Promise<boolean> {
    return this.gateway.waitUpstreams(timeoutMs, names);
  }

  /** Unplugs and plugs phone i in again (after a power cut, or for its next login). */
  replug(p: SimPhone): void {
    this.net.killConnections(p.party);
    p.phone.chip.faults.powerCutAfterOps = null;
    p.phone = replug(p.phone, p.hal());
    this.#watchPushes(p);
  }

  /**
   * The device's push handler (S3.11, firmware/device.ts tablePush), watched: the invariants are
   * told once the phone has handled a pushed table (kept or refused it: synchronously, within
   * the call). Under the PhoneMutant 'keep-unchecked-push' the handler writes the table into
   * the saved login unchecked instead.
   */
  #watchPushes(p: SimPhone): void {
    const d = p.phone.device;
    const handle = this.o.phoneMutant === 'keep-unchecked-push'
      ? (table: Uint8Array) => {
        const rec = d.storage.loadLogin();
        if (rec.ok && rec.value) d.storage.saveLogin({ ...rec.value, table: Uint8Array.from(table) });
        d.trace('S3.11', 'attack table pushed', 'kept unchecked (TEST ONLY phone mutant)');
      }
      : d.tablePush.bind(d);
    d.tablePush = (table) => {
      const before = this.#savedRecord(p);
      handle(table);
      const after = this.#savedRecord(p);
      this.onTablePush(p, table, before === null || after === null ? before !== after : !equalBytes(before, after));
    };
  }



  /**
   * Phone `p`'s whole saved-login record (S0.12, S3.11), read from its flash the way
   * sim/held-secrets.ts reads the hidden zone, with the chip's fuses: no chip command, no flash
   * operation, no virtual time. Null when there is none, or it is unreadable (store-integrity's or
   * the power cut's to judge, not a push's).
   */
  #savedRecord(p: SimPhone): Uint8Array | null {
    try {
      return currentRecord(p.phone, this.#t.fuses[p.index]!, 'login')?.record ?? null;
    } catch {
      return null;
    }
  }

  /** Every server's live business store (a business server's own connection), or null when both are down. */
  liveBizStore(): SqliteBizStore | null {
    for (const b of BIZ) {
      const inc = this.incarnations.get(b);
      if (inc?.alive) return inc.sessionStore ?? null;
    }
    return null;
  }

  get masterKey(): Uint8Array {
    return this.#t.ring.key(this.#t.ring.current);
  }
  get adminKey(): Uint8Array {
    return this.#t.adminKey;
  }
  get storageKey(): Uint8Array {
    return this.#t.storageKey;
  }

  close(): void {
    for (const fail of [...this.#operatorCalls]) fail(new BoundedPostError('lost', 'ECONNRESET', 'the run ended'));
    for (const g of this.#gateways) void g.close();
    for (const inc of this.incarnations.values()) {
      inc.alive = false;
      try {
        inc.closeStores();
      } catch {
        // closed at its crash
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

