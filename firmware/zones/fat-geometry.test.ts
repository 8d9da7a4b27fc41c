// FAT geometry at every volume size around the FAT12/FAT16 boundary and the cluster-count
// limits, both directions: what our formatter writes, fsck.fat -n and mtools accept and
// agree with our reader on (type, cluster count); what mkfs.fat writes, our reader reads
// with the type and cluster count fsck.fat reports, and reads back a file mtools copied in.
// Before the fix the formatter wrote FATs of 257-258 sectors next to the spc 1 -> 2 step,
// which our reader refused. SLOW=1 adds the boundaries of volumes above 32 MiB.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, rmSync, truncateSync, openSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildFat, fatGeometry, parseBootSector, checkFat, readFatFile, arraySectors, type BuildFatOptions } from './fat.ts';

const SLOW = !!process.env.SLOW;
const RADIUS = SLOW ? 32 : 6;
const file = Uint8Array.from({ length: 9000 }, (_, i) => (i * 17 + 3) & 0xff);
const files = [{ name: 'MAIN.EXE', data: file }, { name: 'B.TXT', data: new TextEncoder().encode('after main\n') }];

/** The formatter's choice at a size: what buildFat picks (cluster size, type, FAT size). */
function choice(total: number, o: BuildFatOptions) {
  for (let spc = o.minClusterSectors ?? 1; spc <= 128; spc *= 2) {
    const g = fatGeometry(total, spc, o.alignSectors ?? 1);
    if (g) return { spc, ...g };
  }
  return null;
}
const key = (total: number, o: BuildFatOptions) => {
  const c = choice(total, o);
  return c ? `${c.spc}/${c.fatType}` : 'none';
};
/** The first size in (lo, hi] where the formatter's choice differs from its choice at lo. */
function boundary(lo: number, hi: number, o: BuildFatOptions): number {
  const k0 = key(lo, o);
  assert.is.not(key(hi, o), k0, `no boundary in ${lo}..${hi}`);
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (key(mid, o) === k0) lo = mid;
    else hi = mid;
  }
  return hi;
}

const DEFAULT: BuildFatOptions = {};
const FACTORY: BuildFatOptions = { alignSectors: 8, minClusterSectors: 8 };
const cases: { what: string; o: BuildFatOptions; lo: number; hi: number }[] = [
  { what: 'FAT12 -> FAT16, 512-byte clusters', o: DEFAULT, lo: 3000, hi: 6000 },
  { what: '65525-cluster limit, 512-byte clusters -> 1 KiB', o: DEFAULT, lo: 60_000, hi: 70_000 },
  { what: 'factory layout: FAT12 -> FAT16, 4 KiB clusters', o: FACTORY, lo: 30_000, hi: 36_000 },
];
if (SLOW) {
  cases.push(
    { what: '65525-cluster limit, 1 KiB -> 2 KiB clusters', o: DEFAULT, lo: 125_000, hi: 140_000 },
    { what: 'factory layout: 65525-cluster limit, 4 KiB -> 8 KiB clusters', o: FACTORY, lo: 500_000, hi: 540_000 },
  );
}

