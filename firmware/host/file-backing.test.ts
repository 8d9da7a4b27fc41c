import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileBacking, loadBase, saveWear, loadWear, parseWear } from './file-backing.ts';
import { CowBacking } from '../flash/backing.ts';
import { FlashChip, FlashStatus, W25Q64, type ChipProfile } from '../flash/chip.ts';

const profile: ChipProfile = { ...W25Q64, name: 'test-1m', sizeBytes: 1024 * 1024 };
const dir = mkdtempSync(join(tmpdir(), 'flash-'));
const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');

test('a file-backed chip persists programs and erases to disk', () => {
  const p = join(dir, 'dev.img');
  const b = FileBacking.create(p, profile.sizeBytes);
  const chip = new FlashChip({ profile, backing: b });
  assert.is(chip.program(4096, Uint8Array.of(0x12, 0x34)), FlashStatus.OK);
  b.close();
  const again = new FlashChip({ profile, backing: FileBacking.open(p, profile.sizeBytes) });
  assert.equal([...again.read(4096, 3).data], [0x12, 0x34, 0xff]);
  assert.is(again.eraseSector(4096), FlashStatus.OK);
  assert.is(new Uint8Array(readFileSync(p))[4096], 0xff);
  assert.throws(() => FileBacking.open(p, 12345), RangeError);
});

test('copy-on-write fleet over one base file: devices are isolated, the base file is never modified', () => {
  const p = join(dir, 'base.img');
  const img = new Uint8Array(profile.sizeBytes).fill(0xff);
  img.fill(0x33, 0, 65536);
  writeFileSync(p, img);
  const before = sha(p);
  const base = loadBase(p);
  const fleet = Array.from({ length: 50 }, (_, i) => new FlashChip({ profile, backing: new CowBacking(base, 4096), seed: i + 1 }));
  fleet.forEach((c, i) => {
    assert.is(c.eraseSector((i % 16) * 4096), FlashStatus.OK);
    assert.is(c.program((i % 16) * 4096, Uint8Array.of(i)), FlashStatus.OK);
  });
  fleet.forEach((c, i) => {
    assert.is(c.read((i % 16) * 4096, 1).data[0], i);
    // A sector another device changed is still the base here.
    const other = ((i + 1) % 16) * 4096;
    assert.is(c.read(other + 1, 1).data[0], 0x33);
    // One erased sector (a mark) and one programmed byte: the only page bytes held.
    assert.is((c.backing as CowBacking).privateBytes, 1);
  });
  assert.is(sha(p), before);
  assert.equal(base.subarray(0, 65536).every((x) => x === 0x33), true);
});

test('wear sidecar: save, load, refuse a wrong one', () => {
  const chip = new FlashChip({ profile });
  chip.eraseSector(0);
  chip.eraseSector(0);
  chip.eraseBlock(65536);
  const p = join(dir, 'x.img.wear');
  saveWear(p, chip.eraseCounts());
  const w = loadWear(p, 256)!;
  assert.is(w[0], 2);
  assert.is(w[16], 1);
  assert.is(loadWear(p, 255), null);
  assert.is(loadWear(join(dir, 'none'), 256), null);
  assert.is(parseWear(new Uint8Array(20), 1), null);
});

test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();
