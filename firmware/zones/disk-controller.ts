// The disk unit's controller (S0.1): turns the host's 512-byte sector writes into flash
// operations on the free zone so that a power cut can never damage a sector the host did
// not write. NOR flash erases 4 KiB at a time; a host sector write that must set bits back to
// 1 rewrites the whole 4 KiB flash sector, and the 3.5 KiB the host did not write (on the
// phone's disk: the FAT boot sector next to the start of FAT 1, the root directory next to
// MAIN.EXE) would be lost if the power went between the erase and the reprogram. Real USB
// stick controllers never erase in place without a copy; this one does what they do, in the
// simplest form that is safe (copy, then commit, then rewrite, then mark done):
//
//   1. the new 4 KiB go to a spare sector (two spares, alternating, to share the wear);
//   2. a 32-byte journal record {seq, target, spare, CRC-32 of the new bytes} is appended to
//      the journal: the commit point (a torn record fails its own CRC and is ignored);
//   3. the target sector is erased and programmed with the new bytes;
//   4. the record's "done" byte is programmed to 0x00.
//
// At power-on (the first host command after a power cycle) the controller reads the journal;
// if the record with the highest sequence number is not done and its spare still holds
// bytes with the recorded CRC, it finishes step 3 (idempotent: a target already equal to
// the spare is only marked done). So each 4 KiB flash sector of the disk is either wholly
// old or wholly new after any cut. A write that only clears bits (programming erased
// space, the common case of a new file's data) needs no erase and goes straight to the
// target: a cut there can tear only the sectors the host was writing.
//
// The journal is two sectors used in turn: when the active one is full, the other (whose
// records are all done and older) is erased and becomes active, so a cut during that erase
// can only damage records that need no recovery. The spares and the journal are the last
// DISK_RESERVED_SECTORS flash sectors of the free zone; the host sees the zone minus them.
//
// Write amplification: a rewrite costs two erases, two 4 KiB programs and two small ones
// (plus one journal erase per 128 rewrites), against one erase and one program before;
// measured figures in docs/benchmarks.md.
//
// Not emulated: a real FTL's logical-to-physical remapping, wear levelling of the data
// sectors and bad-block management (a hot FAT sector still wears as fast as before; the
// spares wear at half its rate each); host-visible write caching; the controller's own
// RAM state across a cut (it keeps nothing but what the journal holds). No node imports.
import { FlashStatus, type ReadResult } from '../flash/chip.ts';
import { crc32 } from './crc32.ts';

export const DISK_SPARE_SECTORS = 2;
export const DISK_JOURNAL_SECTORS = 2;
/** Flash sectors at the end of the free zone that belong to the controller. */
export const DISK_RESERVED_SECTORS = DISK_SPARE_SECTORS + DISK_JOURNAL_SECTORS;
export const JOURNAL_RECORD_BYTES = 32;
const MAGIC0 = 0x44, MAGIC1 = 0x4a; // "DJ"
const DONE_AT = 2;
/**
 * Reads that find a CRC mismatch (a spare, a journal sector with a bad slot) are tried this
 * often: a transient read flip must not turn a pending record into an ignored one.
 */
const READ_TRIES = 3;

/** Bytes the host sees of a free zone of zoneBytes (the controller keeps the last sectors). */
export function diskVisibleBytes(zoneBytes: number, sectorBytes = 4096): number {
  return zoneBytes - DISK_RESERVED_SECTORS * sectorBytes;
}

/** Zone-relative flash access the controller is given by the bus (nothing else). */
export interface ZoneFlash {
  readonly zoneBytes: number;
  readonly sectorBytes: number;
  readonly pageBytes: number;
  read(off: number, len: number): ReadResult;
  program(off: number, data: Uint8Array): number;
  eraseSector(off: number): number;
}

export interface DiskControllerStats {
  /** Host writes of a flash sector that needed no erase (programmed in place). */
  programOnly: number;
  /** Host writes of a flash sector through the spare and the journal. */
  journaled: number;
  /** Journal sector switches (one erase each). */
  journalSwitches: number;
  /** Interrupted rewrites finished at power-on. */
  recovered: number;
  /** Pending records whose spare no longer matched: nothing could be finished. */
  abandoned: number;
}

export interface JournalRecord {
  journal: number;
  slot: number;
  seq: number;
  target: number;
  spare: number;
  crc: number;
  done: boolean;
}

