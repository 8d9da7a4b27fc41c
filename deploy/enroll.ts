// Enrollment (`usbphone enroll`): registers devices from the image builder's enrollment
// records ({serial, keyVersion, uniqueId, imageSha256, regPrimary, regBackup}) and binds each
// to a business account: the device row (status active) in the registration store, the
// account (no password yet: generation 0) in the business store. Idempotent per serial.
// The two stores are separate databases: the account is created first, so an interrupted
// run leaves at most an account without a device, which the next run completes.
import { createHash } from 'node:crypto';
import { SERIAL_RE } from '../protocol/keys.ts';
import { USER_RE } from '../protocol/messages.ts';
import { ImplementationError } from '../protocol/errors.ts';
import type { RegStore } from '../reg-server/store.ts';
import type { BizStore } from '../biz-server/store.ts';

export interface EnrollmentRecord {
  serial: string;
  keyVersion: number;
  uniqueId?: string;
  imageSha256?: string;
  regPrimary?: string;
  regBackup?: string;
  [k: string]: unknown;
}

export interface EnrollOptions {
  /** Business account to bind (single record only); default 'acct-' + serial. */
  account?: string;
  /** Business user name (single record only); default defaultUser(serial). */
  user?: string;
}

export interface EnrollResult { serial: string; user: string; account: string; device: 'created' | 'exists' | 'updated'; bizAccount: 'created' | 'exists' }

function bad(why: string): never {
  throw new ImplementationError('ENROLL_BAD_RECORD', why);
}

/** 'u-' + serial when it fits USER_RE's 64 characters, else 'u-h' + a hash of the serial. */
export function defaultUser(serial: string): string {
  return serial.length <= 62 ? `u-${serial}` : `u-h${createHash('sha256').update(serial).digest('hex').slice(0, 40)}`;
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
  return r as EnrollmentRecord;
}

export function enrollDevices(stores: { reg: RegStore; biz: BizStore }, records: EnrollmentRecord[], opts: EnrollOptions = {}): EnrollResult[] {
  if ((opts.account || opts.user) && records.length !== 1) throw new ImplementationError('ENROLL_USAGE', '--account and --user apply to a single record');
  if (opts.user !== undefined && !USER_RE.test(opts.user)) bad(`user '${opts.user}' must match ${USER_RE.source}`);
  if (opts.account !== undefined && (opts.account.length === 0 || opts.account.length > 128)) bad('account must be 1..128 characters');
  return records.map((raw, i) => {
    const r = checkRecord(raw, i);
    const existing = stores.reg.getDevice(r.serial);
    const user = opts.user ?? existing?.user ?? defaultUser(r.serial);
    const account = opts.account ?? existing?.account ?? `acct-${r.serial}`;
    const bizAccount = stores.biz.createAccount(account, user);
    const { serial, keyVersion, ...rest } = r;
    const device = stores.reg.enrollDevice({ serial, keyVersion, account, user, meta: rest });
    return { serial, user, account, device, bizAccount };
  });
}
