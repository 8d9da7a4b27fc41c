// Exhaustive power cuts during host writes to the phone's disk (the free zone, FAT): every
// mutating flash operation of each host operation is cut in turn (a cut erase leaves the
// sector half-erased, a cut program lands a torn prefix), the phone is re-powered, and then
// MAIN.EXE must read back byte-identical, the volume must mount, every file the operation
// did not touch must read back as it was, and fsck.fat -n on what the host then sees must
// name none of them. SLOW=1 adds torn-program variants and more operations.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FlashChip, FlashStatus } from '../flash/chip.ts';
import { CowBacking } from '../flash/backing.ts';
import { Fuses } from '../flash/fuses.ts';
import { DeviceBus } from '../flash/bus.ts';
import { parseTable } from './layout.ts';
import { readFatFile, writeFatFile, deleteFatFile, listFat } from './fat.ts';
import { diskIo, hostDiskImage, fsckFat } from '../host/disk-check.ts';
import { buildImage } from '../factory/image.ts';
import { MasterKeyring } from '../../protocol/keys.ts';
import { TEST_VENDOR_KEY, TEST_VENDOR_PUB } from '../factory/test-vendor.ts';

const SLOW = !!process.env.SLOW;
const fuses = new Fuses(new Uint8Array(32).fill(3), new Uint8Array(8).fill(4), TEST_VENDOR_PUB);
const { image } = buildImage({ vendorKey: TEST_VENDOR_KEY, serial: 'SN-42', fuses, keyring: new MasterKeyring([[1, new Uint8Array(32).fill(1)]]) });
const p = parseTable(image);
if (!p.ok) throw new Error('table');
const table = p.table;
const te = new TextEncoder();

function device(base: Uint8Array = image) {
  const chip = new FlashChip({ backing: new CowBacking(base) });
  const bus = new DeviceBus(chip, fuses, table);
  return { chip, bus, ...diskIo(bus.disk) };
}
type Dev = ReturnType<typeof device>;

/** The host's view of the whole disk (what a host would image). */
function hostImage(d: Dev): Uint8Array {
  const r = hostDiskImage(d.bus.disk);
  assert.ok(r.ok, r.ok ? '' : `disk read at LBA ${r.lba}: status ${r.status}`);
  return r.ok ? r.image : new Uint8Array(0);
}

const fresh = device();
const before = new Map(listFat(fresh.read)!.map((e) => [e.name, readFatFile(fresh.read, e.name)!]));
const MAIN = before.get('MAIN.EXE')!;
assert.ok(MAIN && MAIN.length > 0);

interface Op {
  name: string;
  /** Files the operation may change or remove. */
  touches: string[];
  /** Sets the disk up (uncut) before the operation. */
  setup?: (d: Dev) => void;
  run: (d: Dev) => number;
}
const small = te.encode('hello, phone!'); // 13 bytes
const ops: Op[] = [
  { name: 'create a 13-byte file', touches: ['NOTE.TXT'], run: (d) => writeFatFile(d.read, d.write, 'NOTE.TXT', small) },
  { name: 'overwrite README.TXT', touches: ['README.TXT'], run: (d) => writeFatFile(d.read, d.write, 'README.TXT', te.encode('replaced by the host\r\n')) },
  { name: 'delete README.TXT', touches: ['README.TXT'], run: (d) => deleteFatFile(d.read, d.write, 'README.TXT') },
  { name: 'create a 10 000-byte file', touches: ['PHOTO.JPG'], run: (d) => writeFatFile(d.read, d.write, 'PHOTO.JPG', Uint8Array.from({ length: 10_000 }, (_, i) => (i * 31) & 0xff)) },
];
if (SLOW) {
  ops.push(
    { name: 'grow a host file (overwrite, longer)', touches: ['NOTE.TXT'], setup: (d) => void writeFatFile(d.read, d.write, 'NOTE.TXT', small), run: (d) => writeFatFile(d.read, d.write, 'NOTE.TXT', new Uint8Array(9000).fill(0x41)) },
    { name: 'create the 17th file (second root-directory sector)', touches: ['F16.TXT'], setup: (d) => { for (let i = 0; i < 12; i++) writeFatFile(d.read, d.write, `F${i}.TXT`, small); }, run: (d) => writeFatFile(d.read, d.write, 'F16.TXT', small) },
  );
}

