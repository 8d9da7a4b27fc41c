// The hidden zone as the secure controller reaches it: zone-relative reads, page programs and
// sector erases on the chip. Only the bus builds one (firmware/flash/bus.ts), and only the
// controller holds it: no host unit has a path to these operations.
import type { ReadResult } from './chip.ts';

/** The hidden-zone operations the record store and identity reader need. */
export interface HiddenPort {
  readonly hiddenBytes: number;
  readonly sectorBytes: number;
  readonly pageBytes: number;
  readHidden(off: number, len: number): ReadResult;
  programHidden(off: number, data: Uint8Array): number;
  eraseHiddenSector(off: number): number;
}
