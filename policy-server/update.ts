// The policy server's update of one period (S3.6-S3.10), run once at the start of each period P
// on the attacks of period P-1:
// - S3.9 time slices: the period's budget is A rows of update work (a row = one report's counts
//   for one site, policy-server/store.ts). Each site may fold at most floor(degree x A) rows,
//   its degree taken from the previous table; rows beyond its slice wait for the next period.
// - S3.6 security level: 1 + the number of thresholds at or below the period's total.
// - S3.7 attack rate: attacks on the mechanism / all attacks on the site (0 with no attacks).
// - S3.8 first policy: the new degree falls as the level rises; beyond the patent, every site
//   keeps a floor degree (at least one row per period), so none starves.
// A site whose rows of P-1 are not all folded keeps its previous level and rates (a table
// states only complete periods). The new table (version + 1) is signed and stored in the same
// transaction as the folding: a crash leaves either all of the update or none of it.
import { ImplementationError } from '../protocol/errors.ts';
import { signTable, PPM, TableLimits, type AttackTable, type SiteEntry } from '../protocol/attack-table.ts';
import type { PolicyStore, PolicyOps, SqlitePolicyStore, Counts } from './store.ts';
import { call, type Steps } from '../server-kit/steps.ts';
import type { Awaitable } from '../server-kit/store-choice.ts';
import { ZERO } from './store.ts';

export interface PolicyParams {
  /** The period T, ms. */
  periodMs: number;
  /** A: rows of update work the server spends per period, over all sites. */
  budgetRows: number;
  /** Security level thresholds (S3.6), strictly increasing: level = 1 + #{t <= total}. */
  thresholds: number[];
  /** Least degree of any site, ppm of A (beyond the patent: no site starves). */
  floorDegreePpm: number;
  /** How long a table is valid after it is issued, ms (> T: a table outlives its period). */
  tableLifetimeMs: number;
  /** Reports for periods older than this many periods are acknowledged but not counted. */
  maxLagPeriods: number;
}

/** The patent's example thresholds (S3.6): >= 10000 -> 3rd level, >= 5000 -> 2nd, else 1st. */
export const DEFAULT_THRESHOLDS: readonly number[] = [5_000, 10_000];
export const DEFAULT_BUDGET_ROWS = 100_000;

const badConfig = (why: string): never => {
  throw new ImplementationError('POLICY_BAD_CONFIG', why);
};

/** The default floor degree for n sites: 1 %, or less so that the floors take at most half of A. */
export function defaultFloorPpm(sites: number): number {
  return Math.min(10_000, Math.floor(PPM / (2 * Math.max(1, sites))));
}

/** Checks the parameters against the configured sites (POLICY_BAD_CONFIG). */
export function checkParams(p: PolicyParams, initial: AttackTable): PolicyParams {
  const n = initial.sites.length;
  if (!Number.isSafeInteger(p.periodMs) || p.periodMs < 1_000) badConfig('periodMs must be an integer >= 1000');
  if (!Number.isSafeInteger(p.budgetRows) || p.budgetRows < 1 || p.budgetRows > 1e9) badConfig('budgetRows (A) must be 1..1e9');
  if (!Array.isArray(p.thresholds) || p.thresholds.length < 1 || p.thresholds.length >= TableLimits.maxLevel) badConfig(`1..${TableLimits.maxLevel - 1} thresholds (2..${TableLimits.maxLevel} levels)`);
  p.thresholds.forEach((t, i) => {
    if (!Number.isSafeInteger(t) || t < 1 || (i > 0 && t <= p.thresholds[i - 1]!)) badConfig('thresholds must be strictly increasing integers >= 1');
  });
  if (!Number.isSafeInteger(p.floorDegreePpm) || p.floorDegreePpm < 0 || n * p.floorDegreePpm > PPM) badConfig('the floor degrees of all sites must fit in A');
  if (sliceRows(p.floorDegreePpm, p.budgetRows) < 1) badConfig(`a site at the floor degree gets no row of A = ${p.budgetRows}: raise A or the floor`);
  if (!Number.isSafeInteger(p.tableLifetimeMs) || p.tableLifetimeMs <= p.periodMs) badConfig('tableLifetimeMs must exceed periodMs');
  if (!Number.isSafeInteger(p.maxLagPeriods) || p.maxLagPeriods < 1) badConfig('maxLagPeriods must be >= 1');
  if (n === 0) badConfig('the initial table lists no site');
  let sum = 0;
  for (const s of initial.sites) {
    if (s.degreePpm < p.floorDegreePpm) badConfig(`site ${s.site}: initial degree below the floor`);
    if (s.level > p.thresholds.length + 1) badConfig(`site ${s.site}: initial level beyond the ${p.thresholds.length + 1} levels`);
    sum += s.degreePpm;
  }
  if (sum > PPM) badConfig('the initial degrees add up to more than 1 (more than A per period)');
  return p;
}

/** S3.6: the security level of a period's total. */
export function levelFor(total: number, thresholds: readonly number[]): number {
  let level = 1;
  for (const t of thresholds) if (total >= t) level++;
  return level;
}

