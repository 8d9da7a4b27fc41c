// What a host sees of the phone's disk unit (the free zone, FAT) after a power cut, and the
// real tool's verdict on it: the whole unit read as a host would image it, and `fsck.fat -n`
// over that image. Host-side only (node:fs, node:child_process). Used by the exhaustive cut
// tests of host writes (firmware/zones/host-write-cuts.test.ts) and the power-cut search over
// every flash write path (sim/power-cut-search.ts).
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FlashStatus } from '../flash/chip.ts';
import type { DiskUnit } from '../flash/bus.ts';
import type { ReadSectors, WriteSectors } from '../zones/fat.ts';

/** The FAT layer's sector reader and writer over the bus's disk unit (a read that fails is null). */
export function diskIo(disk: DiskUnit): { read: ReadSectors; write: WriteSectors } {
  return {
    read: (lba, n) => {
      const r = disk.readSectors(lba, n);
      return r.status === FlashStatus.OK ? r.data : null;
    },
    write: (lba, d) => disk.writeSectors(lba, d),
  };
}

/** The host's view of the whole disk unit (what a host would image), or the status of the first read that failed. */
export function hostDiskImage(disk: DiskUnit): { ok: true; image: Uint8Array } | { ok: false; status: number; lba: number } {
  const out = new Uint8Array(disk.sectorCount * 512);
  for (let s = 0; s < disk.sectorCount; s += 2048) {
    const r = disk.readSectors(s, Math.min(2048, disk.sectorCount - s));
    if (r.status !== FlashStatus.OK) return { ok: false, status: r.status, lba: s };
    out.set(r.data, s * 512);
  }
  return { ok: true, image: out };
}

export interface FsckVerdict {
  /** No file of `mustNotName` named and fsck.fat ended 0 or 1 (1: it found and would fix something). */
  ok: boolean;
  /** fsck.fat's exit code (null: it did not run, e.g. not installed). */
  exit: number | null;
  /** The files of `mustNotName` fsck.fat named in its report. */
  named: string[];
  output: string;
}

/**
 * `fsck.fat -n` (check only) on a disk image written to `dir`. fsck.fat names a damaged file by
 * its path ("/MAIN.EXE"); lost clusters and FAT copies that differ are the expected trace of a
 * cut allocation, not damage, so the verdict fails only when it names a file the write did not
 * touch, or cannot check the volume at all (exit > 1).
 */
export function fsckFat(image: Uint8Array, dir: string, mustNotName: readonly string[]): FsckVerdict {
  const path = join(dir, 'disk.img');
  writeFileSync(path, image);
  const r = spawnSync('fsck.fat', ['-n', path], { encoding: 'utf8' });
  const output = `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}`;
  const named = mustNotName.filter((f) => output.includes(`/${f}`));
  return { ok: named.length === 0 && r.status !== null && r.status <= 1, exit: r.status, named, output };
}
