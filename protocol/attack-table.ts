// The attack statistics table of S3 (S3.10) and the smart client's choice of a login
// mechanism from it (S3.1); docs/protocol.md §"Attack statistics table" is the normative text.
//
// The policy server (policy-server/) makes a new table every period and signs it with its
// Ed25519 key (RFC 8032); the phone holds the public key from the factory (beyond the patent:
// against downgrade). A table carries a version that only grows and an expiry: a phone never
// takes an older or equal version than the one it holds, nor an expired one, and no table can
// send a phone below a site's minimum strength (the floor), whatever its rates say.
//
//   signed = [body: bstr, signature: bstr(64)]            Ed25519 over body, under the policy key
//   body   = ["usbphone/v1 attack table", version, issuedAt, expiresAt, [site-entry...]]
//   site-entry = [site, level, floor, degreePpm, [[mech, ratePpm]...]]
//
// The label at the head of the body is the signature's domain separation: no other signed
// structure of the project (the boot manifest's "usbphone/v1 boot manifest") starts with it.
// Rates and degrees are integers in parts per million (the CBOR profile has no floats).
// Sites are sorted by name and unique; a site's mechanisms are sorted by strength and unique.
// Firmware uses this file: no node:* import.
import { ed25519 } from '@noble/curves/ed25519.js';
import { bytesToHex } from '@noble/hashes/utils.js';
import { encode, decode, type CborValue } from './cbor.ts';
import { ed25519Verify } from './crypto-engine.ts';
import { ProtocolError, type ErrorCode } from './errors.ts';
import { DEST_RE, MECHANISMS, type Mechanism } from './messages.ts';
import type { Rng } from './rng.ts';
import type { CborLimits } from './limits.ts';

export const TABLE_LABEL = 'usbphone/v1 attack table';
/** A rate or degree of 1 (the whole): parts per million. */
export const PPM = 1_000_000;

/**
 * Mechanism strength, the order of a site's floor (docs/decisions.md): a password is
 * knowledge only (guessed, phished, replayed from a leak), a one-time code adds possession of
 * the seed in the phone's secure controller but can be relayed within its time step, a
 * fingerprint is matched on the chip and answers the server's challenge with a key that never
 * leaves it (possession and inherence, nothing a phisher can relay later).
 */
export const MECH_STRENGTH: Readonly<Record<Mechanism, number>> = { password: 1, otp: 2, fingerprint: 3 };

/** The limits of a table (strict parsing): checked before and while decoding. */
export const TableLimits = {
  /** Most sites in one table (and in one attack report). */
  maxSites: 1024,
  /** Most security levels (S3.6: two or more, configurable). */
  maxLevel: 16,
  /** Largest signed table, bytes (1024 sites of the longest names and 3 mechanisms fit in ~112 KiB). */
  maxTableBytes: 128 * 1024,
} as const;

/** The CBOR limits of a table body: one array of maxSites entries, each of at most 8+3*3 items. */
export const TABLE_CBOR_LIMITS: CborLimits = {
  maxFrameBytes: TableLimits.maxTableBytes,
  maxDepth: 5,
  maxArrayItems: TableLimits.maxSites,
  maxMapEntries: 0,
  maxStringBytes: 64,
  maxItems: 8 + TableLimits.maxSites * (6 + 3 * MECHANISMS.length),
};
/** The CBOR limits of the signed wrapper: two byte strings. */
const SIGNED_CBOR_LIMITS: CborLimits = { maxFrameBytes: TableLimits.maxTableBytes, maxDepth: 1, maxArrayItems: 2, maxMapEntries: 0, maxStringBytes: TableLimits.maxTableBytes, maxItems: 3 };

export interface MechRate {
  mech: Mechanism;
  /** Attacks on this mechanism / all attacks on the site in the period (S3.7), ppm, 0..PPM. */
  ratePpm: number;
}

/** One site of the table (S3.10). */
export interface SiteEntry {
  /** The business server's name (a dest, DEST_RE). */
  site: string;
  /** Security level (S3.6): 1 (fewest attacks) .. maxLevel. */
  level: number;
  /** The weakest mechanism a phone may use at this site (its minimum strength). */
  floor: Mechanism;
  /** Time-slice allocation degree (S3.8, S3.9), ppm of the period's update budget A. */
  degreePpm: number;
  /** The mechanisms the site offers, by strength, each with its attack rate. */
  mechs: MechRate[];
}

