// A small ISO 9660 (ECMA-119, level 1) writer and reader for the virtual zone (S0.1): the
// read-only CD-ROM the host sees, holding AUTORUN.INF and UPMon. Firmware-usable: no node
// imports. Real tools (xorriso, isoinfo, the Linux kernel) read what buildIso writes.
//
// Scope: one root directory of level-1 (8.3, upper-case d-character) files; no
// subdirectories, no Joliet/Rock Ridge extensions, no El Torito boot record, no
// multi-extent files. The reader follows the same subset and refuses anything larger than
// its limits rather than allocating what a hostile image declares.

export const ISO_BLOCK = 2048;
const SYSTEM_AREA_BLOCKS = 16;
// ECMA-119 §6.2.1: the volume descriptors start right after the 16-block system area.
const PVD_LBA = SYSTEM_AREA_BLOCKS;
/** Reader limits: a directory and a file can declare no more than this. */
export const ISO_MAX_DIR_BYTES = 64 * 1024;
export const ISO_MAX_FILE_BYTES = 16 * 1024 * 1024;

export interface IsoFile {
  name: string;
  data: Uint8Array;
}
export interface IsoEntry {
  name: string;
  lba: number;
  size: number;
  /** Offset of this directory record from the start of the volume. */
  recordOffset: number;
}
export interface IsoProblem {
  /** Byte offset from the start of the volume. */
  offset: number;
  message: string;
}

const te = new TextEncoder();
const td = new TextDecoder();
const NAME_RE = /^[A-Z0-9_]{1,8}(\.[A-Z0-9_]{0,3})?$/;
const DEFAULT_DATE = new Date(Date.UTC(2024, 0, 1, 0, 0, 0));

/** Upper-cases and checks a level-1 name ("UPMON.EXE"); throws a RangeError otherwise. */
export function isoName(name: string): string {
  const n = name.toUpperCase();
  if (!NAME_RE.test(n)) throw new RangeError(`ISO 9660 level 1 name expected (8.3, A-Z 0-9 _): "${name}"`);
  return n;
}

function both16(b: Uint8Array, o: number, v: number) {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
  b[o + 2] = (v >>> 8) & 0xff;
  b[o + 3] = v & 0xff;
}
function both32(b: Uint8Array, o: number, v: number) {
  const dv = new DataView(b.buffer, b.byteOffset);
  dv.setUint32(o, v, true);
  dv.setUint32(o + 4, v, false);
}
function strA(b: Uint8Array, o: number, len: number, s: string) {
  b.fill(0x20, o, o + len);
  b.set(te.encode(s.slice(0, len)), o);
}
/** ECMA-119 §8.4.26.1: 17-byte decimal date. */
function decDate(b: Uint8Array, o: number, d: Date | null) {
  if (!d) {
    b.fill(0x30, o, o + 16);
    b[o + 16] = 0;
    return;
  }
  const p = (n: number, w: number) => String(n).padStart(w, '0');
  strA(b, o, 16, `${p(d.getUTCFullYear(), 4)}${p(d.getUTCMonth() + 1, 2)}${p(d.getUTCDate(), 2)}${p(d.getUTCHours(), 2)}${p(d.getUTCMinutes(), 2)}${p(d.getUTCSeconds(), 2)}00`);
  b[o + 16] = 0;
}
/** ECMA-119 §9.1.5: 7-byte recording date. */
function recDate(b: Uint8Array, o: number, d: Date) {
  b.set([d.getUTCFullYear() - 1900, d.getUTCMonth() + 1, d.getUTCDate(), d.getUTCHours(), d.getUTCMinutes(), d.getUTCSeconds(), 0], o);
}

function dirRecord(id: Uint8Array, lba: number, size: number, dir: boolean, date: Date): Uint8Array {
  const len = 33 + id.length + (id.length % 2 === 0 ? 1 : 0); // §9.1.12 padding field
  const r = new Uint8Array(len);
  r[0] = len;
  both32(r, 2, lba);
  both32(r, 10, size);
  recDate(r, 18, date);
  r[25] = dir ? 2 : 0;
  both16(r, 28, 1);
  r[32] = id.length;
  r.set(id, 33);
  return r;
}

