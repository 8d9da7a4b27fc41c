// The security policy server's state (S3.5-S3.10) in one SQLite file (WAL, server-kit/sqlite.ts):
// - reports: one row per (gateway, periodId) taken, with the SHA-256 of its canonical encoding,
//   so a resent report is recognised and never counted twice (S3.5);
// - pending: the work queue of the update, one row per (report, site): the unit of update work
//   (docs/architecture.md §"Policy server"); a period's update folds at most its slice of them;
// - site_periods: per site and period, the attacks folded so far (total and per mechanism);
// - tables: every signed table published, by version (which only grows).
// Every multi-row change is one IMMEDIATE transaction; every row read back is validated
// (STORE_CORRUPT_ROW).
import { openDb, corrupt, type Db } from '../server-kit/sqlite.ts';
import { ImplementationError } from '../protocol/errors.ts';
import { DEST_RE, MECHANISMS } from '../protocol/messages.ts';
import type { AttackReport } from '../server-kit/admin-messages.ts';
import { rowChecker, type Awaitable } from '../server-kit/store-choice.ts';
import { runSteps, type Steps } from '../server-kit/steps.ts';

const MIGRATIONS = [
  `CREATE TABLE reports (
     gateway TEXT NOT NULL,
     period_id INTEGER NOT NULL,
     digest BLOB NOT NULL,
     received_at INTEGER NOT NULL,
     PRIMARY KEY (gateway, period_id)
   );
   CREATE TABLE pending (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     site TEXT NOT NULL,
     period_id INTEGER NOT NULL,
     total INTEGER NOT NULL CHECK (total >= 0),
     password INTEGER NOT NULL CHECK (password >= 0),
     fingerprint INTEGER NOT NULL CHECK (fingerprint >= 0),
     otp INTEGER NOT NULL CHECK (otp >= 0)
   );
   CREATE INDEX pending_by_site ON pending (site, period_id, id);
   CREATE TABLE site_periods (
     site TEXT NOT NULL,
     period_id INTEGER NOT NULL,
     total INTEGER NOT NULL,
     password INTEGER NOT NULL,
     fingerprint INTEGER NOT NULL,
     otp INTEGER NOT NULL,
     rows INTEGER NOT NULL,
     PRIMARY KEY (site, period_id)
   );
   CREATE TABLE tables (
     version INTEGER PRIMARY KEY,
     period_id INTEGER NOT NULL,
     issued_at INTEGER NOT NULL,
     expires_at INTEGER NOT NULL,
     signed BLOB NOT NULL
   );`,
];

/** A site's attacks: the total and per mechanism. */
export interface Counts { total: number; password: number; fingerprint: number; otp: number }
export const ZERO: Counts = Object.freeze({ total: 0, password: 0, fingerprint: 0, otp: 0 });
/** One unit of update work: one report's counts for one site. */
export interface PendingRow extends Counts { id: number; site: string; periodId: number }
export interface TableRow { version: number; periodId: number; issuedAt: number; expiresAt: number; signed: Uint8Array }

export const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

export function counts(r: Record<string, unknown>, what: string): Counts {
  if (!isCount(r.total) || !MECHANISMS.every((m) => isCount(r[m]))) corrupt(what, 'bad counts');
  const c = { total: r.total as number, password: r.password as number, fingerprint: r.fingerprint as number, otp: r.otp as number };
  if (c.password + c.fingerprint + c.otp > c.total) corrupt(what, 'mechanisms add up to more than the total');
  return c;
}

/** What one period's update reads and writes (policy-server/update.ts), inside one transaction. */
export interface PolicyOps {
  /** Up to `limit` pending rows of `site` for periods <= upTo, oldest period first. */
  pendingFor(site: string, upTo: number, limit: number): Awaitable<PendingRow[]>;
  /** How many rows of `site` for periods <= upTo wait to be folded. */
  pendingCount(site: string, upTo?: number): Awaitable<number>;
  /** Adds the rows to their site's period totals and removes them from the queue. */
  fold(rows: readonly PendingRow[]): Awaitable<void>;
  /** The attacks on `site` folded for `periodId` so far, with the number of rows folded. */
  sitePeriod(site: string, periodId: number): Awaitable<(Counts & { rows: number }) | null>;
  latestTable(): Awaitable<TableRow | null>;
  /** Records a published table; its version must be above every stored one (POLICY_VERSION_ORDER otherwise). */
  putTable(t: TableRow): Awaitable<void>;
}