export interface AttackTable {
  /** Grows by one with every table the policy server signs; a phone never goes back. */
  version: number;
  /** ms since the epoch */
  issuedAt: number;
  /** ms since the epoch; a table is not used at or after this instant. */
  expiresAt: number;
  /** Sorted by site name, unique. */
  sites: SiteEntry[];
}

export type TableRefusal = Extract<ErrorCode, 'TABLE_MALFORMED' | 'TABLE_BAD_SIGNATURE' | 'TABLE_STALE' | 'TABLE_EXPIRED'>;
export type TableCheck = { ok: true; table: AttackTable } | { ok: false; code: TableRefusal; reason: string };

const malformed = (why: string): never => {
  throw new ProtocolError('TABLE_MALFORMED', why);
};
const isMech = (v: unknown): v is Mechanism => typeof v === 'string' && (MECHANISMS as readonly string[]).includes(v);
const isTime = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isPpm = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= PPM;
const byStrength = (a: Mechanism, b: Mechanism) => MECH_STRENGTH[a] - MECH_STRENGTH[b];

/**
 * Checks a table's fields and invariants; returns it, or throws ProtocolError TABLE_MALFORMED
 * naming the field. Shared by the signer (never sign what a phone would refuse) and the parser.
 */
export function checkTable(t: AttackTable): AttackTable {
  if (!Number.isSafeInteger(t.version) || t.version < 0) malformed('version must be an integer >= 0');
  if (!isTime(t.issuedAt) || !isTime(t.expiresAt) || t.expiresAt <= t.issuedAt) malformed('issuedAt and expiresAt must be times with expiresAt > issuedAt');
  if (!Array.isArray(t.sites) || t.sites.length > TableLimits.maxSites) malformed(`at most ${TableLimits.maxSites} sites`);
  let prev = '';
  for (const s of t.sites) {
    if (typeof s.site !== 'string' || !DEST_RE.test(s.site)) malformed(`site name ${JSON.stringify(String(s.site).slice(0, 40))} is not a dest`);
    const at = `site ${s.site}`;
    if (prev && !(prev < s.site)) malformed(`${at}: sites must be sorted by name and unique`);
    prev = s.site;
    if (!Number.isSafeInteger(s.level) || s.level < 1 || s.level > TableLimits.maxLevel) malformed(`${at}: level must be 1..${TableLimits.maxLevel}`);
    if (!isMech(s.floor)) malformed(`${at}: floor is not a mechanism`);
    if (!isPpm(s.degreePpm)) malformed(`${at}: degreePpm must be 0..${PPM}`);
    if (!Array.isArray(s.mechs) || s.mechs.length < 1 || s.mechs.length > MECHANISMS.length) malformed(`${at}: 1..${MECHANISMS.length} mechanisms`);
    let sum = 0;
    let top = 0;
    for (let i = 0; i < s.mechs.length; i++) {
      const m = s.mechs[i]!;
      if (!isMech(m.mech)) malformed(`${at}: unknown mechanism`);
      if (i > 0 && byStrength(s.mechs[i - 1]!.mech, m.mech) >= 0) malformed(`${at}: mechanisms must be sorted by strength and unique`);
      if (!isPpm(m.ratePpm)) malformed(`${at}: ratePpm must be 0..${PPM}`);
      sum += m.ratePpm;
      top = Math.max(top, MECH_STRENGTH[m.mech]);
    }
    // Rates are shares of one total (S3.7); attacks of no mechanism make the sum smaller.
    if (sum > PPM) malformed(`${at}: rates add up to more than 1`);
    // A site whose every mechanism is below its floor leaves a phone nothing to use.
    if (top < MECH_STRENGTH[s.floor]) malformed(`${at}: no offered mechanism reaches the floor ${s.floor}`);
  }
  return t;
}

/** The body's CBOR (what the signature covers). Throws TABLE_MALFORMED for a table a phone would refuse. */
export function encodeTableBody(t: AttackTable): Uint8Array {
  checkTable(t);
  const sites: CborValue[] = t.sites.map((s) => [s.site, s.level, s.floor, s.degreePpm, s.mechs.map((m) => [m.mech, m.ratePpm])]);
  const body = encode([TABLE_LABEL, t.version, t.issuedAt, t.expiresAt, sites]);
  if (body.length + 80 > TableLimits.maxTableBytes) malformed(`table of ${body.length} bytes is too large`);
  return body;
}

