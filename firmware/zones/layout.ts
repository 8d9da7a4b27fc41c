// The partition table of the flash chip (docs/flash-layout.md §"Partition table"): where the
// hidden, virtual and free zones of S0.1 are. It sits at address 0 in block 0, which holds
// nothing else; every zone starts and ends on a 64 KiB block boundary so a zone can be
// erased by blocks without touching its neighbours.
//
// Little-endian, 16-byte header, 24-byte entries, CRC-32 after the last entry:
//   0  "UPPT"  4 version u16 (1)  6 entry count u16 (1..8)  8 entry size u16 (24)
//   10 log2(block bytes) u8  11 reserved u8 (0)  12 chip bytes u32
//   16 + 24*i: type u8, flags u8, reserved u16, offset u32, size u32, used bytes u32,
//              content CRC-32 u32, reserved u32
//   16 + 24*n: CRC-32 of bytes [0, 16 + 24*n)
import { crc32 } from './crc32.ts';
import { FlashStatus, type ChipProfile } from '../flash/chip.ts';

export const TABLE_OFFSET = 0;
export const TABLE_MAGIC = Uint8Array.of(0x55, 0x50, 0x50, 0x54); // "UPPT"
export const TABLE_VERSION = 1;
export const TABLE_HEADER_BYTES = 16;
export const TABLE_ENTRY_BYTES = 24;
export const TABLE_MAX_ENTRIES = 8;
export const ZONE_ALIGN = 64 * 1024;

export const ZoneType = { HIDDEN: 1, VIRTUAL: 2, FREE: 3 } as const;
export type ZoneName = 'hidden' | 'virtual' | 'free';
export const zoneName = (t: number): ZoneName | `type${number}` => (t === 1 ? 'hidden' : t === 2 ? 'virtual' : t === 3 ? 'free' : `type${t}`);

/**
 * Flags describe the zone; they do not grant access. The bus decides by zone type (a
 * hidden zone is never host-visible whatever its flags say).
 */
export const ZoneFlag = {
  HOST_VISIBLE: 1,
  HOST_WRITABLE: 2,
  VENDOR_ONLY: 4,
  /** usedBytes/contentCrc hold the CRC-32 of the zone's first usedBytes (read-only zones). */
  CHECKSUMMED: 8,
} as const;

export interface ZoneEntry {
  type: number;
  flags: number;
  offset: number;
  size: number;
  usedBytes: number;
  contentCrc: number;
}

export interface PartitionTable {
  version: number;
  chipBytes: number;
  blockBytes: number;
  entries: ZoneEntry[];
}

export type TableParse =
  | { ok: true; table: PartitionTable; crcOk: boolean; crcOffset: number; storedCrc: number; computedCrc: number; bytes: number }
  | { ok: false; code: string; message: string; offset: number };

