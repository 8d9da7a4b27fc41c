// The registration store on PostgreSQL (issue 16): the same RegStore as SqliteRegStore
// (store.ts), for registration servers on several hosts sharing one database. Same rows, same
// validators (a row read back that fails them is STORE_CORRUPT_ROW); integers and times as
// INTEGER/BIGINT, health as 0/1 like SQLite, the user-name key as bytea. Schema history starts
// here at version 1 (SQLite's six steps folded into one): the two back ends number their
// migrations independently.
import { corrupt } from '../server-kit/sqlite.ts';
import { openMigrated, tx, type PgPool, type PgMigration, type PgOptions } from '../server-kit/pg.ts';
import { pgOptionsOf, type StorePlace } from '../server-kit/store-choice.ts';
import {
  SqliteRegStore, deviceFromRow, serverFromRow, firmwareFromRow, regionFromRow, firmwareStatusAccepted, regProblems, tablesVersionOf, versionedUpdate, versionTriggerProblems, type VersionTrigger,
  checkEnrollInput, checkFirmwareInput, enrollUnchanged,
  type RegStore, type Device, type DeviceRow, type DeviceStatus, type EnrollInput, type BizServerRecord, type RegionRecord, type FirmwareRecord, type FirmwareStatus, type ServerRow,
} from './store.ts';

const MIGRATIONS: PgMigration[] = [
  `CREATE TABLE devices (
     serial TEXT PRIMARY KEY,
     status TEXT NOT NULL DEFAULT 'active',
     key_version INTEGER NOT NULL,
     account TEXT NOT NULL,
     biz_user TEXT NOT NULL,
     current_gen INTEGER NOT NULL DEFAULT 0,
     pending_gen INTEGER,
     rotated_at BIGINT,
     rotations INTEGER NOT NULL DEFAULT 0,
     meta TEXT,
     enrolled_at BIGINT NOT NULL,
     reissues INTEGER NOT NULL DEFAULT 0,
     confirmed_gen INTEGER,
     pending_reissues INTEGER NOT NULL DEFAULT 0
   );
   CREATE TABLE biz_servers (
     name TEXT PRIMARY KEY,
     region TEXT NOT NULL,
     url TEXT NOT NULL,
     admin_url TEXT NOT NULL,
     healthy INTEGER NOT NULL DEFAULT 1,
     load INTEGER NOT NULL DEFAULT 0,
     checked_at BIGINT
   );
   CREATE TABLE regions (cidr TEXT PRIMARY KEY, region TEXT NOT NULL);
   CREATE TABLE settings (name TEXT PRIMARY KEY, value BYTEA NOT NULL);
   CREATE TABLE firmware (
     measurement TEXT PRIMARY KEY,
     version INTEGER NOT NULL,
     status TEXT NOT NULL DEFAULT 'accepted',
     added_at BIGINT NOT NULL
   );`,
  // The version of the cached tables (RegStore.tablesVersion), bumped by each statement that
  // writes them; the function keeps the schema it was made in, whoever's search_path calls it.
  `CREATE TABLE tables_version (id INTEGER PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL);
   INSERT INTO tables_version (id, version) VALUES (1, floor(random() * 281474976710656)::bigint);
   CREATE FUNCTION bump_tables_version() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS
     $$ BEGIN UPDATE tables_version SET version = version + 1; RETURN NULL; END $$;
   ${['firmware', 'biz_servers', 'regions'].map((t) =>
     `CREATE TRIGGER ${t}_version AFTER INSERT OR ${versionedUpdate(t)} OR DELETE OR TRUNCATE ON ${t} FOR EACH STATEMENT EXECUTE FUNCTION bump_tables_version();`).join('\n   ')}`,
];

/** The schema a registration store uses unless told otherwise. */
export const REG_PG_SCHEMA = 'reg';

export class PgRegStore implements RegStore {
  private constructor(readonly pool: PgPool, readonly schema: string) {}

  static async open(url: string, schema = REG_PG_SCHEMA, o: Omit<PgOptions, 'schema'> = {}): Promise<PgRegStore> {
    return new PgRegStore(await openMigrated(url, { ...o, schema }, MIGRATIONS), schema);
  }

  async getDevice(serial: string): Promise<Device | null> {
    const { rows } = await this.pool.query<DeviceRow>('SELECT * FROM devices WHERE serial = $1', [serial]);
    return rows[0] ? deviceFromRow(rows[0]) : null;
  }