const le32 = (b: Uint8Array, o: number) => (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
function put32(b: Uint8Array, o: number, v: number) {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
  b[o + 2] = (v >>> 16) & 0xff;
  b[o + 3] = (v >>> 24) & 0xff;
}
/** CRC of a record's first 20 bytes with the done byte read as pending. */
function recordCrc(r: Uint8Array): number {
  // crc32 of bytes 0-1, 0xFF in place of the done byte, bytes 3-19 (no copy: the power-on
  // scan parses every slot of both journal sectors).
  return crc32(r.subarray(0, DONE_AT), PENDING, r.subarray(DONE_AT + 1, 20));
}
const PENDING = Uint8Array.of(0xff);

/** Parses one 32-byte journal slot: a record, 'free' (all 0xFF) or 'bad' (torn, garbage). */
export function parseJournalSlot(b: Uint8Array, journal: number, slot: number): JournalRecord | 'free' | 'bad' {
  let free = true;
  for (let i = 0; i < b.length && free; i++) free = b[i] === 0xff;
  if (free) return 'free';
  if (b[0] !== MAGIC0 || b[1] !== MAGIC1 || le32(b, 20) !== recordCrc(b)) return 'bad';
  return { journal, slot, seq: le32(b, 4), target: le32(b, 8), spare: b[3]!, crc: le32(b, 12), done: b[DONE_AT] !== 0xff };
}

function encodeRecord(seq: number, target: number, spare: number, crc: number): Uint8Array {
  const r = new Uint8Array(JOURNAL_RECORD_BYTES).fill(0xff);
  r[0] = MAGIC0;
  r[1] = MAGIC1;
  r[3] = spare;
  put32(r, 4, seq);
  put32(r, 8, target);
  put32(r, 12, crc);
  r[16] = 1; // format version
  put32(r, 20, recordCrc(r));
  return r;
}

/** Reads a zone's journal (both sectors): every valid record, and where the next one goes. */
export function scanJournal(read: (off: number, len: number) => Uint8Array | null, zoneBytes: number, sectorBytes = 4096): { records: JournalRecord[]; last: JournalRecord | null; active: number; nextSlot: number } | null {
  const slots = sectorBytes / JOURNAL_RECORD_BYTES;
  const firstJournal = zoneBytes - DISK_JOURNAL_SECTORS * sectorBytes;
  const records: JournalRecord[] = [];
  const used: number[] = [];
  for (let j = 0; j < DISK_JOURNAL_SECTORS; j++) {
    // A torn record stays bad however often it is read; a flipped read does not: re-read a
    // sector with bad slots and keep the reading with the most valid records.
    let best: { recs: JournalRecord[]; lastUsed: number } | null = null;
    for (let t = 0; t < READ_TRIES; t++) {
      const b = read(firstJournal + j * sectorBytes, sectorBytes);
      if (!b) return null;
      let lastUsed = -1, bad = 0;
      const recs: JournalRecord[] = [];
      for (let s = 0; s < slots; s++) {
        const r = parseJournalSlot(b.subarray(s * JOURNAL_RECORD_BYTES, (s + 1) * JOURNAL_RECORD_BYTES), j, s);
        if (r !== 'free') lastUsed = s;
        if (r === 'bad') bad++;
        else if (r !== 'free') recs.push(r);
      }
      if (!best || recs.length > best.recs.length) best = { recs, lastUsed };
      if (!bad) break;
    }
    records.push(...best!.recs);
    used.push(best!.lastUsed + 1);
  }
  let last: JournalRecord | null = null;
  for (const r of records) if (!last || r.seq > last.seq) last = r;
  const active = last ? last.journal : 0;
  return { records, last, active, nextSlot: used[active]! };
}

export class DiskController {
  readonly visibleBytes: number;
  readonly stats: DiskControllerStats = { programOnly: 0, journaled: 0, journalSwitches: 0, recovered: 0, abandoned: 0 };
  readonly #f: ZoneFlash;
  readonly #spare0: number;
  readonly #journal0: number;
  #mounted = false;
  #seq = 0;
  #active = 0;
  #nextSlot = 0;

  constructor(flash: ZoneFlash) {
    const { zoneBytes, sectorBytes, pageBytes } = flash;
    if (zoneBytes % sectorBytes !== 0 || zoneBytes < (DISK_RESERVED_SECTORS + 1) * sectorBytes) throw new RangeError('DiskController: zone too small or not sector aligned');
    if (sectorBytes % JOURNAL_RECORD_BYTES !== 0 || pageBytes % JOURNAL_RECORD_BYTES !== 0) throw new RangeError('DiskController: journal records must not cross a page');
    this.#f = flash;
    this.visibleBytes = diskVisibleBytes(zoneBytes, sectorBytes);
    this.#spare0 = this.visibleBytes;
    this.#journal0 = this.visibleBytes + DISK_SPARE_SECTORS * sectorBytes;
  }

  /** Power came back: the next host command first finishes any interrupted rewrite. */
  powerOn(): void {
    this.#mounted = false;
  }

  read(off: number, len: number): ReadResult {
    const m = this.#mount();
    if (m !== FlashStatus.OK) return { status: m, data: new Uint8Array(0) };
    return this.#f.read(off, len);
  }

  /** Writes data at off (both inside the visible area; the bus checks the range). */
  write(off: number, data: Uint8Array): number {
    const m = this.#mount();
    if (m !== FlashStatus.OK) return m;
    const sb = this.#f.sectorBytes;
    let done = 0;
    while (done < data.length) {
      const a = off + done;
      const base = a - (a % sb);
      const n = Math.min(sb - (a - base), data.length - done);
      const r = this.#f.read(base, sb);
      if (r.status !== FlashStatus.OK) return r.status;
      const next = Uint8Array.from(r.data);
      next.set(data.subarray(done, done + n), a - base);
      let needErase = false, same = true;
      for (let i = 0; i < sb; i++) {
        if ((r.data[i]! & next[i]!) !== next[i]) needErase = true;
        if (r.data[i] !== next[i]) same = false;
      }
      const s = same ? FlashStatus.OK : needErase ? this.#rewrite(base, next) : this.#programPages(base, next, r.data);
      if (s !== FlashStatus.OK) return s;
      if (!same && !needErase) this.stats.programOnly++;
      done += n;
    }
    return FlashStatus.OK;
  }

  /** Programs the pages of `next` that differ from `old` (all bits only clear). */
  #programPages(base: number, next: Uint8Array, old: Uint8Array | null): number {
    const pb = this.#f.pageBytes;
    for (let p = 0; p < next.length; p += pb) {
      let skip = true;
      for (let i = p; i < p + pb && skip; i++) skip = old ? next[i] === old[i] : next[i] === 0xff;
      if (skip) continue;
      const s = this.#f.program(base + p, next.subarray(p, p + pb));
      if (s !== FlashStatus.OK) return s;
    }
    return FlashStatus.OK;
  }

  /** Steps 1-4 of the header for one flash sector. */
  #rewrite(target: number, next: Uint8Array): number {
    const sb = this.#f.sectorBytes;
    const seq = this.#seq + 1;
    const spareIdx = seq % DISK_SPARE_SECTORS;
    const spare = this.#spare0 + spareIdx * sb;
    let s = this.#f.eraseSector(spare);
    if (s === FlashStatus.OK) s = this.#programPages(spare, next, null);
    if (s !== FlashStatus.OK) return s;
    // Room in the active journal sector, else switch (the other holds only done records).
    if (this.#nextSlot >= sb / JOURNAL_RECORD_BYTES) {
      const other = (this.#active + 1) % DISK_JOURNAL_SECTORS;
      s = this.#f.eraseSector(this.#journal0 + other * sb);
      if (s !== FlashStatus.OK) return s;
      this.#active = other;
      this.#nextSlot = 0;
      this.stats.journalSwitches++;
    }
    const rec = this.#journal0 + this.#active * sb + this.#nextSlot * JOURNAL_RECORD_BYTES;
    s = this.#f.program(rec, encodeRecord(seq, target / sb, spareIdx, crc32(next)));
    this.#nextSlot++; // even a failed program leaves the slot non-erased
    if (s !== FlashStatus.OK) return s;
    this.#seq = seq; // committed
    s = this.#f.eraseSector(target);
    if (s === FlashStatus.OK) s = this.#programPages(target, next, null);
    if (s === FlashStatus.OK) s = this.#f.program(rec + DONE_AT, Uint8Array.of(0));
    if (s === FlashStatus.OK) this.stats.journaled++;
    return s;
  }

  /** Power-on: read the journal, finish an interrupted rewrite. Runs once per power cycle. */
  #mount(): number {
    if (this.#mounted) return FlashStatus.OK;
    const sb = this.#f.sectorBytes;
    let st: number = FlashStatus.OK;
    const read = (off: number, len: number) => {
      const r = this.#f.read(off, len);
      st = r.status;
      return r.status === FlashStatus.OK ? r.data : null;
    };
    const j = scanJournal(read, this.#f.zoneBytes, sb);
    if (!j) return st;
    this.#seq = j.last?.seq ?? 0;
    this.#active = j.active;
    this.#nextSlot = j.nextSlot;
    const r = j.last;
    if (r && !r.done) {
      const rec = this.#journal0 + r.journal * sb + r.slot * JOURNAL_RECORD_BYTES;
      const targetOk = r.target * sb < this.visibleBytes && r.spare < DISK_SPARE_SECTORS;
      let copy: Uint8Array | null = null;
      for (let t = 0; t < READ_TRIES && targetOk && !copy; t++) {
        const b = read(this.#spare0 + r.spare * sb, sb);
        if (!b) return st;
        if (crc32(b) === r.crc) copy = b;
      }
      if (copy) {
        const cur = read(r.target * sb, sb);
        if (!cur) return st;
        if (cur.some((x, i) => x !== copy![i])) {
          let s = this.#f.eraseSector(r.target * sb);
          if (s === FlashStatus.OK) s = this.#programPages(r.target * sb, copy, null);
          if (s !== FlashStatus.OK) return s;
        }
        this.stats.recovered++;
      } else this.stats.abandoned++;
      const s = this.#f.program(rec + DONE_AT, Uint8Array.of(0));
      if (s !== FlashStatus.OK) return s;
    }
    this.#mounted = true;
    return FlashStatus.OK;
  }
}
