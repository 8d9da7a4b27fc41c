// SPI NOR flash chip model (Winbond W25Q-class), the storage chip of the USB phone (S0.1).
// A device model = geometry (ChipProfile) + a byte store (FlashBacking) + command logic here.
// The firmware drives it through read/program/eraseSector/eraseBlock; every call returns a
// status and never throws. Only a bad construction (impossible geometry) throws.
//
// What this model does NOT emulate (compare QEMU's pflash header):
// - the SPI wire protocol: opcodes, dummy cycles, dual/quad I/O, SFDP and JEDEC-ID reads;
//   the write-enable latch (every program/erase behaves as if WREN preceded it);
// - status-register protection (BP/TB/SEC/CMP bits), individual block locks, security
//   registers (the OTP fuses are modelled separately in fuses.ts), suspend/resume,
//   chip erase and 32 KiB block erase;
// - the BUSY window: an operation is atomic to its caller (its time is charged to the
//   virtual clock), except when power is cut in the middle of it;
// - analog behaviour: a half-programmed or half-erased cell reads a fixed value here, not an
//   unstable one; no read disturb, no retention drift except injected bit flips, no
//   temperature; wear is a hard limit per sector (real parts degrade gradually);
// - the datasheet limit on partial programs of one page (NOP): any number is allowed.
//
// Page crossing: real parts wrap a program at the end of its 256-byte page back to the page
// start. The profile chooses: 'refuse' (default: the program fails with ERR_PAGE_CROSS and
// nothing is written, which catches firmware bugs early) or 'wrap' (faithful).
import { MemoryBacking, type FlashBacking } from './backing.ts';

export const FlashStatus = {
  OK: 0,
  /** Address or length outside the chip (or the zone on a bus path). */
  ERR_RANGE: 1,
  /** Erase address not on a sector/block boundary; unit-size mismatch on a bus path. */
  ERR_ALIGN: 2,
  /** A program would cross a page boundary (profile.pageCrossing = 'refuse'). */
  ERR_PAGE_CROSS: 3,
  /** The sector reached its endurance limit: erase and program fail. */
  ERR_WORN: 4,
  /** Power was cut; every operation fails until powerCycle(). */
  ERR_POWER_LOST: 5,
  /** The vendor path is locked (no or wrong unlock sequence). */
  ERR_LOCKED: 6,
  /** A write to a read-only unit (the CD-ROM). */
  ERR_READ_ONLY: 7,
  /** A wrong vendor unlock sequence. */
  ERR_BAD_SEQUENCE: 8,
  /** A malformed argument: not an integer, negative, not a Uint8Array. */
  ERR_ARG: 9,
  /** Nothing stored (erased identity sector, record store never written). */
  ERR_EMPTY: 10,
  /** A sealed record does not authenticate. */
  ERR_AUTH: 11,
  /** A record or structure is malformed. */
  ERR_FORMAT: 12,
  /** A payload is larger than the store accepts. */
  ERR_TOO_LARGE: 13,
  /** A named file does not exist. */
  ERR_NOT_FOUND: 14,
  /** No room left (file system full, no usable record slot). */
  ERR_NO_SPACE: 15,
  /** A host unit holds no readable volume (FAT boot sector, ISO volume descriptor damaged or wiped). */
  ERR_NO_VOLUME: 16,
} as const;
export type FlashStatusCode = (typeof FlashStatus)[keyof typeof FlashStatus];

const statusNames = new Map<number, string>(Object.entries(FlashStatus).map(([k, v]) => [v, k]));
export function statusName(status: number): string {
  return statusNames.get(status) ?? `STATUS_${status}`;
}

export interface Timing {
  typ: number;
  max: number;
}

/** Datasheet timings in microseconds. */
export interface ChipTimings {
  /** Command + address overhead of any operation (SPI transfer of ~5 bytes). */
  commandUs: Timing;
  /** Transfer time per data byte on the bus (reads and program data). */
  transferUsPerByte: Timing;
  /** Program of the first byte of a page (tBP1). */
  byteProgramFirstUs: Timing;
  /** Program of each further byte (tBP2); a page program costs min(tPP, tBP1 + n*tBP2). */
  byteProgramNextUs: Timing;
  /** Whole-page program (tPP). */
  pageProgramUs: Timing;
  /** 4 KiB sector erase (tSE). */
  sectorEraseUs: Timing;
  /** 64 KiB block erase (tBE2). */
  blockEraseUs: Timing;
}

