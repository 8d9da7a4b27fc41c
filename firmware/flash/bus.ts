// Access rules on the bus path (S0.1, S0.4): what the host computer and the firmware can
// reach of the chip. The rules live here, on every transaction, not in the firmware's good
// manners (QEMU checks attrs.secure per access).
//
// - cdrom: the virtual zone as a read-only unit of 2048-byte blocks. Writes are refused
//   (ERR_READ_ONLY) and counted.
// - disk: the free zone as a read-write unit of 512-byte sectors, through its controller
//   (zones/disk-controller.ts): a sector write that must erase is copied to a spare sector
//   and journaled before the 4 KiB flash sector is rewritten, so a power cut never damages
//   what the host did not write. The controller keeps the zone's last sectors; the host sees
//   the rest.
// - vendor: the hidden zone and the fuse key-derivation path, answering only after the
//   vendor command sequence (the patent's "proprietary method", S0.4). A wrong sequence is
//   refused and counted; after VENDOR_MAX_BAD_SEQUENCES wrong sequences the port stays
//   locked until the next power cycle.
// No host address reaches the hidden zone, the partition table block or the fuses: host
// units address only their own zone, by unit-relative block/sector numbers.
//
// Not emulated: the USB mass-storage/SCSI transport itself (INQUIRY, READ CAPACITY, sense
// codes), media-change events, and a real FTL (wear levelling, bad-block remapping).
import { FlashChip, FlashStatus, type ReadResult } from './chip.ts';
import { Fuses } from './fuses.ts';
import { ZoneType, zoneOf, type PartitionTable, type ZoneEntry } from '../zones/layout.ts';
import { DiskController } from '../zones/disk-controller.ts';

export const CDROM_BLOCK = 2048;
export const DISK_SECTOR = 512;
/** The vendor unlock sequence: a vendor-specific SCSI command block ("UPHN" + version). */
export const VENDOR_UNLOCK_SEQUENCE: Uint8Array = Uint8Array.of(0xc7, 0x55, 0x50, 0x48, 0x4e, 0x01);
export const VENDOR_MAX_BAD_SEQUENCES = 3;
/** Largest single transfer a unit accepts (bounds what one call can allocate). */
export const MAX_TRANSFER_BYTES = 1024 * 1024;

export interface BusCounters {
  cdromWritesRefused: number;
  hostOutOfRange: number;
  vendorBadSequences: number;
  vendorLockedRefusals: number;
}

const EMPTY = new Uint8Array(0);
const resetVendor = new WeakMap<VendorPort, () => void>();

/** The hidden-zone operations the record store and identity reader need. */
export interface HiddenPort {
  readonly hiddenBytes: number;
  readonly sectorBytes: number;
  readonly pageBytes: number;
  readHidden(off: number, len: number): ReadResult;
  programHidden(off: number, data: Uint8Array): number;
  eraseHiddenSector(off: number): number;
}

/** Zone-bound access a unit gets from the bus: it can reach its own zone and nothing else. */
interface ZoneAccess {
  read(off: number, len: number): ReadResult;
  write(off: number, data: Uint8Array): number;
  counters: BusCounters;
}

