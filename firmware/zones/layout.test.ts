import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseTable, encodeTable, defaultLayout, readTable, writeTable, ZoneType, tableBytes, type PartitionTable } from './layout.ts';
import { FlashChip, FlashStatus, W25Q64 } from '../flash/chip.ts';

const t = defaultLayout(W25Q64);

test('default layout: block-aligned zones that tile the chip after block 0', () => {
  assert.equal(t.entries.map((e) => [e.type, e.offset, e.size]), [
    [ZoneType.HIDDEN, 0x10000, 0x10000],
    [ZoneType.VIRTUAL, 0x20000, 0x100000],
    [ZoneType.FREE, 0x120000, 0x6e0000],
  ]);
  const small = defaultLayout({ ...W25Q64, sizeBytes: 1024 * 1024 });
  assert.is(small.entries[1]!.size, 128 * 1024);
  assert.throws(() => defaultLayout({ ...W25Q64, sizeBytes: 256 * 1024 }), RangeError);
});

test('encode/parse round trip, golden header bytes', () => {
  const b = encodeTable(t);
  assert.is(b.length, tableBytes(3));
  assert.equal([...b.subarray(0, 16)], [0x55, 0x50, 0x50, 0x54, 1, 0, 3, 0, 24, 0, 16, 0, 0, 0, 0x80, 0]);
  const p = parseTable(b);
  assert.ok(p.ok && p.crcOk);
  if (p.ok) assert.equal(p.table, t);
});

test('every single-bit flip in the table is caught (structure or CRC)', () => {
  const b = encodeTable(t);
  for (let i = 0; i < b.length; i++) {
    for (let bit = 0; bit < 8; bit++) {
      const bad = Uint8Array.from(b);
      bad[i]! ^= 1 << bit;
      const p = parseTable(bad);
      assert.ok(!p.ok || !p.crcOk, `flip at ${i}.${bit} not caught`);
    }
  }
});

test('structural faults give a code, a message and an offset', () => {
  const mutate = (f: (x: PartitionTable) => void) => {
    const x = structuredClone(t);
    f(x);
    const b = new Uint8Array(tableBytes(x.entries.length));
    // Encode without encodeTable's own validation.
    const dv = new DataView(b.buffer);
    b.set([0x55, 0x50, 0x50, 0x54]);
    dv.setUint16(4, x.version, true);
    dv.setUint16(6, x.entries.length, true);
    dv.setUint16(8, 24, true);
    b[10] = Math.log2(x.blockBytes);
    dv.setUint32(12, x.chipBytes, true);
    x.entries.forEach((e, i) => {
      const o = 16 + i * 24;
      b[o] = e.type;
      b[o + 1] = e.flags;
      dv.setUint32(o + 4, e.offset, true);
      dv.setUint32(o + 8, e.size, true);
      dv.setUint32(o + 12, e.usedBytes, true);
    });
    return parseTable(b);
  };
  const expect = (p: ReturnType<typeof parseTable>, code: string) => {
    assert.not.ok(p.ok);
    if (!p.ok) assert.is(p.code, code, p.message);
  };
  expect(mutate((x) => (x.entries[1]!.offset = x.entries[0]!.offset)), 'LAYOUT_ZONE_OVERLAP');
  expect(mutate((x) => (x.entries[2]!.size += 0x10000)), 'LAYOUT_ZONE_RANGE');
  expect(mutate((x) => (x.entries[2]!.offset = 0xfff0000)), 'LAYOUT_ZONE_RANGE');
  expect(mutate((x) => (x.entries[0]!.offset = 0)), 'LAYOUT_ZONE_OVERLAP');
  expect(mutate((x) => (x.entries[0]!.offset = 0x10100)), 'LAYOUT_BAD_ZONE');
  expect(mutate((x) => (x.entries[0]!.type = 9)), 'LAYOUT_BAD_ZONE');
  expect(mutate((x) => (x.entries[1]!.type = ZoneType.HIDDEN)), 'LAYOUT_BAD_ZONE');
  expect(mutate((x) => (x.chipBytes = 2 ** 31)), 'LAYOUT_BAD_SIZE');
  expect(mutate((x) => (x.version = 7)), 'LAYOUT_BAD_VERSION');
  expect(mutate((x) => x.entries.pop()), 'LAYOUT_BAD_ZONE');
  expect(parseTable(new Uint8Array(100)), 'LAYOUT_BAD_MAGIC');
  expect(parseTable(encodeTable(t).subarray(0, 30)), 'LAYOUT_TRUNCATED');
  expect(parseTable(encodeTable(t), 1024 * 1024), 'LAYOUT_BAD_SIZE');
});

test('writeTable/readTable through a chip; a damaged table reads as ERR_FORMAT', () => {
  const chip = new FlashChip();
  assert.is(writeTable(chip, t), FlashStatus.OK);
  const r = readTable((a, l) => chip.read(a, l), chip.sizeBytes);
  assert.is(r.status, FlashStatus.OK);
  assert.equal(r.table, t);
  chip.flipBit(20, 0);
  assert.is(readTable((a, l) => chip.read(a, l)).status, FlashStatus.ERR_FORMAT);
});

test.run();
