// Registration server state (S0.8, S0.9, S0.14): devices (serial, status, master key
// version, business account and user, rotation state), business servers (name, region,
// device-facing URL, admin URL, health, load), the region map (CIDR -> region) and the
// firmware it accepts (issue 9, attestation: measurements from the factory's enrollment
// records, each accepted or revoked).
// The reg primary and backup open the same file (WAL) on one machine; on several machines a
// PostgreSQL implementation of this interface replaces it (docs/architecture.md §"Stores").
// Device keys are never stored: they are derived from the master key (protocol/keys.ts).
import { openDb, corrupt, type Db } from '../server-kit/sqlite.ts';
import { SERIAL_RE } from '../protocol/keys.ts';
import { USER_RE, DEST_RE } from '../protocol/messages.ts';
import { ImplementationError } from '../protocol/errors.ts';
import { rowChecker, type Awaitable } from '../server-kit/store-choice.ts';

export type DeviceStatus = 'active' | 'disabled';

export interface Device {
  serial: string;
  status: DeviceStatus;
  keyVersion: number;
  account: string;
  user: string;
  /** Generation the business server held as current at the last rotation. */
  currentGen: number;
  /** Generation issued at the last rotation (pending at the business server until used). */
  pendingGen: number | null;
  rotatedAt: number | null;
  rotations: number;
  /** Registrations that re-issued the still unused pending secret instead of a new one. */
  reissues: number;
  /** The generation the device last said it uses (pwConfirm at registration), if any. */
  confirmedGen: number | null;
}

export interface EnrollInput {
  serial: string;
  keyVersion: number;
  account: string;
  user: string;
  /** The rest of the enrollment record (uniqueId, imageSha256, ...), kept as JSON. */
  meta?: Record<string, unknown>;
}

export interface BizServerRecord {
  name: string;
  region: string;
  /** Address the device uses for this server (through the gateway: gatewayUrl/name). */
  url: string;
  adminUrl: string;
  healthy: boolean;
  load: number;
  checkedAt: number | null;
}

export interface RegionRecord { cidr: string; region: string }

export type FirmwareStatus = 'accepted' | 'revoked';
export interface FirmwareRecord { measurement: string; version: number; status: FirmwareStatus; addedAt: number }

export interface RegStore {
  getDevice(serial: string): Awaitable<Device | null>;
  /** Idempotent: 'exists' when nothing changed, 'updated' when the key version changed. */
  enrollDevice(d: EnrollInput, now?: number): Awaitable<'created' | 'exists' | 'updated'>;
  setDeviceStatus(serial: string, status: DeviceStatus): Awaitable<boolean>;
  /** A new pending generation was installed. */
  recordRotation(serial: string, currentGen: number, pendingGen: number, now?: number): Awaitable<void>;
  /** The pending generation was re-issued (it may have been installed by a crashed run). */
  /** Returns how many times this pending generation has been issued again without a login using it. */
  recordReissue(serial: string, currentGen: number, pendingGen: number, now?: number): Awaitable<number>;
  /** The device confirmed it uses generation `gen` (informational). */
  recordConfirmation(serial: string, gen: number): Awaitable<void>;
  /** Replaces the business server list and region map from configuration (health kept). */
  syncTopology(servers: Omit<BizServerRecord, 'healthy' | 'load' | 'checkedAt'>[], regions: RegionRecord[]): Awaitable<void>;
  listServers(): Awaitable<BizServerRecord[]>;
  listRegions(): Awaitable<RegionRecord[]>;
  setServerHealth(name: string, healthy: boolean, load: number, now?: number): Awaitable<void>;
  /**
   * This deployment's key for business user names (32 random bytes, made on first use in one
   * transaction, kept in the store): enrollment derives each device's opaque user name from it
   * (deploy/enroll.ts userNameFor), so a name is stable across retries yet says nothing of the serial.
   * `ifNew`: the key to keep when none exists yet (a deterministic simulation derives it from its seed).
   */
  userNameKey(ifNew?: Uint8Array): Awaitable<Uint8Array>;
  /**
   * Adds a firmware measurement (64 hex) from a factory enrollment record as accepted:
   * 'created', or 'exists' (a revoked one stays revoked: enrolling a device never un-revokes).
   */
  addFirmware(measurement: string, version: number, now?: number): Awaitable<'created' | 'exists'>;
  /** Accepts or revokes a known measurement; false when it is not known. */
  setFirmwareStatus(measurement: string, status: FirmwareStatus): Awaitable<boolean>;
  /** Whether a hello's measurement is firmware this server accepts (known and not revoked). */
  firmwareAccepted(measurement: string): Awaitable<boolean>;
  listFirmware(): Awaitable<FirmwareRecord[]>;
  /**
   * The version of the tables a registration reads and rarely changes (firmware, biz_servers,
   * regions): a trigger bumps it on every write to them, whichever connection or process writes
   * (the backup, `usbphone` admin commands, raw SQL). It starts at a random 48-bit value, so a
   * store made again does not repeat an old one. A cache of those tables (tables-cache.ts) is
   * current while this is unchanged. An integer; a bad row is STORE_CORRUPT_ROW.
   */
  tablesVersion(): Awaitable<number>;
  /** Problems found in the stored rows (empty when none): rows failing validation, a pending generation not above the current one. */
  check(): Promise<string[]>;
  close(): Awaitable<void>;
}

