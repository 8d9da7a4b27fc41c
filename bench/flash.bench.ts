// Flash benchmarks (docs/benchmarks.md §"Flash"): image build and inspect time for the
// default chip; model program/erase/read throughput (wall clock, and the virtual clock the
// datasheet timings charge); private memory per copy-on-write device after a boot that
// reads its zones and writes one record (target: <= 64 KiB).
// Run: npx tsx bench/flash.bench.ts
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { FlashChip, FlashStatus, W25Q64 } from '../firmware/flash/chip.ts';
import { CowBacking } from '../firmware/flash/backing.ts';
import { Fuses } from '../firmware/flash/fuses.ts';
import { DeviceBus } from '../firmware/flash/bus.ts';
import { parseTable, ZoneType } from '../firmware/zones/layout.ts';
import { readIsoFile, arrayBlocks } from '../firmware/zones/iso9660.ts';
import { readFatFile, writeFatFile, deleteFatFile, type ReadSectors, type WriteSectors } from '../firmware/zones/fat.ts';
import { SeClient } from '../firmware/secure/client.ts';
import { buildImage } from '../firmware/factory/image.ts';
import { inspectImage } from '../firmware/factory/inspect.ts';
import { MasterKeyring } from '../protocol/keys.ts';
import { TEST_VENDOR_KEY, TEST_VENDOR_PUB } from '../firmware/factory/test-vendor.ts';
import { makePhone } from '../firmware/phone.ts';
import { boot } from '../firmware/boot.ts';
import { Scheduler, SimNetwork, simRng } from '../firmware/hal/sim-hal.ts';
import { verifyManifestUncached } from '../firmware/boot-manifest.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const keyring = new MasterKeyring([[1, new Uint8Array(32).fill(1)]]);
const fuses = new Fuses(new Uint8Array(32).fill(2), new Uint8Array(8).fill(3), TEST_VENDOR_PUB);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const time = (n: number, f: () => void) => {
  const xs: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    f();
    xs.push(performance.now() - t);
  }
  return median(xs);
};
const row = (k: string, v: string) => console.log(`${k.padEnd(46)} ${v}`);

// 1. Image build and inspect (8 MiB W25Q64).
let image: Uint8Array = new Uint8Array(0);
row('image build (W25Q64, 8 MiB), median of 7', `${time(7, () => (image = buildImage({ vendorKey: TEST_VENDOR_KEY, serial: 'SN-0000001', fuses, keyring }).image)).toFixed(1)} ms`);
row('inspect, keyless, median of 7', `${time(7, () => inspectImage(image)).toFixed(1)} ms`);
row('inspect with fuses + secret scan, median of 7', `${time(7, () => inspectImage(image, { fuses })).toFixed(1)} ms`);

// 2. Model throughput.
{
  const chip = new FlashChip();
  const page = new Uint8Array(256).fill(0x5a);
  const MiB = 1024 * 1024;
  let t = performance.now();
  for (let a = 0; a < 8 * MiB; a += 4096) chip.eraseSector(a);
  let ms = performance.now() - t;
  row('erase 2048 sectors (8 MiB)', `${ms.toFixed(1)} ms wall = ${(8 / (ms / 1000)).toFixed(0)} MiB/s; virtual ${(chip.clock.nowUs / 1e6).toFixed(1)} s`);
  let v0 = chip.clock.nowUs;
  t = performance.now();
  for (let a = 0; a < 8 * MiB; a += 256) chip.program(a, page);
  ms = performance.now() - t;
  row('program 32768 pages (8 MiB)', `${ms.toFixed(1)} ms wall = ${(8 / (ms / 1000)).toFixed(0)} MiB/s; virtual ${((chip.clock.nowUs - v0) / 1e6).toFixed(1)} s`);
  v0 = chip.clock.nowUs;
  t = performance.now();
  for (let a = 0; a < 8 * MiB; a += 4096) chip.read(a, 4096);
  ms = performance.now() - t;
  row('read 4 KiB x 2048 (8 MiB)', `${ms.toFixed(1)} ms wall = ${(8 / (ms / 1000)).toFixed(0)} MiB/s; virtual ${((chip.clock.nowUs - v0) / 1e3).toFixed(0)} ms`);
  const cow = new FlashChip({ backing: new CowBacking(image) });
  t = performance.now();
  for (let a = 0; a < 8 * MiB; a += 4096) cow.read(a, 4096);
  ms = performance.now() - t;
  row('read 4 KiB x 2048 (8 MiB), copy-on-write', `${ms.toFixed(1)} ms wall = ${(8 / (ms / 1000)).toFixed(0)} MiB/s`);
}

