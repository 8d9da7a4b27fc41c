import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildFat, listFat, readFatFile, writeFatFile, deleteFatFile, checkFat, arraySectors, fatName, parseBootSector, showName } from './fat.ts';
import { FlashStatus } from '../flash/chip.ts';

const te = new TextEncoder();
const files = [
  { name: 'MAIN.EXE', data: Uint8Array.from({ length: 4096 }, (_, i) => (i * 7) & 0xff) },
  { name: 'MAIN.CFG', data: te.encode('{"saveLogin":true}\n') },
  { name: 'README.TXT', data: te.encode('hello\r\n') },
  { name: 'EMPTY', data: new Uint8Array(0) },
];
const SIZES = { fat12: 1024 * 1024, fat16: 7 * 1024 * 1024 - 128 * 1024 };

function withDir<T>(f: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'fat-'));
  try {
    return f(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
function fsck(path: string): { code: number; out: string } {
  const r = spawnSync('fsck.fat', ['-n', path], { encoding: 'utf8' });
  return { code: r.status ?? -1, out: r.stdout + r.stderr };
}

for (const [kind, size] of Object.entries(SIZES)) {
  test(`${kind}: fsck.fat -n is clean and mdir lists the files; our reader agrees`, () => {
    const vol = buildFat(files, size, 'USBPHONE', { fill: 0xff });
    const io = arraySectors(vol);
    const c = checkFat(io.read);
    assert.is(c.geometry!.fatType, kind === 'fat12' ? 12 : 16);
    assert.equal(c.problems, []);
    for (const f of files) assert.equal(readFatFile(io.read, f.name), f.data);
    withDir((dir) => {
      const p = join(dir, 'v.img');
      writeFileSync(p, vol);
      const r = fsck(p);
      assert.is(r.code, 0, r.out);
      const ls = execFileSync('mdir', ['-i', p, '::'], { encoding: 'utf8' });
      for (const n of ['MAIN     EXE', 'MAIN     CFG', 'README   TXT']) assert.ok(ls.includes(n), ls);
      execFileSync('mcopy', ['-i', p, '::MAIN.EXE', join(dir, 'm.exe')]);
      assert.equal(new Uint8Array(readFileSync(join(dir, 'm.exe'))), files[0]!.data);
    });
  });
}

test("showName's fast path for ASCII gives what the WHATWG latin1 (windows-1252) decoder gives, for every byte value and random entries", () => {
  // The reference: the decoder alone, as showName was before (issue 15).
  const td = new TextDecoder('latin1');
  const reference = (raw: Uint8Array) => {
    const base = td.decode(raw.subarray(0, 8)).trimEnd();
    const ext = td.decode(raw.subarray(8, 11)).trimEnd();
    return ext ? `${base}.${ext}` : base;
  };
  const cases: Uint8Array[] = [fatName('MAIN.EXE'), fatName('A'), fatName('AUTORUN.INF'), new Uint8Array(11).fill(0x20), new Uint8Array(11)];
  for (let b = 0; b < 256; b++) for (const at of [0, 7, 8, 10]) cases.push(Uint8Array.from(fatName('FILE.TXT'), (x, i) => (i === at ? b : x)));
  let seed = 7;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 24);
  for (let k = 0; k < 2000; k++) cases.push(Uint8Array.from({ length: 11 }, () => (k % 2 ? rnd() & 0x7f : rnd())));
  for (const raw of cases) assert.is(showName(raw), reference(raw), Array.from(raw).join(','));
});

test('host writes: create, replace, delete files; fsck.fat stays clean; mtools reads them; we read what mcopy wrote', () => {
  const vol = buildFat(files, SIZES.fat16, 'USBPHONE');
  const io = arraySectors(vol);
  const big = Uint8Array.from({ length: 70_000 }, (_, i) => (i * 13) & 0xff);
  assert.is(writeFatFile(io.read, io.write, 'user.bin', big), FlashStatus.OK);
  assert.is(writeFatFile(io.read, io.write, 'NOTE.TXT', te.encode('first')), FlashStatus.OK);
  assert.is(writeFatFile(io.read, io.write, 'NOTE.TXT', te.encode('second, longer'.repeat(100))), FlashStatus.OK);
  assert.is(deleteFatFile(io.read, io.write, 'README.TXT'), FlashStatus.OK);
  assert.is(deleteFatFile(io.read, io.write, 'README.TXT'), FlashStatus.ERR_NOT_FOUND);
  assert.is(writeFatFile(io.read, io.write, 'bad name.txt', big), FlashStatus.ERR_ARG);
  assert.equal(readFatFile(io.read, 'USER.BIN'), big);
  assert.equal(checkFat(io.read).problems, []);
  assert.equal(listFat(io.read)!.map((e) => e.name).sort(), ['EMPTY', 'MAIN.CFG', 'MAIN.EXE', 'NOTE.TXT', 'USER.BIN']);
  withDir((dir) => {
    const p = join(dir, 'v.img');
    writeFileSync(p, vol);
    const r = fsck(p);
    assert.is(r.code, 0, r.out);
    execFileSync('mcopy', ['-i', p, '::USER.BIN', join(dir, 'u.bin')]);
    assert.equal(new Uint8Array(readFileSync(join(dir, 'u.bin'))), big);
    writeFileSync(join(dir, 'THEIRS.TXT'), 'written by mtools\n');
    execFileSync('mcopy', ['-i', p, join(dir, 'THEIRS.TXT'), '::THEIRS.TXT']);
    const after = new Uint8Array(readFileSync(p));
    assert.is(new TextDecoder().decode(readFatFile(arraySectors(after).read, 'theirs.txt')!), 'written by mtools\n');
    assert.equal(checkFat(arraySectors(after).read).problems, []);
  });
});

test('full volume: ERR_NO_SPACE and nothing half-written', () => {
  const vol = buildFat([], 64 * 1024, 'TINY');
  const io = arraySectors(vol);
  assert.is(writeFatFile(io.read, io.write, 'HUGE.BIN', new Uint8Array(200 * 1024)), FlashStatus.ERR_NO_SPACE);
  assert.equal(listFat(io.read), []);
  assert.equal(checkFat(io.read).problems, []);
});

test('checkFat names flipped bits in the metadata with their offsets', () => {
  const vol = buildFat(files, SIZES.fat16, 'USBPHONE');
  const g = checkFat(arraySectors(vol).read).geometry!;
  const fat1 = g.reservedSectors * 512, fat2 = fat1 + g.fatSectors * 512, root = g.rootSector * 512;
  const cases: [string, number, number, RegExp][] = [
    ['FAT 1 entry of MAIN.EXE', fat1 + 2 * 3, 0, /FAT 2 differs from FAT 1/],
    ['FAT 2 entry', fat2 + 2 * 5 + 1, 3, /FAT 2 differs/],
    ['bytes per sector', 12, 0, /bytes per sector/],
    ['boot signature', 510, 2, /signature/],
    ['media byte in FAT', fat1, 1, /media|differs/],
    ['directory: start cluster', root + 32 + 26, 2, /MAIN\.EXE|lost cluster/],
    ['directory: size', root + 32 + 28 + 1, 6, /MAIN\.EXE: chain holds/],
    ['file system type string', 54 + 4, 1, /file system type/],
  ];
  for (const [what, off, bit, re] of cases) {
    const bad = Uint8Array.from(vol);
    bad[off]! ^= 1 << bit;
    const ps = checkFat(arraySectors(bad).read).problems;
    assert.ok(ps.length > 0, `${what}: not detected`);
    assert.ok(ps.some((p) => re.test(p.message)), `${what}: ${JSON.stringify(ps)}`);
  }
});

test('hostile boot sectors and junk never throw; readers return null', () => {
  let seed = 7;
  const rnd = () => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24;
  const vol = buildFat(files, SIZES.fat12, 'USBPHONE');
  for (let i = 0; i < 300; i++) {
    const bad = Uint8Array.from(vol);
    for (let k = 0; k < 1 + (i % 8); k++) bad[rnd() % 64]! = rnd();
    const io = arraySectors(bad);
    assert.not.throws(() => checkFat(io.read));
    assert.not.throws(() => readFatFile(io.read, 'MAIN.EXE'));
    assert.not.throws(() => writeFatFile(io.read, io.write, 'X.TXT', new Uint8Array(10)));
  }
  assert.is(listFat(() => null), null);
  assert.is(parseBootSector(new Uint8Array(10)).geometry, null);
  assert.throws(() => fatName('toolongname'), RangeError);
  assert.throws(() => buildFat([], 1000, 'X'), RangeError);
});


test('readers read the root directory up to its end entry only, and find what a full read finds (checkFat): few files, a sector boundary, deleted entries, a full root with no end entry', () => {
  const sizes = [3, 14, 15, 16, 17, 40, 511];
  for (const n of sizes) {
    const many = Array.from({ length: n }, (_, i) => ({ name: `F${i}.BIN`, data: i % 5 === 0 && n < 512 ? Uint8Array.from({ length: 700 + i }, (_, k) => (k + i) & 0xff) : new Uint8Array(0) }));
    const vol = buildFat(many, SIZES.fat16, 'USBPHONE', { fill: 0xff });
    const io = arraySectors(vol);
    // Deleted entries (0xE5) before and after the first sector's end.
    if (n >= 17) {
      assert.is(deleteFatFile(io.read, io.write, 'F1.BIN'), FlashStatus.OK);
      assert.is(deleteFatFile(io.read, io.write, 'F16.BIN'), FlashStatus.OK);
    }
    const rootSector = parseBootSector(vol.subarray(0, 512)).geometry!.rootSector;
    const rootReads: [number, number][] = [];
    const counted = (lba: number, count: number) => {
      if (lba >= rootSector && lba < rootSector + 32) rootReads.push([lba, count]);
      return io.read(lba, count);
    };
    const full = checkFat(io.read);
    assert.equal(full.problems, [], `${n} files`);
    const listed = listFat(counted)!;
    assert.equal(listed.map((e) => [e.name, e.size, e.cluster]), full.entries.map((e) => [e.name, e.size, e.cluster]), `${n} files`);
    // The volume label, up to 14 files and the end entry fit the first sector (16 entries): one sector read.
    assert.equal(rootReads, n <= 14 ? [[rootSector, 1]] : [[rootSector, 1], [rootSector + 1, 31]], `${n} files`);
    for (const e of full.entries) {
      const want = many.find((f) => f.name === e.name)!.data;
      assert.equal(readFatFile(io.read, e.name), want, `${n} files, ${e.name}`);
    }
    if (n >= 17) assert.is(readFatFile(io.read, 'F16.BIN'), null);
  }
});

test.run();
