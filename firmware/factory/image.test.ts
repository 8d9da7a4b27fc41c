import { bytesToHex, utf8ToBytes as utf8 } from '@noble/hashes/utils.js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sha256 } from '@noble/hashes/sha2.js';
import { buildImage, DEFAULT_REG_PRIMARY, DEFAULT_REG_BACKUP } from './image.ts';
import { inspectImage, findAll } from './inspect.ts';
import { Fuses } from '../flash/fuses.ts';
import { W25Q64 } from '../flash/chip.ts';
import { MasterKeyring, deriveDeviceKey } from '../../protocol/keys.ts';
import { ImplementationError } from '../../protocol/errors.ts';
import { zoneOf, ZoneType } from '../zones/layout.ts';
import { readIsoFile, arrayBlocks } from '../zones/iso9660.ts';
import { readFatFile, arraySectors, checkFat } from '../zones/fat.ts';
import { diskVisibleBytes } from '../zones/disk-controller.ts';
import { IDENTITY_KEY_LABEL, storeKeyLabel } from '../zones/hidden.ts';
import { TEST_VENDOR_KEY, TEST_VENDOR_PUB } from './test-vendor.ts';
import { verifyManifest, matchesManifest, vendorPublicKey } from '../boot-manifest.ts';

const master = Uint8Array.from({ length: 32 }, (_, i) => i * 3);
const keyring = new MasterKeyring([[1, master], [2, new Uint8Array(32).fill(9)]]);
const fuses = new Fuses(new Uint8Array(32).fill(0x5c), Uint8Array.of(9, 8, 7, 6, 5, 4, 3, 2), TEST_VENDOR_PUB);
const SERIAL = 'SN-0000001';
const built = buildImage({ vendorKey: TEST_VENDOR_KEY, serial: SERIAL, fuses, keyring });
const { image, enrollment, table } = built;
const hidden = zoneOf(table, ZoneType.HIDDEN), virtual = zoneOf(table, ZoneType.VIRTUAL), free = zoneOf(table, ZoneType.FREE);
const td = new TextDecoder();

test('enrollment record: what the registration server needs, never the device key unless asked', () => {
  assert.equal(Object.keys(enrollment).sort(), ['chip', 'firmwareMeasurement', 'firmwareVersion', 'imageSha256', 'keyVersion', 'regBackup', 'regPrimary', 'serial', 'uniqueId']);
  assert.is(enrollment.firmwareVersion, 1);
  // The measurement is SHA-256 of the signed manifest's body, as the chip computes it.
  const v = arrayBlocks(image.subarray(virtual.offset, virtual.offset + virtual.size));
  const m = verifyManifest(readIsoFile(v, 'BOOT.SIG')!, TEST_VENDOR_PUB);
  assert.ok(m.ok && bytesToHex(m.measurement) === enrollment.firmwareMeasurement);
  assert.is(enrollment.keyVersion, 2); // the keyring's newest
  assert.is(enrollment.uniqueId, '0908070605040302');
  assert.is(enrollment.regPrimary, DEFAULT_REG_PRIMARY);
  assert.is(enrollment.regBackup, DEFAULT_REG_BACKUP);
  assert.is(enrollment.imageSha256, bytesToHex(sha256(image)));
  const withKey = buildImage({ vendorKey: TEST_VENDOR_KEY, serial: SERIAL, fuses, keyring, includeDeviceKey: true, keyVersion: 1 }).enrollment;
  assert.is(withKey.deviceKey, bytesToHex(deriveDeviceKey(master, SERIAL)));
});

test('reproducible: same inputs, byte-identical image; other fuses change only the hidden zone', () => {
  assert.equal(buildImage({ vendorKey: TEST_VENDOR_KEY, serial: SERIAL, fuses, keyring }).image, image);
  const other = buildImage({ vendorKey: TEST_VENDOR_KEY, serial: SERIAL, fuses: new Fuses(new Uint8Array(32).fill(1), new Uint8Array(8), TEST_VENDOR_PUB), keyring }).image;
  for (let i = 0; i < image.length; i += 4096) {
    const same = image.subarray(i, i + 4096).every((b, k) => other[i + k] === b);
    const inHidden = i >= hidden.offset && i < hidden.offset + hidden.size;
    if (!inHidden) assert.ok(same, `sector at 0x${i.toString(16)} differs`);
  }
  assert.is.not(bytesToHex(sha256(other)), bytesToHex(sha256(image)));
});

