// The image inspector's engine (`usbphone inspect`): reads a raw flash image and reports the
// partition table, each zone, the hidden-zone records (metadata always, contents only with
// the fuses), record-store slots, wear (from a sidecar) and a scan for secrets in plaintext.
// Compare ESP-IDF nvs_tool.py and littlefs readtree.py. No node imports: cli/inspect.ts
// reads the files and prints.
//
// Outcomes: `fatal` set = the input is unusable (exit 2: wrong magic, truncated, zones out of
// range or overlapping, absurd sizes); otherwise `problems` lists integrity findings, each
// with an absolute image offset (exit 1 under --check when non-empty).
// Assumes the W25Q-class geometry of the image's table (4 KiB sectors inside zones).
import { bytesToHex } from '@noble/hashes/utils.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { openSerialToken } from '../../protocol/keys.ts';
import type { Fuses } from '../flash/fuses.ts';
import { checkBootFiles } from '../boot-manifest.ts';
import { parseTable, zoneName, ZoneFlag, ZoneType, type PartitionTable, type ZoneEntry } from '../zones/layout.ts';
import { crc32 } from '../zones/crc32.ts';
import { scanIso, arrayBlocks, readIsoFile, ISO_BLOCK } from '../zones/iso9660.ts';
import { checkFat, arraySectors, readFatFile, FAT_SECTOR, type FatGeometry } from '../zones/fat.ts';
import { diskVisibleBytes } from '../zones/disk-controller.ts';
import { identityMeta, openIdentity, classifySlot, HIDDEN_STORES, IDENTITY_KEY_LABEL, IDENTITY_MAX, storeKeyLabel, type IdentityMeta, type SlotInfo } from '../zones/hidden.ts';

export const SECTOR_BYTES = 4096;
/** Images larger than this are refused before anything is parsed. */
export const INSPECT_MAX_BYTES = 2 ** 30;
export const INSPECT_MIN_BYTES = 256 * 1024;

export interface Problem {
  zone: 'table' | 'hidden' | 'virtual' | 'free' | 'image';
  /** Absolute offset in the image. */
  offset: number;
  message: string;
}

export interface InspectReport {
  fatal: { code: string; message: string; offset: number } | null;
  image: { bytes: number; sha256: string };
  table: (PartitionTable & { crcOk: boolean; zones: (ZoneEntry & { name: string; end: number })[] }) | null;
  hidden: {
    identity: IdentityMeta & { offset: number; opened?: { serial: string; keyVersion: number; uniqueId: string; serialTokenBytes: number; serialTokenOpens?: boolean; deviceKeySha256Prefix: string } ; openStatus?: string };
    stores: { name: string; slots: (SlotInfo & { absOffset: number; payloadBytes?: number })[] }[];
  } | null;
  virtual: { volumeId: string; volumeBlocks: number; files: { name: string; size: number; lba: number }[]; autorun: string | null; checksumOk: boolean | null } | null;
  free: { geometry: FatGeometry | null; files: { name: string; size: number; cluster: number }[]; freeBytes: number } | null;
  /**
   * The signed boot manifest (issue 9): checked with the vendor public key of the fuses or
   * the one given; a bad signature or a file that does not match it is a problem.
   */
  boot: { checked: boolean; note?: string; ok?: boolean; version?: number; measurement?: string; files?: string[] };
  secrets: { checked: boolean; needles: string[]; findings: { what: string; offset: number }[] };
  wear: WearSummary;
  problems: Problem[];
}

export interface WearSummary {
  available: boolean;
  note?: string;
  sectors?: number;
  totalErases?: number;
  maxErases?: number;
  maxSector?: number;
  meanErases?: number;
  endurance?: number;
  /** Sectors at or above 80 % of endurance. */
  atRisk?: number[];
  perZone?: { zone: string; maxErases: number; totalErases: number }[];
}

export interface InspectOptions {
  fuses?: Fuses | null;
  /** Erase counters from a wear sidecar, one per 4 KiB sector. */
  wear?: Uint32Array | null;
  endurance?: number;
  /** Only look at one zone (the table is always read). */
  zone?: 'hidden' | 'virtual' | 'free';
  /** Extra plaintext needles for the secret scan (e.g. a known password). */
  extraSecrets?: { what: string; bytes: Uint8Array }[];
  /** The vendor's Ed25519 public key (when no fuses are given): checks BOOT.SIG. */
  vendorPub?: Uint8Array | null;
  /** The master keys: lets the inspector check that the serial token opens. */
  keyring?: import('../../protocol/keys.ts').MasterKeyring;
}