/**
 * The UPDATE a tables_version trigger of `table` fires on (SQLite and PostgreSQL alike): any column,
 * but on biz_servers only the columns placement reads from the store (its health columns are an
 * operator's copy; decision 141).
 */
export const versionedUpdate = (table: string): string => (table === 'biz_servers' ? 'UPDATE OF name, region, url, admin_url' : 'UPDATE');

/** The tables whose writes bump tables_version (decision 141): what the registration servers cache. */
export const VERSIONED_TABLES = ['firmware', 'biz_servers', 'regions'] as const;

const MIGRATIONS = [
  `CREATE TABLE devices (
     serial TEXT PRIMARY KEY,
     status TEXT NOT NULL DEFAULT 'active',
     key_version INTEGER NOT NULL,
     account TEXT NOT NULL,
     biz_user TEXT NOT NULL,
     current_gen INTEGER NOT NULL DEFAULT 0,
     pending_gen INTEGER,
     rotated_at INTEGER,
     rotations INTEGER NOT NULL DEFAULT 0,
     meta TEXT,
     enrolled_at INTEGER NOT NULL
   );
   CREATE TABLE biz_servers (
     name TEXT PRIMARY KEY,
     region TEXT NOT NULL,
     url TEXT NOT NULL,
     admin_url TEXT NOT NULL,
     healthy INTEGER NOT NULL DEFAULT 1,
     load INTEGER NOT NULL DEFAULT 0,
     checked_at INTEGER
   );
   CREATE TABLE regions (
     cidr TEXT PRIMARY KEY,
     region TEXT NOT NULL
   );`,
  `ALTER TABLE devices ADD COLUMN reissues INTEGER NOT NULL DEFAULT 0`,
  `ALTER TABLE devices ADD COLUMN confirmed_gen INTEGER`,
  `CREATE TABLE settings (name TEXT PRIMARY KEY, value BLOB NOT NULL)`,
  `ALTER TABLE devices ADD COLUMN pending_reissues INTEGER NOT NULL DEFAULT 0`,
  `CREATE TABLE firmware (
     measurement TEXT PRIMARY KEY,
     version INTEGER NOT NULL,
     status TEXT NOT NULL DEFAULT 'accepted',
     added_at INTEGER NOT NULL
   )`,
  // The version of the cached tables (RegStore.tablesVersion): one row, bumped by each row written,
  // but not by a business server's health copy (UPDATE of healthy, load, checked_at only: every
  // registration server's poller writes it every interval, for operators to read; placement takes
  // health from its own process's view, reg-server/health.ts). Bumped by those it would have
  // dropped the cache every poll (found by review; on PostgreSQL it also deadlocked with syncTopology).
  `CREATE TABLE tables_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
   INSERT INTO tables_version (id, version) VALUES (1, abs(random() % 281474976710656));
   ${VERSIONED_TABLES.flatMap((t) => ['INSERT', 'UPDATE', 'DELETE'].map((op) =>
     `CREATE TRIGGER ${t}_${op.toLowerCase()}_version AFTER ${op === 'UPDATE' ? versionedUpdate(t) : op} ON ${t} BEGIN UPDATE tables_version SET version = version + 1; END;`)).join('\n   ')}`,
];