/** The policy server's store (both back ends; issue 16). */
export interface PolicyStore extends PolicyOps {
  /**
   * Takes a report once (S3.5): 'new' stores it and queues one pending row per site;
   * 'duplicate' (same gateway, period and digest) changes nothing; the same gateway and period
   * with another digest throws ImplementationError POLICY_REPORT_CONFLICT and changes nothing.
   */
  addReport(r: AttackReport, digest: Uint8Array, now: number): Awaitable<'new' | 'duplicate'>;
  /** Runs `steps` (server-kit/steps.ts) over this store in one transaction: all of it is stored, or nothing. */
  atomically<T>(steps: (ops: PolicyOps) => Steps<T>): Awaitable<T>;
  /** Forgets what is older than `periodId` (see SqlitePolicyStore.prune); returns the pending rows dropped unfolded. */
  prune(periodId: number): Awaitable<number>;
  counts(): Awaitable<{ reports: number; pending: number; tables: number }>;
  /** Problems found in the stored rows (empty when none). */
  check(): Promise<string[]>;
  close(): Awaitable<void>;
}

/** A report row's digest compared with a new one's: 'duplicate', or POLICY_REPORT_CONFLICT. */
export function sameReport(r: AttackReport, have: { digest: unknown }, digest: Uint8Array): 'duplicate' {
  if (!(have.digest instanceof Uint8Array)) corrupt(`report ${r.gateway}/${r.periodId}`, 'digest');
  if (Buffer.compare(have.digest as Uint8Array, digest) === 0) return 'duplicate';
  throw new ImplementationError('POLICY_REPORT_CONFLICT', `gateway ${r.gateway} already reported period ${r.periodId} with other counts`);
}

export function pendingFromRow(r: Record<string, unknown>): PendingRow {
  const what = `pending row ${String(r.id)}`;
  if (!isCount(r.id) || typeof r.site !== 'string' || !DEST_RE.test(r.site) || !isCount(r.period_id)) corrupt(what, 'bad key');
  return { id: r.id as number, site: r.site as string, periodId: r.period_id as number, ...counts(r, what) };
}

export function sitePeriodFromRow(r: Record<string, unknown>, what: string): Counts & { rows: number } {
  if (!isCount(r.rows)) corrupt(what, 'rows');
  return { ...counts(r, what), rows: r.rows as number };
}

export function tableFromRow(r: Record<string, unknown>): TableRow {
  const what = `table ${String(r.version)}`;
  if (!isCount(r.version) || !isCount(r.period_id) || !isCount(r.issued_at) || !isCount(r.expires_at) || !(r.signed instanceof Uint8Array)) corrupt(what, 'fields');
  return { version: r.version as number, periodId: r.period_id as number, issuedAt: r.issued_at as number, expiresAt: r.expires_at as number, signed: Uint8Array.from(r.signed as Uint8Array) };
}

/** The integrity check of a policy store (both back ends): every row validated. */
export function policyProblems(t: { pending: Record<string, unknown>[]; sitePeriods: Record<string, unknown>[]; tables: Record<string, unknown>[]; reports: Record<string, unknown>[] }): string[] {
  const { each, problems: out } = rowChecker();
  each(t.pending, pendingFromRow);
  each(t.sitePeriods, (r) => sitePeriodFromRow(r, `site period ${String(r.site)}/${String(r.period_id)}`));
  each(t.tables, tableFromRow);
  each(t.reports, (r) => {
    if (typeof r.gateway !== 'string' || !isCount(r.period_id) || !(r.digest instanceof Uint8Array) || r.digest.length !== 32 || !isCount(r.received_at)) corrupt(`report ${String(r.gateway)}/${String(r.period_id)}`, 'fields');
  });
  return out;
}