/** Number of mutating flash operations an operation makes when nothing is cut. */
function opCount(op: Op, base: Uint8Array): number {
  const d = device(base);
  let n = 0;
  d.chip.onOperation = () => n++;
  assert.is(op.run(d), FlashStatus.OK, op.name);
  return n;
}

function withDir<T>(f: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'cuts-'));
  try {
    return f(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

interface Outcome {
  cuts: number;
  mainLost: number;
  unmountable: number;
  untouchedDamaged: number;
  fsckNamesUntouched: number;
  failures: string[];
}

function runCuts(op: Op, tornBytes: number, dir: string, fsck: boolean): Outcome {
  const setupDev = device();
  op.setup?.(setupDev);
  const base = setupDev.chip.peek(0, image.length);
  const pre = new Map(listFat(setupDev.read)!.map((e) => [e.name, readFatFile(setupDev.read, e.name)!]));
  const untouched = [...pre.keys()].filter((n) => !op.touches.includes(n));
  const n = opCount(op, base);
  const o: Outcome = { cuts: n, mainLost: 0, unmountable: 0, untouchedDamaged: 0, fsckNamesUntouched: 0, failures: [] };
  for (let k = 0; k < n; k++) {
    const d = device(base);
    d.chip.faults.powerCutAfterOps = k;
    d.chip.faults.tornBytes = tornBytes;
    const st = op.run(d);
    const at = `${op.name}, cut at operation ${k + 1}/${n} (torn ${tornBytes})`;
    assert.is(st, FlashStatus.ERR_POWER_LOST, at);
    d.bus.powerCycle();
    const main = readFatFile(d.read, 'MAIN.EXE');
    if (!main || main.length !== MAIN.length || main.some((b, i) => b !== MAIN[i])) {
      o.mainLost++;
      o.failures.push(`${at}: MAIN.EXE ${main ? 'differs' : 'unreadable'}`);
    }
    if (!listFat(d.read)) {
      o.unmountable++;
      o.failures.push(`${at}: the volume does not mount`);
      continue;
    }
    for (const name of untouched) {
      const b = readFatFile(d.read, name), want = pre.get(name)!;
      if (!b || b.length !== want.length || b.some((x, i) => x !== want[i])) {
        o.untouchedDamaged++;
        o.failures.push(`${at}: untouched ${name} ${b ? 'differs' : 'unreadable'}`);
      }
    }
    if (fsck) {
      const f = fsckFat(hostImage(d), dir, untouched);
      if (!f.ok) {
        o.fsckNamesUntouched++;
        o.failures.push(`${at}: fsck.fat -n (exit ${f.exit}) names ${f.named.join(', ') || 'nothing'}:\n${f.output}`);
      }
    }
  }
  return o;
}

const tornVariants = SLOW ? [0, 5, 200] : [0];
for (const op of ops) {
  test(`power cut at every flash operation of "${op.name}": MAIN.EXE and every untouched file survive, the volume mounts, fsck.fat names no untouched file`, () => {
    withDir((dir) => {
      for (const torn of tornVariants) {
        const o = runCuts(op, torn, dir, torn === 0 || SLOW);
        assert.ok(o.cuts > 0);
        assert.equal(o.failures.slice(0, 5), [], `${o.mainLost} of ${o.cuts} cut points lose MAIN.EXE, ${o.unmountable} leave no volume, ${o.untouchedDamaged} damage an untouched file, ${o.fsckNamesUntouched} fsck findings`);
      }
    });
  });
}

test.run();