function withDir<T>(f: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'fatgeo-'));
  try {
    return f(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
/** What fsck.fat -nv says: exit code, FAT entry bits and data clusters. */
function fsck(path: string) {
  const r = spawnSync('fsck.fat', ['-nv', path], { encoding: 'utf8' });
  const out = r.stdout + r.stderr;
  const bits = /(\d+) bit entries/.exec(out), clusters = /(\d+) data clusters/.exec(out);
  return { code: r.status, out, bits: bits ? Number(bits[1]) : null, clusters: clusters ? Number(clusters[1]) : null };
}
/** Writes a volume sparsely: its used start, then the file extended to the full size. */
function writeSparse(path: string, vol: Uint8Array, used: number) {
  writeFileSync(path, vol.subarray(0, used));
  truncateSync(path, vol.length);
}

for (const c of cases) {
  test(`our formatter around "${c.what}": fsck.fat -n, mdir/mcopy and our reader agree at every size`, () => {
    const b = boundary(c.lo, c.hi, c.o);
    withDir((dir) => {
      const p = join(dir, 'v.img');
      for (let total = b - RADIUS; total <= b + RADIUS; total++) {
        const at = `${total} sectors (boundary ${b}, ${key(total, c.o)})`;
        const vol = buildFat(files, total * 512, 'SWEEP', c.o);
        const io = arraySectors(vol);
        const ours = checkFat(io.read, total);
        assert.equal(ours.problems, [], at);
        const g = ours.geometry!;
        assert.ok(g.fatSectors <= 256, `${at}: FAT of ${g.fatSectors} sectors`);
        assert.equal(readFatFile(io.read, 'MAIN.EXE'), file, at);
        writeSparse(p, vol, (g.dataSector + 8 * g.sectorsPerCluster + 64) * 512);
        const f = fsck(p);
        assert.is(f.code, 0, `${at}: ${f.out}`);
        assert.is(f.bits, g.fatType, `${at}: fsck.fat reads FAT${f.bits}, we wrote FAT${g.fatType}`);
        assert.is(f.clusters, g.clusters, at);
        const ls = execFileSync('mdir', ['-i', p, '::'], { encoding: 'utf8' });
        assert.ok(ls.includes('MAIN     EXE') && ls.includes('B        TXT'), `${at}: ${ls}`);
        execFileSync('mcopy', ['-n', '-o', '-i', p, '::MAIN.EXE', join(dir, 'm.exe')]);
        assert.equal(new Uint8Array(readFileSync(join(dir, 'm.exe'))), file, `${at}: mcopy reads MAIN.EXE`);
      }
    });
  });

  test(`mkfs.fat around "${c.what}": our reader agrees with fsck.fat and reads what mcopy wrote`, () => {
    const b = boundary(c.lo, c.hi, c.o);
    const spcs = [...new Set([choice(b - 1, c.o)!.spc, choice(b, c.o)!.spc])];
    let made = 0;
    withDir((dir) => {
      const p = join(dir, 'm.img'), src = join(dir, 'MAIN.EXE');
      writeFileSync(src, file);
      for (let total = b - RADIUS; total <= b + RADIUS; total++) {
        for (const spc of spcs) {
          for (const type of [[], ['-F', '12'], ['-F', '16']]) {
            rmSync(p, { force: true });
            closeSync(openSync(p, 'w'));
            truncateSync(p, total * 512);
            const m = spawnSync('mkfs.fat', ['-s', String(spc), ...type, p], { encoding: 'utf8' });
            if (m.status !== 0) continue; // mkfs.fat refuses a type the cluster count forbids
            made++;
            execFileSync('mcopy', ['-i', p, src, '::MAIN.EXE']);
            const at = `${total} sectors, mkfs.fat -s ${spc} ${type.join(' ')}`;
            const f = fsck(p);
            assert.is(f.code, 0, `${at}: ${f.out}`);
            const vol = new Uint8Array(readFileSync(p));
            const bs = parseBootSector(vol.subarray(0, 512));
            assert.ok(bs.geometry, `${at}: our reader refuses the boot sector: ${JSON.stringify(bs.problems)}`);
            assert.is(bs.geometry!.fatType, f.bits, `${at}: we read FAT${bs.geometry!.fatType}, fsck.fat FAT${f.bits}`);
            assert.is(bs.geometry!.clusters, f.clusters, at);
            const io = arraySectors(vol);
            assert.equal(checkFat(io.read).problems, [], at);
            assert.equal(readFatFile(io.read, 'MAIN.EXE'), file, `${at}: we read what mcopy wrote`);
          }
        }
      }
    });
    assert.ok(made >= 2 * RADIUS, `mkfs.fat made only ${made} volumes`);
  });
}

test('the old fault, named: next to the 65525-cluster limit no FAT exceeds 256 sectors, and a bigger FAT is still read', () => {
  const b = boundary(60_000, 70_000, DEFAULT);
  for (let total = b - 64; total <= b + 64; total++) assert.ok(choice(total, DEFAULT)!.fatSectors <= 256, String(total));
  // A FAT larger than its clusters need is legal (fsck.fat and mtools accept one): we read it.
  const vol = buildFat(files, 8 * 1024 * 1024, 'BIGFAT');
  const g = parseBootSector(vol).geometry!;
  const big = new Uint8Array(vol.length + 2 * 300 * 512);
  const fat = vol.subarray(g.reservedSectors * 512, (g.reservedSectors + g.fatSectors) * 512);
  big.set(vol.subarray(0, 512));
  new DataView(big.buffer).setUint16(22, g.fatSectors + 300, true);
  new DataView(big.buffer).setUint16(19, 0, true);
  new DataView(big.buffer).setUint32(32, big.length / 512, true);
  big.set(fat, 512);
  big.set(fat, 512 + (g.fatSectors + 300) * 512);
  const shift = 2 * 300 * 512;
  big.set(vol.subarray(g.rootSector * 512), g.rootSector * 512 + shift);
  const io = arraySectors(big);
  assert.ok(parseBootSector(big).geometry!.fatSectors > 256);
  assert.equal(readFatFile(io.read, 'MAIN.EXE'), file);
  withDir((dir) => {
    const p = join(dir, 'big.img');
    writeFileSync(p, big);
    const f = fsck(p);
    assert.is(f.code, 0, f.out);
  });
});

test.run();
