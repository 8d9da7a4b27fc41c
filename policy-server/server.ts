// The security policy server process role (S3.5-S3.11): the admin API for the gateways
// (reportAttacks, S3.5) and for whoever distributes the table (latestTable, S3.11), over the
// sealed admin RPC (server-kit/admin-rpc.ts) with POLICY_ADMIN_LIMITS; GET /metrics on the same
// port; and a timer that runs the period update (update.ts) at the start of each period T,
// `graceMs` after the boundary so that the gateways' reports of the period just ended are in.
// The clock is injectable: tests drive periods without waiting.
// Its store is SQLite (dbFile) or PostgreSQL (issue 16): several policy servers may share one
// PostgreSQL schema. Each period's update is one transaction whose table version must be above
// every stored one, so when two of them update the same period one table is stored and the other
// server's update is refused (POLICY_VERSION_ORDER): it adopts the stored table instead. Before
// each update and on every latestTable request a server reloads the store's latest table, so it
// serves what any of them published, not only what it signed itself.
import { createServer, type Server } from 'node:http';
import { sha256 } from '@noble/hashes/sha2.js';
import { encode } from '../protocol/cbor.ts';
import { ImplementationError } from '../protocol/errors.ts';
import { initialTable, verifyTable, signTable, tablePublicKey, type AttackTable } from '../protocol/attack-table.ts';
import { adminListener, AdminError, type AdminOp } from '../server-kit/admin-rpc.ts';
import { adminOps, ADMIN_MESSAGES, POLICY_ADMIN_LIMITS, type AttackReport, type ReportResult } from '../server-kit/admin-messages.ts';
import { listen, closeServer } from '../server-kit/host.ts';
import { createLogger } from '../server-kit/log.ts';
import { ZERO, type Counts, type PolicyStore, type TableRow } from './store.ts';
import { openPolicyStore } from './pg-store.ts';
import { call } from '../server-kit/steps.ts';
import { placeOf, type StoreChoice } from '../server-kit/store-choice.ts';
import { PolicyMetrics } from './metrics.ts';
import { checkParams, updatePeriod, defaultFloorPpm, DEFAULT_THRESHOLDS, DEFAULT_BUDGET_ROWS, type PolicyParams, type UpdateResult } from './update.ts';

/** Time for the server: now, and a one-shot timer that returns its canceller. */
export interface Clock {
  now(): number;
  setTimer(fn: () => void, ms: number): () => void;
}
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref?.();
    return () => clearTimeout(t);
  },
};

export interface PolicyConfig {
  /** Server name the admin requests are bound to (default 'policy'). */
  name?: string;
  host: string;
  /** Admin port (0 = ephemeral; null = none: a simulation calls `ops` over its own network). */
  adminPort: number | null;
  adminKey: Uint8Array;
  dbFile: string;
  /** The store (issue 16): absent or { kind: 'sqlite' } = dbFile; { kind: 'postgres', url, schema? } = shared PostgreSQL. */
  store?: StoreChoice;
  /** Ed25519 seed (policy-server/keys.ts). */
  privateKey: Uint8Array;
  /** The configured initial table, JSON form (protocol/attack-table.ts initialTable); the phones ship with the same. */
  initialTable: unknown;
  /** The period T, ms; the gateways must report with the same. */
  periodMs: number;
  /** A, rows of update work per period (default 100,000). */
  budgetRows?: number;
  /** Level thresholds, increasing (default [5000, 10000]: the patent's). */
  thresholds?: number[];
  /** Floor degree, ppm (default: 1 %, less with many sites; defaultFloorPpm). */
  floorDegreePpm?: number;
  /** Table lifetime, ms (default 3 T). */
  tableLifetimeMs?: number;
  /** Reports older than this many periods are not counted (default 4). */
  maxLagPeriods?: number;
  /** Delay of the update after each period boundary, ms (default min(T/10, 5 s)). */
  graceMs?: number;
  clock?: Clock;
  /** false: no timer; the caller runs tick() (tests, the bench). */
  timer?: boolean;
  /**
   * Told of every table the server publishes (the one it holds at start, then each period's),
   * with the attacks it folded for the period the table states: the live page's feed. Called
   * in line, after the table is stored; an exception is logged, never fails the update.
   */
  onTable?: (t: PublishedTable) => void;
}

