import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { FlashChip, FlashStatus, W25Q64, validateProfile, statusName, type ChipProfile } from './chip.ts';
import { CowBacking, MemoryBacking } from './backing.ts';

const small: ChipProfile = { ...W25Q64, name: 'test-64k', sizeBytes: 64 * 1024, blockBytes: 16 * 1024 };

/** The reference NOR model the chip must agree with: a plain array and AND. */
class RefNor {
  bytes: Uint8Array;
  constructor(n: number) {
    this.bytes = new Uint8Array(n).fill(0xff);
  }
  program(addr: number, data: Uint8Array) {
    for (let i = 0; i < data.length; i++) this.bytes[addr + i]! &= data[i]!;
  }
  erase(addr: number, size: number) {
    this.bytes.fill(0xff, addr, addr + size);
  }
}

test('fresh chip reads erased (0xFF) everywhere', () => {
  const chip = new FlashChip({ profile: small });
  const r = chip.read(0, small.sizeBytes);
  assert.is(r.status, FlashStatus.OK);
  assert.ok(r.data.every((b) => b === 0xff));
});

test('program can only clear bits: new = old AND data', () => {
  const chip = new FlashChip({ profile: small });
  assert.is(chip.program(0, Uint8Array.of(0x0f, 0xf0, 0xaa)), FlashStatus.OK);
  assert.is(chip.program(0, Uint8Array.of(0xf0, 0xff, 0x55)), FlashStatus.OK);
  assert.equal([...chip.peek(0, 3)], [0x00, 0xf0, 0x00]);
  // Trying to set bits back to 1 has no effect.
  assert.is(chip.program(1, Uint8Array.of(0xff)), FlashStatus.OK);
  assert.is(chip.peek(1, 1)[0], 0xf0);
});

test('erase sets an aligned sector/block to 0xFF and nothing else', () => {
  const chip = new FlashChip({ profile: small });
  for (let a = 0; a < small.sizeBytes; a += 256) chip.program(a, new Uint8Array(256));
  assert.is(chip.eraseSector(4096), FlashStatus.OK);
  assert.ok(chip.peek(4096, 4096).every((b) => b === 0xff));
  assert.ok(chip.peek(0, 4096).every((b) => b === 0) && chip.peek(8192, 4096).every((b) => b === 0));
  assert.is(chip.eraseBlock(16384), FlashStatus.OK);
  assert.ok(chip.peek(16384, 16384).every((b) => b === 0xff));
  assert.ok(chip.peek(32768, 1).every((b) => b === 0));
});

test('misaligned erase and out-of-range operations fail with a status, never throw', () => {
  const chip = new FlashChip({ profile: small });
  assert.is(chip.eraseSector(100), FlashStatus.ERR_ALIGN);
  assert.is(chip.eraseBlock(4096), FlashStatus.ERR_ALIGN);
  assert.is(chip.eraseSector(small.sizeBytes), FlashStatus.ERR_RANGE);
  assert.is(chip.read(small.sizeBytes - 1, 2).status, FlashStatus.ERR_RANGE);
  assert.is(chip.program(small.sizeBytes - 1, Uint8Array.of(0, 0)), FlashStatus.ERR_RANGE);
  // Hostile arguments: the model answers with a status.
  const hostile: unknown[] = [-1, 1.5, NaN, Infinity, '0', null, undefined, 2 ** 60, {}];
  for (const h of hostile) {
    assert.is(chip.read(h as number, 1).status, FlashStatus.ERR_ARG, `read ${String(h)}`);
    assert.is(chip.read(0, h as number).status, FlashStatus.ERR_ARG);
    assert.is(chip.program(h as number, Uint8Array.of(1)), FlashStatus.ERR_ARG);
    assert.is(chip.eraseSector(h as number), FlashStatus.ERR_ARG);
    assert.is(chip.eraseBlock(h as number), FlashStatus.ERR_ARG);
  }
  assert.is(chip.program(0, [1, 2] as unknown as Uint8Array), FlashStatus.ERR_ARG);
  assert.ok(chip.stats.refused > 0);
  assert.is(statusName(FlashStatus.ERR_ALIGN), 'ERR_ALIGN');
});