/** The columns an UPDATE must touch to bump tables_version (versionedUpdate); null: any column. */
export const versionedColumns = (table: string): string[] | null => (table === 'biz_servers' ? ['name', 'region', 'url', 'admin_url'] : null);

/** One trigger that bumps tables_version, as the store's catalogue describes it. */
export interface VersionTrigger {
  table: string;
  /** INSERT, UPDATE, DELETE, TRUNCATE: what it fires on. */
  ops: string[];
  /** UPDATE OF these columns; null: any column. */
  columns: string[] | null;
}

const sameColumns = (a: string[] | null, b: string[] | null) => (a === null || b === null ? a === b : a.length === b.length && [...a].sort().join() === [...b].sort().join());

/**
 * The integrity check's word on the tables_version triggers (decision 141): each versioned table
 * needs a trigger, firing unconditionally, for each of `ops`, its UPDATE one on exactly the
 * columns versionedColumns names. One missing means a write to that table leaves every
 * registration server's cached copy stale until a restart; an UPDATE trigger on other columns
 * either misses writes placement reads or (on biz_servers' health copy) drops every cache at
 * each poll.
 */
export function versionTriggerProblems(triggers: VersionTrigger[], ops: readonly string[]): string[] {
  const out: string[] = [];
  for (const t of VERSIONED_TABLES) {
    const mine = triggers.filter((x) => x.table === t);
    const want = versionedColumns(t);
    const wrong = mine.filter((x) => x.ops.includes('UPDATE') && !sameColumns(x.columns, want));
    const missing = ops.filter((op) => !mine.some((x) => x.ops.includes(op) && (op !== 'UPDATE' || sameColumns(x.columns, want))) && !(op === 'UPDATE' && wrong.length));
    if (missing.length) out.push(`table ${t}: no tables_version trigger on ${missing.join(', ')}: a registration server's cached ${t} would not see such a write (decision 141)`);
    const cols = (c: string[] | null) => (c ? c.join(', ') : 'any column');
    for (const w of wrong) out.push(`table ${t}: a tables_version trigger fires on UPDATE of ${cols(w.columns)}, not of ${cols(want)} (decision 141)`);
  }
  return out;
}

/**
 * A SQLite trigger's SQL as a VersionTrigger, or null when it is not one that bumps tables_version
 * every time it fires (another body, or a WHEN condition).
 */
