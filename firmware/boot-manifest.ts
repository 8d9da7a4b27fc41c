// The signed boot manifest (issue 9, "a signed, attested boot"): the factory lists every boot
// file (zone, name, SHA-256) and signs the list with the vendor's Ed25519 key (RFC 8032); the
// vendor public key is burnt into the chip's fuses. Boot refuses any file that does not match a
// manifest signed by that key, so rewriting files, hashes and manifest together does not boot:
// the rewriter lacks the vendor's private key. The manifest's SHA-256 is the firmware
// **measurement** the secure controller binds into the registration hello, so a server can
// refuse firmware it does not accept (remote attestation, as a TPM quote).
//
// Manifest file BOOT.SIG in the virtual zone: CBOR [body, signature(64)], where body is the
// CBOR ["usbphone/v1 boot manifest", version, [[zone, name, sha256(32)], ...]] with zone
// "cdrom" (virtual zone) or "disk" (free zone), entries sorted by zone then name.
import { ed25519 } from '@noble/curves/ed25519.js';
import { equalBytes } from '@noble/ciphers/utils.js';
import { bytesToHex } from '@noble/hashes/utils.js';
import { decode, encode } from '../protocol/cbor.ts';
import { ed25519Verify, sha256Of } from '../protocol/crypto-engine.ts';

export const MANIFEST_FILE = 'BOOT.SIG';
export const MANIFEST_CONTEXT = 'usbphone/v1 boot manifest';
export type BootZone = 'cdrom' | 'disk';

export interface ManifestEntry {
  zone: BootZone;
  name: string;
  sha256: Uint8Array;
}

export interface BootManifest {
  /** Firmware version the vendor gives this set of files. */
  version: number;
  entries: ManifestEntry[];
}

const NAME_RE = /^[A-Z0-9_]{1,8}(\.[A-Z0-9_]{1,3})?$/;
const MAX_ENTRIES = 16;

function sorted(entries: ManifestEntry[]): ManifestEntry[] {
  return [...entries].sort((a, b) => (a.zone === b.zone ? (a.name < b.name ? -1 : a.name > b.name ? 1 : 0) : a.zone < b.zone ? -1 : 1));
}

function encodeBody(m: BootManifest): Uint8Array {
  return encode([MANIFEST_CONTEXT, m.version, sorted(m.entries).map((e) => [e.zone, e.name, e.sha256])]);
}

/** Factory: the BOOT.SIG bytes for these files, signed with the vendor's Ed25519 secret key (32 bytes). */
export function signManifest(m: BootManifest, vendorSecret: Uint8Array): Uint8Array {
  if (m.entries.length === 0 || m.entries.length > MAX_ENTRIES) throw new RangeError(`a manifest lists 1..${MAX_ENTRIES} files`);
  for (const e of m.entries) {
    if ((e.zone !== 'cdrom' && e.zone !== 'disk') || !NAME_RE.test(e.name) || e.sha256.length !== 32) throw new RangeError(`bad manifest entry ${e.zone}:${e.name}`);
  }
  const body = encodeBody(m);
  return encode([body, ed25519.sign(body, vendorSecret)]);
}

/** The vendor public key (32 bytes) of a secret key: what the factory burns into the fuses. */
export function vendorPublicKey(vendorSecret: Uint8Array): Uint8Array {
  return ed25519.getPublicKey(vendorSecret);
}

export type ManifestCheck =
  | { ok: true; manifest: BootManifest; measurement: Uint8Array }
  | { ok: false; code: 'BOOT_BAD_MANIFEST' | 'BOOT_BAD_SIGNATURE'; reason: string };

/**
 * Verdicts of verifyManifest, keyed by the exact key and file bytes: a fleet of simulated
 * phones shares one BOOT.SIG, and an Ed25519 verify costs about 1 ms of wall time that a real
 * chip's crypto engine would spend in parallel on each device. The verdict is a pure function
 * of the key and the bytes, so a hit returns exactly what verifying again would
 * (boot-manifest.test.ts checks the two against each other); any other byte misses.
 */