test('no secret in plaintext anywhere in the image: serial, device key, fuse-derived keys (S0.1)', () => {
  const needles: [string, Uint8Array][] = [
    ['serial (ASCII)', utf8(SERIAL)],
    ['serial (UTF-16LE)', Uint8Array.from([...SERIAL].flatMap((c) => [c.charCodeAt(0), 0]))],
    ['serial digits', utf8('0000001')],
    ['device key v2', deriveDeviceKey(new Uint8Array(32).fill(9), SERIAL)],
    ['device key v1', deriveDeviceKey(master, SERIAL)],
    ['device key prefix', deriveDeviceKey(new Uint8Array(32).fill(9), SERIAL).subarray(0, 8)],
    ['identity key', fuses.deriveKey(IDENTITY_KEY_LABEL)],
    ['store key', fuses.deriveKey(storeKeyLabel('login'))],
    ['master key', master],
  ];
  for (const [what, n] of needles) assert.equal(findAll(image, n, 1), [], `${what} found in the image`);
  const r = inspectImage(image, { fuses });
  assert.ok(r.secrets.checked);
  assert.equal(r.secrets.findings, []);
  assert.is(r.hidden!.identity.opened!.serial, SERIAL);
});

test('zone contents: AUTORUN names UPMon; BOOT.SIG, signed by the vendor, lists every boot file with its hash', () => {
  const v = arrayBlocks(image.subarray(virtual.offset, virtual.offset + virtual.size));
  const f = arraySectors(image.subarray(free.offset, free.offset + free.size)).read;
  assert.is(td.decode(readIsoFile(v, 'AUTORUN.INF')!), '[autorun]\r\nopen=UPMON.EXE\r\nlabel=USBPHONE\r\n');
  const upmon = readIsoFile(v, 'UPMON.EXE')!;
  assert.match(td.decode(upmon), /^usbphone UPMon v1/);
  assert.is(readIsoFile(v, 'UPMON.MAN'), null, 'the unsigned per-program manifests are gone');
  const main = readFatFile(f, 'MAIN.EXE')!;
  const cfg = JSON.parse(td.decode(readIsoFile(v, 'UPMON.CFG')!));
  assert.equal(cfg, { regPrimary: DEFAULT_REG_PRIMARY, regBackup: DEFAULT_REG_BACKUP, mainProgram: 'MAIN.EXE', mainSha256: bytesToHex(sha256(main)) });
  assert.is(readFatFile(f, 'MAIN.MAN'), null);
  const m = verifyManifest(readIsoFile(v, 'BOOT.SIG')!, TEST_VENDOR_PUB);
  assert.ok(m.ok);
  if (!m.ok) return;
  assert.equal(m.manifest.entries.map((e) => `${e.zone}:${e.name}`), ['cdrom:AUTORUN.INF', 'cdrom:UPMON.CFG', 'cdrom:UPMON.EXE', 'disk:MAIN.EXE']);
  for (const [zone, name, data] of [['cdrom', 'AUTORUN.INF', readIsoFile(v, 'AUTORUN.INF')!], ['cdrom', 'UPMON.EXE', upmon], ['cdrom', 'UPMON.CFG', readIsoFile(v, 'UPMON.CFG')!], ['disk', 'MAIN.EXE', main]] as const) {
    assert.ok(matchesManifest(m.manifest, zone, name, data), name);
  }
  assert.is(verifyManifest(readIsoFile(v, 'BOOT.SIG')!, vendorPublicKey(new Uint8Array(32).fill(1))).ok, false, 'another key does not verify it');
  assert.equal(JSON.parse(td.decode(readFatFile(f, 'MAIN.CFG')!)), { saveLogin: true });
  assert.ok(readFatFile(f, 'README.TXT')!.length > 0);
});