test("page crossing: 'refuse' writes nothing; 'wrap' wraps inside the page like the real part", () => {
  const refuse = new FlashChip({ profile: small });
  assert.is(refuse.program(250, new Uint8Array(10)), FlashStatus.ERR_PAGE_CROSS);
  assert.ok(refuse.peek(0, 512).every((b) => b === 0xff));
  assert.is(refuse.program(0, new Uint8Array(257)), FlashStatus.ERR_PAGE_CROSS);
  assert.is(refuse.program(0, new Uint8Array(256)), FlashStatus.OK);

  const wrap = new FlashChip({ profile: { ...small, pageCrossing: 'wrap' } });
  const data = Uint8Array.from({ length: 10 }, (_, i) => i);
  assert.is(wrap.program(250, data), FlashStatus.OK);
  assert.equal([...wrap.peek(250, 6)], [0, 1, 2, 3, 4, 5]);
  assert.equal([...wrap.peek(0, 4)], [6, 7, 8, 9]); // wrapped to the start of page 0
  assert.ok(wrap.peek(256, 4).every((b) => b === 0xff)); // next page untouched
  // More than a page: only the last pageBytes bytes are kept (the page buffer wraps).
  const big = Uint8Array.from({ length: 300 }, (_, i) => i & 0xff);
  const w2 = new FlashChip({ profile: { ...small, pageCrossing: 'wrap' } });
  assert.is(w2.program(512, big), FlashStatus.OK);
  assert.is(w2.peek(512, 1)[0], 256 & 0xff); // byte 256 overwrote byte 0 in the buffer
  assert.is(w2.peek(512 + 43, 1)[0], 299 & 0xff);
  assert.is(w2.peek(512 + 44, 1)[0], 44);
});

test('endurance: after the limit, erase and program of that sector fail with ERR_WORN', () => {
  const chip = new FlashChip({ profile: { ...small, enduranceCycles: 5 } });
  for (let i = 0; i < 5; i++) assert.is(chip.eraseSector(0), FlashStatus.OK);
  assert.is(chip.eraseCount(0), 5);
  assert.is(chip.eraseSector(0), FlashStatus.ERR_WORN);
  assert.is(chip.program(10, Uint8Array.of(0)), FlashStatus.ERR_WORN);
  assert.is(chip.eraseSector(4096), FlashStatus.OK); // other sectors unaffected
  assert.is(chip.eraseBlock(0), FlashStatus.ERR_WORN); // a block holding a worn sector
  // A sector that wears out early (fault injection).
  chip.faults.earlyWear.set(3, 1);
  assert.is(chip.eraseSector(3 * 4096), FlashStatus.OK);
  assert.is(chip.eraseSector(3 * 4096), FlashStatus.ERR_WORN);
  assert.is(chip.eraseCounts()[3], 1);
});

test('block erase counts one cycle on each of its sectors', () => {
  const chip = new FlashChip({ profile: small });
  chip.eraseBlock(16384);
  for (let s = 4; s < 8; s++) assert.is(chip.eraseCount(s), 1);
  assert.is(chip.eraseCount(3), 0);
  const counts = chip.eraseCounts();
  const other = new FlashChip({ profile: small });
  other.loadEraseCounts(counts);
  assert.is(other.eraseCount(5), 1);
});

test('datasheet timings are charged to the virtual clock (typical and max)', () => {
  const t = W25Q64.timings;
  const chip = new FlashChip({ profile: small });
  chip.eraseSector(0);
  assert.is(chip.clock.nowUs, t.commandUs.typ + t.sectorEraseUs.typ);
  const t0 = chip.clock.nowUs;
  chip.program(0, new Uint8Array(256));
  const prog = Math.min(t.pageProgramUs.typ, t.byteProgramFirstUs.typ + 255 * t.byteProgramNextUs.typ);
  assert.ok(Math.abs(chip.clock.nowUs - t0 - (t.commandUs.typ + 256 * t.transferUsPerByte.typ + prog)) < 1e-6);
  const t1 = chip.clock.nowUs;
  chip.program(256, Uint8Array.of(0));
  assert.ok(Math.abs(chip.clock.nowUs - t1 - (t.commandUs.typ + t.transferUsPerByte.typ + t.byteProgramFirstUs.typ)) < 1e-6);
  const t2 = chip.clock.nowUs;
  chip.read(0, 1000);
  assert.ok(Math.abs(chip.clock.nowUs - t2 - (t.commandUs.typ + 1000 * t.transferUsPerByte.typ)) < 1e-6);
  const slow = new FlashChip({ profile: small, timing: 'max' });
  slow.eraseBlock(0);
  assert.is(slow.clock.nowUs, t.commandUs.max + t.blockEraseUs.max);
  // Refused operations cost nothing.
  const t3 = chip.clock.nowUs;
  chip.eraseSector(1);
  assert.is(chip.clock.nowUs, t3);
});

test('random operations agree with the reference NOR model', () => {
  const chip = new FlashChip({ profile: small });
  const ref = new RefNor(small.sizeBytes);
  let s = 12345;
  const rnd = (n: number) => ((s = (s * 1103515245 + 12345) >>> 0) >>> 8) % n;
  for (let i = 0; i < 3000; i++) {
    const k = rnd(10);
    if (k === 0) {
      const a = rnd(16) * 4096;
      assert.is(chip.eraseSector(a), FlashStatus.OK);
      ref.erase(a, 4096);
    } else {
      const page = rnd(256) * 256;
      const off = rnd(256);
      const len = 1 + rnd(256 - off);
      const data = Uint8Array.from({ length: len }, () => rnd(256));
      assert.is(chip.program(page + off, data), FlashStatus.OK);
      ref.program(page + off, data);
    }
  }
  assert.equal(chip.peek(0, small.sizeBytes), ref.bytes);
});

