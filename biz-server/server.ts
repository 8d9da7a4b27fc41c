// A business server process role: device/link ports (server-kit/host.ts) running BizServerSession,
// and the admin API (server-kit/admin-messages.ts) for the registration server
// (installPending, status) and for enrollment (enrollAccount).
import { createServer, type Server } from 'node:http';
import { Limits } from '../protocol/limits.ts';
import { ImplementationError } from '../protocol/errors.ts';
import { startHost, listen, closeServer, type Host } from '../server-kit/host.ts';
import { createAdminServer, AdminError, ADMIN_MAX_SKEW_MS } from '../server-kit/admin-rpc.ts';
import { adminOps, type AdminHandlers, type StatusResult } from '../server-kit/admin-messages.ts';
import type { Logger } from '../server-kit/log.ts';
import { ServerMetrics } from '../server-kit/metrics.ts';
import { createLogger } from '../server-kit/log.ts';
import { SqliteBizStore, type BizStore } from './store.ts';
import { openBizStores } from './pg-store.ts';
import { placeOf, type StoreChoice } from '../server-kit/store-choice.ts';
import { BizServerSession } from './session.ts';
import { SharedState, type SharedStateConfig } from '../server-kit/redis.ts';
import { RedisReplay } from '../server-kit/shared-replay.ts';
import { replayCacheFor, keepOldPasswords, nameOracle, type Mutant } from '../server-kit/mutant.ts';
import { OperatorClient, type OperatorClientOptions } from '../server-kit/operator-client.ts';
import type { BankMode } from '../protocol/bank-messages.ts';
import type { BankStore } from './bank-store.ts';
import { Bank, type BankOptions } from './bank.ts';
import { PasswordHasher, type ScryptParams } from './password-verifier.ts';
import { bankPageHandler, PAGE_PATH } from './bank-page.ts';
import { mechanismsFor } from './mechanisms.ts';
import { MECHANISMS, type Mechanism } from '../protocol/messages.ts';
import type { TotpParams } from '../protocol/person.ts';

/** The bank (S4) on a business server. */
export interface BankConfig {
  /** How logins find the binding: 1 directly (S4.3), 2 through the operator (S4.4); an account may override it. */
  mode: BankMode;
  /** The operator's API (HTTPS, its CA, the bank's OAuth2 client); without it mode 2 refuses with BANK_OPERATOR_UNAVAILABLE. */
  operator?: OperatorClientOptions;
  /** Deadline of the operator calls of one request, ms (default 3000). */
  operatorDeadlineMs?: number;
  /** The account page's HTTP port (0 = ephemeral). */
  httpPort: number;
  /** Seconds a page token stays valid (default 300). */
  pageTtlS?: number;
  /** scrypt parameters of new verifiers (default OWASP's N=2^17, r=8, p=1); tests may lower them. */
  scrypt?: ScryptParams;
  /** RFC 6238 parameters of the one-time-code seeds this bank makes (default SHA1, 6 digits, 30 s). */
  totp?: TotpParams;
  /** Told of each operator call of a bank request (biz-server/bank.ts OperatorCallEvent): the live page's hook; must not throw. */
  onOperatorCall?: BankOptions['onOperatorCall'];
}

