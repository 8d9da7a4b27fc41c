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
// - se: the secure controller (firmware/secure/element.ts), the only way to the hidden zone
//   and the fuses (the patent's "proprietary method", S0.4): command APDUs in, responses out;
//   it computes with its keys inside and no command returns one. It also gets a read-only view
//   of the two host units (media-port.ts) to measure the boot files at power-on.
// No host address reaches the hidden zone, the partition table block or the fuses: host
// units address only their own zone, by unit-relative block/sector numbers, and the hidden
// zone's port exists only inside the bus, handed to the controller.
//
// Not emulated: the USB mass-storage/SCSI transport itself (INQUIRY, READ CAPACITY, sense
// codes), media-change events, and a real FTL (wear levelling, bad-block remapping).
import { FlashChip, FlashStatus, type ReadResult } from './chip.ts';
import { Fuses } from './fuses.ts';
import { ZoneType, zoneOf, type PartitionTable } from '../zones/layout.ts';
import { DiskController } from '../zones/disk-controller.ts';
import { SecureElement, type ChipClock } from '../secure/element.ts';
import type { RecordStoreOptions } from '../zones/hidden.ts';
import { memoryNvm, type ControllerNvm } from '../secure/nvm.ts';
import type { HiddenPort } from './hidden-port.ts';
import type { BootMediaPort } from './media-port.ts';

export const CDROM_BLOCK = 2048;
export const DISK_SECTOR = 512;
/** Largest single transfer a unit accepts (bounds what one call can allocate). */
export const MAX_TRANSFER_BYTES = 1024 * 1024;

export interface BusCounters {
  cdromWritesRefused: number;
  hostOutOfRange: number;
}

const EMPTY = new Uint8Array(0);

export type { HiddenPort } from './hidden-port.ts';

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

export class DeviceBus {
  readonly cdrom: CdromUnit;
  readonly disk: DiskUnit;
  /** The secure controller: the host's only path to the hidden zone and the fuses. */
  readonly se: SecureElement;
  readonly counters: BusCounters = { cdromWritesRefused: 0, hostOutOfRange: 0 };
  readonly #chip: FlashChip;
  readonly #disk: DiskController;

  /**
   * rng: the controller's random source (nonces); a seeded one makes a simulated phone replay.
   * nvm: the controller's own non-volatile memory (its rollback counters), outside the flash.
   * chipClock: the controller's own clock, Unix ms (S3.3 one-time codes); null: none.
   * storeOpts: TEST ONLY, a record-store mutant (firmware/mutant.ts StoreMutant); {} in production.
   */
  constructor(chip: FlashChip, fuses: Fuses, table: PartitionTable, rng: (n: number) => Uint8Array = (n) => crypto.getRandomValues(new Uint8Array(n)), nvm: ControllerNvm = memoryNvm(), chipClock: ChipClock | null = null, storeOpts: RecordStoreOptions = {}) {
    if (!(chip instanceof FlashChip)) throw new TypeError('DeviceBus: FlashChip expected');
    if (!(fuses instanceof Fuses)) throw new TypeError('DeviceBus: Fuses expected');
    if (table.chipBytes !== chip.sizeBytes) throw new RangeError(`DeviceBus: table is for a ${table.chipBytes}-byte chip, chip has ${chip.sizeBytes}`);
    for (const z of table.entries) {
      if (z.offset + z.size > chip.sizeBytes || z.offset % chip.profile.sectorBytes !== 0 || z.size % chip.profile.sectorBytes !== 0) throw new RangeError('DeviceBus: zone outside the chip or not sector aligned');
    }
    this.#chip = chip;
    const v = zoneOf(table, ZoneType.VIRTUAL), f = zoneOf(table, ZoneType.FREE);
    // Methods, not arrow properties, in the per-device objects built here: under the loader's
    // keepNames an arrow property is renamed at run time and costs ~300 B more per device
    // (a million phones in one run, issue 15; docs/decisions.md).
    this.cdrom = new CdromUnit({ read(off, len) { return chip.read(v.offset + off, len); }, write() { return FlashStatus.ERR_READ_ONLY; }, counters: this.counters }, v.size);
    const { sectorBytes, pageBytes } = chip.profile;
    this.#disk = new DiskController({
      zoneBytes: f.size,
      sectorBytes,
      pageBytes,
      read(off, len) { return chip.read(f.offset + off, len); },
      program(off, data) { return chip.program(f.offset + off, data); },
      eraseSector(off) { return chip.eraseSector(f.offset + off); },
    });
    const disk = this.#disk;
    this.disk = new DiskUnit({ read(off, len) { return disk.read(off, len); }, write(off, data) { return disk.write(off, data); }, counters: this.counters }, disk.visibleBytes);
    const h = zoneOf(table, ZoneType.HIDDEN);
    // The hidden zone's port: built here, given to the controller, reachable from nothing else.
    const hidden: HiddenPort = {
      hiddenBytes: h.size,
      sectorBytes,
      pageBytes,
      readHidden(off, len) { return (inZone(off, len, h.size) ? chip.read(h.offset + off, len) : { status: FlashStatus.ERR_RANGE, data: new Uint8Array(0) }); },
      programHidden(off, data) { return (inZone(off, data.length, h.size) ? chip.program(h.offset + off, data) : FlashStatus.ERR_RANGE); },
      eraseHiddenSector(off) { return (inZone(off, sectorBytes, h.size) ? chip.eraseSector(h.offset + off) : FlashStatus.ERR_RANGE); },
    };
    // The boot media, read-only, for the controller's measurement (attestation). Built from the
    // chip and the disk controller directly, never from the host's unit objects: a host program
    // holds those and could replace their methods to show the controller other bytes than the
    // flash holds (found by review: a genuine measurement over a rewritten MAIN.EXE).
    const cdromBlocks = Math.floor(v.size / CDROM_BLOCK), diskSectors = Math.floor(disk.visibleBytes / DISK_SECTOR);
    const none = { status: FlashStatus.ERR_RANGE, data: new Uint8Array(0) };
    const media: BootMediaPort = Object.freeze({
      cdromBlocks,
      readCdrom(lba: number, n: number) { return (isCount(lba) && isCount(n) && lba + n <= cdromBlocks && n * CDROM_BLOCK <= MAX_TRANSFER_BYTES ? chip.read(v.offset + lba * CDROM_BLOCK, n * CDROM_BLOCK) : none); },
      readDisk(lba: number, n: number) { return (isCount(lba) && isCount(n) && lba + n <= diskSectors && n * DISK_SECTOR <= MAX_TRANSFER_BYTES ? disk.read(lba * DISK_SECTOR, n * DISK_SECTOR) : none); },
      generation() { return chip.backing.generation ?? null; },
    });
    this.se = new SecureElement(hidden, fuses, rng, media, nvm, chipClock, storeOpts);
  }

  /** Unplug and replug: the chip powers up again, the controller forgets its RAM state. */
  powerCycle(): void {
    this.#chip.powerCycle();
    this.#disk.powerOn();
    this.se.reset();
  }
}

function inZone(off: number, len: number, size: number): boolean {
  return isCount(off) && isCount(len) && off + len <= size;
}

function isCount(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
}
