// The copy-on-write backing against the simple one (STYLE: keep the slow reference in the
// tests): the same random writes, partial fills and sector/block erases applied to a
// MemoryBacking holding a copy of the base and to a CowBacking over it read back the same,
// byte for byte, after every step; the base is never written; a device holds only the pages
// it changed, without their trailing 0xFF.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { CowBacking, MemoryBacking } from './backing.ts';
import { Xorshift32 } from './chip.ts';

const SIZE = 64 * 1024;

function baseImage(): Uint8Array {
  // Blank sectors, sectors full of data, and a sector half data half blank.
  const b = new Uint8Array(SIZE).fill(0xff);
  const r = new Xorshift32(7);
  for (let i = 0; i < 3 * 4096; i++) b[i] = r.next() & 0xff;
  for (let i = 8 * 4096; i < 8 * 4096 + 2048; i++) b[i] = r.next() & 0xff;
  return b;
}

for (const seed of [1, 2, 3, 4, 5, 6]) {
  test(`copy-on-write = a private copy, 400 random operations (seed ${seed}); base untouched`, () => {
    const base = baseImage();
    const snapshot = Uint8Array.from(base);
    const ref = new MemoryBacking(Uint8Array.from(base));
    const cow = new CowBacking(base, 4096, 256);
    const r = new Xorshift32(seed);
    for (let step = 0; step < 400; step++) {
      const kind = r.below(10);
      if (kind < 5) {
        const at = r.below(SIZE - 600);
        const data = Uint8Array.from({ length: 1 + r.below(600) }, () => (r.below(4) === 0 ? 0xff : r.next() & 0xff));
        ref.write(at, data);
        cow.write(at, data);
      } else if (kind < 7) {
        const at = r.below(SIZE - 5000);
        const len = r.below(5000);
        const v = r.below(2) ? 0xff : r.next() & 0xff;
        ref.fill(at, len, v);
        cow.fill(at, len, v);
      } else if (kind < 9) {
        const at = r.below(16) * 4096;
        ref.fill(at, 4096, 0xff);
        cow.fill(at, 4096, 0xff);
      } else {
        ref.fill(0, 65536, 0xff);
        cow.fill(0, 65536, 0xff);
      }
      const a = new Uint8Array(SIZE);
      const b = new Uint8Array(SIZE);
      ref.readInto(0, a);
      cow.readInto(0, b);
      if (!a.every((x, i) => x === b[i])) assert.unreachable(`views differ after step ${step} (kind ${kind})`);
      // A read across page and sector edges stitches the same bytes.
      const at = r.below(SIZE - 9000);
      const part = new Uint8Array(1 + r.below(9000));
      cow.readInto(at, part);
      assert.equal(part, a.subarray(at, at + part.length));
      assert.ok(cow.privateBytes <= cow.changedPages().length * 256);
    }
    assert.equal(base, snapshot);
  });
}

test('a device keeps only the pages it changed, without their trailing 0xFF; a page back to its reference is dropped', () => {
  const base = baseImage();
  const cow = new CowBacking(base, 4096, 256);
  // A 100-byte record programmed into a blank page costs 100 bytes.
  cow.write(5 * 4096 + 512, new Uint8Array(100).fill(0x11));
  assert.is(cow.privateBytes, 100);
  assert.equal(cow.changedPages(), [(5 * 4096 + 512) / 256]);
  assert.equal(cow.changedSectors(), [5]);
  // Erasing a blank sector again changes nothing: the page goes, no mark stays.
  cow.fill(5 * 4096, 4096, 0xff);
  assert.is(cow.privateBytes, 0);
  assert.equal(cow.changedSectors(), []);
  // Erasing a sector of data: a mark, no page; it reads 0xFF, the next sector still the base.
  cow.fill(0, 4096, 0xff);
  assert.is(cow.privateBytes, 0);
  assert.equal(cow.changedSectors(), [0]);
  const out = new Uint8Array(8192);
  cow.readInto(0, out);
  assert.ok(out.subarray(0, 4096).every((x) => x === 0xff));
  assert.equal(out.subarray(4096), base.subarray(4096, 8192));
  // One byte changed in a page of data keeps the whole page (its tail is not 0xFF).
  cow.write(4096 + 3, Uint8Array.of(0));
  assert.is(cow.privateBytes, 256);
  // Written back to the base's byte: dropped again.
  cow.write(4096 + 3, base.subarray(4096 + 3, 4096 + 4));
  assert.is(cow.privateBytes, 0);
  assert.equal(cow.changedSectors(), [0]);
  cow.reset();
  assert.equal(cow.changedSectors(), []);
});

test('bad construction throws: not bytes, size not a multiple of the sector, sector not a multiple of the page', () => {
  assert.throws(() => new CowBacking([1, 2] as unknown as Uint8Array), TypeError);
  assert.throws(() => new CowBacking(new Uint8Array(5000), 4096), RangeError);
  assert.throws(() => new CowBacking(new Uint8Array(8192), 4096, 300), RangeError);
});

test.run();
