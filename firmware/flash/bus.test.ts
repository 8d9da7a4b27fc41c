import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { FlashChip, FlashStatus } from './chip.ts';
import { CowBacking } from './backing.ts';
import { Fuses } from './fuses.ts';
import { DeviceBus, CDROM_BLOCK, DISK_SECTOR } from './bus.ts';
import { parseResponse, SW } from '../secure/apdu.ts';
import { bytesToHex } from '@noble/hashes/utils.js';
import { parseTable, zoneOf, ZoneType } from '../zones/layout.ts';
import { readIsoFile, listIso } from '../zones/iso9660.ts';
import { readFatFile, writeFatFile, checkFat, listFat } from '../zones/fat.ts';
import { buildImage } from '../factory/image.ts';
import { MasterKeyring } from '../../protocol/keys.ts';
import { TEST_VENDOR_KEY, TEST_VENDOR_PUB } from '../factory/test-vendor.ts';

const fuses = new Fuses(new Uint8Array(32).fill(3), new Uint8Array(8).fill(4), TEST_VENDOR_PUB);
const { image } = buildImage({ vendorKey: TEST_VENDOR_KEY, serial: 'SN-42', fuses, keyring: new MasterKeyring([[1, new Uint8Array(32).fill(1)]]) });
const p = parseTable(image);
if (!p.ok) throw new Error('table');
const table = p.table;
const te = new TextEncoder();

function dev() {
  const chip = new FlashChip({ backing: new CowBacking(image) });
  return { chip, bus: new DeviceBus(chip, fuses, table) };
}
const blocks = (bus: DeviceBus) => (lba: number, n: number) => {
  const r = bus.cdrom.readBlocks(lba, n);
  return r.status === FlashStatus.OK ? r.data : null;
};
const sectors = (bus: DeviceBus) => ({
  read: (lba: number, n: number) => {
    const r = bus.disk.readSectors(lba, n);
    return r.status === FlashStatus.OK ? r.data : null;
  },
  write: (lba: number, d: Uint8Array) => bus.disk.writeSectors(lba, d),
});

test('the host sees a CD-ROM (virtual zone) with AUTORUN.INF naming UPMon (S0.1, S0.3)', () => {
  const { bus } = dev();
  assert.is(bus.cdrom.blockCount, zoneOf(table, ZoneType.VIRTUAL).size / CDROM_BLOCK);
  const auto = new TextDecoder().decode(readIsoFile(blocks(bus), 'AUTORUN.INF')!);
  assert.match(auto, /\[autorun\]\r\nopen=UPMON\.EXE\r\nlabel=USBPHONE/);
  const cfg = JSON.parse(new TextDecoder().decode(readIsoFile(blocks(bus), 'UPMON.CFG')!));
  assert.equal(Object.keys(cfg).sort(), ['mainProgram', 'mainSha256', 'regBackup', 'regPrimary']);
});

test('CD-ROM writes are refused and counted; nothing changes', () => {
  const { chip, bus } = dev();
  assert.is(bus.cdrom.writeBlocks(0, new Uint8Array(CDROM_BLOCK)), FlashStatus.ERR_READ_ONLY);
  assert.is(bus.cdrom.writeBlocks(20, new Uint8Array(CDROM_BLOCK)), FlashStatus.ERR_READ_ONLY);
  assert.is(bus.counters.cdromWritesRefused, 2);
  assert.is((chip.backing as CowBacking).privateBytes, 0);
  assert.ok(listIso(blocks(bus)));
});

test('the disk unit (free zone) is read-write: the host adds a file; fsck-level check stays clean', () => {
  const { chip, bus } = dev();
  const io = sectors(bus);
  assert.ok(listFat(io.read)!.some((e) => e.name === 'MAIN.EXE'));
  const data = Uint8Array.from({ length: 10_000 }, (_, i) => i & 0xff);
  assert.is(writeFatFile(io.read, io.write, 'PHOTO.JPG', data), FlashStatus.OK);
  assert.equal(readFatFile(io.read, 'PHOTO.JPG'), data);
  assert.equal(checkFat(io.read).problems, []);
  // Rewriting a sector with bits that must go 0 -> 1 erased its flash sector.
  assert.ok(chip.stats.sectorErases > 0);
  assert.is(bus.disk.writeSectors(0, new Uint8Array(100)), FlashStatus.ERR_ALIGN);
});

test('disk writes that only clear bits are programmed without an erase', () => {
  const { chip, bus } = dev();
  const last = bus.disk.sectorCount - 1; // erased (0xFF) at the end of the data area
  assert.is(bus.disk.writeSectors(last, new Uint8Array(DISK_SECTOR).fill(0x0f)), FlashStatus.OK);
  assert.is(chip.stats.sectorErases, 0);
  assert.is(bus.disk.writeSectors(last, new Uint8Array(DISK_SECTOR).fill(0xf0)), FlashStatus.OK);
  assert.is(chip.stats.sectorErases, 2); // the controller's spare, then the sector itself
  assert.ok(bus.disk.readSectors(last, 1).data.every((b) => b === 0xf0));
});

