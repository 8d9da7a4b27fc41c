// Enrollment (`usbphone enroll`, `stack.enroll`): registers devices from the image builder's
// enrollment records ({serial, keyVersion, uniqueId, imageSha256, regPrimary, regBackup}) and
// binds each to a business account: the device row (status active) in the registration store,
// the account (no password yet: generation 0) at the business servers. Idempotent per serial.
// A record's firmware measurement (firmwareMeasurement, firmwareVersion: the image builder's
// signed boot manifest) goes into the registration store's table of accepted firmware: the
// registration servers refuse a hello attesting any other (REG_FIRMWARE_REFUSED, issue 9).
//
// The account goes through an AccountDirectory: online, the business server's admin API
// (`enrollAccount`, accountsViaAdmin), which is how a deployment whose business store lives
// elsewhere is enrolled; offline, the business store file itself (accountsInStore), for a
// state directory whose servers are not running (docs/decisions.md). The account is created
// first, so an interrupted run leaves at most an account without a device, which the next
// run completes (the user name is derived, not drawn, so it is the same the next time).
import { createHmac } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SERIAL_RE } from '../protocol/keys.ts';
import { USER_RE } from '../protocol/messages.ts';
import { ImplementationError } from '../protocol/errors.ts';
import { AdminError } from '../server-kit/admin-rpc.ts';
import { adminCall, ACCOUNT_MAX, type AdminCaller, type EnrollAccountResult } from '../server-kit/admin-messages.ts';
import type { RegStore } from '../reg-server/store.ts';
import type { BizStore } from '../biz-server/store.ts';

export interface EnrollmentRecord {
  serial: string;
  keyVersion: number;
  uniqueId?: string;
  imageSha256?: string;
  regPrimary?: string;
  regBackup?: string;
  /** SHA-256 of the image's signed boot manifest body (64 hex): accepted firmware from now on. */
  firmwareMeasurement?: string;
  firmwareVersion?: number;
  [k: string]: unknown;
}

export interface EnrollOptions {
  /** Business account to bind (single record only); default 'acct-' + serial. */
  account?: string;
  /** Business user name (single record only); default the opaque userNameFor(serial), kept on re-enrollment. */
  user?: string;
}

export interface EnrollResult { serial: string; user: string; account: string; device: 'created' | 'exists' | 'updated'; bizAccount: 'created' | 'exists' }

function bad(why: string): never {
  throw new ImplementationError('ENROLL_BAD_RECORD', why);
}

/**
 * A device's business user name: 'u-' and 20 hex digits (80 bits) of HMAC-SHA256 under the
 * deployment's user-name key (RegStore.userNameKey). The user name travels in clear in every
 * login frame (it names the key the server looks up), so it must say nothing of the serial
 * (issue 9: 'u-' + serial put the serial on the wire); keyed, it is stable across retries of an
 * enrollment and unlinkable to the serial without the key.
 */
export function userNameFor(key: Uint8Array, serial: string): string {
  return `u-${createHmac('sha256', key).update('usbphone/v1 user name\0').update(serial).digest('hex').slice(0, 20)}`;
}

/** One JSON record, a JSON array of records, or JSON lines. */
export function parseEnrollmentRecords(text: string): EnrollmentRecord[] {
  const t = text.trim();
  if (!t) bad('no enrollment records');
  let values: unknown[];
  try {
    const v = JSON.parse(t);
    values = Array.isArray(v) ? v : [v];
  } catch {
    values = t.split(/\r?\n/).filter((l) => l.trim()).map((l, i) => {
      try {
        return JSON.parse(l);
      } catch {
        return bad(`line ${i + 1} is not JSON`);
      }
    });
  }
  return values.map((v, i) => checkRecord(v, i));
}