const verdicts = new Map<string, ManifestCheck>();
const MAX_VERDICTS = 32;

function copyCheck(c: ManifestCheck): ManifestCheck {
  return c.ok ? { ok: true, manifest: { version: c.manifest.version, entries: c.manifest.entries.map((e) => ({ ...e, sha256: Uint8Array.from(e.sha256) })) }, measurement: Uint8Array.from(c.measurement) } : { ...c };
}

/**
 * Boot and the controller: parses BOOT.SIG and checks its signature under the vendor public
 * key from the fuses. Never throws. The measurement is SHA-256 of the signed body.
 */
export function verifyManifest(file: Uint8Array, vendorPublic: Uint8Array): ManifestCheck {
  if (!(file instanceof Uint8Array) || !(vendorPublic instanceof Uint8Array) || file.length > 4096) return verifyManifestUncached(file, vendorPublic);
  const key = bytesToHex(vendorPublic) + ':' + bytesToHex(file);
  let v = verdicts.get(key);
  if (!v) {
    v = verifyManifestUncached(file, vendorPublic);
    if (verdicts.size >= MAX_VERDICTS) verdicts.delete(verdicts.keys().next().value!);
    verdicts.set(key, v);
  }
  return copyCheck(v);
}

/** The reference: parses and verifies every time (what verifyManifest caches). */
export function verifyManifestUncached(file: Uint8Array, vendorPublic: Uint8Array): ManifestCheck {
  let body: Uint8Array, sig: Uint8Array;
  try {
    const v = decode(file);
    if (!Array.isArray(v) || v.length !== 2 || !(v[0] instanceof Uint8Array) || !(v[1] instanceof Uint8Array) || v[1].length !== 64) throw new Error('shape');
    [body, sig] = [v[0], v[1]];
  } catch {
    return { ok: false, code: 'BOOT_BAD_MANIFEST', reason: `${MANIFEST_FILE} is not a signed manifest` };
  }
  let good = false;
  try {
    good = vendorPublic.length === 32 && ed25519Verify(sig, body, vendorPublic);
  } catch {
    good = false;
  }
  if (!good) return { ok: false, code: 'BOOT_BAD_SIGNATURE', reason: `${MANIFEST_FILE} is not signed by this chip's vendor key` };
  try {
    const v = decode(body);
    if (!Array.isArray(v) || v.length !== 3 || v[0] !== MANIFEST_CONTEXT || typeof v[1] !== 'number' || !Array.isArray(v[2]) || v[2].length === 0 || v[2].length > MAX_ENTRIES) throw new Error('shape');
    const entries = v[2].map((e) => {
      if (!Array.isArray(e) || e.length !== 3 || (e[0] !== 'cdrom' && e[0] !== 'disk') || typeof e[1] !== 'string' || !NAME_RE.test(e[1]) || !(e[2] instanceof Uint8Array) || e[2].length !== 32) throw new Error('entry');
      return { zone: e[0] as BootZone, name: e[1], sha256: Uint8Array.from(e[2]) };
    });
    return { ok: true, manifest: { version: v[1], entries }, measurement: sha256Of(body) };
  } catch {
    // Signed but unreadable: a vendor bug, still not bootable.
    return { ok: false, code: 'BOOT_BAD_MANIFEST', reason: `${MANIFEST_FILE} is signed but not a manifest this firmware reads` };
  }
}

/** Whether `data` is the file the manifest lists as zone:name. */
export function matchesManifest(m: BootManifest, zone: BootZone, name: string, data: Uint8Array): boolean {
  const e = m.entries.find((x) => x.zone === zone && x.name === name);
  return !!e && equalBytes(e.sha256, sha256Of(data));
}

// ---- checking the files on the flash, with bounded read retries