export interface ChipProfile {
  name: string;
  sizeBytes: number;
  pageBytes: number;
  sectorBytes: number;
  blockBytes: number;
  /** Value of an erased byte. NOR: 0xFF; program can only clear bits. */
  erasedValue: number;
  /** Erase cycles per sector before erase/program fail with ERR_WORN. */
  enduranceCycles: number;
  pageCrossing: 'refuse' | 'wrap';
  timings: ChipTimings;
}

/** Winbond W25Q64JV (datasheet rev. L): 64 Mbit, 133 MHz single-SPI reads. */
export const W25Q64: ChipProfile = Object.freeze({
  name: 'W25Q64JV',
  sizeBytes: 8 * 1024 * 1024,
  pageBytes: 256,
  sectorBytes: 4096,
  blockBytes: 65536,
  erasedValue: 0xff,
  enduranceCycles: 100_000,
  pageCrossing: 'refuse' as const,
  timings: Object.freeze({
    commandUs: { typ: 0.3, max: 0.3 },
    transferUsPerByte: { typ: 0.06, max: 0.06 },
    byteProgramFirstUs: { typ: 30, max: 50 },
    byteProgramNextUs: { typ: 2.5, max: 12 },
    pageProgramUs: { typ: 400, max: 3000 },
    sectorEraseUs: { typ: 45_000, max: 400_000 },
    blockEraseUs: { typ: 150_000, max: 2_000_000 },
  }),
});

const isPow2 = (n: number) => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;

/** Throws a RangeError naming the first impossible field; returns the profile. */
export function validateProfile(p: ChipProfile): ChipProfile {
  const fail = (m: string): never => {
    throw new RangeError(`chip profile ${p?.name ?? '?'}: ${m}`);
  };
  if (!p || typeof p !== 'object') throw new TypeError('chip profile expected');
  for (const k of ['pageBytes', 'sectorBytes', 'blockBytes'] as const) if (!isPow2(p[k])) fail(`${k} must be a power of two`);
  if (!Number.isInteger(p.sizeBytes) || p.sizeBytes <= 0 || p.sizeBytes > 2 ** 30) fail('sizeBytes must be 1 B..1 GiB');
  if (p.sectorBytes < p.pageBytes) fail('sectorBytes < pageBytes');
  if (p.blockBytes < p.sectorBytes) fail('blockBytes < sectorBytes');
  if (p.sizeBytes % p.blockBytes !== 0) fail('sizeBytes is not a multiple of blockBytes');
  if (p.erasedValue !== 0xff) fail('only erasedValue 0xFF (NOR) is modelled');
  if (!Number.isInteger(p.enduranceCycles) || p.enduranceCycles < 1) fail('enduranceCycles must be a positive integer');
  if (p.pageCrossing !== 'refuse' && p.pageCrossing !== 'wrap') fail("pageCrossing must be 'refuse' or 'wrap'");
  if (!p.timings) fail('timings missing');
  for (const [k, t] of Object.entries(p.timings)) {
    if (!t || !(t.typ >= 0) || !(t.max >= t.typ)) fail(`timings.${k}: need 0 <= typ <= max`);
  }
  return p;
}

/** The virtual clock the chip charges. No sleeping: time is a number. */
export class VirtualClock {
  nowUs = 0;
  advance(us: number): void {
    this.nowUs += us;
  }
}

/** A deterministic PRNG (xorshift32) so every injected fault replays from its seed. */
export class Xorshift32 {
  #s: number;
  constructor(seed: number) {
    this.#s = (seed >>> 0) || 0x9e3779b9;
  }
  next(): number {
    let x = this.#s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#s = x >>> 0;
    return this.#s;
  }
  /** Uniform integer in [0, n). */
  below(n: number): number {
    return this.next() % n;
  }
}