export function checkRecord(v: unknown, i = 0): EnrollmentRecord {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) bad(`record ${i + 1} is not an object`);
  const r = v as Record<string, unknown>;
  if (typeof r.serial !== 'string' || !SERIAL_RE.test(r.serial)) bad(`record ${i + 1}: serial must match ${SERIAL_RE.source}`);
  if (typeof r.keyVersion !== 'number' || !Number.isInteger(r.keyVersion) || r.keyVersion < 1 || r.keyVersion > 255) bad(`record ${i + 1}: keyVersion must be 1..255`);
  if (r.firmwareMeasurement !== undefined && (typeof r.firmwareMeasurement !== 'string' || !/^[0-9a-f]{64}$/.test(r.firmwareMeasurement))) bad(`record ${i + 1}: firmwareMeasurement must be 64 lowercase hex digits`);
  if (r.firmwareVersion !== undefined && (typeof r.firmwareVersion !== 'number' || !Number.isSafeInteger(r.firmwareVersion) || r.firmwareVersion < 0)) bad(`record ${i + 1}: firmwareVersion must be a non-negative integer`);
  return r as EnrollmentRecord;
}

/**
 * Where business accounts are created. createAccount is idempotent for the same
 * account/user pair ('exists'); an account or user bound to another throws
 * ImplementationError BIZ_ACCOUNT_CONFLICT (BIZ_BAD_USER for a bad name).
 */
export interface AccountDirectory {
  createAccount(account: string, user: string): Promise<EnrollAccountResult>;
}

/**
 * Online: through business servers' admin API (`enrollAccount`). The servers share one
 * accounts store, so the first that answers is enough; one that cannot be reached
 * (ADMIN_UNREACHABLE, ADMIN_HTTP, TIMEOUT) is skipped, and when none answers the last such
 * error is thrown. A refusal with a code (BIZ_ACCOUNT_CONFLICT, ...) is thrown as
 * ImplementationError with that code, as the offline path throws it.
 */
export function accountsViaAdmin(clients: readonly AdminCaller[]): AccountDirectory {
  if (clients.length === 0) throw new ImplementationError('ENROLL_NO_SERVER', 'no business server to enroll accounts at');
  return {
    async createAccount(account, user) {
      let last: unknown = null;
      for (const c of clients) {
        try {
          return await adminCall(c, 'enrollAccount', { account, user });
        } catch (e) {
          const code = (e as { code?: string }).code;
          if (code === 'ADMIN_UNREACHABLE' || code === 'ADMIN_HTTP' || code === 'TIMEOUT') {
            last = e;
            continue;
          }
          if (e instanceof AdminError && code?.startsWith('BIZ_')) throw new ImplementationError(code, e.message.replace(/^[A-Z_]+: /, ''));
          throw e;
        }
      }
      throw last;
    },
  };
}

/** Offline: the business store itself (its servers are not running). */
export function accountsInStore(store: BizStore): AccountDirectory {
  return { createAccount: async (account, user) => store.createAccount(account, user) };
}

export async function enrollDevices(target: { reg: RegStore; accounts: AccountDirectory }, records: EnrollmentRecord[], opts: EnrollOptions = {}): Promise<EnrollResult[]> {
  if ((opts.account || opts.user) && records.length !== 1) throw new ImplementationError('ENROLL_USAGE', '--account and --user apply to a single record');
  if (opts.user !== undefined && !USER_RE.test(opts.user)) bad(`user '${opts.user}' must match ${USER_RE.source}`);
  if (opts.account !== undefined && (opts.account.length === 0 || opts.account.length > ACCOUNT_MAX)) bad(`account must be 1..${ACCOUNT_MAX} characters`);
  const checked = records.map((raw, i) => checkRecord(raw, i));
  const nameKey = await target.reg.userNameKey();
  const out: EnrollResult[] = [];
  for (const r of checked) {
    const existing = await target.reg.getDevice(r.serial);
    const user = opts.user ?? existing?.user ?? userNameFor(nameKey, r.serial);
    const account = opts.account ?? existing?.account ?? `acct-${r.serial}`;
    const { serial, keyVersion, ...rest } = r;
    if (r.firmwareMeasurement) await target.reg.addFirmware(r.firmwareMeasurement, r.firmwareVersion ?? 0);
    // The account first: a conflict there writes nothing here; a run interrupted between the
    // two is completed by the next with the same (derived) name.
    const bizAccount = await target.accounts.createAccount(account, user);
    const device = await target.reg.enrollDevice({ serial, keyVersion, account, user, meta: rest });
    out.push({ serial, user, account, device, bizAccount });
  }
  return out;
}