export interface BizConfig {
  name: string;
  region: string;
  host: string;
  /** Direct device port (0 = ephemeral, null = none). */
  devicePort: number | null;
  linkPort: number;
  adminPort: number;
  /** Accounts database (shared by all business servers on one machine), under the default store choice. */
  dbFile: string;
  /** SQLite (default) or PostgreSQL shared by business servers on several hosts (issue 16). */
  store?: StoreChoice;
  /** The key login keys are wrapped under in dbFile (never stored in it). */
  storageKey: Uint8Array;
  linkKey: Uint8Array;
  /** PEM certificate and key (contents or paths): the link port speaks wss:// (server-kit/host.ts). */
  linkTls?: { cert: string; key: string };
  adminKey: Uint8Array;
  stepTimeoutMs?: number;
  /** Issue 16: the Redis this server shares with the other instances of its name (login and admin replay caches). Absent: this process's memory only. */
  redis?: SharedStateConfig;
  /** TEST ONLY: one rule broken on purpose (server-kit/mutant.ts); never set in production. */
  mutant?: Mutant;
  /** The bank (S4): accounts of people bound to the phone's line and device; none when absent. */
  bank?: BankConfig;
  /**
   * The site's person mechanisms (S3.3): the login openings it serves and the bank logins it
   * verifies. Default all three, floor 'password': the attack table's initial entry
   * (deploy/config.ts DEFAULT_INITIAL_TABLE).
   */
  mechanisms?: Mechanism[];
  /** The site's minimum strength (password < otp < fingerprint): a bank login below it is refused (BANK_MECH_BELOW_FLOOR). */
  floor?: Mechanism;
}

export interface BizServer {
  name: string;
  region: string;
  devicePort: number | null;
  linkPort: number;
  adminPort: number;
  adminUrl: string;
  store: BizStore;
  /** The bank, when configured, and where its account pages are served ('http://host:port/bank/page/'). */
  bank?: { bank: Bank; store: BankStore; hasher: PasswordHasher; pageUrl: string; operator?: OperatorClient };
  /** Marks the server as not accepting (status reports healthy=false). */
  setDraining(on: boolean): void;
  sessions(): number;
  close(): Promise<void>;
}

export async function startBizServer(cfg: BizConfig): Promise<BizServer> {
  const log = createLogger(cfg.name);
  const { store, bank: bankStore } = await openBizStores(placeOf(cfg.store ?? { kind: 'sqlite' }, cfg.dbFile), cfg.storageKey);
  const replay = replayCacheFor(cfg.mutant);
  if (cfg.mutant === 'keep-old-password' && !(store instanceof SqliteBizStore)) {
    await store.close();
    throw new ImplementationError('MUTANT_UNSUPPORTED', "the 'keep-old-password' mutant wraps the SQLite store only");
  }
  const sessionStore = cfg.mutant === 'keep-old-password' ? keepOldPasswords(store as SqliteBizStore) : store;
  // Issue 16: the instances of one name share the login and admin replay caches (Redis).
  const shared = cfg.redis ? new SharedState(cfg.redis) : null;
  let draining = false;
  const metrics = new ServerMetrics(cfg.name);
  const fallback = () => metrics.event('shared_replay_fallback');
  const sharedReplay = shared ? new RedisReplay(shared, `biz-login:${cfg.name}`, undefined, fallback) : undefined;
  const sessionOpts = { name: cfg.name, stepTimeoutMs: cfg.stepTimeoutMs ?? Limits.stepTimeoutMs, log, metrics, mutant: cfg.mutant };
  const offered = cfg.mechanisms ?? [...MECHANISMS];
  const mechTable = mechanismsFor(offered);
  let host: Host | null = null;
  let admin: Server | null = null;
  let pages: Server | null = null;
  let bankParts: BizServer['bank'];
  const bc = cfg.bank;
  const operator = bc?.operator ? new OperatorClient(bc.operator) : undefined;
  try {
    if (shared && !(await shared.ready())) log.warn('shared state not reachable at start: the login and admin replay caches are this process\'s until it is', { code: 'SHARED_STATE_DOWN' });
    if (bc) {
      const hasher = new PasswordHasher(bc.scrypt);
      const bank = new Bank({
        store: bankStore, hasher, mode: bc.mode, operator, operatorDeadlineMs: bc.operatorDeadlineMs, pageTtlS: bc.pageTtlS, log,
        site: cfg.name, mechanisms: offered, floor: cfg.floor, totp: bc.totp, onOperatorCall: bc.onOperatorCall,
      });
      if (cfg.mutant === 'bank-name-oracle') nameOracle(bank, async (name) => (await bankStore.accountByName(name)) !== null);
      pages = createServer(bankPageHandler(bank));
      const port = await listen(pages, bc.httpPort, cfg.host);
      const h = cfg.host.includes(':') ? `[${cfg.host}]` : cfg.host;
      bankParts = { bank, store: bankStore, hasher, pageUrl: `http://${h}:${port}${PAGE_PATH}`, operator };
      log.info('bank ready', { mode: bc.mode, operator: operator ? operator.url : 'none', pagePort: port, mechanisms: offered.join(','), floor: bank.offer.floor });
    }
    host = await startHost({
      name: cfg.name,
      host: cfg.host,
      devicePort: cfg.devicePort,
      linkPort: cfg.linkPort,
      linkKey: cfg.linkKey,
      linkTls: cfg.linkTls,
      metrics,
      factory: (t) => new BizServerSession(t, sessionOpts, { store: sessionStore, replay, sharedReplay, bank: bankParts?.bank, mechanisms: mechTable }),
      health: () => ({ region: cfg.region, draining }),
    });
    const h = host;
    admin = createAdminServer({
      key: cfg.adminKey,
      name: cfg.name,
      ...(shared ? { shared: new RedisReplay(shared, `admin:${cfg.name}`, 2 * ADMIN_MAX_SKEW_MS, fallback) } : {}),
      ops: adminOps(bizAdminHandlers(store, log, () => ({ healthy: !draining, sessions: h.sessions(), region: cfg.region }))),
    });
    const adminPort = await listen(admin, cfg.adminPort, cfg.host);
    log.info('listening', { devicePort: host.devicePort, linkPort: host.linkPort, adminPort });
    const a = admin;
    const pg = pages;
    return {
      name: cfg.name,
      region: cfg.region,
      devicePort: host.devicePort,
      linkPort: host.linkPort,
      adminPort,
      adminUrl: `http://${cfg.host}:${adminPort}/admin`,
      store,
      bank: bankParts,
      setDraining(on) {
        draining = on;
      },
      sessions: () => h.sessions(),
      async close() {
        await Promise.all([h.close(), closeServer(a), pg ? closeServer(pg) : undefined]);
        operator?.close();
        await shared?.close();
        await store.close();
      },
    };
  } catch (e) {
    await host?.close();
    if (admin) await closeServer(admin);
    if (pages) await closeServer(pages);
    operator?.close();
    await shared?.close();
    await store.close();
    throw e;
  }
}

