import { bytesToHex } from '@noble/hashes/utils.js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { FlashChip, FlashStatus, W25Q64 } from '../flash/chip.ts';
import { CowBacking } from '../flash/backing.ts';
import { Fuses } from '../flash/fuses.ts';
import type { HiddenPort } from '../flash/hidden-port.ts';
import { parseTable, zoneOf, ZoneType } from './layout.ts';
import { readIdentity, openStore, RecordStore, HIDDEN_STORES, RECORD_MAX_PAYLOAD, classifySlot, storeKeyLabel, seal, open } from './hidden.ts';
import { buildImage } from '../factory/image.ts';
import fc from 'fast-check';
import { MasterKeyring, deriveDeviceKey, openSerialToken } from '../../protocol/keys.ts';
import { TEST_VENDOR_KEY, TEST_VENDOR_PUB } from '../factory/test-vendor.ts';

const master = new Uint8Array(32).fill(7);
const keyring = new MasterKeyring([[1, master]]);
const fuses = new Fuses(new Uint8Array(32).fill(0x11), Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8), TEST_VENDOR_PUB);
const { image } = buildImage({ vendorKey: TEST_VENDOR_KEY, serial: 'SN-0000001', fuses, keyring });
const parsed = parseTable(image);
if (!parsed.ok) throw new Error('bad table');
const table = parsed.table;
const te = new TextEncoder();
const hex = bytesToHex;

/**
 * The hidden zone as the secure controller reaches it (the bus builds the same port and gives it
 * to the controller only): these tests play the controller to check the zone's formats. The host
 * has no such port (firmware/flash/bus.test.ts, firmware/secure/element.test.ts).
 */
type ControllerPort = HiddenPort & { deriveKey(label: string): Uint8Array; uniqueId(): Uint8Array };
function controllerPort(chip: FlashChip, f: Fuses): ControllerPort {
  const z = zoneOf(table, ZoneType.HIDDEN);
  const inZone = (o: number, n: number) => Number.isSafeInteger(o) && Number.isSafeInteger(n) && o >= 0 && n >= 0 && o + n <= z.size;
  return {
    hiddenBytes: z.size,
    sectorBytes: chip.profile.sectorBytes,
    pageBytes: chip.profile.pageBytes,
    readHidden: (o, n) => (inZone(o, n) ? chip.read(z.offset + o, n) : { status: FlashStatus.ERR_RANGE, data: new Uint8Array(0) }),
    programHidden: (o, d) => (inZone(o, d.length) ? chip.program(z.offset + o, d) : FlashStatus.ERR_RANGE),
    eraseHiddenSector: (o) => (inZone(o, chip.profile.sectorBytes) ? chip.eraseSector(z.offset + o) : FlashStatus.ERR_RANGE),
    deriveKey: (label) => f.deriveKey(label),
    uniqueId: () => f.uniqueId(),
  };
}
function device(base: Uint8Array = image, f: Fuses = fuses, seed = 1) {
  const chip = new FlashChip({ backing: new CowBacking(base, 4096), seed });
  const port = controllerPort(chip, f);
  return { chip, port, bus: { powerCycle: () => chip.powerCycle() } };
}
const unlocked = (base: Uint8Array = image, seed = 1) => device(base, fuses, seed);
function store(port: ControllerPort): RecordStore {
  const s = openStore(port, 'login');
  assert.is(s.status, FlashStatus.OK);
  return s.store!;
}

test('identity (S0.1, S0.2, S0.4): the controller unseals it, and it matches the factory inputs', () => {
  const { port } = device();
  assert.is(port.readHidden(port.hiddenBytes - 1, 2).status, FlashStatus.ERR_RANGE);
  const r = readIdentity(port);
  assert.is(r.status, FlashStatus.OK);
  const id = r.identity!;
  assert.is(id.serial, 'SN-0000001');
  assert.is(id.keyVersion, 1);
  assert.is(hex(id.deviceKey), hex(deriveDeviceKey(master, 'SN-0000001')));
  assert.equal(openSerialToken(keyring, id.serialToken), { version: 1, serial: 'SN-0000001' });
  assert.is(hex(id.uniqueId), '0102030405060708');
});

test('a copied image is useless on another chip: the identity does not unseal without these fuses', () => {
  const other = new Fuses(new Uint8Array(32).fill(0x22), Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8), TEST_VENDOR_PUB);
  const { bus, port } = device(image, other);
  assert.is(readIdentity(port).status, FlashStatus.ERR_AUTH);
});

