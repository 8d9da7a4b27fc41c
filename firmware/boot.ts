// Boot (S0.3): on plug-in the host's AutoRun reads AUTORUN.INF from the virtual zone (the
// CD-ROM unit) and starts the program it names, UPMon, once every boot file (AUTORUN.INF,
// UPMON.EXE, UPMON.CFG, and MAIN.EXE of the free zone) matches the boot manifest BOOT.SIG
// signed with the vendor key burnt into the chip's fuses (issue 9, firmware/boot-manifest.ts).
// A rewrite of files, hashes and manifest together fails the signature: BOOT_BAD_SIGNATURE,
// and nothing is sent. A read that does not check out is read again (BOOT_READ_ATTEMPTS):
// a transient bit flip does not end the boot, a stored one does. The boot uses the bytes it
// checked, never a second read.
// The devices whose own operating system runs the programs (S0.15: the mobile phone, the ATM;
// firmware/profiles.ts) start UPMon with `launch` instead: the same checks, no AutoRun.
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import type { Board } from './board.ts';
import type { Endpoint } from './client-session.ts';
import type { StorageResult, VirtualVolume } from './storage.ts';
import { checkBootFiles, fileKey, type BootFileReader } from './boot-manifest.ts';
import { initialTable } from '../protocol/attack-table.ts';
import type { PolicyConfig } from './policy-table.ts';

export interface UpmonConfig {
  /** Registration endpoints, validated here once; the dest is the URL's last path segment. */
  regPrimary: Endpoint;
  regBackup: Endpoint;
  mainProgram: string;
  mainSha256: string;
  /** S3.10, S3.11: the policy server's key and the initial attack table the factory shipped (optional fields of UPMON.CFG). */
  policy: PolicyConfig;
}

export type BootResult = { ok: true; config: UpmonConfig } | { ok: false; reason: string };

const td = new TextDecoder('utf-8', { fatal: true });
const ENDPOINT_RE = /^wss?:\/\/[^\s/]+(?:\/[a-z0-9][a-z0-9-]{0,31})*\/([a-z0-9][a-z0-9-]{0,31})\/?$/;

/** A registration endpoint of UPMon's configuration: `ws[s]://host[:port]/[path/]<dest>[/]`. */
export function parseEndpoint(url: unknown): Endpoint | null {
  if (typeof url !== 'string' || url.length > 256) return null;
  const m = ENDPOINT_RE.exec(url);
  return m ? { url, dest: m[1]! } : null;
}
const FILE_RE = /^[A-Z0-9_]{1,8}(\.[A-Z0-9_]{1,3})?$/;

/** Reads `[autorun]` `open=` from AUTORUN.INF (Windows INI syntax, case-insensitive keys). */
export function parseAutorun(text: string): string | null {
  let inSection = false;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (/^\[.*\]$/.test(line)) inSection = line.toLowerCase() === '[autorun]';
    else if (inSection) {
      const m = /^open\s*=\s*(.+)$/i.exec(line);
      if (m) return m[1]!.trim().toUpperCase();
    }
  }
  return null;
}