/**
 * The business server's admin operations (registration: installPending, status; enrollment:
 * enrollAccount) over its store: served by startBizServer's admin port, and by the
 * deterministic simulation (sim/dsim-world.ts) over its simulated network.
 */
export function bizAdminHandlers(store: BizStore, log: Logger, status: () => StatusResult): AdminHandlers {
  return {
    async installPending(a) {
      try {
        const r = await store.installPending(a.user, a.loginKey, a.sealed, a.expiresAt, a.rotationId);
        log.info(r.installed ? 'pending installed' : 'pending kept', { user: a.user, currentGen: r.currentGen, pendingGen: r.pendingGen });
        return r;
      } finally {
        a.loginKey.fill(0);
      }
    },
    status,
    // Enrollment (deploy/enroll.ts): the account with no password yet (generation 0).
    // Idempotent for the same account/user pair; bound to another: BIZ_ACCOUNT_CONFLICT.
    async enrollAccount(a) {
      let r: 'created' | 'exists';
      try {
        r = await store.createAccount(a.account, a.user);
      } catch (e) {
        // The store's refusals are the caller's to see, with their code (not ADMIN_INTERNAL).
        if (e instanceof ImplementationError && (e.code === 'BIZ_ACCOUNT_CONFLICT' || e.code === 'BIZ_BAD_USER')) throw new AdminError(e.code, e.message.replace(/^[A-Z_]+: /, ''));
        throw e;
      }
      if (r === 'created') log.info('account created', { user: a.user });
      return r;
    },
  };
}