const td = new TextDecoder();

export function inspectImage(img: Uint8Array, opts: InspectOptions = {}): InspectReport {
  const report: InspectReport = {
    fatal: null,
    image: { bytes: img.length, sha256: '' },
    table: null,
    hidden: null,
    virtual: null,
    free: null,
    boot: { checked: false },
    secrets: { checked: false, needles: [], findings: [] },
    wear: { available: false },
    problems: [],
  };
  const fatal = (code: string, message: string, offset = 0) => {
    report.fatal = { code, message, offset };
    return report;
  };
  if (img.length < INSPECT_MIN_BYTES) return fatal('INSPECT_TRUNCATED', `image is ${img.length} bytes: too small to be a flash image (truncated?)`);
  if (img.length > INSPECT_MAX_BYTES) return fatal('INSPECT_TOO_BIG', `image is ${img.length} bytes: larger than any supported chip (1 GiB)`);
  if (img.length % SECTOR_BYTES !== 0) return fatal('INSPECT_TRUNCATED', `image is ${img.length} bytes, not a whole number of 4 KiB sectors (truncated?)`, img.length);
  report.image.sha256 = bytesToHex(sha256(img));

  const t = parseTable(img.subarray(0, SECTOR_BYTES));
  if (!t.ok) return fatal(t.code, t.message, t.offset);
  if (t.table.chipBytes !== img.length) {
    return fatal(img.length < t.table.chipBytes ? 'INSPECT_TRUNCATED' : 'LAYOUT_BAD_SIZE', `the table describes a ${t.table.chipBytes}-byte chip, the image has ${img.length} bytes${img.length < t.table.chipBytes ? ' (truncated)' : ''}`, 12);
  }
  const P = report.problems;
  if (!t.crcOk) P.push({ zone: 'table', offset: t.crcOffset, message: `partition table CRC-32 mismatch (stored 0x${t.storedCrc.toString(16)}, computed 0x${t.computedCrc.toString(16)})` });
  // Block 0 holds only the table: anything else there is damage or tampering.
  const rest = img.subarray(t.bytes, t.table.blockBytes);
  const stray = rest.findIndex((b) => b !== 0xff);
  if (stray >= 0) P.push({ zone: 'table', offset: t.bytes + stray, message: 'unexpected data in the partition table block after the table' });
  report.table = { ...t.table, crcOk: t.crcOk, zones: t.table.entries.map((e) => ({ ...e, name: zoneName(e.type), end: e.offset + e.size })) };
  const byType = (ty: number) => t.table.entries.find((e) => e.type === ty)!;
  const hz = byType(ZoneType.HIDDEN), vz = byType(ZoneType.VIRTUAL), fz = byType(ZoneType.FREE);
  const want = (z: 'hidden' | 'virtual' | 'free') => !opts.zone || opts.zone === z;

  // Hidden zone.
  let serial: string | null = null, deviceKey: Uint8Array | null = null;
  const payloads: { what: string; bytes: Uint8Array }[] = [];
  const derived: { what: string; bytes: Uint8Array }[] = [];
  if (want('hidden') || opts.fuses) {
    const hb = img.subarray(hz.offset, hz.offset + hz.size);
    const meta = identityMeta(hb.subarray(0, IDENTITY_MAX));
    const identity: NonNullable<InspectReport['hidden']>['identity'] = { ...meta, offset: hz.offset };
    if (meta.state === 'corrupt') P.push({ zone: 'hidden', offset: hz.offset + (meta.problemOffset ?? 0), message: meta.problem ?? 'identity record is damaged' });
    if (meta.state === 'empty') P.push({ zone: 'hidden', offset: hz.offset, message: 'no identity record (erased)' });
    if (opts.fuses) {
      const idKey = opts.fuses.deriveKey(IDENTITY_KEY_LABEL);
      derived.push({ what: 'identity key (fuse-derived)', bytes: idKey });
      const o = openIdentity(idKey, hb.subarray(0, IDENTITY_MAX));
      if (o.identity) {
        const id = o.identity;
        serial = id.serial;
        deviceKey = id.deviceKey;
        identity.opened = {
          serial: id.serial,
          keyVersion: id.keyVersion,
          uniqueId: bytesToHex(id.uniqueId),
          serialTokenBytes: id.serialToken.length,
          deviceKeySha256Prefix: bytesToHex(sha256(id.deviceKey).subarray(0, 4)),
        };
        if (opts.keyring) {
          try {
            identity.opened.serialTokenOpens = openSerialToken(opts.keyring, id.serialToken).serial === id.serial;
          } catch {
            identity.opened.serialTokenOpens = false;
          }
          if (!identity.opened.serialTokenOpens) P.push({ zone: 'hidden', offset: hz.offset, message: 'serial token does not open to this serial under the master key' });
        }
        if (bytesToHex(id.uniqueId) !== bytesToHex(opts.fuses.uniqueId())) P.push({ zone: 'hidden', offset: hz.offset, message: 'identity record was made for another chip (unique id differs from the fuses)' });
      } else if (meta.state === 'sealed') {
        identity.openStatus = o.status === 11 ? 'does not authenticate under these fuses' : 'malformed plaintext';
        P.push({ zone: 'hidden', offset: hz.offset + 12, message: `identity record ${identity.openStatus}` });
      }
    }
    const stores: NonNullable<InspectReport['hidden']>['stores'] = [];
    for (const [name, g] of Object.entries(HIDDEN_STORES)) {
      const key = opts.fuses ? opts.fuses.deriveKey(storeKeyLabel(name)) : null;
      if (key) derived.push({ what: `record store key "${name}" (fuse-derived)`, bytes: key });
      const slots: (SlotInfo & { absOffset: number; payloadBytes?: number })[] = [];
      for (let i = 0; i < g.slots; i++) {
        const off = (g.firstSector + i) * SECTOR_BYTES;
        const c = classifySlot(hb.subarray(off, off + SECTOR_BYTES), g.id, key, i, off);
        const { payload, ...info } = c;
        if (payload) payloads.push({ what: `record store "${name}" payload (slot ${i})`, bytes: payload });
        slots.push({ ...info, absOffset: hz.offset + off, ...(payload ? { payloadBytes: payload.length } : {}) });
      }
      let best = -1;
      slots.forEach((s, i) => {
        if ((s.state === 'valid' || s.state === 'sealed') && (best < 0 || s.seq! > slots[best]!.seq!)) best = i;
      });
      if (best >= 0) slots[best]!.current = true;
      for (const s of slots) {
        // A torn slot is the normal trace of a cut write, not damage; corrupt/invalid are problems.
        if (s.state === 'corrupt' || s.state === 'invalid') P.push({ zone: 'hidden', offset: hz.offset + (s.problemOffset ?? s.offset), message: `record store "${name}" slot ${s.index}: ${s.problem}` });
      }
      stores.push({ name, slots });
    }
    // Reserved hidden sectors must be erased.
    const used = new Set<number>([0, ...Object.values(HIDDEN_STORES).flatMap((g) => Array.from({ length: g.slots }, (_, i) => g.firstSector + i))]);
    for (let s = 0; s < hz.size / SECTOR_BYTES; s++) {
      if (used.has(s)) continue;
      const sec = hb.subarray(s * SECTOR_BYTES, (s + 1) * SECTOR_BYTES);
      const k = sec.findIndex((b) => b !== 0xff);
      if (k >= 0) P.push({ zone: 'hidden', offset: hz.offset + s * SECTOR_BYTES + k, message: `reserved hidden sector ${s} is not erased` });
    }
    if (want('hidden')) report.hidden = { identity, stores };
  }

  // Virtual zone.
  if (want('virtual')) {
    const vb = img.subarray(vz.offset, vz.offset + vz.size);
    const scan = scanIso(arrayBlocks(vb), vz.size / ISO_BLOCK);
    for (const p of scan.problems) P.push({ zone: 'virtual', offset: vz.offset + p.offset, message: p.message });
    let checksumOk: boolean | null = null;
    if (vz.flags & ZoneFlag.CHECKSUMMED) {
      checksumOk = crc32(vb.subarray(0, vz.usedBytes)) === vz.contentCrc;
      if (!checksumOk) P.push({ zone: 'virtual', offset: vz.offset, message: `virtual zone content (0x${vz.offset.toString(16)}..0x${(vz.offset + vz.usedBytes).toString(16)}) differs from its factory CRC-32 0x${vz.contentCrc.toString(16)}` });
      const k = vb.subarray(vz.usedBytes).findIndex((b) => b !== 0xff);
      if (k >= 0) P.push({ zone: 'virtual', offset: vz.offset + vz.usedBytes + k, message: 'data after the end of the factory volume' });
    }
    const auto = scan.problems.length ? null : readIsoFile(arrayBlocks(vb), 'AUTORUN.INF', vz.size / ISO_BLOCK);
    if (!scan.problems.length && !auto) P.push({ zone: 'virtual', offset: vz.offset, message: 'no AUTORUN.INF in the virtual zone' });
    report.virtual = { volumeId: scan.volumeId, volumeBlocks: scan.volumeBlocks, files: scan.entries.map(({ name, size, lba }) => ({ name, size, lba })), autorun: auto ? td.decode(auto) : null, checksumOk };
  }

  // Free zone.
  if (want('free')) {
    // The host sees the zone minus the disk controller's spares and journal at its end.
    const visible = diskVisibleBytes(fz.size, SECTOR_BYTES);
    const fb = img.subarray(fz.offset, fz.offset + visible);
    const c = checkFat(arraySectors(fb).read, visible / FAT_SECTOR);
    for (const p of c.problems) P.push({ zone: 'free', offset: fz.offset + p.offset, message: p.message });
    const g = c.geometry;
    report.free = { geometry: g, files: c.entries.map(({ name, size, cluster }) => ({ name, size, cluster })), freeBytes: g ? (g.clusters - c.usedClusters) * g.sectorsPerCluster * FAT_SECTOR : 0 };
    // The main program against the hash UPMon's (read-only) configuration names: the check
    // the phone makes before it starts it (S0.10). A volume fsck.fat finds clean can still
    // hold a main program the phone refuses to run.
    const vb = img.subarray(vz.offset, vz.offset + vz.size);
    const cfgBytes = readIsoFile(arrayBlocks(vb), 'UPMON.CFG', vz.size / ISO_BLOCK);
    let cfg: { mainProgram?: unknown; mainSha256?: unknown } | null = null;
    try {
      cfg = cfgBytes ? JSON.parse(td.decode(cfgBytes)) : null;
    } catch {
      cfg = null;
    }
    if (!cfg || typeof cfg.mainProgram !== 'string' || typeof cfg.mainSha256 !== 'string') {
      P.push({ zone: 'virtual', offset: vz.offset, message: 'UPMON.CFG is missing or does not name the main program and its SHA-256' });
    } else if (g) {
      const entry = c.entries.find((e) => e.name === (cfg!.mainProgram as string).toUpperCase());
      const main = readFatFile(arraySectors(fb).read, cfg.mainProgram);
      if (!entry || !main) P.push({ zone: 'free', offset: fz.offset + (entry?.entryOffset ?? g.rootSector * FAT_SECTOR), message: `main program ${cfg.mainProgram} (named by UPMON.CFG) is missing or unreadable: the phone cannot start it` });
      else if (bytesToHex(sha256(main)) !== cfg.mainSha256) {
        P.push({ zone: 'free', offset: fz.offset + (g.dataSector + (entry.cluster - 2) * g.sectorsPerCluster) * FAT_SECTOR, message: `main program ${entry.name} does not match the SHA-256 in UPMON.CFG (${cfg.mainSha256.slice(0, 16)}…, the file hashes to ${bytesToHex(sha256(main)).slice(0, 16)}…): the phone refuses to start it (BOOT_HASH_MISMATCH)` });
      }
    }
  }

  // The signed boot manifest, as the phone checks it at boot (firmware/boot-manifest.ts).
  const vendorPub = opts.fuses?.vendorPublicKey() ?? opts.vendorPub ?? null;
  if (!want('virtual') && !want('free')) report.boot = { checked: false, note: 'not in the inspected zone' };
  else if (!vendorPub) report.boot = { checked: false, note: 'no vendor public key (give --fuses or --vendor-pub)' };
  else {
    const vb = img.subarray(vz.offset, vz.offset + vz.size);
    const fb = img.subarray(fz.offset, fz.offset + diskVisibleBytes(fz.size, SECTOR_BYTES));
    const c = checkBootFiles((zone, name) => {
      const d = zone === 'cdrom' ? readIsoFile(arrayBlocks(vb), name, vz.size / ISO_BLOCK) : readFatFile(arraySectors(fb).read, name);
      return d ? { ok: true, data: d } : { ok: false, status: 'ERR_NOT_FOUND' };
    }, vendorPub, 1);
    if (c.ok) report.boot = { checked: true, ok: true, version: c.manifest.version, measurement: bytesToHex(c.measurement), files: c.manifest.entries.map((e) => `${e.zone}:${e.name}`) };
    else {
      report.boot = { checked: true, ok: false };
      P.push({ zone: 'virtual', offset: vz.offset, message: `boot manifest: ${c.reason} (${c.code}): the phone refuses to boot` });
    }
  }

  // Secret scan: no secret the inspector knows may appear in plaintext anywhere (S0.1).
  if (opts.fuses || opts.extraSecrets?.length) {
    const needles: { what: string; bytes: Uint8Array }[] = [...derived, ...(opts.extraSecrets ?? [])];
    if (serial) needles.push({ what: 'serial number', bytes: new TextEncoder().encode(serial) });
    if (deviceKey) needles.push({ what: 'device key', bytes: deviceKey });
    for (const p of payloads) if (p.bytes.length >= 8) needles.push(p);
    report.secrets.checked = true;
    report.secrets.needles = needles.map((n) => n.what);
    for (const n of needles) {
      for (const at of findAll(img, n.bytes, 8)) {
        report.secrets.findings.push({ what: n.what, offset: at });
        P.push({ zone: zoneAt(t.table, at), offset: at, message: `${n.what} appears in plaintext` });
      }
    }
  }

  // Wear: a raw image carries no erase counters; they come from a sidecar.
  if (opts.wear) report.wear = wearSummary(opts.wear, t.table, opts.endurance ?? 100_000);
  else report.wear = { available: false, note: 'a raw image carries no erase counters (real chips do not store them); pass a wear sidecar (<image>.wear) saved by the device model' };
  return report;
}