test('power cut after N ops: the torn program leaves a prefix; everything fails until powerCycle', () => {
  const chip = new FlashChip({ profile: small });
  chip.faults.powerCutAfterOps = 1;
  chip.faults.tornBytes = 3;
  assert.is(chip.program(0, Uint8Array.of(1, 2)), FlashStatus.OK);
  assert.is(chip.program(256, Uint8Array.of(1, 2, 3, 4, 5, 6)), FlashStatus.ERR_POWER_LOST);
  assert.equal([...chip.peek(256, 6)], [1, 2, 3, 0xff, 0xff, 0xff]);
  assert.is(chip.read(0, 1).status, FlashStatus.ERR_POWER_LOST);
  assert.is(chip.eraseSector(0), FlashStatus.ERR_POWER_LOST);
  assert.ok(chip.powerLost);
  chip.powerCycle();
  assert.is(chip.read(0, 2).status, FlashStatus.OK);
  assert.is(chip.faults.cuts, 1);
});

test('power cut after N bytes tears the program that crosses the budget', () => {
  const chip = new FlashChip({ profile: small });
  chip.faults.powerCutAfterBytes = 5;
  assert.is(chip.program(0, new Uint8Array(3)), FlashStatus.OK);
  assert.is(chip.program(256, new Uint8Array(4)), FlashStatus.ERR_POWER_LOST);
  assert.equal([...chip.peek(256, 4)], [0, 0, 0xff, 0xff]);
});

test('an interrupted erase leaves the sector neither erased nor intact', () => {
  for (let seed = 1; seed < 20; seed++) {
    const chip = new FlashChip({ profile: small, seed });
    const data = Uint8Array.from({ length: 256 }, (_, i) => i & 0x7f);
    for (let p = 0; p < 16; p++) chip.program(4096 + p * 256, data);
    const before = chip.peek(4096, 4096);
    chip.faults.powerCutAfterOps = 0;
    assert.is(chip.eraseSector(4096), FlashStatus.ERR_POWER_LOST);
    const after = chip.peek(4096, 4096);
    assert.not.equal(after, before, 'not intact');
    assert.ok(!after.every((b) => b === 0xff), 'not erased');
    // Erase only moves bits towards 1.
    for (let i = 0; i < 4096; i++) assert.is(after[i]! & before[i]!, before[i]!);
    assert.is(chip.eraseCount(1), 0);
  }
});

test('bit flips: a stored flip persists; transient read flips are seeded and counted', () => {
  const chip = new FlashChip({ profile: small, seed: 7 });
  chip.program(0, Uint8Array.of(0x00));
  chip.flipBit(0, 3);
  assert.is(chip.read(0, 1).data[0], 0x08);
  chip.faults.readFlipProbability = 1;
  const r = chip.read(4096, 64);
  assert.is(r.data.filter((b) => b !== 0xff).length, 1);
  assert.ok(chip.peek(4096, 64).every((b) => b === 0xff), 'transient flip does not change storage');
  assert.is(chip.faults.readFlips, 1);
});

test('construction refuses impossible geometry', () => {
  assert.throws(() => validateProfile({ ...W25Q64, pageBytes: 300 }), /power of two/);
  assert.throws(() => validateProfile({ ...W25Q64, sectorBytes: 128 }), /sectorBytes < pageBytes/);
  assert.throws(() => validateProfile({ ...W25Q64, sizeBytes: 65536 * 3 + 4096 }), /multiple/);
  assert.throws(() => validateProfile({ ...W25Q64, erasedValue: 0 }), /0xFF/);
  assert.throws(() => new FlashChip({ profile: small, backing: new MemoryBacking(1024) }), /backing/);
});

test('copy-on-write: two devices over one base never see each other; the base is untouched', () => {
  const base = new Uint8Array(small.sizeBytes).fill(0xff);
  base.fill(0x5a, 0, 8192);
  const snapshot = Uint8Array.from(base);
  const a = new FlashChip({ profile: small, backing: new CowBacking(base, 4096) });
  const b = new FlashChip({ profile: small, backing: new CowBacking(base, 4096) });
  assert.is(a.eraseSector(0), FlashStatus.OK);
  assert.is(a.program(10, Uint8Array.of(1, 2, 3)), FlashStatus.OK);
  assert.is(b.program(10, Uint8Array.of(0x10)), FlashStatus.OK);
  assert.equal([...a.peek(10, 3)], [1, 2, 3]);
  assert.equal([...b.peek(10, 3)], [0x10, 0x5a, 0x5a]);
  assert.is(a.read(4096, 1).data[0], 0x5a);
  assert.equal(base, snapshot);
  // a holds the one page it programmed (13 bytes, its 0xFF tail left out) and an erase mark.
  assert.is((a.backing as CowBacking).privateBytes, 13);
  assert.equal((a.backing as CowBacking).changedSectors(), [0]);
  assert.equal((b.backing as CowBacking).changedSectors(), [0]);
  // A read spanning private and shared sectors stitches them together.
  const r = a.read(4090, 12).data;
  assert.equal([...r], [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a]);
});

test.run();