// 3. A fleet of copy-on-write devices over one base: boot (read zones) + write one record.
{
  const p = parseTable(image);
  if (!p.ok) throw new Error('table');
  const N = 2000;
  const record = new TextEncoder().encode(JSON.stringify({ user: 'u-0000001', password: 'x'.repeat(43), server: 'ws://127.0.0.1:7500/biz-1' }));
  // Array-buffer memory is released after a GC, asynchronously: settle before measuring.
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 20));
  }
  const m0 = process.memoryUsage();
  const fleet: DeviceBus[] = [];
  const chips: FlashChip[] = [];
  const t = performance.now();
  for (let i = 0; i < N; i++) {
    const chip = new FlashChip({ backing: new CowBacking(image), seed: i + 1 });
    const bus = new DeviceBus(chip, fuses, p.table);
    const blocks = (lba: number, n: number) => {
      const r = bus.cdrom.readBlocks(lba, n);
      return r.status === FlashStatus.OK ? r.data : null;
    };
    const sectors = (lba: number, n: number) => {
      const r = bus.disk.readSectors(lba, n);
      return r.status === FlashStatus.OK ? r.data : null;
    };
    if (!readIsoFile(blocks, 'AUTORUN.INF') || !readIsoFile(blocks, 'UPMON.CFG') || !readFatFile(sectors, 'MAIN.CFG')) throw new Error('boot read failed');
    // The hidden zone through the secure controller, as the firmware reaches it.
    const se = new SeClient((a) => bus.se.transmit(a));
    if (!se.identity().ok) throw new Error('identity');
    if (!se.writeRecord(record).ok) throw new Error('write');
    fleet.push(bus);
    chips.push(chip);
  }
  const ms = performance.now() - t;
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 20));
  }
  const m1 = process.memoryUsage();
  const heap = m1.heapUsed - m0.heapUsed, bufs = m1.arrayBuffers - m0.arrayBuffers;
  const priv = chips.reduce((s, c) => s + c.backing.privateBytes, 0) / N;
  row(`fleet of ${N} CoW devices: boot + 1 record write`, `${(ms / N).toFixed(2)} ms/device`);
  row('  private flash bytes per device', `${(priv / 1024).toFixed(1)} KiB (changed sectors only)`);
  row('  JS heap per device (model objects)', `${(heap / N / 1024).toFixed(1)} KiB`);
  row('  array buffers per device (sector copies)', `${(bufs / N / 1024).toFixed(1)} KiB`);
  row('  total private state per device', `${((heap + bufs) / N / 1024).toFixed(1)} KiB (target <= 64 KiB)`);
  row('  shared base image', `${(image.length / 1024 / 1024).toFixed(0)} MiB once`);
  if (fleet.length !== N) throw new Error('fleet');
}

// 4. Exhaustive power cut of one record-store update: cost per cut point.
{
  const p = parseTable(image);
  if (!p.ok) throw new Error('table');
  const payload = new Uint8Array(700).fill(0x2a);
  const prep = new FlashChip({ backing: new CowBacking(image) });
  const pb = new DeviceBus(prep, fuses, p.table);
  new SeClient((a) => pb.se.transmit(a)).writeRecord(new Uint8Array(300).fill(1));
  const before = prep.peek(0, W25Q64.sizeBytes);
  let cuts = 0;
  const t = performance.now();
  for (let op = 0; op < 4; op++) {
    for (let torn = 0; torn < 256; torn++) {
      const chip = new FlashChip({ backing: new CowBacking(before) });
      const bus = new DeviceBus(chip, fuses, p.table);
      chip.faults.powerCutAfterOps = op;
      chip.faults.tornBytes = torn;
      new SeClient((a) => bus.se.transmit(a)).writeRecord(payload);
      bus.powerCycle();
      const back = new SeClient((a) => bus.se.transmit(a)).readRecord();
      if (!back.ok || !back.value) throw new Error('lost');
      cuts++;
      if (op === 0) break;
    }
  }
  const ms = performance.now() - t;
  row(`power cut + reboot + read, ${cuts} cut points`, `${ms.toFixed(0)} ms = ${((ms / cuts) * 1000).toFixed(0)} us per cut point`);
}