/** Builds a volume: system area, PVD, terminator, L and M path tables, root directory, files. */
export function buildIso(files: IsoFile[], volumeId: string, opts: { date?: Date } = {}): Uint8Array {
  const date = opts.date ?? DEFAULT_DATE;
  const vol = volumeId.toUpperCase();
  if (!/^[A-Z0-9_]{1,32}$/.test(vol)) throw new RangeError('volume id: 1..32 of A-Z 0-9 _');
  const named = files.map((f) => ({ name: isoName(f.name), data: f.data }));
  // §9.3: records ordered by file identifier.
  named.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  if (new Set(named.map((f) => f.name)).size !== named.length) throw new RangeError('duplicate file name');

  const lPath = PVD_LBA + 2, mPath = lPath + 1, rootLba = mPath + 1;
  const ids = named.map((f) => te.encode(`${f.name.includes('.') ? f.name : f.name + '.'};1`));
  // Root directory size: records never cross a block boundary (§6.8.1.1).
  let dirBytes = 0;
  const recLens = [34, 34, ...ids.map((id) => 33 + id.length + (id.length % 2 === 0 ? 1 : 0))];
  for (const l of recLens) {
    if ((dirBytes % ISO_BLOCK) + l > ISO_BLOCK) dirBytes = Math.ceil(dirBytes / ISO_BLOCK) * ISO_BLOCK;
    dirBytes += l;
  }
  const dirBlocks = Math.ceil(dirBytes / ISO_BLOCK);
  let next = rootLba + dirBlocks;
  const lbas = named.map((f) => {
    const at = next;
    next += Math.ceil(f.data.length / ISO_BLOCK);
    return f.data.length ? at : 0;
  });
  const total = next;
  const img = new Uint8Array(total * ISO_BLOCK);

  // Root directory: ".", "..", files.
  const recs = [dirRecord(Uint8Array.of(0), rootLba, dirBlocks * ISO_BLOCK, true, date), dirRecord(Uint8Array.of(1), rootLba, dirBlocks * ISO_BLOCK, true, date)];
  named.forEach((f, i) => recs.push(dirRecord(ids[i]!, lbas[i]!, f.data.length, false, date)));
  let at = rootLba * ISO_BLOCK;
  for (const r of recs) {
    if ((at % ISO_BLOCK) + r.length > ISO_BLOCK) at = Math.ceil(at / ISO_BLOCK) * ISO_BLOCK;
    img.set(r, at);
    at += r.length;
  }
  named.forEach((f, i) => img.set(f.data, lbas[i]! * ISO_BLOCK));

  // Path tables (§9.4): one record, the root: len 1, ext 0, extent, parent 1, id 0x00, pad.
  const pt = (o: number, le: boolean) => {
    img[o] = 1;
    new DataView(img.buffer).setUint32(o + 2, rootLba, le);
    new DataView(img.buffer).setUint16(o + 6, 1, le);
  };
  pt(lPath * ISO_BLOCK, true);
  pt(mPath * ISO_BLOCK, false);

  // Primary volume descriptor (§8.4).
  const p = img.subarray(PVD_LBA * ISO_BLOCK, (PVD_LBA + 1) * ISO_BLOCK);
  p[0] = 1;
  p.set(te.encode('CD001'), 1);
  p[6] = 1;
  strA(p, 8, 32, 'USBPHONE');
  strA(p, 40, 32, vol);
  both32(p, 80, total);
  both16(p, 120, 1);
  both16(p, 124, 1);
  both16(p, 128, ISO_BLOCK);
  both32(p, 132, 10);
  new DataView(p.buffer, p.byteOffset).setUint32(140, lPath, true);
  new DataView(p.buffer, p.byteOffset).setUint32(148, mPath, false);
  p.set(recs[0]!, 156);
  strA(p, 190, 128, vol);
  strA(p, 318, 128, 'USBPHONE');
  strA(p, 446, 128, 'USBPHONE FACTORY');
  strA(p, 574, 128, 'USBPHONE IMAGE BUILDER');
  strA(p, 702, 37 * 3, '');
  decDate(p, 813, date);
  decDate(p, 830, date);
  decDate(p, 847, null);
  decDate(p, 864, null);
  p[881] = 1;
  strA(p, 883, 512, '');
  // Volume descriptor set terminator (§8.3).
  const t = img.subarray((PVD_LBA + 1) * ISO_BLOCK);
  t[0] = 255;
  t.set(te.encode('CD001'), 1);
  t[6] = 1;
  return img;
}

export type ReadBlocks = (lba: number, count: number) => Uint8Array | null;

interface Scan {
  problems: IsoProblem[];
  entries: IsoEntry[];
  volumeBlocks: number;
  volumeId: string;
}

