import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildIso, listIso, readIsoFile, scanIso, arrayBlocks, isoName, ISO_BLOCK } from './iso9660.ts';

const te = new TextEncoder();
const files = [
  { name: 'AUTORUN.INF', data: te.encode('[autorun]\r\nopen=UPMON.EXE\r\nlabel=USBPHONE\r\n') },
  { name: 'upmon.exe', data: Uint8Array.from({ length: 5000 }, (_, i) => i & 0xff) },
  { name: 'EMPTY', data: new Uint8Array(0) },
  { name: 'BIG.BIN', data: new Uint8Array(3 * ISO_BLOCK).fill(0x42) },
];

test('build then read back: listing is sorted, contents round-trip, names are case-insensitive', () => {
  const iso = buildIso(files, 'USBPHONE');
  assert.is(iso.length % ISO_BLOCK, 0);
  const list = listIso(arrayBlocks(iso))!;
  assert.equal(list.map((e) => e.name), ['AUTORUN.INF', 'BIG.BIN', 'EMPTY', 'UPMON.EXE']);
  for (const f of files) assert.equal(readIsoFile(arrayBlocks(iso), f.name.toLowerCase()), f.data);
  assert.is(readIsoFile(arrayBlocks(iso), 'NOPE.TXT'), null);
  assert.is(scanIso(arrayBlocks(iso)).volumeId, 'USBPHONE');
});

test('reproducible: the same files give the same bytes', () => {
  assert.equal(buildIso(files, 'USBPHONE'), buildIso([...files].reverse(), 'USBPHONE'));
});

test('names outside ISO 9660 level 1 are refused at build time', () => {
  for (const bad of ['toolongname.txt', 'a.long', 'sp ace.txt', 'x/y', '', 'A.B.C']) assert.throws(() => isoName(bad), RangeError);
  assert.throws(() => buildIso([{ name: 'A', data: new Uint8Array(1) }, { name: 'a', data: new Uint8Array(1) }], 'V'), /duplicate/);
  assert.throws(() => buildIso([], 'bad volume id!'), RangeError);
});

test('xorriso (a real tool) lists and extracts what we build', () => {
  const dir = mkdtempSync(join(tmpdir(), 'iso-'));
  try {
    const p = join(dir, 'v.iso');
    writeFileSync(p, buildIso(files, 'USBPHONE'));
    const out = execFileSync('xorriso', ['-indev', p, '-ls', '/', '--'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    for (const n of ['AUTORUN.INF', 'BIG.BIN', 'EMPTY', 'UPMON.EXE']) assert.ok(out.includes(`'${n}'`), `xorriso lists ${n}:\n${out}`);
    execFileSync('xorriso', ['-osirrox', 'on', '-indev', p, '-extract', '/UPMON.EXE', join(dir, 'u.exe')], { stdio: 'ignore' });
    assert.equal(new Uint8Array(readFileSync(join(dir, 'u.exe'))), files[1]!.data);
    // And we read an image xorriso wrote (ISO level 1, no extensions).
    writeFileSync(join(dir, 'HELLO.TXT'), 'hello from xorriso\n');
    const theirs = join(dir, 'x.iso');
    execFileSync('xorriso', ['-as', 'mkisofs', '-quiet', '-iso-level', '1', '-V', 'THEIRS', '-o', theirs, join(dir, 'HELLO.TXT')], { stdio: 'ignore' });
    const t = new Uint8Array(readFileSync(theirs));
    assert.is(new TextDecoder().decode(readIsoFile(arrayBlocks(t), 'HELLO.TXT')!), 'hello from xorriso\n');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('hostile volumes: every single-bit flip in the metadata blocks is reported or harmless; readers never throw', () => {
  const iso = buildIso(files, 'USBPHONE');
  let reported = 0, total = 0;
  // Bits of the fields the reader depends on: PVD type/id, sizes, root record, path tables, directory.
  const spots = [0, 1, 80, 84, 128, 130, 132, 136, 140, 148, 156, 158, 162, 166, 170].map((o) => 16 * ISO_BLOCK + o);
  for (const o of [...spots, 18 * ISO_BLOCK + 2, 19 * ISO_BLOCK + 5, 20 * ISO_BLOCK + 2, 20 * ISO_BLOCK + 34 + 2, 20 * ISO_BLOCK + 68 + 10]) {
    for (let bit = 0; bit < 8; bit++) {
      const bad = Uint8Array.from(iso);
      bad[o]! ^= 1 << bit;
      total++;
      if (scanIso(arrayBlocks(bad), iso.length / ISO_BLOCK).problems.length) reported++;
      readIsoFile(arrayBlocks(bad), 'AUTORUN.INF');
    }
  }
  assert.ok(reported >= total - 8, `${reported}/${total} flips reported`);
  // Random junk and truncations: null, not an exception.
  let seed = 99;
  for (let i = 0; i < 200; i++) {
    const junk = Uint8Array.from({ length: ISO_BLOCK * (1 + (i % 24)) }, () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 24));
    if (i % 2) junk.set(iso.subarray(16 * ISO_BLOCK, 17 * ISO_BLOCK), Math.min(junk.length - ISO_BLOCK, 16 * ISO_BLOCK));
    assert.not.throws(() => listIso(arrayBlocks(junk)));
    assert.not.throws(() => readIsoFile(arrayBlocks(junk), 'AUTORUN.INF'));
  }
  assert.is(listIso(arrayBlocks(iso.subarray(0, 17 * ISO_BLOCK))), null);
  assert.is(listIso(() => null), null);
});

test.run();