/** The body's fields, strictly (throws ProtocolError: a CBOR_* code or TABLE_MALFORMED). */
export function decodeTableBody(body: Uint8Array): AttackTable {
  const v = decode(body, TABLE_CBOR_LIMITS);
  if (!Array.isArray(v) || v.length !== 5 || v[0] !== TABLE_LABEL) malformed(`body is not ["${TABLE_LABEL}", version, issuedAt, expiresAt, sites]`);
  const a = v as CborValue[];
  if (!Array.isArray(a[4])) malformed('sites must be an array');
  const sites = (a[4] as CborValue[]).map((e): SiteEntry => {
    if (!Array.isArray(e) || e.length !== 5 || !Array.isArray(e[4])) malformed('a site entry is [site, level, floor, degreePpm, mechs]');
    const x = e as CborValue[];
    const mechs = (x[4] as CborValue[]).map((m): MechRate => {
      if (!Array.isArray(m) || m.length !== 2) malformed('a mechanism entry is [mech, ratePpm]');
      return { mech: (m as CborValue[])[0] as Mechanism, ratePpm: (m as CborValue[])[1] as number };
    });
    return { site: x[0] as string, level: x[1] as number, floor: x[2] as Mechanism, degreePpm: x[3] as number, mechs };
  });
  return checkTable({ version: a[1] as number, issuedAt: a[2] as number, expiresAt: a[3] as number, sites });
}

/** The signed table: CBOR [body, Ed25519(privateKey, body)]. privateKey is the 32-byte seed. */
export function signTable(t: AttackTable, privateKey: Uint8Array): Uint8Array {
  const body = encodeTableBody(t);
  return encode([body, ed25519.sign(body, privateKey)]);
}

/** The policy server's public key (32 bytes) for its private key: what the factory provisions. */
export function tablePublicKey(privateKey: Uint8Array): Uint8Array {
  return ed25519.getPublicKey(privateKey);
}

/**
 * The phone's check of a table it received (S3.11, against downgrade). Never throws. In order:
 * TABLE_MALFORMED (not a signed table, or signed but unreadable), TABLE_BAD_SIGNATURE (not
 * signed by `publicKey`: forged or altered), TABLE_STALE (version <= haveVersion, the version
 * the phone holds; null when it holds none), TABLE_EXPIRED (nowMs >= expiresAt).
 */
export function verifyTable(bytes: Uint8Array, publicKey: Uint8Array, nowMs: number, haveVersion: number | null): TableCheck {
  let body: Uint8Array, sig: Uint8Array;
  try {
    if (!(bytes instanceof Uint8Array)) throw new TypeError('bytes');
    const v = decode(bytes, SIGNED_CBOR_LIMITS);
    if (!Array.isArray(v) || v.length !== 2 || !(v[0] instanceof Uint8Array) || !(v[1] instanceof Uint8Array) || v[1].length !== 64) throw new TypeError('shape');
    [body, sig] = [v[0], v[1]];
  } catch {
    return { ok: false, code: 'TABLE_MALFORMED', reason: 'not a signed table [body, signature(64)]' };
  }
  let good = false;
  try {
    good = publicKey instanceof Uint8Array && publicKey.length === 32 && verifiedOnce(sig, body, publicKey);
  } catch {
    good = false;
  }
  if (!good) return { ok: false, code: 'TABLE_BAD_SIGNATURE', reason: 'the table is not signed by the policy server key' };
  let table: AttackTable;
  try {
    table = decodeTableBody(body);
  } catch (e) {
    return { ok: false, code: 'TABLE_MALFORMED', reason: `signed but unreadable: ${(e as Error).message}` };
  }
  if (haveVersion !== null && table.version <= haveVersion) return { ok: false, code: 'TABLE_STALE', reason: `version ${table.version} is not newer than the held ${haveVersion}` };
  if (!(nowMs < table.expiresAt)) return { ok: false, code: 'TABLE_EXPIRED', reason: `expired at ${table.expiresAt}` };
  return { ok: true, table };
}

/**
 * Signatures this process has verified, by the exact bytes checked (key, signature, body; no
 * hash, so nothing else can match): a phone checks the table it holds at each boot and before
 * each table pushed to it, and the deterministic simulation boots thousands of phones on the
 * same few tables (issue 14: an Ed25519 verification was ~6 % of a seed's CPU). Only successes
 * are kept, so anything not verified before is checked in full; the oldest goes past
 * VERIFIED_MAX. The verdict is the same with or without it (protocol/attack-table.test.ts).
 */