const u32le = (b: Uint8Array, o: number) => new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(o, true);
const u32be = (b: Uint8Array, o: number) => new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(o, false);
const u16le = (b: Uint8Array, o: number) => new DataView(b.buffer, b.byteOffset, b.byteLength).getUint16(o, true);
const u16be = (b: Uint8Array, o: number) => new DataView(b.buffer, b.byteOffset, b.byteLength).getUint16(o, false);

/**
 * Reads the volume's structure and checks it: the PVD, both path tables, the root
 * directory and that every file lies inside the volume. Problems carry volume offsets.
 */
export function scanIso(readBlocks: ReadBlocks, blockCount?: number): Scan {
  const problems: IsoProblem[] = [];
  const out: Scan = { problems, entries: [], volumeBlocks: 0, volumeId: '' };
  const fail = (offset: number, message: string) => {
    problems.push({ offset, message });
    return out;
  };
  const pvd = readBlocks(PVD_LBA, 1);
  if (!pvd || pvd.length < ISO_BLOCK) return fail(PVD_LBA * ISO_BLOCK, 'cannot read the primary volume descriptor');
  const P = PVD_LBA * ISO_BLOCK;
  if (pvd[0] !== 1 || td.decode(pvd.subarray(1, 6)) !== 'CD001' || pvd[6] !== 1) return fail(P, 'no primary volume descriptor ("\\x01CD001\\x01")');
  const bothOk = (o: number, w: 16 | 32) => (w === 32 ? u32le(pvd, o) === u32be(pvd, o + 4) : u16le(pvd, o) === u16be(pvd, o + 2));
  for (const [o, w, what] of [[80, 32, 'volume space size'], [120, 16, 'volume set size'], [124, 16, 'volume sequence number'], [128, 16, 'logical block size'], [132, 32, 'path table size']] as const) {
    if (!bothOk(o, w)) problems.push({ offset: P + o, message: `PVD ${what}: little- and big-endian copies differ` });
  }
  const volumeBlocks = u32le(pvd, 80);
  out.volumeBlocks = volumeBlocks;
  out.volumeId = td.decode(pvd.subarray(40, 72)).trimEnd();
  if (u16le(pvd, 128) !== ISO_BLOCK) return fail(P + 128, `logical block size ${u16le(pvd, 128)} (only 2048 is read)`);
  if (volumeBlocks < PVD_LBA + 2 || (blockCount !== undefined && volumeBlocks > blockCount)) return fail(P + 80, `volume space size ${volumeBlocks} blocks does not fit the unit (${blockCount ?? '?'} blocks)`);
  if (u16le(pvd, 120) !== 1 || u16le(pvd, 124) !== 1) problems.push({ offset: P + 120, message: 'volume set size / sequence number is not 1' });
  if (pvd[881] !== 1) problems.push({ offset: P + 881, message: `file structure version ${pvd[881]} (expected 1)` });
  const term = readBlocks(PVD_LBA + 1, 1);
  if (!term || term[0] !== 255 || td.decode(term.subarray(1, 6)) !== 'CD001') problems.push({ offset: (PVD_LBA + 1) * ISO_BLOCK, message: 'no volume descriptor set terminator after the PVD' });

  // Root directory record (§8.4.18).
  const root = pvd.subarray(156, 190);
  if (root[0] !== 34 || root[32] !== 1 || root[33] !== 0 || !(root[25]! & 2)) return fail(P + 156, 'root directory record is malformed');
  if (u32le(root, 2) !== u32be(root, 6)) problems.push({ offset: P + 158, message: 'root directory extent: copies differ' });
  if (u32le(root, 10) !== u32be(root, 14)) problems.push({ offset: P + 166, message: 'root directory size: copies differ' });
  const rootLba = u32le(root, 2), rootSize = u32le(root, 10);
  if (rootSize === 0 || rootSize > ISO_MAX_DIR_BYTES || rootSize % ISO_BLOCK !== 0) return fail(P + 166, `root directory size ${rootSize} is absurd`);
  if (rootLba < PVD_LBA + 2 || rootLba + rootSize / ISO_BLOCK > volumeBlocks) return fail(P + 158, `root directory extent ${rootLba} lies outside the volume`);

  // Path tables: one root record each, pointing at the root directory (§9.4).
  const ptSize = u32le(pvd, 132);
  const lLoc = u32le(pvd, 140), mLoc = u32be(pvd, 148);
  for (const [loc, le, o] of [[lLoc, true, 140], [mLoc, false, 148]] as const) {
    if (ptSize < 10 || ptSize > ISO_BLOCK || loc < PVD_LBA + 2 || loc >= volumeBlocks) {
      problems.push({ offset: P + o, message: `${le ? 'L' : 'M'} path table location ${loc} / size ${ptSize} is out of range` });
      continue;
    }
    const b = readBlocks(loc, 1);
    const ext = b ? (le ? u32le(b, 2) : u32be(b, 2)) : -1;
    const parent = b ? (le ? u16le(b, 6) : u16be(b, 6)) : -1;
    if (!b || b[0] !== 1 || ext !== rootLba || parent !== 1) problems.push({ offset: loc * ISO_BLOCK, message: `${le ? 'L' : 'M'} path table does not describe the root directory` });
  }

  const dir = readBlocks(rootLba, rootSize / ISO_BLOCK);
  if (!dir) return fail(rootLba * ISO_BLOCK, 'cannot read the root directory');
  let i = 0, index = 0;
  while (i < dir.length) {
    const len = dir[i]!;
    const at = rootLba * ISO_BLOCK + i;
    if (len === 0) {
      i = (Math.floor(i / ISO_BLOCK) + 1) * ISO_BLOCK; // rest of this block is padding
      continue;
    }
    if (len < 34 || (i % ISO_BLOCK) + len > ISO_BLOCK) {
      problems.push({ offset: at, message: `directory record length ${len} is malformed` });
      break;
    }
    const r = dir.subarray(i, i + len);
    const idLen = r[32]!;
    if (33 + idLen > len) {
      problems.push({ offset: at + 32, message: `file identifier length ${idLen} overflows its record` });
      break;
    }
    if (u32le(r, 2) !== u32be(r, 6)) problems.push({ offset: at + 2, message: 'extent location: little- and big-endian copies differ' });
    if (u32le(r, 10) !== u32be(r, 14)) problems.push({ offset: at + 10, message: 'data length: little- and big-endian copies differ' });
    const lba = u32le(r, 2), size = u32le(r, 10);
    if (index < 2) {
      if (idLen !== 1 || r[33] !== index || !(r[25]! & 2)) problems.push({ offset: at, message: `record ${index} should be the ${index ? '".."' : '"."'} entry` });
      else if (lba !== rootLba) problems.push({ offset: at + 2, message: `"${index ? '..' : '.'}" does not point at the root directory` });
    } else if (!(r[25]! & 2)) {
      const raw = td.decode(r.subarray(33, 33 + idLen));
      const name = raw.replace(/;\d+$/, '').replace(/\.$/, '');
      if (!NAME_RE.test(name)) problems.push({ offset: at + 33, message: `file identifier "${raw}" is not a level-1 name` });
      if (size > ISO_MAX_FILE_BYTES || (size > 0 && (lba < rootLba || lba + Math.ceil(size / ISO_BLOCK) > volumeBlocks))) {
        problems.push({ offset: at + 2, message: `file ${name}: extent ${lba} + ${size} bytes lies outside the volume` });
      } else out.entries.push({ name, lba, size, recordOffset: at });
    }
    i += len;
    index++;
  }
  return out;
}

