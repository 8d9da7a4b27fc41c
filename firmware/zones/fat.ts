// A small FAT12/FAT16 formatter, reader, writer and checker for the free zone (S0.1): the
// removable disk the host sees, holding the main program and room for user files.
// Firmware-usable: no node imports. fsck.fat and mtools accept what buildFat writes, and we
// read what mkfs.fat writes, at every volume size (the sweep in fat-geometry.test.ts).
//
// Scope (Microsoft FAT specification 1.03, "fatgen103"): 512-byte sectors, two FATs, a
// fixed root directory of 8.3 names; no subdirectories, no long file names (LFN entries are
// skipped on read), no FAT32. The FAT type follows from the cluster count exactly as the spec
// says (< 4085 clusters: FAT12; < 65525: FAT16); the FAT is the smallest that holds them.
//
// Power cuts: the writer orders its sector writes so that each prefix of them is a volume
// that mounts with every other file intact (data, then the FATs, then the directory entry;
// an overwrite allocates the new chain before it frees the old one), so a cut between two
// sector writes leaves at worst lost clusters and FAT copies that differ. That holds only
// if each sector write is itself atomic and touches nothing else: on NOR flash a sector
// write that must erase rewrites 4 KiB, so on the phone it is the disk controller
// (disk-controller.ts: spare sector + journal) that makes it so. Over a plain
// read-modify-write a cut of that erase destroys the neighbours (the boot sector beside
// FAT 1, MAIN.EXE beside the root directory): host-write-cuts.test.ts found 20 of 53 cut
// points of one 13-byte file write losing MAIN.EXE. The factory layout (alignSectors 8,
// clusters of at least 4 KiB) also keeps the boot sector, each FAT, the root directory and
// each file's clusters in flash sectors of their own.

import { FlashStatus } from '../flash/chip.ts';

export const FAT_SECTOR = 512;
const ROOT_ENTRIES = 512;
const DIR_ENTRY = 32;
const MEDIA = 0xf8;
const DEFAULT_DATE = new Date(Date.UTC(2024, 0, 1, 0, 0, 0));
/** Largest volume the reader accepts (a FAT16 volume tops out near 2 GiB; our chips are far smaller). */
export const FAT_MAX_SECTORS = 2 ** 21;

export interface FatFile {
  name: string;
  data: Uint8Array;
}
export interface FatGeometry {
  fatType: 12 | 16;
  sectorsPerCluster: number;
  reservedSectors: number;
  fats: number;
  fatSectors: number;
  rootEntries: number;
  totalSectors: number;
  media: number;
  rootSector: number;
  rootSectors: number;
  dataSector: number;
  clusters: number;
  label: string;
}
export interface FatEntry {
  name: string;
  size: number;
  cluster: number;
  attr: number;
  /** Byte offset of the 32-byte directory entry from the start of the volume. */
  entryOffset: number;
}
export interface FatProblem {
  offset: number;
  message: string;
}
export type ReadSectors = (lba: number, count: number) => Uint8Array | null;
export type WriteSectors = (lba: number, data: Uint8Array) => number;

