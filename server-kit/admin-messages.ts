// The admin API's messages (docs/architecture.md §"Admin API"): one table pairing, for each
// operation, the encoder and the validator of its arguments and of its result. Callers and
// servers exchange typed objects; only this file knows the CBOR arrays on the wire, so no
// call site builds or picks apart a positional body.
//
//   op              args                                                      result
//   installPending  [user, loginKey(32), sealedSecret, expiresAt, rotationId(16)]  [currentGen, pendingGen, installed, sealedSecret, rotationId(16)]
//   status          []                                                        [healthy, liveSessions, region]
//   enrollAccount   [account, user]                                           "created" | "exists"
//   reportAttacks   [gateway, periodId, periodMs, [[site, total, {mech: n}]...]]  [accepted, duplicate]
//   latestTable     []                                                        signed table (bstr)
//
// reportAttacks and latestTable are the policy server's (S3.5, S3.11); their bodies exceed the
// device frame limits, so both ends of that endpoint use POLICY_ADMIN_LIMITS.
//
// A request's arguments that fail validation are refused by the server as ADMIN_BAD_ARGS; a
// result that fails validation is refused by the caller as ADMIN_BAD_RESPONSE (AdminError).
import { USER_RE, DEST_RE, MECHANISMS, type Mechanism } from '../protocol/messages.ts';
import { TableLimits } from '../protocol/attack-table.ts';
import type { CborLimits } from '../protocol/limits.ts';
import { BOX_OVERHEAD } from '../protocol/sealed-box.ts';
import type { CborValue } from '../protocol/cbor.ts';
import { AdminError, safeInt, ADMIN_TARGET_RE, type AdminOp } from './admin-rpc.ts';

/** A pending secret sealed for the registration servers: a sealed box of 32 bytes (room left for a format byte). */
export const SEALED_SECRET_MIN = BOX_OVERHEAD + 32;
export const SEALED_SECRET_MAX = 128;
/** Business account names: 1..128 characters. */
export const ACCOUNT_MAX = 128;

export interface InstallPendingArgs { user: string; loginKey: Uint8Array; sealed: Uint8Array; expiresAt: number; rotationId: Uint8Array }
export interface InstallPendingResult { currentGen: number; pendingGen: number; installed: boolean; sealed: Uint8Array; rotationId: Uint8Array }
export interface StatusResult { healthy: boolean; sessions: number; region: string }
export interface EnrollAccountArgs { account: string; user: string }
export type EnrollAccountResult = 'created' | 'exists';

/** One site's attacks in a report (S3.5): the total, and those on each mechanism (attacks of no mechanism make the sum smaller). */
export interface SiteAttacks { site: string; total: number; perMech: Partial<Record<Mechanism, number>> }
/** The gateway's report of one period T (S3.5); periodId = floor(periodStartMs / periodMs). */
export interface AttackReport { gateway: string; periodId: number; periodMs: number; sites: SiteAttacks[] }
export interface ReportResult { accepted: boolean; duplicate: boolean }
/** Largest count in a report (2^40): beyond any real period, small enough that sums stay exact. */
export const MAX_ATTACK_COUNT = 2 ** 40;
/** Shortest and longest period T a report may name. */
export const MIN_PERIOD_MS = 1_000;
export const MAX_PERIOD_MS = 7 * 24 * 3_600_000;
/**
 * The policy server's admin endpoint bounds (both ends): a report of TableLimits.maxSites sites
 * (one array of that many entries, 7 items each at most) and a signed table of up to
 * TableLimits.maxTableBytes in the answer.
 */
export const POLICY_ADMIN_LIMITS: CborLimits = {
  maxFrameBytes: 256 * 1024,
  maxDepth: 6, // request [ts, id, op, args] > report > sites > site > perMech map > its values
  maxArrayItems: TableLimits.maxSites,
  maxMapEntries: MECHANISMS.length,
  maxStringBytes: TableLimits.maxTableBytes,
  maxItems: 16 + TableLimits.maxSites * (4 + 2 * MECHANISMS.length),
};

/** The operations, each with its argument and result types. */
export interface AdminOps {
  installPending: { args: InstallPendingArgs; result: InstallPendingResult };
  status: { args: Record<string, never>; result: StatusResult };
  enrollAccount: { args: EnrollAccountArgs; result: EnrollAccountResult };
  reportAttacks: { args: AttackReport; result: ReportResult };
  latestTable: { args: Record<string, never>; result: Uint8Array };
}
export type AdminOpName = keyof AdminOps;

interface OpCodec<A, R> {
  encodeArgs(a: A): CborValue;
  /** Throws AdminError ADMIN_BAD_ARGS. */
  decodeArgs(v: CborValue): A;
  encodeResult(r: R): CborValue;
  /** Throws AdminError ADMIN_BAD_RESPONSE. */
  decodeResult(v: CborValue): R;
}