const le16 = (b: Uint8Array, o: number) => b[o]! | (b[o + 1]! << 8);
const le32 = (b: Uint8Array, o: number) => (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;

/** Encoded size of a table with n entries. */
export const tableBytes = (n: number) => TABLE_HEADER_BYTES + n * TABLE_ENTRY_BYTES + 4;

/**
 * Parses and validates a table (bytes from address 0). Structural faults (magic, version,
 * impossible sizes, zones out of range, misaligned or overlapping) give ok:false; a CRC
 * mismatch on an otherwise sane table gives ok:true with crcOk:false, so an inspector can
 * still report what the table says.
 */
export function parseTable(b: Uint8Array, chipBytes?: number): TableParse {
  const bad = (code: string, message: string, offset: number): TableParse => ({ ok: false, code, message, offset });
  if (b.length < TABLE_HEADER_BYTES + 4) return bad('LAYOUT_TRUNCATED', `partition table needs at least ${TABLE_HEADER_BYTES + 4} bytes, have ${b.length}`, 0);
  for (let i = 0; i < 4; i++) if (b[i] !== TABLE_MAGIC[i]) return bad('LAYOUT_BAD_MAGIC', 'no partition table magic "UPPT" (not a usbphone flash image?)', 0);
  const version = le16(b, 4);
  if (version !== TABLE_VERSION) return bad('LAYOUT_BAD_VERSION', `partition table version ${version} (this tool reads ${TABLE_VERSION})`, 4);
  const n = le16(b, 6);
  if (n < 1 || n > TABLE_MAX_ENTRIES) return bad('LAYOUT_BAD_HEADER', `partition table claims ${n} entries (1..${TABLE_MAX_ENTRIES})`, 6);
  if (le16(b, 8) !== TABLE_ENTRY_BYTES) return bad('LAYOUT_BAD_HEADER', `entry size ${le16(b, 8)} (expected ${TABLE_ENTRY_BYTES})`, 8);
  const log2 = b[10]!;
  if (log2 < 12 || log2 > 20) return bad('LAYOUT_BAD_HEADER', `block size 2^${log2} is absurd (2^12..2^20)`, 10);
  const blockBytes = 2 ** log2;
  const chip = le32(b, 12);
  if (chip < 4 * blockBytes || chip > 2 ** 30 || chip % blockBytes !== 0) return bad('LAYOUT_BAD_SIZE', `chip size ${chip} is absurd (4 blocks..1 GiB, a multiple of ${blockBytes})`, 12);
  if (chipBytes !== undefined && chip !== chipBytes) return bad('LAYOUT_BAD_SIZE', `table says the chip holds ${chip} bytes, the image has ${chipBytes}`, 12);
  const end = tableBytes(n);
  if (b.length < end) return bad('LAYOUT_TRUNCATED', `partition table of ${n} entries needs ${end} bytes, have ${b.length}`, 0);

  const entries: ZoneEntry[] = [];
  for (let i = 0; i < n; i++) {
    const o = TABLE_HEADER_BYTES + i * TABLE_ENTRY_BYTES;
    const e: ZoneEntry = { type: b[o]!, flags: b[o + 1]!, offset: le32(b, o + 4), size: le32(b, o + 8), usedBytes: le32(b, o + 12), contentCrc: le32(b, o + 16) };
    const name = `zone ${i} (${zoneName(e.type)})`;
    if (e.type < 1 || e.type > 3) return bad('LAYOUT_BAD_ZONE', `${name}: unknown zone type ${e.type}`, o);
    if (e.size === 0 || e.offset % blockBytes !== 0 || e.size % blockBytes !== 0) return bad('LAYOUT_BAD_ZONE', `${name}: offset 0x${e.offset.toString(16)} size 0x${e.size.toString(16)} not on ${blockBytes}-byte block boundaries`, o + 4);
    if (e.offset < blockBytes) return bad('LAYOUT_ZONE_OVERLAP', `${name}: overlaps the partition table block`, o + 4);
    if (e.offset + e.size > chip) return bad('LAYOUT_ZONE_RANGE', `${name}: 0x${e.offset.toString(16)}+0x${e.size.toString(16)} ends past the chip (0x${chip.toString(16)})`, o + 8);
    if (e.usedBytes > e.size) return bad('LAYOUT_BAD_ZONE', `${name}: used bytes ${e.usedBytes} > size ${e.size}`, o + 12);
    for (const [j, f] of entries.entries()) {
      if (e.offset < f.offset + f.size && f.offset < e.offset + e.size) return bad('LAYOUT_ZONE_OVERLAP', `${name} overlaps zone ${j} (${zoneName(f.type)})`, o + 4);
      if (e.type === f.type) return bad('LAYOUT_BAD_ZONE', `${name}: a second ${zoneName(e.type)} zone`, o);
    }
    entries.push(e);
  }
  for (const t of [ZoneType.HIDDEN, ZoneType.VIRTUAL, ZoneType.FREE]) {
    if (!entries.some((e) => e.type === t)) return bad('LAYOUT_BAD_ZONE', `no ${zoneName(t)} zone`, 6);
  }
  const storedCrc = le32(b, end - 4);
  const computedCrc = crc32(b.subarray(0, end - 4));
  return { ok: true, table: { version, chipBytes: chip, blockBytes, entries }, crcOk: storedCrc === computedCrc, crcOffset: end - 4, storedCrc, computedCrc, bytes: end };
}

export function encodeTable(t: PartitionTable): Uint8Array {
  const n = t.entries.length;
  const out = new Uint8Array(tableBytes(n));
  const dv = new DataView(out.buffer);
  out.set(TABLE_MAGIC, 0);
  dv.setUint16(4, t.version, true);
  dv.setUint16(6, n, true);
  dv.setUint16(8, TABLE_ENTRY_BYTES, true);
  out[10] = Math.log2(t.blockBytes);
  dv.setUint32(12, t.chipBytes, true);
  t.entries.forEach((e, i) => {
    const o = TABLE_HEADER_BYTES + i * TABLE_ENTRY_BYTES;
    out[o] = e.type;
    out[o + 1] = e.flags;
    dv.setUint32(o + 4, e.offset, true);
    dv.setUint32(o + 8, e.size, true);
    dv.setUint32(o + 12, e.usedBytes, true);
    dv.setUint32(o + 16, e.contentCrc, true);
  });
  dv.setUint32(out.length - 4, crc32(out.subarray(0, out.length - 4)), true);
  const check = parseTable(out);
  if (!check.ok) throw new RangeError(`encodeTable: ${check.message}`);
  return out;
}

/** The factory layout: table in block 0, hidden 64 KiB, virtual 1/8 of the chip (128 KiB..1 MiB), free the rest. */
export function defaultLayout(profile: ChipProfile): PartitionTable {
  const blk = ZONE_ALIGN;
  if (profile.sizeBytes < 8 * blk || profile.sizeBytes % blk !== 0) throw new RangeError(`defaultLayout: chip of ${profile.sizeBytes} bytes is too small (needs 512 KiB)`);
  const virt = Math.min(16 * blk, Math.max(2 * blk, Math.floor(profile.sizeBytes / 8 / blk) * blk));
  const hidden: ZoneEntry = { type: ZoneType.HIDDEN, flags: ZoneFlag.VENDOR_ONLY, offset: blk, size: blk, usedBytes: 0, contentCrc: 0 };
  const virtual: ZoneEntry = { type: ZoneType.VIRTUAL, flags: ZoneFlag.HOST_VISIBLE, offset: 2 * blk, size: virt, usedBytes: 0, contentCrc: 0 };
  const free: ZoneEntry = { type: ZoneType.FREE, flags: ZoneFlag.HOST_VISIBLE | ZoneFlag.HOST_WRITABLE, offset: 2 * blk + virt, size: profile.sizeBytes - 2 * blk - virt, usedBytes: 0, contentCrc: 0 };
  return { version: TABLE_VERSION, chipBytes: profile.sizeBytes, blockBytes: blk, entries: [hidden, virtual, free] };
}

export function zoneOf(t: PartitionTable, type: number): ZoneEntry {
  const z = t.entries.find((e) => e.type === type);
  if (!z) throw new RangeError(`no ${zoneName(type)} zone in the partition table`);
  return z;
}

/** Reads and checks the table through a read function (a chip). A bad CRC is ERR_FORMAT. */
export function readTable(read: (addr: number, len: number) => { status: number; data: Uint8Array }, chipBytes?: number): { status: number; table?: PartitionTable } {
  const r = read(TABLE_OFFSET, tableBytes(TABLE_MAX_ENTRIES));
  if (r.status !== FlashStatus.OK) return { status: r.status };
  const p = parseTable(r.data, chipBytes);
  if (!p.ok || !p.crcOk) return { status: FlashStatus.ERR_FORMAT };
  return { status: FlashStatus.OK, table: p.table };
}

/** Writes the table into an erased block 0 through a chip (page by page). */
export function writeTable(chip: { eraseSector(a: number): number; program(a: number, d: Uint8Array): number; profile: { pageBytes: number } }, t: PartitionTable): number {
  const bytes = encodeTable(t);
  let s = chip.eraseSector(TABLE_OFFSET);
  if (s !== FlashStatus.OK) return s;
  for (let o = 0; o < bytes.length; o += chip.profile.pageBytes) {
    s = chip.program(TABLE_OFFSET + o, bytes.subarray(o, o + chip.profile.pageBytes));
    if (s !== FlashStatus.OK) return s;
  }
  return FlashStatus.OK;
}