export class CdromUnit {
  readonly blockCount: number;
  readonly #z: ZoneAccess;
  /** @internal built by DeviceBus. */
  constructor(z: ZoneAccess, zoneBytes: number) {
    this.#z = z;
    this.blockCount = Math.floor(zoneBytes / CDROM_BLOCK);
  }
  readBlocks(lba: number, count: number): ReadResult {
    return hostRead(this.#z, lba, count, CDROM_BLOCK, this.blockCount);
  }
  writeBlocks(_lba: number, _data: Uint8Array): number {
    this.#z.counters.cdromWritesRefused++;
    return FlashStatus.ERR_READ_ONLY;
  }
}

export class DiskUnit {
  readonly sectorCount: number;
  readonly #z: ZoneAccess;
  /** @internal built by DeviceBus. */
  constructor(z: ZoneAccess, zoneBytes: number) {
    this.#z = z;
    this.sectorCount = Math.floor(zoneBytes / DISK_SECTOR);
  }
  readSectors(lba: number, count: number): ReadResult {
    return hostRead(this.#z, lba, count, DISK_SECTOR, this.sectorCount);
  }
  /** Writes data.length / 512 sectors at lba. */
  writeSectors(lba: number, data: Uint8Array): number {
    if (!isCount(lba) || !(data instanceof Uint8Array)) return FlashStatus.ERR_ARG;
    if (data.length % DISK_SECTOR !== 0) return FlashStatus.ERR_ALIGN;
    if (data.length > MAX_TRANSFER_BYTES || lba + data.length / DISK_SECTOR > this.sectorCount) {
      this.#z.counters.hostOutOfRange++;
      return FlashStatus.ERR_RANGE;
    }
    return this.#z.write(lba * DISK_SECTOR, data);
  }
}

function hostRead(z: ZoneAccess, lba: number, count: number, unit: number, units: number): ReadResult {
  if (!isCount(lba) || !isCount(count)) return { status: FlashStatus.ERR_ARG, data: EMPTY };
  if (lba + count > units || count * unit > MAX_TRANSFER_BYTES) {
    z.counters.hostOutOfRange++;
    return { status: FlashStatus.ERR_RANGE, data: EMPTY };
  }
  return z.read(lba * unit, count * unit);
}

export class VendorPort implements HiddenPort {
  #unlocked = false;
  #bad = 0;
  readonly hiddenBytes: number;
  readonly sectorBytes: number;
  readonly pageBytes: number;
  // Real private fields: nothing reachable from this object leads to the chip or the HUK.
  readonly #counters: BusCounters;
  readonly #zone: ZoneEntry;
  readonly #chip: FlashChip;
  readonly #fuses: Fuses;

  /** @internal built by DeviceBus. */
  constructor(counters: BusCounters, zone: ZoneEntry, chip: FlashChip, fuses: Fuses) {
    this.#counters = counters;
    this.#zone = zone;
    this.#chip = chip;
    this.#fuses = fuses;
    this.hiddenBytes = zone.size;
    this.sectorBytes = chip.profile.sectorBytes;
    this.pageBytes = chip.profile.pageBytes;
    // Only DeviceBus.powerCycle() may clear the lock-out: the reset is not a method.
    resetVendor.set(this, () => {
      this.#unlocked = false;
      this.#bad = 0;
    });
  }

  get unlocked(): boolean {
    return this.#unlocked;
  }

  /** Sends the vendor command sequence. OK unlocks; a wrong one is ERR_BAD_SEQUENCE (counted). */
  unlock(sequence: Uint8Array): number {
    if (this.#bad >= VENDOR_MAX_BAD_SEQUENCES) {
      this.#counters.vendorLockedRefusals++;
      return FlashStatus.ERR_LOCKED;
    }
    let ok = sequence instanceof Uint8Array && sequence.length === VENDOR_UNLOCK_SEQUENCE.length;
    if (ok) for (let i = 0; i < sequence.length; i++) ok = ok && sequence[i] === VENDOR_UNLOCK_SEQUENCE[i];
    if (!ok) {
      this.#bad++;
      this.#unlocked = false;
      this.#counters.vendorBadSequences++;
      return FlashStatus.ERR_BAD_SEQUENCE;
    }
    this.#unlocked = true;
    return FlashStatus.OK;
  }

  lock(): void {
    this.#unlocked = false;
  }


  readHidden(off: number, len: number): ReadResult {
    const s = this.#check(off, len);
    if (s !== FlashStatus.OK) return { status: s, data: EMPTY };
    return this.#chip.read(this.#zone.offset + off, len);
  }

  programHidden(off: number, data: Uint8Array): number {
    if (!(data instanceof Uint8Array)) return FlashStatus.ERR_ARG;
    const s = this.#check(off, data.length);
    return s !== FlashStatus.OK ? s : this.#chip.program(this.#zone.offset + off, data);
  }