/**
 * Fault injection, invisible to the firmware (Zephyr flash_simulator counters, littlefs
 * emubd power_cycles). Counters count down from when they are set.
 */
export class FlashFaults {
  /** Mutating operations (program/erase) that still complete; the next one is cut. null = off. */
  powerCutAfterOps: number | null = null;
  /** When an op-count cut hits a program, how many of its bytes land first (a torn prefix). */
  tornBytes = 0;
  /** Program bytes that still land; the program that exceeds the budget is torn there. null = off. */
  powerCutAfterBytes: number | null = null;
  /** Probability per read() call that one random bit of the returned data is flipped (transient). */
  readFlipProbability = 0;
  /**
   * A targeted transient flip: the next `count` read() calls whose range covers byte `addr`
   * return it with one bit flipped (the stored byte is unchanged). null = off.
   */
  readFlipAt: { addr: number; count: number } | null = null;
  /** Sector index -> endurance override: a sector that wears out early. */
  readonly earlyWear = new Map<number, number>();
  /** How many power cuts happened. */
  cuts = 0;
  /** Transient read flips injected so far. */
  readFlips = 0;
  clear(): void {
    this.powerCutAfterOps = null;
    this.powerCutAfterBytes = null;
    this.tornBytes = 0;
    this.readFlipProbability = 0;
    this.readFlipAt = null;
    this.earlyWear.clear();
  }
}

export interface ChipStats {
  reads: number;
  readBytes: number;
  programs: number;
  programBytes: number;
  sectorErases: number;
  blockErases: number;
  /** Operations refused with a status other than OK. */
  refused: number;
}

export interface ReadResult {
  status: number;
  data: Uint8Array;
}

export interface FlashChipOptions {
  profile?: ChipProfile;
  backing?: FlashBacking;
  clock?: VirtualClock;
  /** Charge typical (default) or maximum datasheet timings. */
  timing?: 'typ' | 'max';
  /** Seed of the fault-injection PRNG. */
  seed?: number;
}

const EMPTY = new Uint8Array(0);

export class FlashChip {
  readonly profile: ChipProfile;
  readonly backing: FlashBacking;
  readonly clock: VirtualClock;
  readonly faults = new FlashFaults();
  readonly stats: ChipStats = { reads: 0, readBytes: 0, programs: 0, programBytes: 0, sectorErases: 0, blockErases: 0, refused: 0 };
  /** Test hook: called before each mutating operation (enumerates power-cut points). */
  onOperation: ((op: { kind: 'program' | 'erase'; addr: number; bytes: number }) => void) | null = null;
  readonly #timing: 'typ' | 'max';
  readonly #rng: Xorshift32;
  /** Sparse per-sector erase counters: a fleet device that erased one sector keeps one entry. */
  readonly #erases = new Map<number, number>();
  #powerLost = false;

  constructor(opts: FlashChipOptions = {}) {
    this.profile = validateProfile(opts.profile ?? W25Q64);
    this.backing = opts.backing ?? new MemoryBacking(this.profile.sizeBytes);
    if (this.backing.sizeBytes !== this.profile.sizeBytes) {
      throw new RangeError(`backing holds ${this.backing.sizeBytes} bytes, chip ${this.profile.name} has ${this.profile.sizeBytes}`);
    }
    this.clock = opts.clock ?? new VirtualClock();
    this.#timing = opts.timing ?? 'typ';
    this.#rng = new Xorshift32(opts.seed ?? 1);
  }

  get sizeBytes(): number {
    return this.profile.sizeBytes;
  }
  get powerLost(): boolean {
    return this.#powerLost;
  }

  /** Reboot: power comes back; the chip is usable again. Stored bytes are what they are. */
  powerCycle(): void {
    this.#powerLost = false;
  }