export function wearSummary(counts: Uint32Array, table: PartitionTable, endurance: number): WearSummary {
  let total = 0, max = 0, maxSector = 0;
  const atRisk: number[] = [];
  counts.forEach((n, s) => {
    total += n;
    if (n > max) {
      max = n;
      maxSector = s;
    }
    if (n >= 0.8 * endurance) atRisk.push(s);
  });
  const perZone = [{ zone: 'table', offset: 0, size: table.blockBytes }, ...table.entries.map((e) => ({ zone: zoneName(e.type), offset: e.offset, size: e.size }))].map((z) => {
    let m = 0, t = 0;
    for (let s = z.offset / SECTOR_BYTES; s < (z.offset + z.size) / SECTOR_BYTES && s < counts.length; s++) {
      m = Math.max(m, counts[s]!);
      t += counts[s]!;
    }
    return { zone: z.zone, maxErases: m, totalErases: t };
  });
  return { available: true, sectors: counts.length, totalErases: total, maxErases: max, maxSector, meanErases: total / counts.length, endurance, atRisk, perZone };
}

function zoneAt(t: PartitionTable, at: number): Problem['zone'] {
  const z = t.entries.find((e) => at >= e.offset && at < e.offset + e.size);
  return z ? (zoneName(z.type) as Problem['zone']) : at < t.blockBytes ? 'table' : 'image';
}

/** Offsets of needle in hay (at most `limit`). */
export function findAll(hay: Uint8Array, needle: Uint8Array, limit: number): number[] {
  const out: number[] = [];
  if (needle.length === 0) return out;
  const first = needle[0]!;
  let i = hay.indexOf(first);
  while (i >= 0 && i + needle.length <= hay.length && out.length < limit) {
    let k = 1;
    while (k < needle.length && hay[i + k] === needle[k]) k++;
    if (k === needle.length) out.push(i);
    i = hay.indexOf(first, i + 1);
  }
  return out;
}
