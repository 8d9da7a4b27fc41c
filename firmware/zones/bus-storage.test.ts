import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { FlashChip } from '../flash/chip.ts';
import { CowBacking } from '../flash/backing.ts';
import { Fuses } from '../flash/fuses.ts';
import { DeviceBus } from '../flash/bus.ts';
import { parseTable, zoneOf, ZoneType } from './layout.ts';
import { listIso } from './iso9660.ts';
import { busStorage, type RecordCodec } from './bus-storage.ts';
import { buildImage } from '../factory/image.ts';
import { MasterKeyring } from '../../protocol/keys.ts';
import { TEST_VENDOR_KEY, TEST_VENDOR_PUB } from '../factory/test-vendor.ts';

interface Login { user: string; secret: string }
const json: RecordCodec<Login> = {
  encode: (v) => new TextEncoder().encode(JSON.stringify(v)),
  decode: (b) => {
    const v = JSON.parse(new TextDecoder().decode(b));
    if (typeof v.user !== 'string') throw new Error('not a login');
    return v;
  },
};
const fuses = new Fuses(new Uint8Array(32).fill(5), new Uint8Array(8).fill(6), TEST_VENDOR_PUB);
const { image } = buildImage({ vendorKey: TEST_VENDOR_KEY, serial: 'SN-7', fuses, keyring: new MasterKeyring([[1, new Uint8Array(32).fill(1)]]) });
const p = parseTable(image);
if (!p.ok) throw new Error('table');
const table = p.table;
const device = () => {
  const chip = new FlashChip({ backing: new CowBacking(image) });
  return { chip, bus: new DeviceBus(chip, fuses, table) };
};

test('the firmware storage seam over the bus: files, identity, saved login across a power cycle', () => {
  const { bus } = device();
  const s = busStorage(bus, json);
  const auto = s.readVirtualFile('AUTORUN.INF');
  assert.ok(auto.ok && new TextDecoder().decode(auto.value).includes('open=UPMON.EXE'));
  const cfg = s.readFreeFile('MAIN.CFG');
  assert.ok(cfg.ok);
  assert.equal(s.readVirtualFile('NOPE.TXT'), { ok: false, status: 'ERR_NOT_FOUND' });
  assert.equal(s.readFreeFile('NOPE.TXT'), { ok: false, status: 'ERR_NOT_FOUND' });
  const id = s.readIdentity();
  assert.ok(id.ok && id.value.serial === 'SN-7');
  assert.equal(s.loadLogin(), { ok: true, value: null });
  assert.equal(s.saveLogin({ user: 'u1', secret: 's1' }), { ok: true, value: undefined });
  bus.powerCycle();
  assert.equal(busStorage(bus, json).loadLogin(), { ok: true, value: { user: 'u1', secret: 's1' } });
});

test('a power cut mid-save reports ERR_POWER_LOST and keeps the old login; no secret slot until one is imported', () => {
  const { chip, bus } = device();
  const s = busStorage(bus, json);
  assert.equal(s.secrets(), { ok: true, value: null });
  assert.equal(s.retireOlder(1), { ok: false, status: 'SW_SECURITY_NOT_SATISFIED' });
  assert.equal(s.importSecret('u1', 1, 0, new Uint8Array(72)), { ok: false, status: 'SW_VERIFICATION_FAILED' });
  s.saveLogin({ user: 'u1', secret: 'old' });
  chip.faults.powerCutAfterOps = 1; // the erase completes, the one page program is torn
  chip.faults.tornBytes = 5;
  assert.equal(s.saveLogin({ user: 'u1', secret: 'new' }), { ok: false, status: 'ERR_POWER_LOST' });
  bus.powerCycle();
  assert.equal(busStorage(bus, json).loadLogin(), { ok: true, value: { user: 'u1', secret: 'old' } });
  assert.equal(busStorage(bus, { ...json, decode: () => { throw new Error('x'); } }).loadLogin(), { ok: false, status: 'ERR_FORMAT' });
});

test('a mounted virtual zone reads every file as readVirtualFile does; an unreadable directory does not mount', () => {
  const { chip, bus } = device();
  const s = busStorage(bus, json);
  const v = zoneOf(table, ZoneType.VIRTUAL);
  const names = (listIso((lba, n) => chip.peek(v.offset + lba * 2048, n * 2048)) ?? []).map((e) => e.name);
  assert.ok(names.includes('AUTORUN.INF') && names.length >= 4);
  const vol = s.mountVirtual();
  assert.ok(vol.ok);
  for (const n of [...names, 'NOPE.TXT', 'autorun.inf;1']) assert.equal(vol.value.readFile(n), s.readVirtualFile(n), n);
  const erased = device();
  erased.chip.flipBit(v.offset + 16 * 2048, 0); // the primary volume descriptor
  assert.equal(busStorage(erased.bus, json).mountVirtual(), { ok: false, status: 'ERR_NO_VOLUME' });
  assert.equal(busStorage(erased.bus, json).readVirtualFile('AUTORUN.INF'), { ok: false, status: 'ERR_NO_VOLUME' });
});

test('a wiped FAT boot sector is an unreadable volume (ERR_NO_VOLUME), not "MAIN.EXE not found"; a missing file still is ERR_NOT_FOUND', () => {
  const { bus } = device();
  assert.equal(busStorage(bus, json).readFreeFile('NOPE.EXE'), { ok: false, status: 'ERR_NOT_FOUND' });
  assert.is(bus.disk.writeSectors(0, new Uint8Array(512).fill(0xff)), 0); // what a host's wipe leaves
  assert.equal(busStorage(bus, json).readFreeFile('MAIN.EXE'), { ok: false, status: 'ERR_NO_VOLUME' });
  assert.equal(busStorage(bus, json).readFreeFile('NOPE.EXE'), { ok: false, status: 'ERR_NO_VOLUME' });
});

test.run();