  async enrollDevice(d: EnrollInput, now = Date.now()): Promise<'created' | 'exists' | 'updated'> {
    checkEnrollInput(d);
    const meta = d.meta ? JSON.stringify(d.meta) : null;
    return tx(this.pool, async (c) => {
      const { rows } = await c.query<DeviceRow>('SELECT * FROM devices WHERE serial = $1 FOR UPDATE', [d.serial]);
      if (!rows[0]) {
        await c.query("INSERT INTO devices (serial, status, key_version, account, biz_user, meta, enrolled_at) VALUES ($1, 'active', $2, $3, $4, $5, $6)", [d.serial, d.keyVersion, d.account, d.user, meta, now]);
        return 'created' as const;
      }
      if (enrollUnchanged(deviceFromRow(rows[0]), d)) return 'exists' as const;
      await c.query('UPDATE devices SET key_version = $1, meta = $2 WHERE serial = $3', [d.keyVersion, meta, d.serial]);
      return 'updated' as const;
    });
  }

  async setDeviceStatus(serial: string, status: DeviceStatus): Promise<boolean> {
    return (await this.pool.query('UPDATE devices SET status = $1 WHERE serial = $2', [status, serial])).rowCount === 1;
  }

  async recordRotation(serial: string, currentGen: number, pendingGen: number, now = Date.now()): Promise<void> {
    await this.pool.query('UPDATE devices SET current_gen = $1, pending_gen = $2, rotated_at = $3, rotations = rotations + 1, pending_reissues = 0 WHERE serial = $4', [currentGen, pendingGen, now, serial]);
  }

  async recordConfirmation(serial: string, gen: number): Promise<void> {
    await this.pool.query('UPDATE devices SET confirmed_gen = $1 WHERE serial = $2', [gen, serial]);
  }

  async recordReissue(serial: string, currentGen: number, pendingGen: number, now = Date.now()): Promise<number> {
    // One statement: the row lock makes two re-issues of one device count twice, never once.
    const { rows } = await this.pool.query<{ pending_reissues: unknown }>(
      'UPDATE devices SET pending_reissues = CASE WHEN pending_gen IS NOT DISTINCT FROM $1 THEN pending_reissues + 1 ELSE 1 END, current_gen = $2, pending_gen = $1, rotated_at = $3, reissues = reissues + 1 WHERE serial = $4 RETURNING pending_reissues',
      [pendingGen, currentGen, now, serial],
    );
    return typeof rows[0]?.pending_reissues === 'number' ? rows[0].pending_reissues : 0;
  }

  async syncTopology(servers: Omit<BizServerRecord, 'healthy' | 'load' | 'checkedAt'>[], regions: RegionRecord[]): Promise<void> {
    await tx(this.pool, async (c) => {
      await c.query('DELETE FROM biz_servers WHERE NOT (name = ANY($1::text[]))', [servers.map((s) => s.name)]);
      for (const s of servers) {
        await c.query(
          'INSERT INTO biz_servers (name, region, url, admin_url) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET region = excluded.region, url = excluded.url, admin_url = excluded.admin_url',
          [s.name, s.region, s.url, s.adminUrl],
        );
      }
      await c.query('DELETE FROM regions');
      for (const r of regions) await c.query('INSERT INTO regions (cidr, region) VALUES ($1, $2)', [r.cidr, r.region]);
    });
  }

  async listServers(): Promise<BizServerRecord[]> {
    return (await this.pool.query<ServerRow>('SELECT * FROM biz_servers ORDER BY name')).rows.map(serverFromRow);
  }

  async listRegions(): Promise<RegionRecord[]> {
    return (await this.pool.query<{ cidr: unknown; region: unknown }>('SELECT cidr, region FROM regions ORDER BY cidr')).rows.map(regionFromRow);
  }

  async setServerHealth(name: string, healthy: boolean, load: number, now = Date.now()): Promise<void> {
    await this.pool.query('UPDATE biz_servers SET healthy = $1, load = $2, checked_at = $3 WHERE name = $4', [healthy ? 1 : 0, Math.max(0, Math.floor(load)), now, name]);
  }