const badArgs = (op: string, why: string): never => {
  throw new AdminError('ADMIN_BAD_ARGS', `${op}: ${why}`);
};
const badResult = (op: string, why: string): never => {
  throw new AdminError('ADMIN_BAD_RESPONSE', `${op} answered a malformed result: ${why}`);
};
const isBytes = (v: unknown, min: number, max = min): v is Uint8Array => v instanceof Uint8Array && v.length >= min && v.length <= max;
const isUser = (v: unknown): v is string => typeof v === 'string' && USER_RE.test(v);
const isAccount = (v: unknown): v is string => typeof v === 'string' && v.length >= 1 && v.length <= ACCOUNT_MAX;
const tuple = (v: CborValue, n: number): CborValue[] | null => (Array.isArray(v) && v.length === n ? v : null);
const isCount = (v: number | null): v is number => v !== null && v >= 0 && v <= MAX_ATTACK_COUNT;

function decodeReport(v: CborValue): AttackReport {
  const t = tuple(v, 4) ?? badArgs('reportAttacks', 'takes [gateway, periodId, periodMs, sites]');
  const periodId = safeInt(t[1]), periodMs = safeInt(t[2]);
  if (typeof t[0] !== 'string' || !ADMIN_TARGET_RE.test(t[0])) badArgs('reportAttacks', 'gateway must be a server name');
  if (periodId === null || periodId < 0) badArgs('reportAttacks', 'periodId must be an integer >= 0');
  if (periodMs === null || periodMs < MIN_PERIOD_MS || periodMs > MAX_PERIOD_MS) badArgs('reportAttacks', `periodMs must be ${MIN_PERIOD_MS}..${MAX_PERIOD_MS}`);
  if (!Array.isArray(t[3]) || t[3].length > TableLimits.maxSites) badArgs('reportAttacks', `sites must be a list of at most ${TableLimits.maxSites}`);
  const seen = new Set<string>();
  const sites = (t[3] as CborValue[]).map((e): SiteAttacks => {
    const x = tuple(e, 3) ?? badArgs('reportAttacks', 'a site is [site, total, {mech: count}]');
    const site = x[0], total = safeInt(x[1]);
    if (typeof site !== 'string' || !DEST_RE.test(site)) badArgs('reportAttacks', 'site must be a dest name');
    if (seen.has(site as string)) badArgs('reportAttacks', `site ${site as string} twice`);
    seen.add(site as string);
    if (!isCount(total)) badArgs('reportAttacks', `total must be 0..2^40`);
    if (!(x[2] instanceof Map)) badArgs('reportAttacks', 'perMech must be a map');
    const perMech: Partial<Record<Mechanism, number>> = {};
    let sum = 0;
    for (const [k, n] of x[2] as Map<number | string, CborValue>) {
      if (typeof k !== 'string' || !(MECHANISMS as readonly string[]).includes(k)) badArgs('reportAttacks', `unknown mechanism ${String(k).slice(0, 16)}`);
      const c = safeInt(n);
      if (!isCount(c)) badArgs('reportAttacks', `count of ${k as string} must be 0..2^40`);
      perMech[k as Mechanism] = c!;
      sum += c!;
    }
    if (sum > total!) badArgs('reportAttacks', `site ${site as string}: attacks per mechanism add up to more than the total`);
    return { site: site as string, total: total!, perMech };
  });
  return { gateway: t[0] as string, periodId: periodId!, periodMs: periodMs!, sites };
}