const VERIFIED_MAX = 64;
const verified = new Set<string>();
function verifiedOnce(sig: Uint8Array, body: Uint8Array, publicKey: Uint8Array): boolean {
  const k = `${bytesToHex(publicKey)}.${bytesToHex(sig)}.${bytesToHex(body)}`;
  if (verified.has(k)) return true;
  if (!ed25519Verify(sig, body, publicKey)) return false;
  verified.add(k);
  if (verified.size > VERIFIED_MAX) verified.delete(verified.values().next().value!);
  return true;
}

/** A uniform integer in [0, n) from the rng (rejection sampling on 32 bits: no modulo bias). */
export function uniformIndex(rng: Rng, n: number): number {
  if (!Number.isSafeInteger(n) || n < 1 || n > 2 ** 32) throw new RangeError(`uniformIndex: n = ${n}`);
  const limit = Math.floor(2 ** 32 / n) * n;
  for (;;) {
    const b = rng(4);
    const x = ((b[0]! << 24) >>> 0) + (b[1]! << 16) + (b[2]! << 8) + b[3]!;
    if (x < limit) return x % n;
  }
}

/** The strongest of `offered` (MECH_STRENGTH). */
export function strongest(offered: readonly Mechanism[]): Mechanism {
  if (offered.length === 0) throw new RangeError('strongest: no mechanism offered');
  return [...offered].sort(byStrength).at(-1)!;
}

/**
 * The smart client's choice (S3.1): among the mechanisms `site` offers at or above its floor,
 * the one with the lowest attack rate, uniformly at random among equal rates (so the all-zero
 * initial table gives a random choice). With no table, or a table without the site, the
 * strongest of `offered` (what the phone knows the site offers; all mechanisms by default):
 * a phone that cannot trust the statistics takes no chance on a weak mechanism.
 */
export function chooseMechanism(table: AttackTable | null, site: string, rng: Rng, offered: readonly Mechanism[] = MECHANISMS): Mechanism {
  const entry = table?.sites.find((s) => s.site === site);
  if (!entry) return strongest(offered);
  const floor = MECH_STRENGTH[entry.floor];
  const allowed = entry.mechs.filter((m) => MECH_STRENGTH[m.mech] >= floor);
  // checkTable guarantees one; a hand-built table without one gets the strongest offered.
  if (allowed.length === 0) return strongest(entry.mechs.map((m) => m.mech));
  const low = Math.min(...allowed.map((m) => m.ratePpm));
  const best = allowed.filter((m) => m.ratePpm === low);
  return best.length === 1 ? best[0]!.mech : best[uniformIndex(rng, best.length)]!.mech;
}

/** One site of the configured initial table (JSON): rates all zero. */
export interface InitialSite { site: string; mechanisms: Mechanism[]; floor: Mechanism; degree: number; level?: number }

/**
 * The configured initial table (S3.10) from its JSON form
 * `{"sites": [{"site": "biz-east", "mechanisms": ["password", "otp"], "floor": "password", "degree": 0.3}]}`:
 * every rate 0, level 1 unless given, degree a fraction 0..1. Version 0, so the first table
 * the policy server signs (version 1) replaces it. Throws TABLE_MALFORMED.
 */
export function initialTable(json: unknown, issuedAt: number, expiresAt: number): AttackTable {
  const o = json as { sites?: unknown };
  if (typeof json !== 'object' || json === null || !Array.isArray(o.sites)) malformed('initial table must be {"sites": [...]}');
  const sites = (o.sites as unknown[]).map((x): SiteEntry => {
    const s = x as Partial<InitialSite>;
    if (typeof x !== 'object' || x === null || !Array.isArray(s.mechanisms) || !s.mechanisms.every(isMech)) malformed('each site needs mechanisms from ' + MECHANISMS.join(', '));
    if (typeof s.degree !== 'number' || !(s.degree >= 0 && s.degree <= 1)) malformed('degree must be a number 0..1');
    const mechs = [...new Set(s.mechanisms!)].sort(byStrength).map((mech) => ({ mech, ratePpm: 0 }));
    return { site: s.site as string, level: s.level ?? 1, floor: s.floor as Mechanism, degreePpm: Math.round(s.degree! * PPM), mechs };
  });
  sites.sort((a, b) => (a.site < b.site ? -1 : a.site > b.site ? 1 : 0));
  return checkTable({ version: 0, issuedAt, expiresAt, sites });
}