// 5. Host writes to the disk unit (free zone, FAT): what each costs the flash. Write
// amplification = flash bytes programmed + erased / bytes the host wrote (whole sectors).
{
  const p = parseTable(image);
  if (!p.ok) throw new Error('table');
  const te = new TextEncoder();
  const ops: [string, (r: ReadSectors, w: WriteSectors) => number][] = [
    ['create a 13-byte file', (r, w) => writeFatFile(r, w, 'NOTE.TXT', te.encode('hello, phone!'))],
    ['overwrite it (22 bytes)', (r, w) => writeFatFile(r, w, 'NOTE.TXT', te.encode('replaced by the host\r\n'))],
    ['create a 10 000-byte file', (r, w) => writeFatFile(r, w, 'PHOTO.JPG', new Uint8Array(10_000).fill(0x5a))],
    ['delete it', (r, w) => deleteFatFile(r, w, 'PHOTO.JPG')],
  ];
  const chip = new FlashChip({ backing: new CowBacking(image) });
  const bus = new DeviceBus(chip, fuses, p.table);
  const read: ReadSectors = (lba, n) => {
    const r = bus.disk.readSectors(lba, n);
    return r.status === FlashStatus.OK ? r.data : null;
  };
  let host = 0;
  const write: WriteSectors = (lba, d) => {
    host += d.length;
    return bus.disk.writeSectors(lba, d);
  };
  read(0, 1); // power-on work (journal scan) is not charged to the first write
  let totalHost = 0, totalFlash = 0;
  for (const [what, f] of ops) {
    const s0 = { ...chip.stats }, v0 = chip.clock.nowUs;
    host = 0;
    const t = performance.now();
    if (f(read, write) !== FlashStatus.OK) throw new Error(what);
    const ms = performance.now() - t;
    const erases = chip.stats.sectorErases - s0.sectorErases, programmed = chip.stats.programBytes - s0.programBytes;
    const flash = programmed + erases * W25Q64.sectorBytes;
    totalHost += host;
    totalFlash += flash;
    row(`host: ${what}`, `${host} B written by the host; ${erases} erases, ${programmed} B programmed; ${((chip.clock.nowUs - v0) / 1000).toFixed(0)} ms virtual, ${ms.toFixed(2)} ms wall; amplification ${(flash / host).toFixed(1)}x`);
  }
  row('host: the four together', `write amplification ${(totalFlash / totalHost).toFixed(1)}x (flash bytes programmed + erased per host byte)`);
}

// 4. The boot itself (S0.3) on a whole phone, wall time per plug-in: since issue 9 the signed
//    manifest (Ed25519 verify + SHA-256 of the 4 boot files) in boot(), and the secure
//    controller's own power-on measurement (the same again, through its read-only port).
{
  const N = 200;
  const sched = new Scheduler();
  const hal = { clock: sched.clock(), rng: simRng(1), net: new SimNetwork(sched).device('127.1.0.1'), host: { trace: () => {}, notice: () => {} } };
  const bootMs = time(N, () => {
    const ph = makePhone({ base: image, fuses, hal });
    if (!boot(ph.device).ok) throw new Error('boot failed');
  });
  row(`boot() on a fresh phone (signed manifest + chip measurement; verdict cached across the fleet), median of ${N}`, `${bootMs.toFixed(2)} ms`);
  const v = verifyBench(image);
  row('  of which one Ed25519 verify of BOOT.SIG, median of 200', `${v.toFixed(3)} ms (boot and chip: 2 per plug-in)`);
}

function verifyBench(img: Uint8Array): number {
  const p = parseTable(img);
  if (!p.ok) throw new Error('table');
  const vz = p.table.entries.find((e) => e.type === ZoneType.VIRTUAL)!;
  const sig = readIsoFile(arrayBlocks(img.subarray(vz.offset, vz.offset + vz.size)), 'BOOT.SIG')!;
  return time(200, () => {
    if (!verifyManifestUncached(sig, TEST_VENDOR_PUB).ok) throw new Error('verify');
  });
}