test('no host address reaches the hidden zone, the table or beyond its unit', () => {
  const { bus } = dev();
  const hostile: [number, number][] = [[-1, 1], [0, -1], [1.5, 1], [bus.cdrom.blockCount, 1], [bus.cdrom.blockCount - 1, 2], [2 ** 40, 1], [0, 2 ** 31]];
  for (const [lba, n] of hostile) {
    assert.is.not(bus.cdrom.readBlocks(lba, n).status, FlashStatus.OK, `cdrom ${lba},${n}`);
  }
  const diskHostile: [number, number][] = [[-1, 1], [0, -1], [1.5, 1], [bus.disk.sectorCount, 1], [bus.disk.sectorCount - 1, 2], [2 ** 40, 1], [0, 2 ** 31]];
  for (const [lba, n] of diskHostile) assert.is.not(bus.disk.readSectors(lba, n).status, FlashStatus.OK, `disk ${lba},${n}`);
  assert.is(bus.disk.writeSectors(bus.disk.sectorCount, new Uint8Array(DISK_SECTOR)), FlashStatus.ERR_RANGE);
  assert.is(bus.disk.writeSectors(0, 'x' as unknown as Uint8Array), FlashStatus.ERR_ARG);
  assert.ok(bus.counters.hostOutOfRange > 0);
  // Everything the host can read, in full: neither the identity record nor the table is in it.
  const hidden = zoneOf(table, ZoneType.HIDDEN);
  const record = image.subarray(hidden.offset, hidden.offset + 64);
  const host = [bus.cdrom.readBlocks(0, bus.cdrom.blockCount).data];
  for (let s = 0; s < bus.disk.sectorCount; s += 2048) host.push(bus.disk.readSectors(s, Math.min(2048, bus.disk.sectorCount - s)).data);
  for (const h of host) {
    for (let i = 0; i + record.length <= h.length; i += 1) {
      if (h[i] === record[0] && record.every((b, k) => h[i + k] === b)) assert.unreachable('identity record visible to the host');
    }
  }
});

test('the old vendor path is gone: its unlock sequence is no command, and the controller returns no key', () => {
  const { bus } = dev();
  // The constant that used to unlock a raw hidden-zone port for any host (issue 9): now an
  // APDU with an unknown class, refused; there is no raw read, program, erase or derive.
  const r = parseResponse(bus.se.transmit(Uint8Array.of(0xc7, 0x55, 0x50, 0x48, 0x4e, 0x01)));
  assert.equal([r.data.length, r.sw], [0, SW.wrongLength]);
  assert.is(parseResponse(bus.se.transmit(Uint8Array.of(0xc7, 0x55, 0x50, 0x48))).sw, SW.claNotSupported);
  for (const m of ['readHidden', 'programHidden', 'eraseHiddenSector', 'deriveKey', 'uniqueId', 'unlock']) assert.not.ok(m in bus.se, m);
  // What it does answer is public: the identity, no key bytes.
  const id = parseResponse(bus.se.transmit(Uint8Array.of(0x80, 0xca, 0x00, 0x01)));
  assert.is(id.sw, SW.ok);
  assert.not.ok(bytesToHex(id.data).includes(bytesToHex(fuses.deriveKey('usbphone/v1 identity'))));
});

test('construction refuses a table for another chip', () => {
  const chip = new FlashChip({ profile: { ...table, name: 'x', sizeBytes: 1024 * 1024, pageBytes: 256, sectorBytes: 4096, blockBytes: 65536, erasedValue: 0xff, enduranceCycles: 10, pageCrossing: 'refuse', timings: new FlashChip().profile.timings } });
  assert.throws(() => new DeviceBus(chip, fuses, table), RangeError);
  assert.throws(() => new DeviceBus({} as FlashChip, fuses, table), TypeError);
});

test('nothing reachable from the host units or the secure controller leads to the chip or the fuses', () => {
  const { bus } = dev();
  const seen = new Set<unknown>();
  const walk = (o: unknown, path: string) => {
    if (o === null || typeof o !== 'object' || seen.has(o)) return;
    seen.add(o);
    assert.not.ok(o instanceof FlashChip || o instanceof Fuses, `${path} reaches ${o?.constructor?.name}`);
    for (const k of Reflect.ownKeys(o)) walk((o as Record<string | symbol, unknown>)[k], `${path}.${String(k)}`);
    const proto = Object.getPrototypeOf(o);
    if (proto && proto !== Object.prototype) for (const k of Reflect.ownKeys(proto)) if (k !== 'constructor') assert.is.not(typeof k, 'symbol', `${path}: hidden method ${String(k)}`);
  };
  walk(bus.cdrom, 'cdrom');
  walk(bus.disk, 'disk');
  walk(bus.se, 'se');
});

test.run();
