// The policy server's store on PostgreSQL (issue 16): the same PolicyStore as SqlitePolicyStore
// (store.ts), same rows and validators. A period's update (policy-server/update.ts) runs its
// steps (server-kit/steps.ts) in one SERIALIZABLE transaction, retried whole on a serialization
// failure; a report is taken in one transaction, a resend recognised by its digest. Schema
// history starts here at version 1. The policy server process (server.ts) opens it when its
// configuration names PostgreSQL; several processes may share one schema.
import { openMigrated, tx, type PgPool, type PgMigration, type PgQueryable, type PgOptions } from '../server-kit/pg.ts';
import { runStepsAsync, type Steps } from '../server-kit/steps.ts';
import { pgOptionsOf, type StorePlace } from '../server-kit/store-choice.ts';
import { ImplementationError } from '../protocol/errors.ts';
import type { AttackReport } from '../server-kit/admin-messages.ts';
import { SqlitePolicyStore, sameReport, pendingFromRow, sitePeriodFromRow, tableFromRow, policyProblems, type PolicyStore, type PolicyOps, type PendingRow, type Counts, type TableRow } from './store.ts';

const MIGRATIONS: PgMigration[] = [
  `CREATE TABLE reports (
     gateway TEXT NOT NULL,
     period_id BIGINT NOT NULL,
     digest BYTEA NOT NULL,
     received_at BIGINT NOT NULL,
     PRIMARY KEY (gateway, period_id)
   );
   CREATE TABLE pending (
     id BIGSERIAL PRIMARY KEY,
     site TEXT NOT NULL,
     period_id BIGINT NOT NULL,
     total BIGINT NOT NULL CHECK (total >= 0),
     password BIGINT NOT NULL CHECK (password >= 0),
     fingerprint BIGINT NOT NULL CHECK (fingerprint >= 0),
     otp BIGINT NOT NULL CHECK (otp >= 0)
   );
   CREATE INDEX pending_by_site ON pending (site, period_id, id);
   CREATE TABLE site_periods (
     site TEXT NOT NULL,
     period_id BIGINT NOT NULL,
     total BIGINT NOT NULL,
     password BIGINT NOT NULL,
     fingerprint BIGINT NOT NULL,
     otp BIGINT NOT NULL,
     rows BIGINT NOT NULL,
     PRIMARY KEY (site, period_id)
   );
   CREATE TABLE tables (
     version BIGINT PRIMARY KEY,
     period_id BIGINT NOT NULL,
     issued_at BIGINT NOT NULL,
     expires_at BIGINT NOT NULL,
     signed BYTEA NOT NULL
   );`,
];

/** The schema the policy server uses unless told otherwise. */
export const POLICY_PG_SCHEMA = 'policy';

type R = Record<string, unknown>;

/** The update's reads and writes on one connection (the pool, or a transaction's client). */
class PgPolicyOps implements PolicyOps {
  constructor(protected readonly q: PgQueryable) {}

  async pendingFor(site: string, upTo: number, limit: number): Promise<PendingRow[]> {
    if (limit <= 0) return [];
    return (await this.q.query<R>('SELECT * FROM pending WHERE site = $1 AND period_id <= $2 ORDER BY period_id, id LIMIT $3', [site, upTo, limit])).rows.map(pendingFromRow);
  }

  async pendingCount(site: string, upTo = Number.MAX_SAFE_INTEGER): Promise<number> {
    return (await this.q.query<{ n: number }>('SELECT COUNT(*)::int AS n FROM pending WHERE site = $1 AND period_id <= $2', [site, upTo])).rows[0]!.n;
  }

  async fold(rows: readonly PendingRow[]): Promise<void> {
    for (const r of rows) {
      await this.q.query(
        `INSERT INTO site_periods (site, period_id, total, password, fingerprint, otp, rows) VALUES ($1, $2, $3, $4, $5, $6, 1)
         ON CONFLICT (site, period_id) DO UPDATE SET total = site_periods.total + excluded.total, password = site_periods.password + excluded.password,
           fingerprint = site_periods.fingerprint + excluded.fingerprint, otp = site_periods.otp + excluded.otp, rows = site_periods.rows + 1`,
        [r.site, r.periodId, r.total, r.password, r.fingerprint, r.otp],
      );
      await this.q.query('DELETE FROM pending WHERE id = $1', [r.id]);
    }
  }