function json(bytes: Uint8Array): Record<string, unknown> | null {
  try {
    const v = JSON.parse(td.decode(bytes)) as unknown;
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** The boot files, every one checked against BOOT.SIG; or why they are not. */
type Checked = { ok: true; file(zone: 'cdrom' | 'disk', name: string): Uint8Array | null; summary: string } | { ok: false; reason: string };

/**
 * Reads and checks every boot file against the signed manifest (S0.3, issue 9), the vendor
 * key from the chip's fuses; shared by the host's AutoRun (boot) and a launcher (launch).
 */
function verifyBootFiles(dev: Board): Checked {
  // The vendor public key comes from the chip's fuses, through the secure controller (GET DATA):
  // the host can read it, nobody can change it.
  const vk = dev.storage.vendorKey();
  if (!vk.ok) return { ok: false, reason: `BOOT_BAD_SIGNATURE: the vendor public key is unreadable from the secure element (${vk.status})` };

  // The CD-ROM is mounted once per boot; a retry after a bad read mounts it again (the
  // directory itself may have been read with a flipped bit).
  let vol: StorageResult<VirtualVolume> | null = null;
  let mountedAt = -1;
  const read: BootFileReader = (zone, name, attempt) => {
    const r = zone === 'disk' ? dev.storage.readFreeFile(name) : (() => {
      if (!vol || (attempt > 0 && mountedAt !== attempt)) {
        vol = dev.storage.mountVirtual();
        mountedAt = attempt;
      }
      return vol.ok ? vol.value.readFile(name) : vol;
    })();
    return r.ok ? { ok: true, data: r.value } : { ok: false, status: r.status };
  };
  // Every boot file is checked against BOOT.SIG before any is used (S0.3, issue 9).
  const c = checkBootFiles(read, vk.value);
  if (!c.ok) {
    // No volume at all is its own status, not "a file does not match".
    const m = vol as StorageResult<VirtualVolume> | null;
    if (m && !m.ok) return { ok: false, reason: `BOOT_NO_AUTORUN: the CD-ROM volume is unreadable (${m.status}), no AUTORUN.INF` };
    return { ok: false, reason: `${c.code}: ${c.reason}` };
  }
  const retried = c.retries ? ` (${c.retries} read${c.retries > 1 ? 's' : ''} retried)` : '';
  return {
    ok: true,
    file: (zone, name) => c.files.get(fileKey(zone, name)) ?? null,
    summary: `boot manifest signature ok: ${c.manifest.entries.length} files, firmware v${c.manifest.version}, measurement ${bytesToHex(c.measurement).slice(0, 16)}${retried}`,
  };
}

/** UPMon's configuration `<program>.CFG`, from the checked files; the main program must be signed too. */
function programConfig(c: Extract<Checked, { ok: true }>, program: string): BootResult {
  const fail = (reason: string): BootResult => ({ ok: false, reason });
  // The program and its configuration must be files the vendor signed, as read and checked above.
  if (!c.file('cdrom', program)) return fail(`BOOT_BAD_SIGNATURE: ${program} is not in the signed manifest`);
  const cfgName = program.replace(/\.[A-Z0-9_]+$/, '') + '.CFG';
  const cfgBytes = c.file('cdrom', cfgName);
  if (!cfgBytes) return fail(`BOOT_BAD_SIGNATURE: ${cfgName} is not in the signed manifest`);
  const cfg = json(cfgBytes);
  if (!cfg) return fail('BOOT_BAD_CONFIG: UPMon configuration missing or not JSON');
  const { mainProgram, mainSha256 } = cfg;
  const regPrimary = parseEndpoint(cfg.regPrimary);
  const regBackup = parseEndpoint(cfg.regBackup);
  if (!regPrimary || !regBackup) {
    return fail('BOOT_BAD_CONFIG: registration endpoints missing or malformed');
  }
  if (typeof mainProgram !== 'string' || !FILE_RE.test(mainProgram) || typeof mainSha256 !== 'string' || !/^[0-9a-f]{64}$/i.test(mainSha256)) {
    return fail('BOOT_BAD_CONFIG: main program name or hash missing');
  }
  if (!c.file('disk', mainProgram)) return fail(`BOOT_BAD_SIGNATURE: the main program ${mainProgram} is not in the signed manifest`);
  const policy = parsePolicy(cfg);
  if (typeof policy === 'string') return fail(`BOOT_BAD_CONFIG: ${policy}`);
  return { ok: true, config: { regPrimary, regBackup, mainProgram, mainSha256: mainSha256.toLowerCase(), policy } };
}

/** UPMON.CFG's optional `policyKey` (64 hex digits) and `initialTable` ({"sites": [...]}); a string says what is wrong. */
function parsePolicy(cfg: Record<string, unknown>): PolicyConfig | string {
  const { policyKey, initialTable: initial } = cfg;
  if (policyKey !== undefined && (typeof policyKey !== 'string' || !/^[0-9a-f]{64}$/i.test(policyKey))) return 'policyKey must be 64 hex digits';
  let table = null;
  if (initial !== undefined) {
    try {
      // The shipped table does not expire: it is replaced by the first signed one (version >= 1).
      table = initialTable(initial, 0, Number.MAX_SAFE_INTEGER);
    } catch (e) {
      return `initialTable: ${(e as Error).message}`;
    }
  }
  return { key: typeof policyKey === 'string' ? hexToBytes(policyKey.toLowerCase()) : null, initial: table };
}

/** The USB phone's start (S0.3): the host's AutoRun reads AUTORUN.INF and starts the program it names. */
export function boot(dev: Board): BootResult {
  const t0 = dev.clock.now();
  const fail = (reason: string): BootResult => {
    dev.trace('S0.3', 'autorun', reason, false);
    return { ok: false, reason };
  };
  const c = verifyBootFiles(dev);
  if (!c.ok) return fail(c.reason);
  const inf = c.file('cdrom', 'AUTORUN.INF');
  if (!inf) return fail('BOOT_BAD_SIGNATURE: AUTORUN.INF is not in the signed manifest');
  let program: string | null = null;
  try {
    program = parseAutorun(td.decode(inf));
  } catch {
    return fail('BOOT_BAD_AUTORUN: AUTORUN.INF is not text');
  }
  if (!program || !FILE_RE.test(program)) return fail('BOOT_BAD_AUTORUN: AUTORUN.INF names no program');
  const r = programConfig(c, program);
  if (!r.ok) return fail(r.reason);
  dev.trace('S0.3', 'autorun', `${c.summary}; AUTORUN.INF -> ${program}`, true, dev.clock.now() - t0);
  return r;
}

/** The program a launcher starts: UPMon, by its name (firmware/factory/image.ts UPMON_PROGRAM). */
export const LAUNCHED_PROGRAM = 'UPMON.EXE';

/**
 * The start of a device whose own operating system runs the programs (S0.15: the mobile
 * phone, the ATM): the same signed boot files, checked the same way, but no AutoRun: the
 * launcher starts UPMON.EXE by name and never reads what AUTORUN.INF names (the file stays in
 * the signed set, so the firmware measurement is the USB phone's, but it is inert here).
 */
export function launch(dev: Board): BootResult {
  const t0 = dev.clock.now();
  const fail = (reason: string): BootResult => {
    dev.trace('S0.15', 'launch', reason, false);
    return { ok: false, reason };
  };
  const c = verifyBootFiles(dev);
  if (!c.ok) return fail(c.reason);
  const r = programConfig(c, LAUNCHED_PROGRAM);
  if (!r.ok) return fail(r.reason);
  dev.trace('S0.15', 'launch', `${c.summary}; the ${dev.profile} profile's launcher starts ${LAUNCHED_PROGRAM} (no AutoRun)`, true, dev.clock.now() - t0);
  return r;
}