/** A running business server's admin endpoint, as the stack publishes it. */
export interface RunningBizServer { name: string; adminUrl: string }

/** The file a running stack lists its business servers' admin endpoints in: DIR/run/biz-admin.json. */
export const runningBizFile = (stateDir: string) => join(stateDir, 'run', 'biz-admin.json');

/** Publishes (or, with null, withdraws) the admin endpoints of this process's business servers. */
export function writeRunningBizServers(stateDir: string, servers: RunningBizServer[] | null): void {
  const file = runningBizFile(stateDir);
  if (servers === null) return rmSync(file, { force: true });
  mkdirSync(join(stateDir, 'run'), { recursive: true });
  // Written aside and renamed: a reader never sees half a file.
  writeFileSync(file + '.tmp', JSON.stringify({ pid: process.pid, servers }) + '\n');
  renameSync(file + '.tmp', file);
}

/**
 * The business servers a live process published for this state directory, or [] when none
 * did: no file, a file of a process that is gone (killed before it could withdraw it), or a
 * file that is not what writeRunningBizServers writes.
 */
export function readRunningBizServers(stateDir: string): RunningBizServer[] {
  let v: { pid?: unknown; servers?: unknown };
  try {
    v = JSON.parse(readFileSync(runningBizFile(stateDir), 'utf8'));
  } catch {
    return [];
  }
  if (typeof v?.pid !== 'number' || !Array.isArray(v.servers)) return [];
  try {
    process.kill(v.pid, 0);
  } catch (e) {
    // EPERM: alive but not ours to signal; anything else: gone.
    if ((e as { code?: string }).code !== 'EPERM') return [];
  }
  return v.servers.filter((s): s is RunningBizServer => typeof s?.name === 'string' && typeof s?.adminUrl === 'string');
}

/** A database whose transactions can be opened and closed by statement (better-sqlite3's Database). */
export interface BatchDb {
  exec(sql: string): unknown;
  readonly inTransaction: boolean;
}

/**
 * enrollDevices over SQLite stores in batches of `size` records, each batch one transaction
 * per database (BEGIN IMMEDIATE ... COMMIT; the stores' own transactions nest as savepoints):
 * a fleet of a million is enrolled in a minute instead of two commits per device (issue 15).
 * A failed batch is rolled back in every database and thrown; the batches before it stay
 * (enrollment is idempotent per serial: running it again completes the rest).
 */
export async function enrollInBatches(dbs: readonly BatchDb[], target: { reg: RegStore; accounts: AccountDirectory }, records: EnrollmentRecord[], opts: EnrollOptions = {}, size = 5_000): Promise<EnrollResult[]> {
  if (records.length <= 1 || dbs.some((d) => d.inTransaction)) return enrollDevices(target, records, opts);
  const out: EnrollResult[] = [];
  for (let i = 0; i < records.length; i += size) {
    const began: BatchDb[] = [];
    try {
      for (const d of dbs) {
        d.exec('BEGIN IMMEDIATE');
        began.push(d);
      }
      const r = await enrollDevices(target, records.slice(i, i + size), opts);
      for (const d of began.splice(0)) d.exec('COMMIT');
      for (const x of r) out.push(x);
    } catch (e) {
      for (const d of began) if (d.inTransaction) d.exec('ROLLBACK');
      throw e;
    }
  }
  return out;
}