test('every single bit flip in the identity record is detected', () => {
  const hidden = zoneOf(table, ZoneType.HIDDEN).offset;
  const { chip, bus, port } = unlocked();
  const len = 12 + (image[hidden + 6]! | (image[hidden + 7]! << 8));
  let detected = 0;
  for (let i = 0; i < len; i++) {
    for (let bit = 0; bit < 8; bit++) {
      chip.flipBit(hidden + i, bit);
      const s = readIdentity(port).status;
      if (s !== FlashStatus.OK) detected++;
      chip.flipBit(hidden + i, bit); // flip back (backing write, not NOR)
    }
  }
  assert.is(detected, len * 8);
  assert.is(readIdentity(port).status, FlashStatus.OK);
});

test('record store: empty, write/read, sequence numbers, slot rotation, limits', () => {
  const { bus, port } = unlocked();
  const s = store(port);
  assert.equal(s.read(), { status: FlashStatus.ERR_EMPTY, payload: null, seq: 0 });
  for (let i = 1; i <= 6; i++) {
    assert.is(s.write(te.encode(`login ${i}`)), FlashStatus.OK);
    const r = s.read();
    assert.is(r.status, FlashStatus.OK);
    assert.is(new TextDecoder().decode(r.payload!), `login ${i}`);
    assert.is(r.seq, i);
  }
  const meta = s.slots();
  assert.equal(meta.slots.map((x) => x.seq), [5, 6, 3, 4]);
  assert.equal(meta.slots.map((x) => x.current), [false, true, false, false]);
  assert.ok(meta.slots.every((x) => x.state === 'valid'));
  assert.is(s.write(new Uint8Array(RECORD_MAX_PAYLOAD + 1)), FlashStatus.ERR_TOO_LARGE);
  assert.is(s.write('x' as unknown as Uint8Array), FlashStatus.ERR_ARG);
  const big = Uint8Array.from({ length: RECORD_MAX_PAYLOAD }, (_, i) => i & 0xff);
  assert.is(s.write(big), FlashStatus.OK);
  assert.equal(s.read().payload, big);
  assert.is(s.write(new Uint8Array(0)), FlashStatus.OK);
  assert.is(s.read().payload!.length, 0);
  // The stores are separate: a record in "login" is not visible in "secrets".
  const spare = openStore(port, 'secrets').store!;
  assert.is(spare.read().status, FlashStatus.ERR_EMPTY);
  // The payload is encrypted: it is not in the hidden zone in clear.
  const zone = port.readHidden(0, port.hiddenBytes).data;
  const needle = te.encode('login 6');
  assert.not.ok(zone.some((_, i) => needle.every((b, j) => zone[i + j] === b)));
});

test('record store: a worn slot is skipped; a flipped bit falls back to the previous record', () => {
  const { chip, bus, port } = unlocked();
  const s = store(port);
  s.write(te.encode('one'));
  const hiddenSector = zoneOf(table, ZoneType.HIDDEN).offset / 4096;
  chip.faults.earlyWear.set(hiddenSector + HIDDEN_STORES.login.firstSector + 1, 0); // slot 1 is worn out
  assert.is(s.write(te.encode('two')), FlashStatus.OK);
  assert.is(new TextDecoder().decode(s.read().payload!), 'two');
  assert.is(s.slots().slots.findIndex((x) => x.current), 2);
  // Bit rot in the current slot: the store falls back to the older record (never garbage).
  const cur = zoneOf(table, ZoneType.HIDDEN).offset + (HIDDEN_STORES.login.firstSector + 2) * 4096;
  chip.flipBit(cur + 50, 1);
  assert.is(new TextDecoder().decode(s.read().payload!), 'one');
  const st = s.slots().slots[2]!;
  assert.is(st.state, 'corrupt');
});

test('record store: a key from other fuses opens nothing', () => {
  const { bus, port } = unlocked();
  store(port).write(te.encode('secret login'));
  const foreign = new RecordStore(port, new Fuses(new Uint8Array(32).fill(9), new Uint8Array(8), TEST_VENDOR_PUB).deriveKey(storeKeyLabel('login')));
  assert.is(foreign.read().status, FlashStatus.ERR_EMPTY);
  assert.ok(foreign.slots().slots.some((x) => x.state === 'invalid'));
});

/**
 * The exhaustive power-cut test: for one record-store update, cut power before every
 * operation and after every byte of every program, and after each cut reboot and read.
 */