const te = new TextEncoder();
const td = new TextDecoder('latin1');
const NAME_RE = /^[A-Z0-9_~!#$%&'()@^{}-]{1,8}(\.[A-Z0-9_~!#$%&'()@^{}-]{1,3})?$/;

/** "main.exe" -> "MAIN    EXE" (11 bytes); throws a RangeError on a name 8.3 cannot hold. */
export function fatName(name: string): Uint8Array {
  const n = name.toUpperCase();
  if (!NAME_RE.test(n)) throw new RangeError(`FAT 8.3 name expected: "${name}"`);
  const [base, ext = ''] = n.split('.') as [string, string?];
  return te.encode(base.padEnd(8, ' ') + ext.padEnd(3, ' '));
}
/** A directory entry's 8.3 name as text ("MAIN.EXE"); the entry's 11 name bytes. */
export function showName(raw: Uint8Array): string {
  const base = latin1(raw, 0, 8).trimEnd();
  const ext = latin1(raw, 8, 11).trimEnd();
  return ext ? `${base}.${ext}` : base;
}

/**
 * td.decode(raw.subarray(from, to)), without a TextDecoder call for the ASCII names every real
 * entry has: two decoder calls per entry per file read were ~1 % of a fleet's phone CPU (issue
 * 15). Any byte >= 0x80 goes to the decoder (WHATWG "latin1" is windows-1252, not ISO 8859-1).
 */
function latin1(raw: Uint8Array, from: number, to: number): string {
  let s = '';
  for (let i = from; i < to; i++) {
    const b = raw[i]!;
    if (b >= 0x80) return td.decode(raw.subarray(from, to));
    s += String.fromCharCode(b);
  }
  return s;
}
function fatDate(d: Date): number {
  return ((d.getUTCFullYear() - 1980) << 9) | ((d.getUTCMonth() + 1) << 5) | d.getUTCDate();
}
function fatTime(d: Date): number {
  return (d.getUTCHours() << 11) | (d.getUTCMinutes() << 5) | (d.getUTCSeconds() >> 1);
}

/** Most sectors one FAT16 needs (65524 clusters + the 2 reserved entries, 2 bytes each). */
const FAT16_MAX_FAT_SECTORS = Math.ceil(((65524 + 2) * 2) / FAT_SECTOR);
const fatBytesFor = (clusters: number, type: 12 | 16) => Math.ceil(((clusters + 2) * type) / 8);

/**
 * fatgen103 §3.5, exactly: the smallest FAT (a multiple of align sectors) that holds the
 * clusters left beside it, with the type those clusters give. Growing the FAT shrinks the
 * data area, so the first size that suffices is the smallest; an over-sized FAT, or a jump
 * to the size the first estimate needs, gave FATs of 257-258 sectors before. null: no
 * FAT12/16 volume with this cluster size (too few or too many clusters).
 */
export function fatGeometry(totalSectors: number, spc: number, align = 1): { fatType: 12 | 16; fatSectors: number; clusters: number; reservedSectors: number } | null {
  const rootSectors = (ROOT_ENTRIES * DIR_ENTRY) / FAT_SECTOR;
  const reservedSectors = align; // the boot sector, alone in its flash sector when align > 1
  for (let fatSectors = align; fatSectors <= FAT16_MAX_FAT_SECTORS + align; fatSectors += align) {
    const data = totalSectors - reservedSectors - 2 * fatSectors - rootSectors;
    if (data < spc) return null;
    const clusters = Math.floor(data / spc);
    if (clusters >= 65525) continue; // FAT32 territory unless the FAT grows: try the next size
    const fatType = clusters < 4085 ? 12 : 16;
    if (Math.ceil(fatBytesFor(clusters, fatType) / FAT_SECTOR) <= fatSectors) {
      // A FAT that had to grow past what its clusters need (clusters pushed under 65525 by
      // the FAT itself) is legal but wasteful; a bigger cluster does better.
      if (fatSectors > FAT16_MAX_FAT_SECTORS) return null;
      return { fatType, fatSectors, clusters, reservedSectors };
    }
  }
  return null;
}

/**
 * Formats a volume of sizeBytes holding files in its root directory (contiguous clusters
 * from cluster 2). Deterministic: the same inputs give the same bytes (fixed date; the
 * volume serial is a hash of the label unless given).
 */
export interface BuildFatOptions {
  date?: Date;
  serial?: number;
  /** Value of the unused data area (0xFF: erased flash). */
  fill?: number;
  /**
   * Sectors the boot sector, each FAT, the root directory and the data area start on (8: a
   * 4 KiB flash sector each, so no host metadata write shares a flash sector with a file).
   */
  alignSectors?: number;
  /** Smallest cluster, in sectors (8: a file's clusters never share a 4 KiB flash sector). */
  minClusterSectors?: number;
}

/** A volume size buildFat cannot format: the caller maps it to its own coded error. */
export class FatSizeError extends RangeError {
  override readonly name = 'FatSizeError';
}

export function buildFat(files: FatFile[], sizeBytes: number, label: string, opts: BuildFatOptions = {}): Uint8Array {
  if (!Number.isInteger(sizeBytes) || sizeBytes % FAT_SECTOR !== 0 || sizeBytes < 64 * 1024 || sizeBytes / FAT_SECTOR > FAT_MAX_SECTORS) {
    throw new FatSizeError(`FAT volume size ${sizeBytes} must be a multiple of 512 between 64 KiB and 1 GiB`);
  }
  const align = opts.alignSectors ?? 1;
  if (![1, 2, 4, 8, 16, 32, 64].includes(align)) throw new RangeError('alignSectors: a power of two 1..64');
  const lab = label.toUpperCase();
  if (!/^[A-Z0-9_ -]{1,11}$/.test(lab)) throw new RangeError('FAT volume label: 1..11 of A-Z 0-9 _ - space');
  const date = opts.date ?? DEFAULT_DATE;
  const total = sizeBytes / FAT_SECTOR;
  let g: ReturnType<typeof fatGeometry> = null, spc = opts.minClusterSectors ?? 1;
  if (![1, 2, 4, 8, 16, 32, 64, 128].includes(spc)) throw new RangeError('minClusterSectors: a power of two 1..128');
  for (; spc <= 128 && !g; spc *= 2) g = fatGeometry(total, spc, align);
  spc /= 2;
  if (!g) throw new FatSizeError(`no FAT12/16 geometry fits ${sizeBytes} bytes`);
  const img = new Uint8Array(sizeBytes);
  const dv = new DataView(img.buffer);
  const rootSector = g.reservedSectors + 2 * g.fatSectors;
  const dataSector = rootSector + (ROOT_ENTRIES * DIR_ENTRY) / FAT_SECTOR;
  if (opts.fill !== undefined) img.fill(opts.fill, dataSector * FAT_SECTOR);

  // Boot sector and BPB (fatgen103 §3.1-3.2).
  img.set([0xeb, 0x3c, 0x90], 0);
  img.set(te.encode('MSWIN4.1'), 3);
  dv.setUint16(11, FAT_SECTOR, true);
  img[13] = spc;
  dv.setUint16(14, g.reservedSectors, true);
  img[16] = 2;
  dv.setUint16(17, ROOT_ENTRIES, true);
  if (total < 0x10000) dv.setUint16(19, total, true);
  else dv.setUint32(32, total, true);
  img[21] = MEDIA;
  dv.setUint16(22, g.fatSectors, true);
  dv.setUint16(24, 32, true);
  dv.setUint16(26, 64, true);
  img[36] = 0x80;
  img[38] = 0x29;
  let serial = opts.serial ?? 0x811c9dc5;
  if (opts.serial === undefined) for (const c of te.encode(lab)) serial = Math.imul(serial ^ c, 0x01000193) >>> 0; // FNV-1a
  dv.setUint32(39, serial >>> 0, true);
  img.set(te.encode(lab.padEnd(11, ' ')), 43);
  img.set(te.encode(g.fatType === 12 ? 'FAT12   ' : 'FAT16   '), 54);
  img.set([0xeb, 0xfe], 62); // boot code: jmp $ (this is not a bootable disk)
  img[510] = 0x55;
  img[511] = 0xaa;

  // FAT: entries 0 and 1 reserved (media, end-of-chain), then each file's chain.
  const fat = new FatTable(g.fatType, g.fatSectors);
  fat.set(0, g.fatType === 12 ? 0xf00 | MEDIA : 0xff00 | MEDIA);
  fat.set(1, g.fatType === 12 ? 0xfff : 0xffff);
  const clusterBytes = spc * FAT_SECTOR;
  let next = 2;
  const root = img.subarray(rootSector * FAT_SECTOR, dataSector * FAT_SECTOR);
  const label11 = te.encode(lab.padEnd(11, ' '));
  root.set(label11, 0);
  root[11] = 0x08;
  new DataView(root.buffer, root.byteOffset).setUint16(22, fatTime(date), true);
  new DataView(root.buffer, root.byteOffset).setUint16(24, fatDate(date), true);
  const seen = new Set<string>();
  files.forEach((f, i) => {
    const raw = fatName(f.name);
    const key = td.decode(raw);
    if (seen.has(key)) throw new RangeError(`duplicate file name ${f.name}`);
    seen.add(key);
    if (i + 1 >= ROOT_ENTRIES) throw new FatSizeError('too many files for the root directory');
    const n = Math.ceil(f.data.length / clusterBytes);
    if (next + n > g!.clusters + 2) throw new FatSizeError('files do not fit the volume');
    const first = n ? next : 0;
    for (let c = 0; c < n; c++) fat.set(next + c, c === n - 1 ? fat.eoc : next + c + 1);
    if (n) {
      const at = (dataSector + (next - 2) * spc) * FAT_SECTOR;
      img.fill(0, at, at + n * clusterBytes);
      img.set(f.data, at);
    }
    next += n;
    writeEntry(root, (i + 1) * DIR_ENTRY, raw, 0x20, first, f.data.length, date);
  });
  for (let k = 0; k < 2; k++) img.set(fat.bytes, (g.reservedSectors + k * g.fatSectors) * FAT_SECTOR);
  return img;
}

function writeEntry(dir: Uint8Array, o: number, raw: Uint8Array, attr: number, cluster: number, size: number, date: Date) {
  dir.fill(0, o, o + DIR_ENTRY);
  dir.set(raw, o);
  dir[o + 11] = attr;
  const dv = new DataView(dir.buffer, dir.byteOffset);
  dv.setUint16(o + 14, fatTime(date), true);
  dv.setUint16(o + 16, fatDate(date), true);
  dv.setUint16(o + 18, fatDate(date), true);
  dv.setUint16(o + 22, fatTime(date), true);
  dv.setUint16(o + 24, fatDate(date), true);
  dv.setUint16(o + 26, cluster, true);
  dv.setUint32(o + 28, size, true);
}

class FatTable {
  readonly bytes: Uint8Array;
  constructor(readonly type: 12 | 16, sectors: number, bytes?: Uint8Array) {
    this.bytes = bytes ?? new Uint8Array(sectors * FAT_SECTOR);
  }
  get eoc(): number {
    return this.type === 12 ? 0xfff : 0xffff;
  }
  isEoc(v: number): boolean {
    return this.type === 12 ? v >= 0xff8 : v >= 0xfff8;
  }
  get(n: number): number {
    if (this.type === 16) return this.bytes[2 * n]! | (this.bytes[2 * n + 1]! << 8);
    const o = n + (n >> 1);
    const w = this.bytes[o]! | (this.bytes[o + 1]! << 8);
    return n & 1 ? w >> 4 : w & 0xfff;
  }
  set(n: number, v: number): void {
    if (this.type === 16) {
      this.bytes[2 * n] = v & 0xff;
      this.bytes[2 * n + 1] = v >> 8;
      return;
    }
    const o = n + (n >> 1);
    if (n & 1) {
      this.bytes[o] = (this.bytes[o]! & 0x0f) | ((v << 4) & 0xf0);
      this.bytes[o + 1] = (v >> 4) & 0xff;
    } else {
      this.bytes[o] = v & 0xff;
      this.bytes[o + 1] = (this.bytes[o + 1]! & 0xf0) | ((v >> 8) & 0x0f);
    }
  }
}

const u16 = (b: Uint8Array, o: number) => b[o]! | (b[o + 1]! << 8);
const u32 = (b: Uint8Array, o: number) => (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;

/** Reads and checks the boot sector; problems carry volume offsets. */
export function parseBootSector(bs: Uint8Array, expectSectors?: number): { geometry: FatGeometry | null; problems: FatProblem[] } {
  const problems: FatProblem[] = [];
  const fail = (offset: number, message: string) => {
    problems.push({ offset, message });
    return { geometry: null, problems };
  };
  if (bs.length < FAT_SECTOR) return fail(0, 'boot sector is short');
  if (bs[510] !== 0x55 || bs[511] !== 0xaa) problems.push({ offset: 510, message: 'boot sector signature 0x55AA missing' });
  if (bs[0] !== 0xeb && bs[0] !== 0xe9) problems.push({ offset: 0, message: `jump instruction 0x${bs[0]!.toString(16)} (expected 0xEB or 0xE9)` });
  const bps = u16(bs, 11);
  if (bps !== FAT_SECTOR) return fail(11, `bytes per sector ${bps} (only 512 is read)`);
  const spc = bs[13]!;
  if (spc === 0 || (spc & (spc - 1)) !== 0 || spc > 128) return fail(13, `sectors per cluster ${spc} is not a power of two 1..128`);
  const reserved = u16(bs, 14);
  if (reserved < 1 || reserved > 64) return fail(14, `reserved sectors ${reserved} is absurd`);
  const fats = bs[16]!;
  if (fats < 1 || fats > 2) return fail(16, `number of FATs ${fats} (1 or 2)`);
  const rootEntries = u16(bs, 17);
  if (rootEntries === 0 || (rootEntries * DIR_ENTRY) % FAT_SECTOR !== 0 || rootEntries > 4096) return fail(17, `root entries ${rootEntries} is absurd`);
  const t16 = u16(bs, 19), t32 = u32(bs, 32);
  const total = t16 || t32;
  if (t16 && t32) problems.push({ offset: 32, message: 'both 16- and 32-bit total sector counts are set' });
  if (total < 128 || total > FAT_MAX_SECTORS) return fail(t16 ? 19 : 32, `total sectors ${total} is absurd`);
  if (expectSectors !== undefined && total !== expectSectors) return fail(t16 ? 19 : 32, `total sectors ${total} does not match the zone (${expectSectors})`);
  const media = bs[21]!;
  if (media !== 0xf0 && media < 0xf8) problems.push({ offset: 21, message: `media byte 0x${media.toString(16)} is not valid` });
  const fatSectors = u16(bs, 22);
  // A FAT may be larger than its clusters need (fsck.fat and mtools accept it); what bounds
  // it is the volume. Readers load only the part the clusters use (usedFatSectors).
  if (fatSectors === 0 || fats * fatSectors >= total) return fail(22, `FAT size ${fatSectors} sectors is absurd`);
  const rootSector = reserved + fats * fatSectors;
  const rootSectors = (rootEntries * DIR_ENTRY) / FAT_SECTOR;
  const dataSector = rootSector + rootSectors;
  if (dataSector >= total) return fail(22, 'FATs and root directory leave no data area');
  const clusters = Math.floor((total - dataSector) / spc);
  const fatType: 12 | 16 = clusters < 4085 ? 12 : 16;
  if (clusters >= 65525) return fail(13, `${clusters} clusters: that is FAT32, which is not read`);
  if (Math.ceil(fatBytesFor(clusters, fatType) / FAT_SECTOR) > fatSectors) return fail(22, `FAT of ${fatSectors} sectors cannot hold ${clusters} clusters`);
  if (bs[38] === 0x29) {
    const fs = td.decode(bs.subarray(54, 62)).trim();
    if (fs !== `FAT${fatType}` && fs !== 'FAT') problems.push({ offset: 54, message: `file system type "${fs}" but ${clusters} clusters make it FAT${fatType}` });
  } else problems.push({ offset: 38, message: `extended boot signature 0x${bs[38]!.toString(16)} (expected 0x29)` });
  const label = bs[38] === 0x29 ? td.decode(bs.subarray(43, 54)).trimEnd() : '';
  return { geometry: { fatType, sectorsPerCluster: spc, reservedSectors: reserved, fats, fatSectors, rootEntries, totalSectors: total, media, rootSector, rootSectors, dataSector, clusters, label }, problems };
}

/** The sectors of one FAT its clusters use (at most 256): what readers load and compare. */
export const usedFatSectors = (g: FatGeometry) => Math.min(g.fatSectors, Math.ceil(fatBytesFor(g.clusters, g.fatType) / FAT_SECTOR));

interface Loaded {
  g: FatGeometry;
  fat: FatTable;
  root: Uint8Array;
}
function load(read: ReadSectors, expectSectors?: number): Loaded | null {
  const bs = read(0, 1);
  if (!bs) return null;
  const { geometry: g } = parseBootSector(bs, expectSectors);
  if (!g) return null;
  const f = read(g.reservedSectors, usedFatSectors(g));
  const root = read(g.rootSector, g.rootSectors);
  if (!f || !root) return null;
  return { g, fat: new FatTable(g.fatType, usedFatSectors(g), Uint8Array.from(f)), root: Uint8Array.from(root) };
}

/**
 * load() for readers (they change nothing): no copies, and the root directory only up to its
 * end: the first sector, then the rest only if that sector holds no end-of-directory entry
 * (first byte 0x00, after which every entry is free: Microsoft's FAT specification, §6).
 * entries() stops at that entry, so what a reader finds is the same; a phone's disk has a
 * handful of files, so this reads 512 bytes of its 16 KiB root directory.
 */
function loadToRead(read: ReadSectors): Loaded | null {
  const bs = read(0, 1);
  if (!bs) return null;
  const { geometry: g } = parseBootSector(bs);
  if (!g) return null;
  const f = read(g.reservedSectors, usedFatSectors(g));
  if (!f) return null;
  let root = read(g.rootSector, 1);
  if (!root) return null;
  if (!hasDirEnd(root) && g.rootSectors > 1) {
    const rest = read(g.rootSector + 1, g.rootSectors - 1);
    if (!rest) return null;
    const all = new Uint8Array(g.rootSectors * FAT_SECTOR);
    all.set(root.subarray(0, FAT_SECTOR));
    all.set(rest, FAT_SECTOR);
    root = all;
  }
  return { g, fat: new FatTable(g.fatType, usedFatSectors(g), f), root };
}
function hasDirEnd(b: Uint8Array): boolean {
  for (let o = 0; o < b.length; o += DIR_ENTRY) if (b[o] === 0x00) return true;
  return false;
}

function entries(root: Uint8Array, g: FatGeometry): FatEntry[] {
  const out: FatEntry[] = [];
  for (let o = 0; o < root.length; o += DIR_ENTRY) {
    const first = root[o]!;
    if (first === 0x00) break;
    if (first === 0xe5) continue;
    const attr = root[o + 11]!;
    if (attr === 0x0f || attr & 0x08 || attr & 0x10) continue; // LFN, volume label, directory
    out.push({ name: showName(root.subarray(o, o + 11)), size: u32(root, o + 28), cluster: u16(root, o + 26), attr, entryOffset: g.rootSector * FAT_SECTOR + o });
  }
  return out;
}

/** Follows a chain; null if it loops, leaves the volume or is shorter than needed. */
function chain(fat: FatTable, g: FatGeometry, first: number, clustersNeeded: number): number[] | null {
  if (clustersNeeded === 0) return first === 0 ? [] : null;
  const out: number[] = [];
  let c = first;
  while (out.length < clustersNeeded) {
    if (c < 2 || c >= g.clusters + 2) return null;
    out.push(c);
    const v = fat.get(c);
    if (out.length === clustersNeeded) return fat.isEoc(v) ? out : null;
    c = v;
  }
  return out;
}

/** The root directory's files (no volume label, no LFN entries); null if unreadable. */
export function listFat(read: ReadSectors): FatEntry[] | null {
  const l = loadToRead(read);
  return l ? entries(l.root, l.g) : null;
}

export function readFatFile(read: ReadSectors, name: string, maxBytes = 16 * 1024 * 1024): Uint8Array | null {
  const l = loadToRead(read);
  if (!l) return null;
  let want: string;
  try {
    want = showName(fatName(name));
  } catch {
    return null;
  }
  const e = entries(l.root, l.g).find((x) => x.name === want);
  if (!e || e.size > maxBytes) return null;
  const cb = l.g.sectorsPerCluster * FAT_SECTOR;
  const cs = chain(l.fat, l.g, e.cluster, Math.ceil(e.size / cb));
  if (!cs) return null;
  const out = new Uint8Array(cs.length * cb);
  for (const [i, c] of cs.entries()) {
    const d = read(l.g.dataSector + (c - 2) * l.g.sectorsPerCluster, l.g.sectorsPerCluster);
    if (!d) return null;
    out.set(d, i * cb);
  }
  return out.subarray(0, e.size);
}

/** Writes changed sectors of `next` (compared with `prev`) starting at lba. */
function writeChanged(write: WriteSectors, lba: number, prev: Uint8Array, next: Uint8Array): number {
  for (let s = 0; s < next.length / FAT_SECTOR; s++) {
    const a = prev.subarray(s * FAT_SECTOR, (s + 1) * FAT_SECTOR), b = next.subarray(s * FAT_SECTOR, (s + 1) * FAT_SECTOR);
    let same = true;
    for (let i = 0; i < FAT_SECTOR && same; i++) same = a[i] === b[i];
    if (!same) {
      const st = write(lba + s, b);
      if (st !== FlashStatus.OK) return st;
    }
  }
  return FlashStatus.OK;
}

/** Frees a chain in the table (stops at EOC, a free entry, or after `guard` links). */
function freeChain(fat: FatTable, g: FatGeometry, first: number): void {
  let c = first, guard = 0;
  while (c >= 2 && c < g.clusters + 2 && guard++ < g.clusters) {
    const nxt = fat.get(c);
    fat.set(c, 0);
    if (fat.isEoc(nxt) || nxt === 0) break;
    c = nxt;
  }
}

function writeFats(write: WriteSectors, g: FatGeometry, prev: Uint8Array, next: Uint8Array): number {
  for (let k = 0; k < g.fats; k++) {
    const st = writeChanged(write, g.reservedSectors + k * g.fatSectors, prev, next);
    if (st !== FlashStatus.OK) return st;
  }
  return FlashStatus.OK;
}

/**
 * Creates or replaces a root-directory file (the host writing a user file). Returns a status.
 * Order (see the header): data, FATs with the new chain, the directory entry, then (for a
 * replaced file) FATs with the old chain freed. A replacement that does not fit beside the
 * old file frees the old chain first, and a cut can then lose the file being replaced.
 */
export function writeFatFile(read: ReadSectors, write: WriteSectors, name: string, data: Uint8Array, opts: { date?: Date } = {}): number {
  let raw: Uint8Array;
  try {
    raw = fatName(name);
  } catch {
    return FlashStatus.ERR_ARG;
  }
  const l = load(read);
  if (!l) return FlashStatus.ERR_FORMAT;
  const { g, fat, root } = l;
  const oldRoot = Uint8Array.from(root), onDisk = Uint8Array.from(fat.bytes);
  const key = td.decode(raw);
  let slot = -1, oldFirst = 0;
  for (let o = 0; o < root.length; o += DIR_ENTRY) {
    const b = root[o]!;
    if (b !== 0 && b !== 0xe5 && !(root[o + 11]! & 0x18) && root[o + 11] !== 0x0f && td.decode(root.subarray(o, o + 11)) === key) {
      slot = o;
      oldFirst = u16(root, o + 26);
      break;
    }
  }
  if (slot < 0) {
    for (let o = 0; o < root.length && slot < 0; o += DIR_ENTRY) if (root[o] === 0 || root[o] === 0xe5) slot = o;
    if (slot < 0) return FlashStatus.ERR_NO_SPACE;
  }
  const cb = g.sectorsPerCluster * FAT_SECTOR;
  const need = Math.ceil(data.length / cb);
  const free = (t: FatTable) => {
    const got: number[] = [];
    for (let c = 2; c < g.clusters + 2 && got.length < need; c++) if (t.get(c) === 0) got.push(c);
    return got;
  };
  let got = free(fat);
  let freeOldLater = oldFirst !== 0;
  if (got.length < need && freeOldLater) {
    freeChain(fat, g, oldFirst); // no room for both copies: replace in place
    freeOldLater = false;
    got = free(fat);
  }
  if (got.length < need) return FlashStatus.ERR_NO_SPACE;
  got.forEach((c, i) => fat.set(c, i === need - 1 ? fat.eoc : got[i + 1]!));
  for (const [i, c] of got.entries()) {
    const buf = new Uint8Array(cb);
    buf.set(data.subarray(i * cb, (i + 1) * cb));
    const st = write(g.dataSector + (c - 2) * g.sectorsPerCluster, buf);
    if (st !== FlashStatus.OK) return st;
  }
  let st = writeFats(write, g, onDisk, fat.bytes);
  if (st !== FlashStatus.OK) return st;
  writeEntry(root, slot, raw, 0x20, need ? got[0]! : 0, data.length, opts.date ?? DEFAULT_DATE);
  st = writeChanged(write, g.rootSector, oldRoot, root);
  if (st !== FlashStatus.OK || !freeOldLater) return st;
  const withNew = Uint8Array.from(fat.bytes);
  freeChain(fat, g, oldFirst);
  return writeFats(write, g, withNew, fat.bytes);
}

/** Deletes a root-directory file: the directory entry first, then the FATs (a cut leaves lost clusters). */
export function deleteFatFile(read: ReadSectors, write: WriteSectors, name: string): number {
  let want: string;
  try {
    want = showName(fatName(name));
  } catch {
    return FlashStatus.ERR_ARG;
  }
  const l = load(read);
  if (!l) return FlashStatus.ERR_FORMAT;
  const e = entries(l.root, l.g).find((x) => x.name === want);
  if (!e) return FlashStatus.ERR_NOT_FOUND;
  const oldFat = Uint8Array.from(l.fat.bytes), oldRoot = Uint8Array.from(l.root);
  freeChain(l.fat, l.g, e.cluster);
  l.root[e.entryOffset - l.g.rootSector * FAT_SECTOR] = 0xe5;
  const st = writeChanged(write, l.g.rootSector, oldRoot, l.root);
  if (st !== FlashStatus.OK) return st;
  return writeFats(write, l.g, oldFat, l.fat.bytes);
}

/**
 * Integrity check of the volume's metadata (the inspector's --check): boot sector, FAT
 * copies agree, reserved FAT entries, every file's chain (in range, no loops, length matches
 * the size, no cross-links) and no lost clusters. Offsets are from the start of the volume.
 */
export function checkFat(read: ReadSectors, expectSectors?: number): { geometry: FatGeometry | null; entries: FatEntry[]; problems: FatProblem[]; usedClusters: number } {
  const bs = read(0, 1);
  if (!bs) return { geometry: null, entries: [], problems: [{ offset: 0, message: 'cannot read the boot sector' }], usedClusters: 0 };
  const { geometry: g, problems } = parseBootSector(bs, expectSectors);
  if (!g) return { geometry: null, entries: [], problems, usedClusters: 0 };
  const fats: Uint8Array[] = [];
  for (let k = 0; k < g.fats; k++) {
    const f = read(g.reservedSectors + k * g.fatSectors, usedFatSectors(g));
    if (!f) return { geometry: g, entries: [], problems: [...problems, { offset: (g.reservedSectors + k * g.fatSectors) * FAT_SECTOR, message: `cannot read FAT ${k + 1}` }], usedClusters: 0 };
    fats.push(f);
  }
  const f0 = fats[0]!;
  for (let k = 1; k < fats.length; k++) {
    const fk = fats[k]!;
    const i = f0.findIndex((b, j) => b !== fk[j]);
    if (i >= 0) {
      problems.push({ offset: (g.reservedSectors + k * g.fatSectors) * FAT_SECTOR + i, message: `FAT ${k + 1} differs from FAT 1 at byte ${i} (FAT 1 at 0x${((g.reservedSectors * FAT_SECTOR) + i).toString(16)} holds 0x${f0[i]!.toString(16)}, FAT ${k + 1} 0x${fk[i]!.toString(16)})` });
    }
  }
  const fat = new FatTable(g.fatType, usedFatSectors(g), f0);
  const fatAt = g.reservedSectors * FAT_SECTOR;
  if ((fat.get(0) & 0xff) !== g.media) problems.push({ offset: fatAt, message: `FAT entry 0 (0x${fat.get(0).toString(16)}) does not carry the media byte 0x${g.media.toString(16)}` });
  // FAT16 entry 1 may carry the clean-shutdown/no-error flags (bits 15, 14) cleared.
  if (!fat.isEoc(g.fatType === 16 ? fat.get(1) | 0xc000 : fat.get(1))) problems.push({ offset: fatAt + (g.fatType === 12 ? 1 : 2), message: `FAT entry 1 (0x${fat.get(1).toString(16)}) is not an end-of-chain mark` });
  const root = read(g.rootSector, g.rootSectors);
  if (!root) return { geometry: g, entries: [], problems: [...problems, { offset: g.rootSector * FAT_SECTOR, message: 'cannot read the root directory' }], usedClusters: 0 };
  const es = entries(root, g);
  const owner = new Map<number, string>();
  const cb = g.sectorsPerCluster * FAT_SECTOR;
  let labels = 0;
  for (let o = 0; o < root.length; o += DIR_ENTRY) {
    if (root[o] === 0) break;
    if (root[o] !== 0xe5 && root[o + 11] !== 0x0f && root[o + 11]! & 0x08) labels++;
  }
  if (labels > 1) problems.push({ offset: g.rootSector * FAT_SECTOR, message: `${labels} volume label entries` });
  for (const e of es) {
    if (!NAME_RE.test(e.name)) problems.push({ offset: e.entryOffset, message: `directory entry name "${e.name}" holds characters 8.3 does not allow` });
    if (e.attr & 0xc0) problems.push({ offset: e.entryOffset + 11, message: `${e.name}: reserved attribute bits set (0x${e.attr.toString(16)})` });
    const need = Math.ceil(e.size / cb);
    if (need > g.clusters) {
      problems.push({ offset: e.entryOffset + 28, message: `${e.name}: size ${e.size} is larger than the volume` });
      continue;
    }
    // Walk the chain, stopping at EOC, to compare its length with the size.
    const cs: number[] = [];
    let c = e.cluster, bad = '';
    if (need === 0 && c !== 0) bad = `empty file with start cluster ${c}`;
    while (need > 0 && !bad) {
      if (c < 2 || c >= g.clusters + 2) {
        bad = `chain reaches cluster ${c}, outside 2..${g.clusters + 1}`;
        break;
      }
      if (owner.has(c)) {
        bad = `cluster ${c} is also used by ${owner.get(c)} (cross-link)`;
        break;
      }
      owner.set(c, e.name);
      cs.push(c);
      const v = fat.get(c);
      if (fat.isEoc(v)) break;
      if (cs.length > g.clusters) {
        bad = 'chain loops';
        break;
      }
      c = v;
    }
    if (!bad && need > 0 && cs.length !== need) bad = `chain holds ${cs.length} clusters, the size ${e.size} needs ${need}`;
    if (bad) problems.push({ offset: e.entryOffset + 26, message: `${e.name}: ${bad}` });
  }
  let used = 0;
  for (let c = 2; c < g.clusters + 2; c++) {
    const v = fat.get(c);
    if (v !== 0) used++;
    if (v !== 0 && !owner.has(c) && v !== (g.fatType === 12 ? 0xff7 : 0xfff7)) {
      const off = fatAt + (g.fatType === 12 ? c + (c >> 1) : 2 * c);
      problems.push({ offset: off, message: `cluster ${c} is allocated (0x${v.toString(16)}) but no file uses it (lost cluster)` });
      if (problems.length > 64) break;
    }
  }
  return { geometry: g, entries: es, problems, usedClusters: used };
}

/** ReadSectors/WriteSectors over a byte array holding a volume (tests, the factory, the inspector). */
export function arraySectors(vol: Uint8Array): { read: ReadSectors; write: WriteSectors } {
  const ok = (lba: number, count: number) => Number.isSafeInteger(lba) && Number.isSafeInteger(count) && lba >= 0 && count >= 0 && (lba + count) * FAT_SECTOR <= vol.length;
  return {
    read: (lba, count) => (ok(lba, count) ? vol.subarray(lba * FAT_SECTOR, (lba + count) * FAT_SECTOR) : null),
    write: (lba, data) => {
      if (data.length % FAT_SECTOR !== 0 || !ok(lba, data.length / FAT_SECTOR)) return FlashStatus.ERR_RANGE;
      vol.set(data, lba * FAT_SECTOR);
      return FlashStatus.OK;
    },
  };
}