/** S3.7: attacks on a mechanism / all attacks on the site, in ppm, rounded down (0 with no attacks). */
export function rateFor(n: number, total: number): number {
  if (total === 0) return 0;
  return Number((BigInt(n) * BigInt(PPM)) / BigInt(total));
}

/**
 * S3.8 with a floor: every site gets `floorPpm`, and the rest of A is shared in proportion to
 * a weight that falls as the level rises (weight = maxLevel + 1 - level: the 1st level weighs
 * most). The degrees add up to at most 1, so all slices together stay within A.
 */
export function degreesFor(levels: readonly number[], maxLevel: number, floorPpm: number): number[] {
  const rest = PPM - levels.length * floorPpm;
  if (rest < 0) throw new ImplementationError('POLICY_BAD_CONFIG', 'the floor degrees do not fit in A');
  const weights = levels.map((l) => maxLevel + 1 - Math.min(l, maxLevel));
  const sum = weights.reduce((a, b) => a + b, 0);
  return weights.map((w) => floorPpm + Math.floor((rest * w) / sum));
}

/** S3.9: the rows a site may fold this period: its degree x A, rounded down. */
export function sliceRows(degreePpm: number, budgetRows: number): number {
  return Math.floor((degreePpm * budgetRows) / PPM);
}

export interface SiteWork {
  /** Rows the site could fold this period (its slice). */
  slice: number;
  /** Rows it folded (never more than the slice). */
  folded: number;
  /** Rows of ended periods still waiting after this update. */
  backlog: number;
}

export interface UpdateResult {
  table: AttackTable;
  signed: Uint8Array;
  work: Map<string, SiteWork>;
}

/**
 * The update at the start of period `periodId`: folds each site's slice of pending rows of
 * ended periods, computes the new table from period periodId-1, signs it and stores it.
 * `config` is the configured initial table (its sites, offered mechanisms and floors are the
 * ones a table states); `prev` the last published table.
 */
export function updatePeriod(store: SqlitePolicyStore, config: AttackTable, prev: AttackTable, periodId: number, now: number, p: PolicyParams, privateKey: Uint8Array): UpdateResult;
export function updatePeriod(store: PolicyStore, config: AttackTable, prev: AttackTable, periodId: number, now: number, p: PolicyParams, privateKey: Uint8Array): Awaitable<UpdateResult>;
export function updatePeriod(store: PolicyStore, config: AttackTable, prev: AttackTable, periodId: number, now: number, p: PolicyParams, privateKey: Uint8Array): Awaitable<UpdateResult> {
  // One transaction on either back end (server-kit/steps.ts): synchronous on SQLite, awaited on PostgreSQL.
  return store.atomically((ops) => updateSteps(ops, config, prev, periodId, now, p, privateKey));
}

function* updateSteps(store: PolicyOps, config: AttackTable, prev: AttackTable, periodId: number, now: number, p: PolicyParams, privateKey: Uint8Array): Steps<UpdateResult> {
  const stats = periodId - 1;
  const maxLevel = p.thresholds.length + 1;
  const before = new Map(prev.sites.map((s) => [s.site, s]));
  const work = new Map<string, SiteWork>();
  const drafts: Pick<SiteEntry, 'level' | 'mechs'>[] = [];
  for (const cs of config.sites) {
    const old = before.get(cs.site) ?? cs;
    const slice = sliceRows(old.degreePpm, p.budgetRows);
    const rows = yield* call(store.pendingFor(cs.site, stats, slice));
    yield* call(store.fold(rows));
    const backlog = yield* call(store.pendingCount(cs.site, stats));
    work.set(cs.site, { slice, folded: rows.length, backlog });
    if (backlog > 0) {
      // Not all of P-1 is in: keep the previous statistics of this site.
      const oldRate = new Map(old.mechs.map((m) => [m.mech, m.ratePpm]));
      drafts.push({ level: Math.min(old.level, maxLevel), mechs: cs.mechs.map((m) => ({ mech: m.mech, ratePpm: oldRate.get(m.mech) ?? 0 })) });
      continue;
    }
    const c: Counts = (yield* call(store.sitePeriod(cs.site, stats))) ?? ZERO;
    drafts.push({ level: levelFor(c.total, p.thresholds), mechs: cs.mechs.map((m) => ({ mech: m.mech, ratePpm: rateFor(c[m.mech], c.total) })) });
  }
  const degrees = degreesFor(drafts.map((d) => d.level), maxLevel, p.floorDegreePpm);
  const table: AttackTable = {
    version: prev.version + 1,
    issuedAt: now,
    expiresAt: now + p.tableLifetimeMs,
    sites: config.sites.map((cs, i) => ({ site: cs.site, level: drafts[i]!.level, floor: cs.floor, degreePpm: degrees[i]!, mechs: drafts[i]!.mechs })),
  };
  const signed = signTable(table, privateKey);
  yield* call(store.putTable({ version: table.version, periodId, issuedAt: table.issuedAt, expiresAt: table.expiresAt, signed }));
  return { table, signed, work };
}