/** A published table and the attacks of the period it states, per site (S3.5 counts; zeros when none came). */
export interface PublishedTable {
  table: AttackTable;
  periodId: number;
  attacks: Map<string, Counts>;
}

export interface PolicyServer {
  name: string;
  adminPort: number;
  adminUrl: string;
  /** The public key the phones hold. */
  publicKey: Uint8Array;
  params: PolicyParams;
  store: PolicyStore;
  metrics: PolicyMetrics;
  /** The latest table this server knows and its signed bytes (reload() reads the store's). */
  latest(): { table: AttackTable; signed: Uint8Array; periodId: number };
  /** Adopts the store's latest table when it is newer than latest() (another policy server published it); returns latest(). */
  reload(): Promise<{ table: AttackTable; signed: Uint8Array; periodId: number }>;
  /** What reportAttacks does with a validated report (the admin op calls this). */
  report(r: AttackReport): Promise<ReportResult>;
  /**
   * Runs the update of the current period if no table of it is stored yet; null when one is
   * (this server's, or another's on the same PostgreSQL schema: then latest() is that one).
   */
  tick(): Promise<UpdateResult | null>;
  /** The admin operations (reportAttacks, latestTable) as the admin endpoint serves them (server-kit/admin-rpc.ts adminHandler). */
  ops: Record<string, AdminOp>;
  close(): Promise<void>;
}

const refuse = (code: string, why: string): never => {
  throw new AdminError(code, why);
};