/** How many times a boot file (or BOOT.SIG) is read before a mismatch is believed: a transient read flip heals on a re-read, a stored one does not. */
export const BOOT_READ_ATTEMPTS = 3;

export type FileRead = { ok: true; data: Uint8Array } | { ok: false; status: string };

/**
 * Reads one boot file from the flash. `attempt` counts from 0; a reader must read the flash
 * again on attempt > 0 (no cached directory or bytes), so a retry sees what is stored.
 */
export type BootFileReader = (zone: BootZone, name: string, attempt: number) => FileRead;

export type BootCheck =
  | { ok: true; manifest: BootManifest; measurement: Uint8Array; files: Map<string, Uint8Array>; retries: number }
  | { ok: false; code: 'BOOT_BAD_MANIFEST' | 'BOOT_BAD_SIGNATURE' | 'BOOT_HASH_MISMATCH' | 'BOOT_MISSING_PROGRAM'; reason: string; retries: number; powerLost?: boolean };

/** Key of a file in BootCheck.files: 'cdrom:UPMON.EXE'. */
export const fileKey = (zone: BootZone, name: string) => `${zone}:${name}`;

/**
 * Reads BOOT.SIG, checks its signature under `vendorPublic`, then reads every file it lists
 * and checks its SHA-256. Every read that fails or does not check out is tried again, up to
 * `attempts` reads in all per file (a transient bit flip on the read path heals; a stored one
 * fails every time). A read that reports ERR_POWER_LOST stops at once (powerLost). Never throws.
 * The files come back as they were checked: the caller uses these bytes, not a later re-read.
 */
export function checkBootFiles(read: BootFileReader, vendorPublic: Uint8Array, attempts = BOOT_READ_ATTEMPTS): BootCheck {
  let retries = 0;
  let last: { code: 'BOOT_BAD_MANIFEST' | 'BOOT_BAD_SIGNATURE' | 'BOOT_MISSING_PROGRAM'; reason: string } | null = null;
  let checked: Extract<ManifestCheck, { ok: true }> | null = null;
  for (let i = 0; i < attempts && !checked; i++) {
    if (i > 0) retries++;
    const r = read('cdrom', MANIFEST_FILE, i);
    if (!r.ok) {
      if (r.status === 'ERR_POWER_LOST') return { ok: false, code: 'BOOT_MISSING_PROGRAM', reason: `${MANIFEST_FILE}: power lost`, retries, powerLost: true };
      last = { code: 'BOOT_MISSING_PROGRAM', reason: `${MANIFEST_FILE} unreadable (${r.status})` };
      continue;
    }
    const v = verifyManifest(r.data, vendorPublic);
    if (v.ok) checked = v;
    else last = v;
  }
  if (!checked) return { ok: false, ...last!, retries };
  const files = new Map<string, Uint8Array>();
  for (const e of checked.manifest.entries) {
    let why = '';
    for (let i = 0; i < attempts; i++) {
      if (i > 0) retries++;
      const r = read(e.zone, e.name, i);
      if (!r.ok) {
        if (r.status === 'ERR_POWER_LOST') return { ok: false, code: 'BOOT_MISSING_PROGRAM', reason: `${e.name}: power lost`, retries, powerLost: true };
        why = `unreadable (${r.status})`;
        continue;
      }
      if (equalBytes(sha256Of(r.data), e.sha256)) {
        files.set(fileKey(e.zone, e.name), r.data);
        break;
      }
      why = 'does not match the signed manifest';
    }
    if (!files.has(fileKey(e.zone, e.name))) {
      const code = why.startsWith('unreadable') ? 'BOOT_MISSING_PROGRAM' : 'BOOT_HASH_MISMATCH';
      return { ok: false, code, reason: `${e.zone === 'disk' ? 'free zone' : 'virtual zone'} ${e.name} ${why} (${attempts} read${attempts > 1 ? "s" : ""})`, retries };
    }
  }
  return { ok: true, manifest: checked.manifest, measurement: checked.measurement, files, retries };
}
