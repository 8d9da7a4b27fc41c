// Boot (S0.3): on plug-in the host's AutoRun reads AUTORUN.INF from the virtual zone (the
// CD-ROM unit) and starts the program it names, UPMon, after checking UPMon's manifest
// (its program hash). A corrupted virtual zone stops the boot with a clear status.
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex } from '@noble/hashes/utils.js';
import type { Board } from './board.ts';
import type { Endpoint } from './client-session.ts';

export interface UpmonConfig {
  /** Registration endpoints, validated here once; the dest is the URL's last path segment. */
  regPrimary: Endpoint;
  regBackup: Endpoint;
  mainProgram: string;
  mainSha256: string;
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

export function boot(dev: Board): BootResult {
  const t0 = dev.clock.now();
  const fail = (reason: string): BootResult => {
    dev.trace('S0.3', 'autorun', reason, false);
    return { ok: false, reason };
  };
  // The CD-ROM is mounted once per boot: one directory read for the four files.
  const vol = dev.storage.mountVirtual();
  if (!vol.ok) return fail(`BOOT_NO_AUTORUN: AUTORUN.INF unreadable (${vol.status})`);
  const read = (name: string) => vol.value.readFile(name);

  const inf = read('AUTORUN.INF');
  if (!inf.ok) return fail(`BOOT_NO_AUTORUN: AUTORUN.INF unreadable (${inf.status})`);
  let program: string | null = null;
  try {
    program = parseAutorun(td.decode(inf.value));
  } catch {
    return fail('BOOT_BAD_AUTORUN: AUTORUN.INF is not text');
  }
  if (!program || !FILE_RE.test(program)) return fail('BOOT_BAD_AUTORUN: AUTORUN.INF names no program');

  const manifestName = program.replace(/\.[A-Z0-9_]+$/, '') + '.MAN';
  const man = read(manifestName);
  const exe = read(program);
  if (!man.ok || !exe.ok) return fail(`BOOT_MISSING_PROGRAM: ${program} or ${manifestName} unreadable`);
  const m = json(man.value);
  if (!m || m.program !== program || typeof m.sha256 !== 'string') return fail(`BOOT_BAD_MANIFEST: ${manifestName} is not a manifest of ${program}`);
  if (bytesToHex(sha256(exe.value)) !== m.sha256.toLowerCase()) return fail(`BOOT_HASH_MISMATCH: ${program} does not match its manifest`);

  const cfgBytes = read(program.replace(/\.[A-Z0-9_]+$/, '') + '.CFG');
  const cfg = cfgBytes.ok ? json(cfgBytes.value) : null;
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
  dev.trace('S0.3', 'autorun', `AUTORUN.INF -> ${program}, manifest hash ok`, true, dev.clock.now() - t0);
  return { ok: true, config: { regPrimary, regBackup, mainProgram, mainSha256: mainSha256.toLowerCase() } };
}