export async function startPolicyServer(cfg: PolicyConfig): Promise<PolicyServer> {
  const name = cfg.name ?? 'policy';
  const log = createLogger(name);
  const clock = cfg.clock ?? systemClock;
  let config: AttackTable;
  try {
    config = initialTable(cfg.initialTable, 0, 1);
  } catch (e) {
    throw new ImplementationError('POLICY_BAD_CONFIG', `initial table: ${(e as Error).message}`);
  }
  const T = cfg.periodMs;
  const params = checkParams({
    periodMs: T,
    budgetRows: cfg.budgetRows ?? DEFAULT_BUDGET_ROWS,
    thresholds: cfg.thresholds ?? [...DEFAULT_THRESHOLDS],
    floorDegreePpm: cfg.floorDegreePpm ?? defaultFloorPpm(config.sites.length),
    tableLifetimeMs: cfg.tableLifetimeMs ?? 3 * T,
    maxLagPeriods: cfg.maxLagPeriods ?? 4,
  }, config);
  const graceMs = cfg.graceMs ?? Math.min(Math.floor(T / 10), 5_000);
  const sites = new Set(config.sites.map((s) => s.site));
  const publicKey = tablePublicKey(cfg.privateKey);
  const metrics = new PolicyMetrics(name);
  const place = placeOf(cfg.store ?? { kind: 'sqlite' }, cfg.dbFile);
  const where = place.kind === 'sqlite' ? place.file : `PostgreSQL schema ${place.schema ?? 'policy'}`;
  const store = await openPolicyStore(place);
  const period = () => Math.floor(clock.now() / T);

  let latest: { table: AttackTable; signed: Uint8Array; periodId: number };
  let server: Server | null = null;
  const timer: { cancel: (() => void) | null } = { cancel: null };
  try {
    // The store must hold our own tables: verify a stored one (at its issue time: it may have
    // expired since) before continuing its versions or serving it.
    const adopt = (row: TableRow) => {
      const v = verifyTable(row.signed, publicKey, row.issuedAt, null);
      if (!v.ok) throw new ImplementationError('POLICY_KEY_MISMATCH', `${where}: the latest table (version ${row.version}) does not verify under this policy key (${v.code})`);
      if (v.table.version !== row.version) throw new ImplementationError('STORE_CORRUPT_ROW', `table row ${row.version} holds version ${v.table.version}`);
      return { table: v.table, signed: row.signed, periodId: row.periodId };
    };
    const row = await store.latestTable();
    if (row) {
      latest = adopt(row);
    } else {
      // First start: the configured initial table, signed as version 1. Another policy server
      // starting on the same schema may store its version 1 first: then that one is adopted.
      const now = clock.now();
      const t: AttackTable = { ...config, version: 1, issuedAt: now, expiresAt: now + params.tableLifetimeMs };
      try {
        latest = { table: t, signed: await storeFirst(store, t, period(), cfg.privateKey), periodId: period() };
      } catch (e) {
        const won = await store.latestTable();
        if (!won) throw e;
        latest = adopt(won);
      }
    }
    metrics.tableVersion.set(latest.table.version);

    const reload = async () => {
      const r = await store.latestTable();
      if (r && r.version > latest.table.version) {
        latest = adopt(r);
        metrics.tableVersion.set(latest.table.version);
      }
      return latest;
    };

    const published = async () => {
      if (!cfg.onTable) return;
      try {
        const { table, periodId } = latest;
        const attacks = new Map<string, Counts>();
        for (const s of table.sites) {
          const c = await store.sitePeriod(s.site, periodId - 1);
          attacks.set(s.site, c ? { total: c.total, password: c.password, otp: c.otp, fingerprint: c.fingerprint } : { ...ZERO });
        }
        cfg.onTable({ table, periodId, attacks });
      } catch (e) {
        log.warn('table listener failed', { error: (e as Error).message.slice(0, 200) });
      }
    };

    const report = async (r: AttackReport): Promise<ReportResult> => {
      const current = period();
      if (r.periodMs !== T) {
        metrics.reports.inc({ result: 'refused' });
        return refuse('POLICY_BAD_PERIOD', `periodMs ${r.periodMs} is not this server's period ${T}`);
      }
      if (r.periodId > current) {
        metrics.reports.inc({ result: 'refused' });
        return refuse('POLICY_BAD_PERIOD', `period ${r.periodId} has not begun (current ${current})`);
      }
      const unknown = r.sites.find((s) => !sites.has(s.site));
      if (unknown) {
        metrics.reports.inc({ result: 'refused' });
        return refuse('POLICY_UNKNOWN_SITE', `site ${unknown.site} is not in the table`);
      }
      if (r.periodId < current - params.maxLagPeriods) {
        metrics.reports.inc({ result: 'late' });
        log.warn('report too late to count', { gateway: r.gateway, periodId: r.periodId, current });
        return { accepted: false, duplicate: false };
      }
      // The digest of the canonical report, sites in name order: a resend in another order is the same report.
      const sorted = { ...r, sites: [...r.sites].sort((a, b) => (a.site < b.site ? -1 : 1)) };
      const digest = sha256(encode(ADMIN_MESSAGES.reportAttacks.encodeArgs(sorted)));
      let result: 'new' | 'duplicate';
      try {
        result = await store.addReport(r, digest, clock.now());
      } catch (e) {
        if (e instanceof ImplementationError && e.code === 'POLICY_REPORT_CONFLICT') {
          metrics.reports.inc({ result: 'refused' });
          log.warn('report conflicts with the one taken', { gateway: r.gateway, periodId: r.periodId });
          return refuse('POLICY_REPORT_CONFLICT', e.message.replace(/^[A-Z_]+: /, ''));
        }
        throw e;
      }
      metrics.reports.inc({ result });
      if (result === 'new') metrics.pendingRows.inc(r.sites.length);
      log.info(result === 'new' ? 'report taken' : 'report resent', { gateway: r.gateway, periodId: r.periodId, sites: r.sites.length });
      return { accepted: true, duplicate: result === 'duplicate' };
    };

    // One update at a time in this process (the timer's and a caller's tick()).
    let running: Promise<unknown> = Promise.resolve();
    // The period is the one current when tick() is called (a timer that fired late still updates its own).
    const tick = (): Promise<UpdateResult | null> => {
      const P = period();
      const run = running.then(() => update(P), () => update(P));
      running = run.catch(() => {});
      return run;
    };
    const update = async (P: number): Promise<UpdateResult | null> => {
      await reload();
      if (latest.periodId >= P) return null;
      const t0 = performance.now();
      let r: UpdateResult;
      try {
        r = await updatePeriod(store, config, latest.table, P, clock.now(), params, cfg.privateKey);
      } catch (e) {
        // Another policy server on the same store published this period's table first.
        if (!(e instanceof ImplementationError && e.code === 'POLICY_VERSION_ORDER')) throw e;
        await reload();
        log.info('table published by another policy server', { version: latest.table.version, periodId: latest.periodId });
        return null;
      }
      latest = { table: r.table, signed: r.signed, periodId: P };
      const dropped = await store.prune(P - params.maxLagPeriods - 1);
      let folded = 0, backlog = 0;
      for (const w of r.work.values()) {
        folded += w.folded;
        backlog += w.backlog;
      }
      metrics.rowsFolded.inc(folded);
      metrics.rowsDropped.inc(dropped);
      metrics.pendingRows.set((await store.counts()).pending);
      metrics.tableVersion.set(r.table.version);
      metrics.updateSeconds.set((performance.now() - t0) / 1000);
      if (dropped > 0) log.warn('pending rows dropped beyond the lag window', { dropped, periodId: P });
      log.info('table published', { version: r.table.version, periodId: P, folded, backlog });
      await published();
      return r;
    };

    const schedule = () => {
      const now = clock.now();
      const next = (Math.floor(now / T) + 1) * T + graceMs;
      timer.cancel = clock.setTimer(() => {
        tick().catch((e: unknown) => log.error('period update failed', { err: (e as Error).stack ?? String(e) }));
        schedule();
      }, next - now);
    };

    const ops = adminOps({
      reportAttacks: report,
      latestTable: async () => (await reload()).signed,
    });
    const admin = adminListener({ key: cfg.adminKey, name, limits: POLICY_ADMIN_LIMITS, ops });
    server = cfg.adminPort === null ? null : createServer((req, res) => {
      if (req.method === 'GET' && req.url === '/metrics') {
        void metrics.text().then((text) => {
          res.writeHead(200, { 'content-type': metrics.registry.contentType });
          res.end(text);
        });
        return;
      }
      admin(req, res);
    });
    const adminPort = server ? await listen(server, cfg.adminPort!, cfg.host) : 0;
    // A period that began while the server was down gets its table now.
    if ((await tick()) === null) await published();
    if (cfg.timer !== false) schedule();
    log.info('listening', { adminPort, version: latest.table.version, sites: config.sites.length });
    const s = server;
    return {
      name,
      adminPort,
      adminUrl: `http://${cfg.host}:${adminPort}/admin`,
      publicKey,
      params,
      store,
      metrics,
      latest: () => latest,
      reload,
      report,
      tick,
      ops,
      async close() {
        timer.cancel?.();
        if (s) await closeServer(s);
        await running;
        await store.close();
      },
    };
  } catch (e) {
    timer.cancel?.();
    if (server) await closeServer(server);
    await store.close();
    throw e;
  }
}

/** Signs and stores the first table (version 1: the configured initial table). */
async function storeFirst(store: PolicyStore, t: AttackTable, periodId: number, privateKey: Uint8Array): Promise<Uint8Array> {
  const signed = signTable(t, privateKey);
  await store.atomically(function* (ops) {
    yield* call(ops.putTable({ version: t.version, periodId, issuedAt: t.issuedAt, expiresAt: t.expiresAt, signed }));
  });
  return signed;
}