export class SqlitePolicyStore implements PolicyStore {
  readonly db: Db;
  readonly #report;
  readonly #insertReport;
  readonly #insertPending;
  readonly #pendingFor;
  readonly #pendingUpTo;
  readonly #deletePending;
  readonly #sitePeriod;
  readonly #fold;
  readonly #latest;
  readonly #insertTable;
  constructor(file: string) {
    this.db = openDb(file, MIGRATIONS);
    this.#report = this.db.prepare('SELECT digest FROM reports WHERE gateway = ? AND period_id = ?');
    this.#insertReport = this.db.prepare('INSERT INTO reports (gateway, period_id, digest, received_at) VALUES (?, ?, ?, ?)');
    this.#insertPending = this.db.prepare('INSERT INTO pending (site, period_id, total, password, fingerprint, otp) VALUES (?, ?, ?, ?, ?, ?)');
    this.#pendingFor = this.db.prepare('SELECT * FROM pending WHERE site = ? AND period_id <= ? ORDER BY period_id, id LIMIT ?');
    this.#pendingUpTo = this.db.prepare('SELECT COUNT(*) AS n FROM pending WHERE site = ? AND period_id <= ?');
    this.#deletePending = this.db.prepare('DELETE FROM pending WHERE id = ?');
    this.#sitePeriod = this.db.prepare('SELECT * FROM site_periods WHERE site = ? AND period_id = ?');
    this.#fold = this.db.prepare(
      `INSERT INTO site_periods (site, period_id, total, password, fingerprint, otp, rows) VALUES (?, ?, ?, ?, ?, ?, 1)
       ON CONFLICT (site, period_id) DO UPDATE SET total = total + excluded.total, password = password + excluded.password,
         fingerprint = fingerprint + excluded.fingerprint, otp = otp + excluded.otp, rows = rows + 1`,
    );
    this.#latest = this.db.prepare('SELECT * FROM tables ORDER BY version DESC LIMIT 1');
    this.#insertTable = this.db.prepare('INSERT INTO tables (version, period_id, issued_at, expires_at, signed) VALUES (?, ?, ?, ?, ?)');
  }

  /**
   * Takes a report once (S3.5): 'new' stores it and queues one pending row per site;
   * 'duplicate' (same gateway, period and digest) changes nothing; the same gateway and period
   * with another digest throws ImplementationError POLICY_REPORT_CONFLICT and changes nothing.
   */
  addReport(r: AttackReport, digest: Uint8Array, now: number): 'new' | 'duplicate' {
    return this.db.transaction((): 'new' | 'duplicate' => {
      const have = this.#report.get(r.gateway, r.periodId) as { digest: unknown } | undefined;
      if (have) return sameReport(r, have, digest);
      this.#insertReport.run(r.gateway, r.periodId, digest, now);
      for (const s of r.sites) this.#insertPending.run(s.site, r.periodId, s.total, s.perMech.password ?? 0, s.perMech.fingerprint ?? 0, s.perMech.otp ?? 0);
      return 'new';
    }).immediate();
  }

  /** Up to `limit` pending rows of `site` for periods <= upTo, oldest period first. */
  pendingFor(site: string, upTo: number, limit: number): PendingRow[] {
    if (limit <= 0) return [];
    return (this.#pendingFor.all(site, upTo, limit) as Record<string, unknown>[]).map(pendingFromRow);
  }

  /** How many rows of `site` for periods <= upTo wait to be folded. */
  pendingCount(site: string, upTo = Number.MAX_SAFE_INTEGER): number {
    return (this.#pendingUpTo.get(site, upTo) as { n: number }).n;
  }

  /** Adds the rows to their site's period totals and removes them from the queue (call inside `transaction`). */
  fold(rows: readonly PendingRow[]): void {
    for (const r of rows) {
      this.#fold.run(r.site, r.periodId, r.total, r.password, r.fingerprint, r.otp);
      this.#deletePending.run(r.id);
    }
  }

  /** The attacks on `site` folded for `periodId` so far, with the number of rows folded. */
  sitePeriod(site: string, periodId: number): (Counts & { rows: number }) | null {
    const r = this.#sitePeriod.get(site, periodId) as Record<string, unknown> | undefined;
    return r ? sitePeriodFromRow(r, `site period ${site}/${periodId}`) : null;
  }

  latestTable(): TableRow | null {
    const r = this.#latest.get() as Record<string, unknown> | undefined;
    return r ? tableFromRow(r) : null;
  }

  /** Records a published table; its version must be above every stored one (POLICY_VERSION_ORDER otherwise). */
  putTable(t: TableRow): void {
    const last = this.latestTable();
    if (last && t.version <= last.version) throw new ImplementationError('POLICY_VERSION_ORDER', `table version ${t.version} is not above ${last.version}`);
    this.#insertTable.run(t.version, t.periodId, t.issuedAt, t.expiresAt, t.signed);
  }

  /**
   * Forgets reports, folded totals and tables of periods before `periodId` (the last table is
   * always kept), and pending rows so old that their period can no longer reach a table: a site
   * whose slice is smaller than its work would otherwise grow its queue without end. Returns
   * how many pending rows were dropped unfolded.
   */
  prune(periodId: number): number {
    return this.db.transaction(() => {
      const dropped = this.db.prepare('DELETE FROM pending WHERE period_id < ?').run(periodId).changes;
      this.db.prepare('DELETE FROM reports WHERE period_id < ?').run(periodId);
      this.db.prepare('DELETE FROM site_periods WHERE period_id < ?').run(periodId);
      this.db.prepare('DELETE FROM tables WHERE period_id < ? AND version < (SELECT MAX(version) FROM tables)').run(periodId);
      return dropped;
    }).immediate();
  }

  /** Runs `fn` in one IMMEDIATE transaction: all of it is stored, or nothing. */
  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn).immediate();
  }

  /** The steps run synchronously inside one IMMEDIATE transaction. */
  atomically<T>(steps: (ops: PolicyOps) => Steps<T>): T {
    return this.transaction(() => runSteps(steps(this)));
  }

  async check(): Promise<string[]> {
    const all = (t: string) => this.db.prepare(`SELECT * FROM ${t}`).all() as Record<string, unknown>[];
    return policyProblems({ pending: all('pending'), sitePeriods: all('site_periods'), tables: all('tables'), reports: all('reports') });
  }

  counts(): { reports: number; pending: number; tables: number } {
    const n = (t: string) => (this.db.prepare(`SELECT COUNT(*) AS n FROM ${t}`).get() as { n: number }).n;
    return { reports: n('reports'), pending: n('pending'), tables: n('tables') };
  }

  close(): void {
    this.db.close();
  }
}