function exhaustive(priorWrites: number): { cuts: number; old: number; new: number } {
  const oldPayload = te.encode(`old login #${priorWrites}`.padEnd(300, '.'));
  const newPayload = te.encode('new login'.padEnd(700, '*'));
  // The state before the update, as a shared base image: each trial is a cheap CoW device.
  const prep = unlocked();
  const s0 = store(prep.port);
  for (let i = 1; i < priorWrites; i++) assert.is(s0.write(te.encode(`older ${i}`)), FlashStatus.OK);
  if (priorWrites > 0) assert.is(s0.write(oldPayload), FlashStatus.OK);
  const before = prep.chip.peek(0, W25Q64.sizeBytes);

  // Reference run: the operations one update performs.
  const ops: { kind: string; bytes: number }[] = [];
  const ref = unlocked(before);
  ref.chip.onOperation = (op) => ops.push(op);
  assert.is(store(ref.port).write(newPayload), FlashStatus.OK);
  assert.ok(ops.length >= 4, 'erase + several page programs');

  const counts = { cuts: 0, old: 0, new: 0 };
  const trial = (opIndex: number, torn: number, seed: number) => {
    const d = unlocked(before, seed);
    d.chip.faults.powerCutAfterOps = opIndex;
    d.chip.faults.tornBytes = torn;
    const st = store(d.port).write(newPayload);
    // Past the last operation the update completed; the power then goes anyway.
    assert.is(st, opIndex < ops.length ? FlashStatus.ERR_POWER_LOST : FlashStatus.OK, `cut at op ${opIndex} byte ${torn}`);
    d.chip.faults.clear();
    d.bus.powerCycle();
    const r = store(d.port).read();
    counts.cuts++;
    if (priorWrites === 0 && r.status === FlashStatus.ERR_EMPTY) {
      counts.old++;
    } else {
      assert.is(r.status, FlashStatus.OK, `nothing readable after cut at op ${opIndex} byte ${torn}`);
      const got = hex(r.payload!);
      if (got === hex(oldPayload)) counts.old++;
      else if (got === hex(newPayload)) counts.new++;
      else assert.unreachable(`garbage after cut at op ${opIndex} byte ${torn}`);
    }
    // And the device can always write again after the cut.
    const again = store(d.port);
    assert.is(again.write(te.encode('after')), FlashStatus.OK);
    assert.is(new TextDecoder().decode(again.read().payload!), 'after');
  };
  ops.forEach((op, i) => {
    if (op.kind === 'erase') for (let seed = 1; seed <= 4; seed++) trial(i, 0, seed);
    else for (let torn = 0; torn < op.bytes; torn++) trial(i, torn, 1);
  });
  trial(ops.length, 0, 1);
  return counts;
}

test('power cut, exhaustively, during a record-store update: old or new, never garbage, never nothing', () => {
  for (const prior of [1, 6, 0]) {
    const c = exhaustive(prior);
    console.log(`  power-cut (store with ${prior} prior writes): ${c.cuts} cut points tried -> ${c.old} old${prior === 0 ? '/empty' : ''}, ${c.new} new, 0 garbage`);
    assert.ok(c.cuts > 700);
    assert.is(c.old + c.new, c.cuts);
  }
});

test('property: any sequence of writes with power cuts at random points reads back the last completed write or the one cut', () => {
  const prep = unlocked();
  const base = prep.chip.peek(0, W25Q64.sizeBytes);
  fc.assert(
    fc.property(
      fc.array(fc.record({ len: fc.integer({ min: 0, max: 1500 }), cut: fc.option(fc.record({ ops: fc.integer({ min: 0, max: 8 }), torn: fc.integer({ min: 0, max: 255 }), seed: fc.integer({ min: 1, max: 1000 }) }), { nil: null }) }), { minLength: 1, maxLength: 12 }),
      (steps) => {
        const d = unlocked(base);
        let committed: string | null = null;
        steps.forEach((st, i) => {
          const payload = Uint8Array.from({ length: st.len }, (_, k) => (k * 31 + i) & 0xff);
          if (st.cut) {
            d.chip.faults.powerCutAfterOps = st.cut.ops;
            d.chip.faults.tornBytes = st.cut.torn;
          }
          const status = store(d.port).write(payload);
          d.chip.faults.clear();
          d.bus.powerCycle();
          const r = store(d.port).read();
          const got = r.payload ? hex(r.payload) : null;
          if (status === FlashStatus.OK) assert.is(got, hex(payload));
          else {
            assert.is(status, FlashStatus.ERR_POWER_LOST);
            assert.ok(got === committed || got === hex(payload), `step ${i}: neither old nor new`);
          }
          committed = got;
        });
      },
    ),
    { numRuns: 60, seed: 20240101 },
  );
});