  eraseHiddenSector(off: number): number {
    const s = this.#check(off, this.sectorBytes);
    return s !== FlashStatus.OK ? s : this.#chip.eraseSector(this.#zone.offset + off);
  }

  /**
   * HKDF-SHA256 of the HUK with this label, computed inside the chip model (the firmware's
   * key-derivation path). Empty when the port is locked or the label is not a non-empty string.
   */
  deriveKey(label: string): Uint8Array {
    if (!this.#unlocked) {
      this.#counters.vendorLockedRefusals++;
      return EMPTY;
    }
    if (typeof label !== 'string' || label.length === 0 || label.length > 256) return EMPTY;
    return this.#fuses.deriveKey(label);
  }

  /** The chip's 8-byte unique id; empty when locked. */
  uniqueId(): Uint8Array {
    if (!this.#unlocked) {
      this.#counters.vendorLockedRefusals++;
      return EMPTY;
    }
    return this.#fuses.uniqueId();
  }

  #check(off: number, len: number): number {
    if (!this.#unlocked) {
      this.#counters.vendorLockedRefusals++;
      return FlashStatus.ERR_LOCKED;
    }
    if (!isCount(off) || !isCount(len)) return FlashStatus.ERR_ARG;
    if (off + len > this.#zone.size) return FlashStatus.ERR_RANGE;
    return FlashStatus.OK;
  }
}

export class DeviceBus {
  readonly cdrom: CdromUnit;
  readonly disk: DiskUnit;
  readonly vendor: VendorPort;
  readonly counters: BusCounters = { cdromWritesRefused: 0, hostOutOfRange: 0, vendorBadSequences: 0, vendorLockedRefusals: 0 };
  readonly #chip: FlashChip;
  readonly #disk: DiskController;

  constructor(chip: FlashChip, fuses: Fuses, table: PartitionTable) {
    if (!(chip instanceof FlashChip)) throw new TypeError('DeviceBus: FlashChip expected');
    if (!(fuses instanceof Fuses)) throw new TypeError('DeviceBus: Fuses expected');
    if (table.chipBytes !== chip.sizeBytes) throw new RangeError(`DeviceBus: table is for a ${table.chipBytes}-byte chip, chip has ${chip.sizeBytes}`);
    for (const z of table.entries) {
      if (z.offset + z.size > chip.sizeBytes || z.offset % chip.profile.sectorBytes !== 0 || z.size % chip.profile.sectorBytes !== 0) throw new RangeError('DeviceBus: zone outside the chip or not sector aligned');
    }
    this.#chip = chip;
    const v = zoneOf(table, ZoneType.VIRTUAL), f = zoneOf(table, ZoneType.FREE);
    this.cdrom = new CdromUnit({ read: (off, len) => chip.read(v.offset + off, len), write: () => FlashStatus.ERR_READ_ONLY, counters: this.counters }, v.size);
    const { sectorBytes, pageBytes } = chip.profile;
    this.#disk = new DiskController({
      zoneBytes: f.size,
      sectorBytes,
      pageBytes,
      read: (off, len) => chip.read(f.offset + off, len),
      program: (off, data) => chip.program(f.offset + off, data),
      eraseSector: (off) => chip.eraseSector(f.offset + off),
    });
    const disk = this.#disk;
    this.disk = new DiskUnit({ read: (off, len) => disk.read(off, len), write: (off, data) => disk.write(off, data), counters: this.counters }, disk.visibleBytes);
    this.vendor = new VendorPort(this.counters, zoneOf(table, ZoneType.HIDDEN), chip, fuses);
  }

  /** Unplug and replug: the chip powers up again and the vendor port is locked. */
  powerCycle(): void {
    this.#chip.powerCycle();
    this.#disk.powerOn();
    resetVendor.get(this.vendor)?.();
  }
}

function isCount(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
}