export const ADMIN_MESSAGES: { [K in AdminOpName]: OpCodec<AdminOps[K]['args'], AdminOps[K]['result']> } = {
  installPending: {
    encodeArgs: (a) => [a.user, a.loginKey, a.sealed, a.expiresAt, a.rotationId],
    decodeArgs(v) {
      const t = tuple(v, 5) ?? badArgs('installPending', 'takes [user, key, sealed, expiresAt, rotationId]');
      const [user, loginKey, sealed, , rotationId] = t;
      const expiresAt = safeInt(t[3]);
      if (!isUser(user)) badArgs('installPending', 'bad user');
      if (!isBytes(loginKey, 32)) badArgs('installPending', 'key must be 32 bytes');
      if (!isBytes(sealed, SEALED_SECRET_MIN, SEALED_SECRET_MAX)) badArgs('installPending', `sealed must be ${SEALED_SECRET_MIN}..${SEALED_SECRET_MAX} bytes`);
      if (expiresAt === null || expiresAt < 0) badArgs('installPending', 'bad expiresAt');
      if (!isBytes(rotationId, 16)) badArgs('installPending', 'rotationId must be 16 bytes');
      // Copies: the caller may wipe its login key, and a decoded view may share a buffer.
      return { user: user as string, loginKey: Uint8Array.from(loginKey as Uint8Array), sealed: Uint8Array.from(sealed as Uint8Array), expiresAt: expiresAt!, rotationId: Uint8Array.from(rotationId as Uint8Array) };
    },
    encodeResult: (r) => [r.currentGen, r.pendingGen, r.installed, r.sealed, r.rotationId],
    decodeResult(v) {
      const t = tuple(v, 5) ?? badResult('installPending', 'not [currentGen, pendingGen, installed, sealed, rotationId]');
      const cur = safeInt(t[0]), pend = safeInt(t[1]);
      if (cur === null || pend === null || cur < 0 || pend <= cur) badResult('installPending', 'generations');
      if (typeof t[2] !== 'boolean') badResult('installPending', 'installed');
      if (!isBytes(t[3], SEALED_SECRET_MIN, SEALED_SECRET_MAX)) badResult('installPending', 'sealed');
      if (!isBytes(t[4], 16)) badResult('installPending', 'rotationId');
      return { currentGen: cur!, pendingGen: pend!, installed: t[2] as boolean, sealed: t[3] as Uint8Array, rotationId: t[4] as Uint8Array };
    },
  },
  status: {
    encodeArgs: () => [],
    decodeArgs: (v) => (tuple(v, 0) ? {} : badArgs('status', 'takes []')),
    encodeResult: (r) => [r.healthy, r.sessions, r.region],
    decodeResult(v) {
      const t = tuple(v, 3) ?? badResult('status', 'not [healthy, sessions, region]');
      const sessions = safeInt(t[1]);
      if (typeof t[0] !== 'boolean' || sessions === null || sessions < 0 || typeof t[2] !== 'string') badResult('status', 'fields');
      return { healthy: t[0] as boolean, sessions: sessions!, region: t[2] as string };
    },
  },
  enrollAccount: {
    encodeArgs: (a) => [a.account, a.user],
    decodeArgs(v) {
      const t = tuple(v, 2) ?? badArgs('enrollAccount', 'takes [account, user]');
      if (!isAccount(t[0])) badArgs('enrollAccount', `account must be 1..${ACCOUNT_MAX} characters`);
      if (!isUser(t[1])) badArgs('enrollAccount', `user must match ${USER_RE.source}`);
      return { account: t[0] as string, user: t[1] as string };
    },
    encodeResult: (r) => r,
    decodeResult: (v) => (v === 'created' || v === 'exists' ? v : badResult('enrollAccount', 'not "created" or "exists"')),
  },
  reportAttacks: {
    encodeArgs: (a) => [a.gateway, a.periodId, a.periodMs, a.sites.map((s) => [s.site, s.total, new Map(MECHANISMS.filter((m) => s.perMech[m] !== undefined).map((m) => [m, s.perMech[m]!]))])],
    decodeArgs: decodeReport,
    encodeResult: (r) => [r.accepted, r.duplicate],
    decodeResult(v) {
      const t = tuple(v, 2) ?? badResult('reportAttacks', 'not [accepted, duplicate]');
      if (typeof t[0] !== 'boolean' || typeof t[1] !== 'boolean') badResult('reportAttacks', 'fields');
      return { accepted: t[0] as boolean, duplicate: t[1] as boolean };
    },
  },
  latestTable: {
    encodeArgs: () => [],
    decodeArgs: (v) => (tuple(v, 0) ? {} : badArgs('latestTable', 'takes []')),
    encodeResult: (r) => r,
    // The bytes only: the caller verifies them (protocol/attack-table.ts verifyTable).
    decodeResult: (v) => (v instanceof Uint8Array && v.length > 0 && v.length <= TableLimits.maxTableBytes ? Uint8Array.from(v) : badResult('latestTable', 'not a byte string of a table')),
  },
};

/** What a typed admin call needs: server-kit/admin-rpc.ts AdminClient, or a test double. */
export interface AdminCaller {
  call(op: string, args: CborValue): Promise<CborValue>;
}

/** Calls `op` with typed arguments and returns its validated, typed result. */
export async function adminCall<K extends AdminOpName>(client: AdminCaller, op: K, args: AdminOps[K]['args']): Promise<AdminOps[K]['result']> {
  const codec = ADMIN_MESSAGES[op] as OpCodec<AdminOps[K]['args'], AdminOps[K]['result']>;
  return codec.decodeResult(await client.call(op, codec.encodeArgs(args)));
}

export type AdminHandlers = { [K in AdminOpName]?: (args: AdminOps[K]['args']) => AdminOps[K]['result'] | Promise<AdminOps[K]['result']> };

/** The admin server's op table (adminListener `ops`) from typed handlers: arguments validated before a handler runs. */
export function adminOps(handlers: AdminHandlers): Record<string, AdminOp> {
  const ops: Record<string, AdminOp> = {};
  for (const op of Object.keys(handlers) as AdminOpName[]) {
    const codec = ADMIN_MESSAGES[op] as OpCodec<unknown, unknown>;
    const fn = handlers[op] as (a: unknown) => unknown;
    ops[op] = async (v) => codec.encodeResult(await fn(codec.decodeArgs(v)));
  }
  return ops;
}
