// The boot media as the secure controller reads them to measure the boot files at power-on
// (issue 9, attestation): read-only views of the CD-ROM unit (2048-byte blocks) and the disk
// unit (512-byte sectors, through the disk controller, which knows where each sector lives).
// Only the bus builds one (firmware/flash/bus.ts), for the controller; it writes nothing.
import type { ReadResult } from './chip.ts';

export interface BootMediaPort {
  readonly cdromBlocks: number;
  readCdrom(lba: number, count: number): ReadResult;
  readDisk(lba: number, count: number): ReadResult;
  /**
   * The flash's write generation (FlashBacking.generation): the same number means no byte of
   * the chip was written, filled or reset through its backing since; null: cannot tell.
   */
  generation(): number | null;
}
