// The attacker's test of keepMeasurementWhileUnwritten (element.ts) against the backing's own
// arrays (flash/backing.ts): after a kept good measurement, MAIN.EXE rewritten in the array a
// MemoryBacking was made from must not be served a hello over a changed flash: that array is
// not the flash (the flash reads the same after such a write, so the kept measurement is still
// the truth), and a rewrite through the backing itself (write) moves the generation and gets
// no hello. A CowBacking's base is the fleet's factory image by reference (never written by
// any code: flash/backing.ts); it is not exposed, and a changed image is a new array.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { hexToBytes } from '@noble/hashes/utils.js';
import { FlashChip } from '../flash/chip.ts';
import { CowBacking, MemoryBacking, type FlashBacking } from '../flash/backing.ts';
import { Fuses } from '../flash/fuses.ts';
import { parseTable, zoneOf, ZoneType } from '../zones/layout.ts';
import { buildImage } from '../factory/image.ts';
import { MasterKeyring, makeSerialToken } from '../../protocol/keys.ts';
import { encode } from '../../protocol/cbor.ts';
import { MsgType } from '../../protocol/messages.ts';
import { keystreamRng } from '../../protocol/seeded-rng.ts';
import { memoryNvm } from './nvm.ts';
import { Slot } from './element.ts';
import { Ins, SW, encodeCommand, parseResponse } from './apdu.ts';
import { TEST_VENDOR_KEY, TEST_VENDOR_PUB } from '../factory/test-vendor.ts';
import { DeviceBus } from '../flash/bus.ts';
import { arraySectors, listFat, parseBootSector } from '../zones/fat.ts';

const master = new Uint8Array(32).fill(7);
const fuses = new Fuses(new Uint8Array(32).fill(0x11), Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8), TEST_VENDOR_PUB);
const SERIAL = 'SN-0000001';
const { image, enrollment } = buildImage({ vendorKey: TEST_VENDOR_KEY, serial: SERIAL, fuses, keyring: new MasterKeyring([[1, master]]) });
const p = parseTable(image);
if (!p.ok) throw new Error('table');
const table = p.table;
const free = zoneOf(table, ZoneType.FREE);
const hello = encode([MsgType.hello, 0, 'reg-primary', [makeSerialToken(master, 1, SERIAL), hexToBytes(enrollment.firmwareMeasurement)]] as never);
const evil = new Uint8Array(512).fill(0x20);
evil.set(new TextEncoder().encode('EVIL MAIN PROGRAM'));

function phone(backing: FlashBacking) {
  const chip = new FlashChip({ backing, seed: 1 });
  const bus = new DeviceBus(chip, fuses, table, keystreamRng('se'), memoryNvm());
  bus.se.keepMeasurementWhileUnwritten();
  return { chip, bus, se: bus.se };
}
const served = (se: DeviceBus['se']) => parseResponse(se.transmit(encodeCommand({ ins: Ins.hsOpen, p1: Slot.deviceKey, data: hello }))).sw === SW.ok;
/** MAIN.EXE's first byte in the flash. */
function mainAt(chip: FlashChip): number {
  const { read } = arraySectors(chip.peek(free.offset, free.size));
  const e = listFat(read)!.find((x) => x.name === 'MAIN.EXE')!;
  const g = parseBootSector(read(0, 1)!).geometry!;
  return free.offset + (g.dataSector + (e.cluster - 2) * g.sectorsPerCluster) * 512;
}

test('MemoryBacking: the caller\'s init array is copied; a write into it changes no flash; a write through the backing gets no hello', () => {
  const init = image.slice();
  const mb = new MemoryBacking(init);
  const a = phone(mb);
  assert.ok(served(a.se), 'baseline');
  const at = mainAt(a.chip);
  const before = a.chip.peek(at, 512);
  init.set(evil, at);
  assert.equal(a.chip.peek(at, 512), before, 'the flash does not read the caller\'s array');
  assert.ok(served(a.se), 'the flash is unchanged: the kept measurement is the truth');
  assert.not.ok('bytes' in mb, 'no public byte array');
  // The failure path: the same rewrite through the backing moves the generation.
  mb.write(at, evil);
  assert.not.ok(served(a.se), 'MAIN.EXE rewritten through the backing: no hello');
});

test('CowBacking: the base is not exposed; a write through the backing moves the generation and gets no hello; a changed factory image (a new array) is measured and refused', () => {
  const base = image.slice();
  const a = phone(new CowBacking(base, 4096));
  assert.ok(served(a.se), 'baseline');
  assert.not.ok('base' in a.chip.backing, 'no public base');
  const at = mainAt(a.chip);
  a.chip.backing.write(at, evil);
  assert.not.ok(served(a.se), 'MAIN.EXE rewritten through the backing: no hello');
  const changed = base.slice();
  changed.set(evil, at);
  const c = phone(new CowBacking(changed, 4096));
  assert.not.ok(served(c.se), 'a changed factory image: no hello');
  const b = phone(new CowBacking(base, 4096));
  assert.ok(served(b.se), 'the factory image itself is still served');
});

test.run();