test('property: read() (headers first, opens the best candidate) agrees with the full scan slots() marks current', () => {
  const prep = unlocked();
  const base = prep.chip.peek(0, W25Q64.sizeBytes);
  const slotBase = zoneOf(table, ZoneType.HIDDEN).offset + HIDDEN_STORES.login.firstSector * 4096;
  fc.assert(
    fc.property(
      fc.array(
        fc.record({
          len: fc.integer({ min: 0, max: 1500 }),
          cut: fc.option(fc.record({ ops: fc.integer({ min: 0, max: 8 }), torn: fc.integer({ min: 0, max: 255 }) }), { nil: null }),
          // Bit rot anywhere in a slot, header (sequence number, length, magic) included.
          flip: fc.option(fc.record({ slot: fc.integer({ min: 0, max: 3 }), at: fc.oneof(fc.integer({ min: 0, max: 15 }), fc.integer({ min: 16, max: 1600 })), bit: fc.integer({ min: 0, max: 7 }) }), { nil: null }),
        }),
        { minLength: 1, maxLength: 14 },
      ),
      (steps) => {
        const d = unlocked(base);
        steps.forEach((st, i) => {
          if (st.cut) {
            d.chip.faults.powerCutAfterOps = st.cut.ops;
            d.chip.faults.tornBytes = st.cut.torn;
          }
          store(d.port).write(Uint8Array.from({ length: st.len }, (_, k) => (k * 7 + i) & 0xff));
          d.chip.faults.clear();
          d.bus.powerCycle();
          if (st.flip) d.chip.flipBit(slotBase + st.flip.slot * 4096 + st.flip.at, st.flip.bit);
          const s = store(d.port);
          const r = s.read();
          const cur = s.slots().slots.find((x) => x.current);
          assert.is(r.status, cur ? FlashStatus.OK : FlashStatus.ERR_EMPTY, `step ${i}`);
          assert.is(r.seq, cur?.seq ?? 0, `step ${i}`);
          assert.is(r.payload?.length ?? null, cur ? cur.length : null, `step ${i}`);
        });
      },
    ),
    { numRuns: 80, seed: 20240102 },
  );
});

test('a store seals with subkeys it derives once: its records are byte for byte seal() under the store key, and open() opens them', () => {
  // Reference: the free seal()/open(), which derive the subkeys from the store key at every call.
  const { port } = unlocked();
  const s = store(port);
  const key = port.deriveKey(storeKeyLabel('login'));
  for (const [i, len] of [0, 1, 300, 1500].entries()) {
    const payload = Uint8Array.from({ length: len }, (_, k) => (k * 13 + i) & 0xff);
    assert.is(s.write(payload), FlashStatus.OK);
    const cur = s.slots().slots.find((x) => x.current)!;
    const rec = port.readHidden(cur.offset, 16 + 24 + len + 16).data;
    assert.is(hex(rec.subarray(16)), hex(seal(key, rec.subarray(0, 12), payload)), `record ${i}`);
    assert.is(hex(open(key, rec.subarray(0, 12), rec.subarray(16))!), hex(payload), `record ${i}`);
    assert.is(hex(store(port).read().payload!), hex(payload), `record ${i}`);
  }
});

test('slot classification names a torn write and where it was cut', () => {
  const { chip, bus, port } = unlocked();
  const s = store(port);
  s.write(te.encode('first'));
  chip.faults.powerCutAfterOps = 2; // erase, first page, then cut inside the second page program
  chip.faults.tornBytes = 10;
  assert.is(s.write(new Uint8Array(600).fill(0x41)), FlashStatus.ERR_POWER_LOST);
  bus.powerCycle();
  const meta = store(port).slots().slots;
  assert.is(meta[0]!.state, 'valid');
  assert.ok(meta[0]!.current);
  assert.is(meta[1]!.state, 'torn');
  assert.is(meta[1]!.problemOffset, meta[1]!.offset + 256 + 10);
  // Keyless view (the inspector without fuses): sealed / torn.
  const raw = port.readHidden(meta[0]!.offset, 4096).data;
  assert.is(classifySlot(raw, HIDDEN_STORES.login.id, null, 0, 0).state, 'sealed');
});

test.run();