  /** Erase cycles of one sector. */
  eraseCount(sector: number): number {
    return this.#erases.get(sector) ?? 0;
  }
  /** A snapshot of all erase counters (one entry per sector). */
  eraseCounts(): Uint32Array {
    const out = new Uint32Array(this.profile.sizeBytes / this.profile.sectorBytes);
    for (const [s, n] of this.#erases) out[s] = n;
    return out;
  }
  /** Restores counters saved with eraseCounts() (a wear sidecar). */
  loadEraseCounts(counts: Uint32Array): void {
    if (counts.length !== this.profile.sizeBytes / this.profile.sectorBytes) throw new RangeError('erase counter count does not match the chip');
    this.#erases.clear();
    counts.forEach((n, s) => {
      if (n) this.#erases.set(s, n);
    });
  }
  /** Endurance of one sector (the profile's, unless a fault makes it wear early). */
  enduranceOf(sector: number): number {
    return this.faults.earlyWear.get(sector) ?? this.profile.enduranceCycles;
  }

  /** Test-only: raw bytes, no status, no clock, no faults. */
  peek(addr: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    this.backing.readInto(addr, out);
    return out;
  }
  /** Test-only: flip one stored bit (a retention error); persists until erased. */
  flipBit(addr: number, bit: number): void {
    const b = this.peek(addr, 1);
    b[0]! ^= 1 << (bit & 7);
    this.backing.write(addr, b);
  }

  read(addr: number, len: number): ReadResult {
    if (!isCount(addr) || !isCount(len)) return this.#refuse(FlashStatus.ERR_ARG);
    if (this.#powerLost) return this.#refuse(FlashStatus.ERR_POWER_LOST);
    if (addr + len > this.profile.sizeBytes) return this.#refuse(FlashStatus.ERR_RANGE);
    const t = this.profile.timings;
    this.clock.advance(this.#t(t.commandUs) + len * this.#t(t.transferUsPerByte));
    const data = new Uint8Array(len);
    this.backing.readInto(addr, data);
    this.stats.reads++;
    this.stats.readBytes += len;
    const f = this.faults;
    if (len > 0 && f.readFlipProbability > 0 && this.#rng.next() / 2 ** 32 < f.readFlipProbability) {
      const i = this.#rng.below(len);
      data[i]! ^= 1 << this.#rng.below(8);
      f.readFlips++;
    }
    const at = f.readFlipAt;
    if (at && at.count > 0 && at.addr >= addr && at.addr < addr + len) {
      data[at.addr - addr]! ^= 1 << this.#rng.below(8);
      at.count--;
      f.readFlips++;
    }
    return { status: FlashStatus.OK, data };
  }

  /** Page program: new = old AND data. See the header for page crossing. */
  program(addr: number, data: Uint8Array): number {
    if (!isCount(addr) || !(data instanceof Uint8Array)) return this.#refuse(FlashStatus.ERR_ARG).status;
    if (this.#powerLost) return this.#refuse(FlashStatus.ERR_POWER_LOST).status;
    const p = this.profile;
    if (addr >= p.sizeBytes || addr + data.length > p.sizeBytes) return this.#refuse(FlashStatus.ERR_RANGE).status;
    const pageStart = addr - (addr % p.pageBytes);
    if (addr + data.length > pageStart + p.pageBytes && p.pageCrossing === 'refuse') return this.#refuse(FlashStatus.ERR_PAGE_CROSS).status;
    if (data.length === 0) return FlashStatus.OK;
    if (this.#worn(Math.floor(addr / p.sectorBytes))) return this.#refuse(FlashStatus.ERR_WORN).status;

    // The bytes in the order the chip latches them: (page offset, value). In wrap mode the
    // offset wraps inside the page and a later byte replaces an earlier one in the buffer.
    const n = data.length;
    this.onOperation?.({ kind: 'program', addr, bytes: n });
    const cut = this.#cutPoint(n);
    const landed = cut ?? n;
    const page = this.peek(pageStart, p.pageBytes);
    const buf = new Uint8Array(p.pageBytes).fill(0xff);
    let off = addr - pageStart;
    for (let i = 0; i < landed; i++) {
      buf[off] = data[i]!;
      off = (off + 1) % p.pageBytes;
    }
    for (let i = 0; i < p.pageBytes; i++) page[i]! &= buf[i]!;
    this.backing.write(pageStart, page);

    const t = p.timings;
    const prog = Math.min(this.#t(t.pageProgramUs), this.#t(t.byteProgramFirstUs) + (landed > 1 ? (landed - 1) * this.#t(t.byteProgramNextUs) : 0));
    this.clock.advance(this.#t(t.commandUs) + landed * this.#t(t.transferUsPerByte) + (landed > 0 ? prog : 0));
    this.stats.programs++;
    this.stats.programBytes += landed;
    if (cut !== null) return this.#lose();
    return FlashStatus.OK;
  }

  eraseSector(addr: number): number {
    return this.#erase(addr, this.profile.sectorBytes, this.profile.timings.sectorEraseUs);
  }

  eraseBlock(addr: number): number {
    return this.#erase(addr, this.profile.blockBytes, this.profile.timings.blockEraseUs);
  }

  #erase(addr: number, size: number, time: Timing): number {
    if (!isCount(addr)) return this.#refuse(FlashStatus.ERR_ARG).status;
    if (this.#powerLost) return this.#refuse(FlashStatus.ERR_POWER_LOST).status;
    const p = this.profile;
    if (addr >= p.sizeBytes) return this.#refuse(FlashStatus.ERR_RANGE).status;
    if (addr % size !== 0) return this.#refuse(FlashStatus.ERR_ALIGN).status;
    const first = addr / p.sectorBytes;
    const count = size / p.sectorBytes;
    for (let s = first; s < first + count; s++) if (this.#worn(s)) return this.#refuse(FlashStatus.ERR_WORN).status;

    this.onOperation?.({ kind: 'erase', addr, bytes: size });
    if (this.#cutPoint(0) !== null) {
      // An interrupted erase: bits move towards 1 but not all of them got there. The
      // sector is left neither erased nor intact (an all-0xFF sector stays erased).
      const old = this.peek(addr, size);
      const now = Uint8Array.from(old);
      for (let i = 0; i < size; i++) if (this.#rng.below(2)) now[i]! |= this.#rng.next() & 0xff;
      let i0 = old.findIndex((b) => b !== 0xff);
      if (i0 >= 0) {
        // Guarantee both: one changed byte (not intact), one byte not erased.
        now[i0] = 0xff;
        const j = now.findIndex((b) => b !== 0xff);
        if (j < 0) now[(i0 + 1) % size] = old[(i0 + 1) % size]! === 0xff ? 0x00 : old[(i0 + 1) % size]!;
      }
      this.backing.write(addr, now);
      this.clock.advance(this.#t(p.timings.commandUs) + this.#t(time) / 2);
      return this.#lose();
    }
    this.backing.fill(addr, size, p.erasedValue);
    for (let s = first; s < first + count; s++) this.#erases.set(s, (this.#erases.get(s) ?? 0) + 1);
    this.clock.advance(this.#t(p.timings.commandUs) + this.#t(time));
    if (size === p.sectorBytes) this.stats.sectorErases++;
    else this.stats.blockErases++;
    return FlashStatus.OK;
  }

  /** null: the operation completes; a number: power is cut after that many bytes land. */
  #cutPoint(bytes: number): number | null {
    const f = this.faults;
    let cut: number | null = null;
    if (f.powerCutAfterOps !== null) {
      if (f.powerCutAfterOps <= 0) {
        cut = Math.max(0, Math.min(f.tornBytes, Math.max(0, bytes - 1)));
        f.powerCutAfterOps = null;
      } else f.powerCutAfterOps--;
    }
    if (f.powerCutAfterBytes !== null && bytes > 0) {
      if (bytes > f.powerCutAfterBytes) {
        cut = cut === null ? f.powerCutAfterBytes : Math.min(cut, f.powerCutAfterBytes);
        f.powerCutAfterBytes = null;
      } else f.powerCutAfterBytes -= bytes;
    }
    return cut;
  }

  #lose(): number {
    this.#powerLost = true;
    this.faults.cuts++;
    this.stats.refused++;
    return FlashStatus.ERR_POWER_LOST;
  }

  #worn(sector: number): boolean {
    return this.eraseCount(sector) >= this.enduranceOf(sector);
  }

  #t(t: Timing): number {
    return t[this.#timing];
  }

  #refuse(status: number): ReadResult {
    this.stats.refused++;
    return { status, data: EMPTY };
  }
}

function isCount(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
}