/** The root directory's files; null if the volume is unreadable or malformed. */
export function listIso(readBlocks: ReadBlocks, blockCount?: number): IsoEntry[] | null {
  const s = scanIso(readBlocks, blockCount);
  return s.problems.length ? null : s.entries;
}

/** One file's bytes by name (case-insensitive, ";1" optional); null if absent or unreadable. */
export function readIsoFile(readBlocks: ReadBlocks, name: string, blockCount?: number): Uint8Array | null {
  const list = listIso(readBlocks, blockCount);
  return list ? readIsoEntry(readBlocks, list, name) : null;
}

/** One file's bytes by name from a directory listIso() returned (a volume mounted once). */
export function readIsoEntry(readBlocks: ReadBlocks, list: readonly IsoEntry[], name: string): Uint8Array | null {
  const want = name.toUpperCase().replace(/;\d+$/, '');
  const e = list.find((x) => x.name === want);
  if (!e) return null;
  if (e.size === 0) return new Uint8Array(0);
  const b = readBlocks(e.lba, Math.ceil(e.size / ISO_BLOCK));
  return b && b.length >= e.size ? b.slice(0, e.size) : null;
}

/** ReadBlocks over a byte array holding a volume (tests, the inspector). */
export function arrayBlocks(vol: Uint8Array): ReadBlocks {
  return (lba, count) => {
    if (!Number.isSafeInteger(lba) || !Number.isSafeInteger(count) || lba < 0 || count < 0 || (lba + count) * ISO_BLOCK > vol.length) return null;
    return vol.subarray(lba * ISO_BLOCK, (lba + count) * ISO_BLOCK);
  };
}