  async sitePeriod(site: string, periodId: number): Promise<(Counts & { rows: number }) | null> {
    const r = (await this.q.query<R>('SELECT * FROM site_periods WHERE site = $1 AND period_id = $2', [site, periodId])).rows[0];
    return r ? sitePeriodFromRow(r, `site period ${site}/${periodId}`) : null;
  }

  async latestTable(): Promise<TableRow | null> {
    const r = (await this.q.query<R>('SELECT * FROM tables ORDER BY version DESC LIMIT 1')).rows[0];
    return r ? tableFromRow(r) : null;
  }

  async putTable(t: TableRow): Promise<void> {
    const last = await this.latestTable();
    if (last && t.version <= last.version) throw new ImplementationError('POLICY_VERSION_ORDER', `table version ${t.version} is not above ${last.version}`);
    await this.q.query('INSERT INTO tables (version, period_id, issued_at, expires_at, signed) VALUES ($1, $2, $3, $4, $5)', [t.version, t.periodId, t.issuedAt, t.expiresAt, t.signed]);
  }
}

export class PgPolicyStore extends PgPolicyOps implements PolicyStore {
  private constructor(readonly pool: PgPool, readonly schema: string) {
    super(pool);
  }

  static async open(url: string, schema = POLICY_PG_SCHEMA, o: Omit<PgOptions, 'schema'> = {}): Promise<PgPolicyStore> {
    return new PgPolicyStore(await openMigrated(url, { ...o, schema }, MIGRATIONS), schema);
  }

  async addReport(r: AttackReport, digest: Uint8Array, now: number): Promise<'new' | 'duplicate'> {
    return tx(this.pool, async (c) => {
      const have = (await c.query<{ digest: unknown }>('SELECT digest FROM reports WHERE gateway = $1 AND period_id = $2', [r.gateway, r.periodId])).rows[0];
      if (have) return sameReport(r, have, digest);
      await c.query('INSERT INTO reports (gateway, period_id, digest, received_at) VALUES ($1, $2, $3, $4)', [r.gateway, r.periodId, digest, now]);
      for (const s of r.sites) {
        await c.query('INSERT INTO pending (site, period_id, total, password, fingerprint, otp) VALUES ($1, $2, $3, $4, $5, $6)', [s.site, r.periodId, s.total, s.perMech.password ?? 0, s.perMech.fingerprint ?? 0, s.perMech.otp ?? 0]);
      }
      return 'new' as const;
    });
  }

  /** The steps awaited inside one SERIALIZABLE transaction (run again from the start on a serialization failure). */
  atomically<T>(steps: (ops: PolicyOps) => Steps<T>): Promise<T> {
    return tx(this.pool, (c) => runStepsAsync(steps(new PgPolicyOps(c))));
  }

  async prune(periodId: number): Promise<number> {
    return tx(this.pool, async (c) => {
      const dropped = (await c.query('DELETE FROM pending WHERE period_id < $1', [periodId])).rowCount ?? 0;
      await c.query('DELETE FROM reports WHERE period_id < $1', [periodId]);
      await c.query('DELETE FROM site_periods WHERE period_id < $1', [periodId]);
      await c.query('DELETE FROM tables WHERE period_id < $1 AND version < (SELECT MAX(version) FROM tables)', [periodId]);
      return dropped;
    });
  }

  async counts(): Promise<{ reports: number; pending: number; tables: number }> {
    const { rows } = await this.pool.query<{ r: number; p: number; t: number }>('SELECT (SELECT COUNT(*) FROM reports)::int AS r, (SELECT COUNT(*) FROM pending)::int AS p, (SELECT COUNT(*) FROM tables)::int AS t');
    return { reports: rows[0]!.r, pending: rows[0]!.p, tables: rows[0]!.t };
  }

  async check(): Promise<string[]> {
    return tx(this.pool, async (c) => {
      const all = async (t: string) => (await c.query<R>(`SELECT * FROM ${t}`)).rows;
      return policyProblems({ pending: await all('pending'), sitePeriods: await all('site_periods'), tables: await all('tables'), reports: await all('reports') });
    }, { isolation: 'repeatable read' });
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

/** The policy store at `place`: a SQLite file, or PostgreSQL. */
export async function openPolicyStore(place: StorePlace): Promise<PolicyStore> {
  return place.kind === 'sqlite' ? new SqlitePolicyStore(place.file) : PgPolicyStore.open(place.url, place.schema, pgOptionsOf(place));
}