export function sqliteVersionTrigger(table: string, sql: string): VersionTrigger | null {
  const m = /\bAFTER\s+(INSERT|UPDATE|DELETE)(?:\s+OF\s+([\s\S]+?))?\s+ON\s+[\s\S]*?\bBEGIN\b([\s\S]*)$/i.exec(sql);
  if (!m) return null;
  const head = sql.slice(0, sql.length - m[3]!.length);
  if (/\bWHEN\b/i.test(head)) return null;
  if (!/^\s*UPDATE\s+tables_version\s+SET\s+version\s*=\s*version\s*\+\s*1\s*;\s*END\s*;?\s*$/i.test(m[3]!)) return null;
  const columns = m[2] ? m[2].split(',').map((c) => c.trim().replace(/^["`[]|["`\]]$/g, '').toLowerCase()) : null;
  return { table, ops: [m[1]!.toUpperCase()], columns };
}

export const MEASUREMENT_RE = /^[0-9a-f]{64}$/;

export const isGen = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

export interface DeviceRow { serial: unknown; status: unknown; key_version: unknown; account: unknown; biz_user: unknown; current_gen: unknown; pending_gen: unknown; rotated_at: unknown; rotations: unknown; reissues: unknown; confirmed_gen: unknown }

export function deviceFromRow(r: DeviceRow): Device {
  const what = `device row ${typeof r.serial === 'string' ? r.serial.slice(0, 64) : '?'}`;
  if (typeof r.serial !== 'string' || !SERIAL_RE.test(r.serial)) corrupt(what, 'bad serial');
  if (r.status !== 'active' && r.status !== 'disabled') corrupt(what, 'bad status');
  if (typeof r.key_version !== 'number' || !Number.isInteger(r.key_version) || r.key_version < 1 || r.key_version > 255) corrupt(what, 'bad key version');
  if (typeof r.account !== 'string' || r.account.length === 0 || r.account.length > 128) corrupt(what, 'bad account');
  if (typeof r.biz_user !== 'string' || !USER_RE.test(r.biz_user)) corrupt(what, 'bad business user');
  if (!isGen(r.current_gen) || (r.pending_gen !== null && !isGen(r.pending_gen)) || !isGen(r.rotations)) corrupt(what, 'bad generations');
  if (r.rotated_at !== null && !isGen(r.rotated_at)) corrupt(what, 'bad rotation time');
  if (!isGen(r.reissues)) corrupt(what, 'bad reissue count');
  if (r.confirmed_gen !== null && !isGen(r.confirmed_gen)) corrupt(what, 'bad confirmed generation');
  return {
    serial: r.serial,
    status: r.status,
    keyVersion: r.key_version,
    account: r.account,
    user: r.biz_user,
    currentGen: r.current_gen,
    pendingGen: r.pending_gen as number | null,
    rotatedAt: r.rotated_at as number | null,
    rotations: r.rotations,
    reissues: r.reissues,
    confirmedGen: r.confirmed_gen as number | null,
  };
}

export interface ServerRow { name: unknown; region: unknown; url: unknown; admin_url: unknown; healthy: unknown; load: unknown; checked_at: unknown }

export function serverFromRow(r: ServerRow): BizServerRecord {
  const what = `business server row ${typeof r.name === 'string' ? r.name.slice(0, 32) : '?'}`;
  if (typeof r.name !== 'string' || !DEST_RE.test(r.name)) corrupt(what, 'bad name');
  if (typeof r.region !== 'string' || r.region.length === 0 || r.region.length > 32) corrupt(what, 'bad region');
  if (typeof r.url !== 'string' || !/^wss?:\/\/\S+$/.test(r.url) || r.url.length > 256) corrupt(what, 'bad url');
  if (typeof r.admin_url !== 'string' || !/^https?:\/\/\S+$/.test(r.admin_url)) corrupt(what, 'bad admin url');
  if (r.healthy !== 0 && r.healthy !== 1) corrupt(what, 'bad health');
  if (!isGen(r.load)) corrupt(what, 'bad load');
  return { name: r.name, region: r.region, url: r.url, adminUrl: r.admin_url, healthy: r.healthy === 1, load: r.load, checkedAt: r.checked_at as number | null };
}

export function firmwareFromRow(r: Record<string, unknown>): FirmwareRecord {
  if (typeof r.measurement !== 'string' || !MEASUREMENT_RE.test(r.measurement) || !isGen(r.version) || (r.status !== 'accepted' && r.status !== 'revoked') || !isGen(r.added_at)) corrupt('firmware row', 'bad measurement, version or status');
  return { measurement: r.measurement as string, version: r.version as number, status: r.status as FirmwareStatus, addedAt: r.added_at as number };
}

export function regionFromRow(r: { cidr: unknown; region: unknown }): RegionRecord {
  if (typeof r.cidr !== 'string' || typeof r.region !== 'string') corrupt('region row', 'bad cidr or region');
  return { cidr: r.cidr, region: r.region };
}

/** Whether a stored firmware status says accepted (a row with another status is corrupt). */
export function firmwareStatusAccepted(measurement: string, r: { status: unknown } | undefined): boolean {
  if (r && r.status !== 'accepted' && r.status !== 'revoked') corrupt(`firmware row ${measurement.slice(0, 16)}`, 'bad status');
  return r?.status === 'accepted';
}

/**
 * The integrity check of a registration store, over every row (both back ends): a row that
 * fails validation, or a pending generation that is not above the current one (a rotation
 * recorded out of order, or a lost one).
 */
export function regProblems(rows: { devices: DeviceRow[]; servers: ServerRow[]; firmware: Record<string, unknown>[]; regions: { cidr: unknown; region: unknown }[] }): string[] {
  const { each, problems: out } = rowChecker();
  each(rows.devices, (r) => {
    const d = deviceFromRow(r);
    if (d.pendingGen !== null && d.pendingGen <= d.currentGen) out.push(`device ${d.serial}: pending generation ${d.pendingGen} is not above the current ${d.currentGen}`);
  });
  each(rows.servers, serverFromRow);
  each(rows.firmware, firmwareFromRow);
  each(rows.regions, regionFromRow);
  return out;
}

/** The version row's value (RegStore.tablesVersion); anything but one safe integer is corrupt. */
export function tablesVersionOf(r: { version: unknown } | undefined): number {
  if (!r || !Number.isSafeInteger(r.version)) corrupt('tables_version row', 'missing or not an integer');
  return r.version as number;
}

export function checkFirmwareInput(measurement: string, version: number): void {
  if (!MEASUREMENT_RE.test(measurement)) throw new ImplementationError('ENROLL_BAD_RECORD', 'firmware measurement must be 64 lowercase hex digits');
  if (!isGen(version)) throw new ImplementationError('ENROLL_BAD_RECORD', 'firmware version must be a non-negative integer');
}

export function checkEnrollInput(d: EnrollInput): void {
  if (!SERIAL_RE.test(d.serial)) throw new ImplementationError('ENROLL_BAD_RECORD', `serial '${d.serial}' is outside ${SERIAL_RE.source}`);
  if (!USER_RE.test(d.user)) throw new ImplementationError('ENROLL_BAD_RECORD', `user '${d.user}' is outside ${USER_RE.source}`);
}

/** Re-enrolling a device: true when nothing changes, false when its key version does; ENROLL_CONFLICT when it is bound to another account. */
export function enrollUnchanged(have: Device, d: EnrollInput): boolean {
  if (have.account !== d.account || have.user !== d.user) {
    throw new ImplementationError('ENROLL_CONFLICT', `serial ${d.serial} is already bound to account '${have.account}' user '${have.user}'`);
  }
  return have.keyVersion === d.keyVersion;
}

export class SqliteRegStore implements RegStore {
  readonly db: Db;
  // Prepared once: a registration runs several of these, and preparing costs more than running.
  readonly #getDevice;
  readonly #insertDevice;
  readonly #updateKeyVersion;
  readonly #setStatus;
  readonly #recordRotation;
  readonly #recordConfirmation;
  readonly #recordReissue;
  readonly #listServers;
  readonly #listRegions;
  readonly #setServerHealth;
  readonly #firmwareStatus;
  readonly #addFirmware;
  readonly #setFirmware;
  readonly #tablesVersion;
  constructor(file: string) {
    this.db = openDb(file, MIGRATIONS);
    this.#getDevice = this.db.prepare('SELECT * FROM devices WHERE serial = ?');
    this.#insertDevice = this.db.prepare('INSERT INTO devices (serial, status, key_version, account, biz_user, meta, enrolled_at) VALUES (?, \'active\', ?, ?, ?, ?, ?)');
    this.#updateKeyVersion = this.db.prepare('UPDATE devices SET key_version = ?, meta = ? WHERE serial = ?');
    this.#setStatus = this.db.prepare('UPDATE devices SET status = ? WHERE serial = ?');
    this.#recordRotation = this.db.prepare('UPDATE devices SET current_gen = ?, pending_gen = ?, rotated_at = ?, rotations = rotations + 1, pending_reissues = 0 WHERE serial = ?');
    this.#recordConfirmation = this.db.prepare('UPDATE devices SET confirmed_gen = ? WHERE serial = ?');
    // The count of one pending generation's re-issues restarts when the pending generation changes.
    this.#recordReissue = this.db.prepare('UPDATE devices SET pending_reissues = CASE WHEN pending_gen IS ? THEN pending_reissues + 1 ELSE 1 END, current_gen = ?, pending_gen = ?, rotated_at = ?, reissues = reissues + 1 WHERE serial = ? RETURNING pending_reissues');
    this.#listServers = this.db.prepare('SELECT * FROM biz_servers ORDER BY name');
    this.#listRegions = this.db.prepare('SELECT cidr, region FROM regions ORDER BY cidr');
    this.#setServerHealth = this.db.prepare('UPDATE biz_servers SET healthy = ?, load = ?, checked_at = ? WHERE name = ?');
    this.#firmwareStatus = this.db.prepare('SELECT status FROM firmware WHERE measurement = ?');
    this.#addFirmware = this.db.prepare('INSERT INTO firmware (measurement, version, added_at) VALUES (?, ?, ?) ON CONFLICT(measurement) DO NOTHING');
    this.#setFirmware = this.db.prepare('UPDATE firmware SET status = ? WHERE measurement = ?');
    this.#tablesVersion = this.db.prepare('SELECT version FROM tables_version WHERE id = 1');
  }

  tablesVersion(): number {
    return tablesVersionOf(this.#tablesVersion.get() as { version: unknown } | undefined);
  }

  addFirmware(measurement: string, version: number, now = Date.now()): 'created' | 'exists' {
    checkFirmwareInput(measurement, version);
    return this.#addFirmware.run(measurement, version, now).changes === 1 ? 'created' : 'exists';
  }

  setFirmwareStatus(measurement: string, status: FirmwareStatus): boolean {
    return this.#setFirmware.run(status, measurement).changes === 1;
  }

  firmwareAccepted(measurement: string): boolean {
    return firmwareStatusAccepted(measurement, this.#firmwareStatus.get(measurement) as { status: unknown } | undefined);
  }

  listFirmware(): FirmwareRecord[] {
    return (this.db.prepare('SELECT * FROM firmware ORDER BY added_at, measurement').all() as Record<string, unknown>[]).map(firmwareFromRow);
  }

  userNameKey(ifNew?: Uint8Array): Uint8Array {
    return this.db.transaction(() => {
      const row = this.db.prepare("SELECT value FROM settings WHERE name = 'user_name_key'").get() as { value: unknown } | undefined;
      if (row) {
        if (!(row.value instanceof Uint8Array) || row.value.length !== 32) corrupt('settings row user_name_key', 'not 32 bytes');
        return Uint8Array.from(row.value as Uint8Array);
      }
      if (ifNew !== undefined && ifNew.length !== 32) throw new RangeError('userNameKey: 32 bytes');
      const key = ifNew ? Uint8Array.from(ifNew) : crypto.getRandomValues(new Uint8Array(32));
      this.db.prepare("INSERT INTO settings (name, value) VALUES ('user_name_key', ?)").run(key);
      return key;
    }).immediate();
  }

  getDevice(serial: string): Device | null {
    const r = this.#getDevice.get(serial) as DeviceRow | undefined;
    return r ? deviceFromRow(r) : null;
  }

  enrollDevice(d: EnrollInput, now = Date.now()): 'created' | 'exists' | 'updated' {
    checkEnrollInput(d);
    return this.db.transaction(() => {
      const r = this.#getDevice.get(d.serial) as DeviceRow | undefined;
      if (!r) {
        this.#insertDevice.run(d.serial, d.keyVersion, d.account, d.user, d.meta ? JSON.stringify(d.meta) : null, now);
        return 'created' as const;
      }
      if (enrollUnchanged(deviceFromRow(r), d)) return 'exists' as const;
      this.#updateKeyVersion.run(d.keyVersion, d.meta ? JSON.stringify(d.meta) : null, d.serial);
      return 'updated' as const;
    }).immediate();
  }

  setDeviceStatus(serial: string, status: DeviceStatus): boolean {
    return this.#setStatus.run(status, serial).changes === 1;
  }

  recordRotation(serial: string, currentGen: number, pendingGen: number, now = Date.now()): void {
    this.#recordRotation.run(currentGen, pendingGen, now, serial);
  }

  recordConfirmation(serial: string, gen: number): void {
    this.#recordConfirmation.run(gen, serial);
  }

  recordReissue(serial: string, currentGen: number, pendingGen: number, now = Date.now()): number {
    const r = this.#recordReissue.get(pendingGen, currentGen, pendingGen, now, serial) as { pending_reissues: unknown } | undefined;
    return typeof r?.pending_reissues === 'number' ? r.pending_reissues : 0;
  }

  syncTopology(servers: Omit<BizServerRecord, 'healthy' | 'load' | 'checkedAt'>[], regions: RegionRecord[]): void {
    this.db.transaction(() => {
      const names = servers.map((s) => s.name);
      this.db.prepare(`DELETE FROM biz_servers WHERE name NOT IN (${names.map(() => '?').join(',') || "''"})`).run(...names);
      const up = this.db.prepare(
        'INSERT INTO biz_servers (name, region, url, admin_url) VALUES (?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET region = excluded.region, url = excluded.url, admin_url = excluded.admin_url',
      );
      for (const s of servers) up.run(s.name, s.region, s.url, s.adminUrl);
      this.db.prepare('DELETE FROM regions').run();
      const ins = this.db.prepare('INSERT INTO regions (cidr, region) VALUES (?, ?)');
      for (const r of regions) ins.run(r.cidr, r.region);
    }).immediate();
  }

  listServers(): BizServerRecord[] {
    return (this.#listServers.all() as ServerRow[]).map(serverFromRow);
  }

  listRegions(): RegionRecord[] {
    return (this.#listRegions.all() as { cidr: unknown; region: unknown }[]).map(regionFromRow);
  }

  setServerHealth(name: string, healthy: boolean, load: number, now = Date.now()): void {
    this.#setServerHealth.run(healthy ? 1 : 0, Math.max(0, Math.floor(load)), now, name);
  }

  async check(): Promise<string[]> {
    const all = (t: string) => this.db.prepare(`SELECT * FROM ${t}`).all() as never[];
    const triggers = (this.db.prepare("SELECT tbl_name, sql FROM sqlite_master WHERE type = 'trigger'").all() as { tbl_name: string; sql: string }[])
      .flatMap((r) => sqliteVersionTrigger(r.tbl_name, r.sql) ?? []);
    return [...regProblems({ devices: all('devices'), servers: all('biz_servers'), firmware: all('firmware'), regions: all('regions') }), ...versionTriggerProblems(triggers, ['INSERT', 'UPDATE', 'DELETE'])];
  }

  close(): void {
    this.db.close();
  }
}