  async userNameKey(ifNew?: Uint8Array): Promise<Uint8Array> {
    if (ifNew !== undefined && ifNew.length !== 32) throw new RangeError('userNameKey: 32 bytes');
    // The first writer's key wins; every server reads back the one kept.
    const key = ifNew ? Uint8Array.from(ifNew) : crypto.getRandomValues(new Uint8Array(32));
    await this.pool.query("INSERT INTO settings (name, value) VALUES ('user_name_key', $1) ON CONFLICT (name) DO NOTHING", [key]);
    const { rows } = await this.pool.query<{ value: unknown }>("SELECT value FROM settings WHERE name = 'user_name_key'");
    const v = rows[0]?.value;
    if (!(v instanceof Uint8Array) || v.length !== 32) corrupt('settings row user_name_key', 'not 32 bytes');
    return v as Uint8Array;
  }

  async addFirmware(measurement: string, version: number, now = Date.now()): Promise<'created' | 'exists'> {
    checkFirmwareInput(measurement, version);
    const r = await this.pool.query('INSERT INTO firmware (measurement, version, added_at) VALUES ($1, $2, $3) ON CONFLICT (measurement) DO NOTHING', [measurement, version, now]);
    return r.rowCount === 1 ? 'created' : 'exists';
  }

  async setFirmwareStatus(measurement: string, status: FirmwareStatus): Promise<boolean> {
    return (await this.pool.query('UPDATE firmware SET status = $1 WHERE measurement = $2', [status, measurement])).rowCount === 1;
  }

  async firmwareAccepted(measurement: string): Promise<boolean> {
    const { rows } = await this.pool.query<{ status: unknown }>('SELECT status FROM firmware WHERE measurement = $1', [measurement]);
    return firmwareStatusAccepted(measurement, rows[0]);
  }

  async tablesVersion(): Promise<number> {
    return tablesVersionOf((await this.pool.query<{ version: unknown }>('SELECT version FROM tables_version WHERE id = 1')).rows[0]);
  }

  async listFirmware(): Promise<FirmwareRecord[]> {
    return (await this.pool.query('SELECT * FROM firmware ORDER BY added_at, measurement')).rows.map(firmwareFromRow);
  }

  async check(): Promise<string[]> {
    // One snapshot of the four tables.
    return tx(this.pool, async (c) => {
      const all = async (t: string) => (await c.query(`SELECT * FROM ${t}`)).rows as never[];
      // The triggers of this schema's tables that call this schema's bump_tables_version, enabled
      // for ordinary sessions ('O' origin, 'A' always; not 'D' disabled, not 'R' replica only),
      // without a WHEN condition; the columns of an UPDATE OF (tgattr; empty: any column).
      const trig = await c.query<{ tbl: string; tgtype: number; cols: string[] }>(
        `SELECT c.relname AS tbl, t.tgtype::int AS tgtype,
                array(SELECT a.attname::text FROM unnest(t.tgattr::int2[]) AS k JOIN pg_attribute a ON a.attrelid = t.tgrelid AND a.attnum = k) AS cols
           FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_proc p ON p.oid = t.tgfoid
          WHERE NOT t.tgisinternal AND t.tgenabled IN ('O', 'A') AND t.tgqual IS NULL AND (t.tgtype & 2) = 0
            AND c.relnamespace = current_schema()::regnamespace AND p.pronamespace = c.relnamespace AND p.proname = 'bump_tables_version'`);
      const triggers: VersionTrigger[] = trig.rows.map((r) => ({
        table: r.tbl,
        ops: ([[4, 'INSERT'], [16, 'UPDATE'], [8, 'DELETE'], [32, 'TRUNCATE']] as const).filter(([bit]) => (r.tgtype & bit) !== 0).map(([, op]) => op),
        columns: r.cols.length ? r.cols : null,
      }));
      return [...regProblems({ devices: await all('devices'), servers: await all('biz_servers'), firmware: await all('firmware'), regions: await all('regions') }), ...versionTriggerProblems(triggers, ['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE'])];
    }, { isolation: 'repeatable read' });
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

/** The registration store at `place`: a SQLite file, or PostgreSQL. */
export async function openRegStore(place: StorePlace): Promise<RegStore> {
  return place.kind === 'sqlite' ? new SqliteRegStore(place.file) : PgRegStore.open(place.url, place.schema, pgOptionsOf(place));
}