test('real tools read the built image: mdir at the free-zone offset, fsck.fat and xorriso on the extracted zones', () => {
  const dir = mkdtempSync(join(tmpdir(), 'img-'));
  try {
    const img = join(dir, 'phone.img');
    writeFileSync(img, image);
    const ls = execFileSync('mdir', ['-i', `${img}@@${free.offset}`, '::'], { encoding: 'utf8' });
    for (const n of ['MAIN     EXE', 'MAIN     CFG', 'README   TXT']) assert.ok(ls.includes(n), ls);
    const fz = join(dir, 'free.img');
    writeFileSync(fz, image.subarray(free.offset, free.offset + diskVisibleBytes(free.size)));
    const f = spawnSync('fsck.fat', ['-n', fz], { encoding: 'utf8' });
    assert.is(f.status, 0, f.stdout + f.stderr);
    const vz = join(dir, 'virtual.iso');
    writeFileSync(vz, image.subarray(virtual.offset, virtual.offset + virtual.size));
    const x = execFileSync('xorriso', ['-indev', vz, '-ls', '/', '--'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    for (const n of ['AUTORUN.INF', 'UPMON.EXE', 'UPMON.CFG', 'BOOT.SIG']) assert.ok(x.includes(`'${n}'`), x);
    const isoinfo = spawnSync('isoinfo', ['-l', '-i', vz], { encoding: 'utf8' });
    if (isoinfo.status === 0) assert.ok(isoinfo.stdout.includes('AUTORUN.INF'), isoinfo.stdout);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bad inputs are refused with a code', () => {
  const code = (f: () => unknown, c: string) => assert.throws(f, (e: unknown) => e instanceof ImplementationError && e.code === c);
  code(() => buildImage({ vendorKey: TEST_VENDOR_KEY, serial: 'bad serial!', fuses, keyring }), 'KEY_BAD_SERIAL');
  // A vendor key the fuses do not hold would build an image that never boots.
  code(() => buildImage({ vendorKey: new Uint8Array(32).fill(1), serial: SERIAL, fuses, keyring }), 'IMAGE_VENDOR_KEY');
  code(() => buildImage({ vendorKey: new Uint8Array(31), serial: SERIAL, fuses, keyring }), 'IMAGE_VENDOR_KEY');
  code(() => buildImage({ vendorKey: TEST_VENDOR_KEY, serial: SERIAL, fuses, keyring, regPrimary: 'http://x/y' }), 'IMAGE_BAD_URL');
  code(() => buildImage({ vendorKey: TEST_VENDOR_KEY, serial: SERIAL, fuses, keyring, regBackup: 'not a url' }), 'IMAGE_BAD_URL');
  code(() => buildImage({ vendorKey: TEST_VENDOR_KEY, serial: SERIAL, fuses, keyring, regBackup: 'ws://host:1/' }), 'IMAGE_BAD_URL');
  // A smaller chip gets a proportionally smaller layout and still builds.
  const small = buildImage({ vendorKey: TEST_VENDOR_KEY, serial: SERIAL, fuses, keyring, profile: { ...W25Q64, name: 'W25Q08', sizeBytes: 1024 * 1024 } });
  assert.is(small.image.length, 1024 * 1024);
  assert.equal(inspectImage(small.image, { fuses }).problems, []);
  // Chip sizes the layout or the formatter cannot handle: a coded error, never a RangeError.
  for (const sizeBytes of [256 * 1024, 1024 * 1024 + 4096, 2 ** 31, 0]) {
    code(() => buildImage({ vendorKey: TEST_VENDOR_KEY, serial: SERIAL, fuses, keyring, profile: { ...W25Q64, name: 'odd', sizeBytes } }), 'IMAGE_BAD_SIZE');
  }
  code(() => buildImage({ vendorKey: TEST_VENDOR_KEY, serial: SERIAL, fuses, keyring, profile: { ...W25Q64, name: 'odd', sectorBytes: 256, pageBytes: 256 } }), 'IMAGE_BAD_SIZE');
});

test('free zone layout: the boot sector, each FAT, the root directory and MAIN.EXE sit in flash sectors of their own', () => {
  const visible = diskVisibleBytes(free.size);
  const c = checkFat(arraySectors(image.subarray(free.offset, free.offset + visible)).read, visible / 512);
  assert.equal(c.problems, []);
  const g = c.geometry!;
  const flashSector = (lba: number) => Math.floor(lba / 8);
  const owners = new Map<number, Set<string>>();
  const own = (what: string, first: number, count: number) => {
    for (let s = first; s < first + count; s++) owners.set(flashSector(s), (owners.get(flashSector(s)) ?? new Set()).add(what));
  };
  own('boot', 0, g.reservedSectors);
  own('FAT 1', g.reservedSectors, g.fatSectors);
  own('FAT 2', g.reservedSectors + g.fatSectors, g.fatSectors);
  own('root', g.rootSector, g.rootSectors);
  for (const e of c.entries) {
    const clusters = Math.ceil(e.size / (g.sectorsPerCluster * 512));
    for (let k = 0; k < clusters; k++) own(e.name, g.dataSector + (e.cluster - 2 + k) * g.sectorsPerCluster, g.sectorsPerCluster);
  }
  for (const [s, who] of owners) assert.is(who.size, 1, `flash sector ${s} holds ${[...who].join(' + ')}`);
  assert.ok(g.sectorsPerCluster >= 8 && g.dataSector % 8 === 0);
  // The controller's spares and journal are erased.
  assert.ok(image.subarray(free.offset + visible, free.offset + free.size).every((b) => b === 0xff));
});

test.run();
