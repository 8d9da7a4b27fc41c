// Exhaustive power-cut search over every flash write path (issue 14; littlefs's power-loss
// runner, the Zephyr flash simulator's max_write_calls): for each scenario that writes flash,
// count the mutating flash operations N of an uncut run, then for k = 0..N-1 cut the power at
// operation k (chip.faults.powerCutAfterOps: a cut erase leaves the sector half-erased, a cut
// program lands nothing) and, for every program, once more in its middle (powerCutAfterBytes:
// a torn page), each time on a fresh phone brought to the same state before the write. After
// each cut the phone is replugged and the per-zone invariants are checked:
//   hidden   each record store holds the record it held before or a newer one the firmware
//            wrote whole (it authenticates under the store's fuse key, which only the chip
//            holds, and decodes as that store's record), never none, never an older one; and
//            the controller's rollback counter is not ahead of it (else the chip would refuse
//            its own record as a rollback);
//   virtual  byte-identical to before (the CD-ROM is never written);
//   free     for a phone's own writes, byte-identical; for a host's writes to the disk unit,
//            every file the write did not touch (MAIN.EXE first) reads back as it was, the
//            volume mounts, and `fsck.fat -n` names none of them;
//   login    the phone then logs in (a plug-in that does not end within the bound is a hang).
// An uncut run is checked the same way (its "op" is -1). Each failure names the operation
// index, so `searchPowerCuts(s, { only: [k] })` replays it. After a cut, what the next
// power-on writes to recover (the disk controller finishing a committed rewrite, the boot
// registering again or rotating) is counted, and each distinct recovery is cut again at each of
// its operations (a second cut, `recoveryOp`), after which the phone must still come back.
//
// The scenarios run against a world (sim/world.ts: the servers in this process, real
// sockets on loopback). What is not searched: the factory's writes (the image is built in
// memory and personalization writes the backing directly, not through the chip: nothing to
// cut), the controller's NVM (atomic per write in the model, firmware/secure/nvm.ts; its
// counters are checked against the flash above), and a third cut.
import { startWorld, TraceHost, fusesOf, type World, type WorldOptions } from './world.ts';
import { makeTempDir, removeTempDir } from './lifetime.ts';
import { currentRecord, type CurrentRecord } from './held-secrets.ts';
import { FlashStatus } from '../firmware/flash/chip.ts';
import type { Fuses } from '../firmware/flash/fuses.ts';
import type { Phone } from '../firmware/phone.ts';
import { PowerLost, type DeviceOutcome } from '../firmware/device.ts';
import { zoneOf, ZoneType, type ZoneEntry } from '../firmware/zones/layout.ts';
import { HIDDEN_STORES, type StoreName } from '../firmware/zones/hidden.ts';
import { listFat, readFatFile, writeFatFile, deleteFatFile } from '../firmware/zones/fat.ts';
import { diskIo, hostDiskImage, fsckFat } from '../firmware/host/disk-check.ts';
import { memoryNvm, type ControllerNvm } from '../firmware/secure/nvm.ts';
import { decodeSavedLogin } from '../firmware/saved-login.ts';
import { SeClient } from '../firmware/secure/client.ts';
import { SimSlot } from '../firmware/hal/sim-card.ts';
import type { PersonInput } from '../firmware/hal/person.ts';
import { decode } from '../protocol/cbor.ts';
import { SECRET_BYTES } from '../protocol/messages.ts';
import { signTable, verifyTable } from '../protocol/attack-table.ts';
import { stateFiles } from '../deploy/config.ts';
import { readPolicyKey } from '../policy-server/keys.ts';
import type { Stack } from '../deploy/stack.ts';
import { storyCard, person } from './bank-scenarios.ts';

/** A phone brought to the state before the write, and what the checks need of it. */
export interface Subject {
  world: World;
  index: number;
  phone: Phone;
  ip: string;
  host: TraceHost;
  fuses: Fuses;
  nvm: ControllerNvm;
  /** The SIM and the person at the keypad for this phone's plug-ins (bank scenarios). */
  extra?: { sim?: SimSlot; person?: PersonInput };
  /** Scenario data (e.g. the bank name). */
  data?: Record<string, unknown>;
}

export interface PowerCutScenario {
  name: string;
  /** One line: the write path (for the test's names, docs/benchmarks.md). */
  what: string;
  /** Who writes: the phone's firmware (hidden zone only; free and virtual zones stay byte-identical) or a host program on the disk unit. */
  writer: 'firmware' | 'host';
  /** host: the files the write may change or remove; every other file must survive. */
  touches?: readonly string[];
  /** The phone in the state right before the write (uncut). Phone index `i` is fresh. */
  prepare(w: World, i: number): Promise<Subject>;
  /** The write. Returns when it ended, cut or not: null when it did what it is for, else what it did instead (a failure of the uncut run only). */
  act(s: Subject): Promise<string | null>;
  /** After the replug: the login that must still work (default: a plug-in that logs in). */
  login?(s: Subject): Promise<string | null>;
}

export interface CutFailure {
  /** The index of the mutating flash operation the power was cut at (-1: the uncut run). */
  op: number;
  /** null: cut before the operation's first byte; a number: a program torn after that many bytes. */
  torn: number | null;
  /** null: one cut; a number: a second cut, at this operation of what the next power-on wrote (the disk controller's recovery, then the boot's saves). */
  recoveryOp: number | null;
  invariant: 'write' | 'cut' | 'hidden' | 'virtual' | 'free' | 'fsck' | 'login';
  detail: string;
}

type Point = Pick<CutFailure, 'op' | 'torn' | 'recoveryOp'>;

export interface SearchResult {
  scenario: string;
  /** Mutating flash operations of the uncut write (N). */
  ops: number;
  /** Operations by kind and zone, e.g. { 'erase hidden': 4, 'program free': 20 }. */
  opKinds: Record<string, number>;
  /** What the uncut write changed: record stores ('login', 'secrets') and host files; empty when it wrote nothing. */
  wrote: string[];
  /** Cut runs made (N whole-operation cuts + one torn cut per program, when torn; + the second cuts). */
  cuts: number;
  /** Of those, runs cut a second time, in what the next power-on wrote. */
  recoveryCuts: number;
  failures: CutFailure[];
  ms: number;
}

export interface SearchOptions {
  world: World;
  /** First phone index this search may use (each run takes a fresh one). */
  firstIndex: number;
  /** Also tear every program in its middle (powerCutAfterBytes). Default true. */
  torn?: boolean;
  /** Cut only at these operation indices (replay a failure). */
  only?: readonly number[];
  /** A plug-in that has not ended after this long is a hang (ms, default 20 000). */
  loginTimeoutMs?: number;
  /** Also cut each distinct recovery the next power-on makes after a cut (the disk controller's, the boot's saves), at each of its operations. Default true. */
  secondCuts?: boolean;
  /** Stop after this many failures (default 20): a broken rule fails at many points. */
  maxFailures?: number;
}

interface FlashOp {
  kind: 'program' | 'erase';
  zone: string;
  at: number;
  bytes: number;
  /** Program bytes of the run before this operation (where powerCutAfterBytes counts from). */
  bytesBefore: number;
}

/** The zones' state before the write, to compare with after the cut. */
interface Before {
  records: Record<StoreName, CurrentRecord | null>;
  virtual: Uint8Array;
  free: Uint8Array | null;
  files: Map<string, Uint8Array> | null;
}

const STORES = Object.keys(HIDDEN_STORES) as StoreName[];

function zones(p: Phone): { hidden: ZoneEntry; virtual: ZoneEntry; free: ZoneEntry } {
  return { hidden: zoneOf(p.table, ZoneType.HIDDEN), virtual: zoneOf(p.table, ZoneType.VIRTUAL), free: zoneOf(p.table, ZoneType.FREE) };
}
const peekZone = (p: Phone, z: ZoneEntry) => p.chip.peek(z.offset, z.size);
const same = (a: Uint8Array, b: Uint8Array) => a.length === b.length && Buffer.compare(a, b) === 0;
function firstDiff(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return i;
  return Math.min(a.length, b.length);
}

/** The files of the disk unit as a host reads them; null when the volume does not mount. */
function hostFiles(p: Phone): Map<string, Uint8Array> | null {
  const { read } = diskIo(p.bus.disk);
  const list = listFat(read);
  if (!list) return null;
  const out = new Map<string, Uint8Array>();
  for (const e of list) {
    const b = readFatFile(read, e.name);
    if (b) out.set(e.name, b);
  }
  return out;
}

function snapshot(s: Subject, writer: PowerCutScenario['writer']): Before {
  const z = zones(s.phone);
  const records = Object.fromEntries(STORES.map((n) => [n, currentRecord(s.phone, s.fuses, n)])) as Before['records'];
  return { records, virtual: peekZone(s.phone, z.virtual), free: writer === 'firmware' ? peekZone(s.phone, z.free) : null, files: writer === 'host' ? hostFiles(s.phone) : null };
}

/** The record decodes as its store's type; a reason when it does not. */
function undecodable(name: StoreName, record: Uint8Array): string | null {
  try {
    if (name === 'login') decodeSavedLogin(record);
    else {
      // firmware/secure/element.ts #loadHeld: [version 1, user, [[gen, secret(32)]...]].
      const v = decode(record);
      if (!Array.isArray(v) || v[0] !== 1 || typeof v[1] !== 'string' || !Array.isArray(v[2]) || v[2].length < 1 || v[2].length > 2) return 'not [1, user, [1..2 generations]]';
      for (const e of v[2]) if (!Array.isArray(e) || typeof e[0] !== 'number' || !(e[1] instanceof Uint8Array) || e[1].length !== SECRET_BYTES) return 'a generation is not [gen, secret]';
    }
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

/** Every invariant of the zones after a replug; the failures' `op` and `torn` are filled in by the caller. */
/** `booted`: the phone has booted since `before` (its own saves may have moved the hidden zone on, also after a host write). */
function checkZones(sc: PowerCutScenario, s: Subject, before: Before, dir: string, booted = false): Omit<CutFailure, 'op' | 'torn' | 'recoveryOp'>[] {
  const out: Omit<CutFailure, 'op' | 'torn' | 'recoveryOp'>[] = [];
  const z = zones(s.phone);
  for (const name of STORES) {
    const was = before.records[name];
    let now: CurrentRecord | null;
    try {
      now = currentRecord(s.phone, s.fuses, name);
    } catch (e) {
      out.push({ invariant: 'hidden', detail: `store ${name}: ${(e as Error).message}` });
      continue;
    }
    const counter = s.nvm.read(HIDDEN_STORES[name].id);
    if (!now) {
      if (was) out.push({ invariant: 'hidden', detail: `store ${name}: its record (seq ${was.seq}) is gone, and no newer one is there` });
      continue;
    }
    const bad = undecodable(name, now.record);
    if (bad) out.push({ invariant: 'hidden', detail: `store ${name}: the current record (seq ${now.seq}, slot ${now.slot}) does not decode: ${bad}` });
    if (was && now.seq < was.seq) out.push({ invariant: 'hidden', detail: `store ${name}: an older record (seq ${now.seq}, slot ${now.slot}) than before the write (seq ${was.seq}, slot ${was.slot})` });
    else if (was && now.seq === was.seq && (now.slot !== was.slot || !same(now.record, was.record))) out.push({ invariant: 'hidden', detail: `store ${name}: seq ${now.seq} holds another record than before` });
    else if (sc.writer === 'host' && !booted && (!was || now.seq !== was.seq)) out.push({ invariant: 'hidden', detail: `store ${name}: changed by a host write (seq ${was?.seq ?? 'none'} -> ${now.seq})` });
    if (counter > now.counter) out.push({ invariant: 'hidden', detail: `store ${name}: the controller's counter ${counter} is ahead of the current record's ${now.counter} (the chip refuses it as a rollback)` });
  }
  const v = peekZone(s.phone, z.virtual);
  if (!same(v, before.virtual)) out.push({ invariant: 'virtual', detail: `the virtual zone changed (first difference at zone offset 0x${firstDiff(v, before.virtual).toString(16)})` });
  if (before.free) {
    const f = peekZone(s.phone, z.free);
    if (!same(f, before.free)) out.push({ invariant: 'free', detail: `the free zone changed (first difference at zone offset 0x${firstDiff(f, before.free).toString(16)}), by a write that does not touch it` });
  }
  if (before.files) {
    const untouched = [...before.files.keys()].filter((n) => !(sc.touches ?? []).includes(n));
    const files = hostFiles(s.phone);
    if (!files) out.push({ invariant: 'free', detail: 'the disk unit holds no volume that mounts' });
    else {
      for (const n of untouched) {
        const b = files.get(n);
        if (!b || !same(b, before.files.get(n)!)) out.push({ invariant: 'free', detail: `untouched file ${n} ${b ? 'differs' : 'is unreadable or gone'}` });
      }
      const img = hostDiskImage(s.phone.bus.disk);
      if (!img.ok) out.push({ invariant: 'free', detail: `the disk unit does not read at LBA ${img.lba} (status ${img.status})` });
      else {
        const f = fsckFat(img.image, dir, untouched);
        if (!f.ok) out.push({ invariant: 'fsck', detail: `fsck.fat -n (exit ${f.exit}) names ${f.named.join(', ') || 'nothing'}: ${f.output.trim().split('\n').slice(0, 6).join(' | ')}` });
      }
    }
  }
  return out;
}

/** What a write changed: the record stores whose current record moved, the host files that differ. */
function changed(s: Subject, before: Before): string[] {
  const out: string[] = STORES.filter((n) => {
    const now = currentRecord(s.phone, s.fuses, n);
    return (now?.seq ?? null) !== (before.records[n]?.seq ?? null);
  });
  if (before.files) {
    const now = hostFiles(s.phone) ?? new Map<string, Uint8Array>();
    for (const n of new Set([...before.files.keys(), ...now.keys()])) {
      const a = before.files.get(n), b = now.get(n);
      if (!a || !b || !same(a, b)) out.push(n);
    }
  }
  return out;
}

/** A plug-in, bounded: a hang is a failure, not a stuck test. */
export async function plugBounded(p: Phone, ms: number): Promise<DeviceOutcome | 'hang'> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<'hang'>((r) => (timer = setTimeout(() => r('hang'), ms)));
  try {
    return await Promise.race([p.device.plugIn(), hang]);
  } finally {
    clearTimeout(timer);
  }
}

function replugged(s: Subject): Subject {
  s.host = new TraceHost();
  s.phone = s.world.replug(s.phone, s.host, s.ip, s.extra ?? {});
  return s;
}

const describeOutcome = (o: DeviceOutcome) => (o.ok ? `logged in via ${o.via}` : `${o.kind}: ${o.reason}`);

/** The default login after the replug: the phone logs into its business server. */
async function loginAfter(s: Subject, timeoutMs: number): Promise<string | null> {
  const o = await plugBounded(s.phone, timeoutMs);
  if (o === 'hang') return `no outcome within ${timeoutMs} ms (a hang)`;
  return o.ok ? null : `the phone does not log in: ${describeOutcome(o)}`;
}

/**
 * Runs scenario `sc` uncut, then cut at every mutating flash operation (and torn in the middle
 * of every program), each time on a fresh phone; returns what failed where.
 */
export async function searchPowerCuts(sc: PowerCutScenario, opts: SearchOptions): Promise<SearchResult> {
  const t0 = Date.now();
  const timeout = opts.loginTimeoutMs ?? 20_000;
  const maxFailures = opts.maxFailures ?? 20;
  const dir = makeTempDir('usbphone-cut-search-');
  let index = opts.firstIndex;
  const failures: CutFailure[] = [];
  let cuts = 0;
  let recoveryCuts = 0;
  const login = async (s: Subject) => (sc.login ? sc.login(replugged(s)) : loginAfter(replugged(s), timeout));
  try {
    // The uncut run: its operations, and the same checks.
    const s0 = await sc.prepare(opts.world, index++);
    const z = zones(s0.phone);
    const zoneAt = (addr: number) => (['hidden', 'virtual', 'free'] as const).find((n) => addr >= z[n].offset && addr < z[n].offset + z[n].size) ?? 'table';
    const ops: FlashOp[] = [];
    let programmed = 0;
    s0.phone.chip.onOperation = (o) => {
      const zone = zoneAt(o.addr);
      ops.push({ kind: o.kind, zone, at: o.addr - (zone === 'table' ? 0 : z[zone].offset), bytes: o.bytes, bytesBefore: programmed });
      if (o.kind === 'program') programmed += o.bytes;
    };
    const before0 = snapshot(s0, sc.writer);
    const done = await sc.act(s0);
    s0.phone.chip.onOperation = null;
    const uncut = (f: Omit<CutFailure, 'op' | 'torn' | 'recoveryOp'>) => failures.push({ op: -1, torn: null, recoveryOp: null, ...f });
    if (done !== null) uncut({ invariant: 'write', detail: `the uncut write did not do what it is for: ${done}` });
    if (s0.phone.chip.powerLost) uncut({ invariant: 'cut', detail: 'the uncut run lost power' });
    s0.phone.bus.powerCycle();
    checkZones(sc, s0, before0, dir).forEach(uncut);
    const wrote = changed(s0, before0);
    const l0 = await login(s0);
    if (l0) uncut({ invariant: 'login', detail: l0 });

    const opKinds: Record<string, number> = {};
    for (const o of ops) opKinds[`${o.kind} ${o.zone}`] = (opKinds[`${o.kind} ${o.zone}`] ?? 0) + 1;
    const points: Point[] = [];
    for (let k = 0; k < ops.length; k++) {
      if (opts.only && !opts.only.includes(k)) continue;
      points.push({ op: k, torn: null, recoveryOp: null });
      if ((opts.torn ?? true) && ops[k]!.kind === 'program' && ops[k]!.bytes > 1) points.push({ op: k, torn: ops[k]!.bytes >> 1, recoveryOp: null });
    }
    // A second cut, in what the next power-on writes to recover from the first: the disk
    // controller finishing a rewrite it had committed (at the first host command,
    // firmware/zones/disk-controller.ts), then the boot's own saves (a re-registration after a
    // lost record, a rotation). Each distinct recovery (its operations) is cut at each of its
    // operations, after the first cut that leads to it; then the phone must still come back.
    // "Distinct" by shape (the kinds, zones and sizes of its operations).
    const recoveries = new Set<string>();
    const queue: Point[] = [...points];
    while (queue.length > 0 && failures.length < maxFailures) {
      const pt = queue.shift()!;
      const o = ops[pt.op]!;
      const where = `cut at op ${pt.op} ${o.kind} ${o.zone}+0x${o.at.toString(16)} (${o.bytes} B)${pt.torn === null ? '' : ` torn after ${pt.torn} B`}${pt.recoveryOp === null ? '' : `, then at op ${pt.recoveryOp} of the next power-on`}`;
      const fail = (f: Omit<CutFailure, 'op' | 'torn' | 'recoveryOp'>) => failures.push({ op: pt.op, torn: pt.torn, recoveryOp: pt.recoveryOp, ...f, detail: `${where}: ${f.detail}` });
      const s = await sc.prepare(opts.world, index++);
      const before = snapshot(s, sc.writer);
      const f = s.phone.chip.faults;
      const cutsBefore = f.cuts;
      if (pt.torn === null) f.powerCutAfterOps = pt.op;
      else f.powerCutAfterBytes = o.bytesBefore + pt.torn;
      await sc.act(s);
      f.clear();
      cuts++;
      if (f.cuts === cutsBefore) {
        fail({ invariant: 'cut', detail: 'the write ended before the operation: its operations are not the same run to run' });
        continue;
      }
      s.phone.bus.powerCycle();
      // The next power-on: the first host command (the disk controller recovers then), the
      // checks, the login; its writes counted, or cut at operation recoveryOp.
      const next: string[] = [];
      // Its shape (kind, zone, size of each operation), not its addresses: the same recovery or
      // boot writing other slots or sectors runs the same code, and is cut once.
      s.phone.chip.onOperation = (r) => void next.push(`${r.kind} ${zoneAt(r.addr)} ${r.bytes}`);
      if (pt.recoveryOp !== null) {
        f.powerCutAfterOps = pt.recoveryOp;
        s.phone.bus.disk.readSectors(0, 1);
        if (!s.phone.chip.powerLost) await login(s);
        s.phone.chip.onOperation = null;
        f.clear();
        recoveryCuts++;
        if (f.cuts === cutsBefore + 1) {
          fail({ invariant: 'cut', detail: 'the next power-on ended before the operation: its operations are not the same run to run' });
          continue;
        }
        s.phone.bus.powerCycle();
        checkZones(sc, s, before, dir, true).forEach(fail);
        const l = await login(s);
        if (l) fail({ invariant: 'login', detail: l });
        continue;
      }
      s.phone.bus.disk.readSectors(0, 1);
      const found = checkZones(sc, s, before, dir);
      found.forEach(fail);
      const l = await login(s);
      s.phone.chip.onOperation = null;
      if (l) fail({ invariant: 'login', detail: l });
      // A cut that already broke a rule is reported as it is, not cut again.
      else if (found.length === 0 && next.length > 0 && (opts.secondCuts ?? true) && !recoveries.has(next.join(' '))) {
        recoveries.add(next.join(' '));
        for (let j = next.length - 1; j >= 0; j--) queue.unshift({ ...pt, recoveryOp: j });
      }
    }
    return { scenario: sc.name, ops: ops.length, opKinds, wrote, cuts, recoveryCuts, failures, ms: Date.now() - t0 };
  } finally {
    removeTempDir(dir);
  }
}

// ---------------------------------------------------------------- the scenarios

/** A fresh phone of the world, enrolled, with a controller NVM the checks can read. */
async function freshPhone(w: World, i: number, extra: Subject['extra'] = {}): Promise<Subject> {
  const host = new TraceHost();
  const nvm = memoryNvm();
  const { phone, ip } = await w.phone(i, host, { nvm, ...extra });
  return { world: w, index: i, phone, ip, host, fuses: fusesOf(w.seed, i), nvm, extra };
}

async function plugOk(s: Subject, what: string): Promise<void> {
  const o = await plugBounded(s.phone, 20_000);
  if (o === 'hang' || !o.ok) throw new Error(`${what}: phone ${s.index} did not log in: ${o === 'hang' ? 'hang' : describeOutcome(o)}`);
}

/** A plug-in that may be cut: its outcome is the search's business, not the act's. */
async function plugMayCut(s: Subject): Promise<string | null> {
  const o = await plugBounded(s.phone, 20_000);
  return o === 'hang' ? 'a hang' : o.ok ? null : describeOutcome(o);
}

/** A host program's FAT operation on the disk unit (synchronous; a cut ends it with ERR_POWER_LOST). */
function hostWrite(name: string, what: string, touches: string[], run: (io: ReturnType<typeof diskIo>) => number): PowerCutScenario {
  return {
    name,
    what,
    writer: 'host',
    touches,
    prepare: (w, i) => freshPhone(w, i),
    act: async (s) => {
      const st = run(diskIo(s.phone.bus.disk));
      return st === FlashStatus.OK ? null : `the host write ended with status ${st}`;
    },
  };
}

const te = new TextEncoder();

/** The table the phone holds, re-signed by the policy server's key one version up (a genuine newer table, S3.11). */
function newerTable(s: Subject): Uint8Array {
  const stack = s.world.stack as Stack;
  const held = s.phone.device.storage.loadLogin();
  const key = stack.factoryPolicy.key!;
  const bytes = held.ok && held.value?.table ? held.value.table : null;
  const v = bytes ? verifyTable(bytes, key, 0, null) : null;
  if (!v?.ok) throw new Error(`table-push: phone ${s.index} holds no valid table to go beyond`);
  const now = Date.now();
  const priv = readPolicyKey(stateFiles(stack.stateDir).policyKey).privateKey;
  return signTable({ ...v.table, version: v.table.version + 1, issuedAt: now, expiresAt: now + 3_600_000 }, priv);
}

/**
 * Every flash write path of the phone: the firmware's own saves (hidden zone) and a host's
 * writes to the disk unit (free zone); the virtual zone, written by nobody, is checked in all.
 */
export const POWER_CUT_SCENARIOS: readonly PowerCutScenario[] = [
  {
    name: 'first-boot',
    what: 'first plug-in of a factory-fresh phone: the business secret imported (S0.10), the saved login written with the attack table (S0.12, S3.11), then again after the login',
    writer: 'firmware',
    prepare: (w, i) => freshPhone(w, i),
    act: plugMayCut,
  },
  {
    name: 'rotation',
    what: 'a later plug-in: password rotation (S0.14): the new secret imported, the saved login rewritten, the older generation retired after the login',
    writer: 'firmware',
    prepare: async (w, i) => {
      const s = await freshPhone(w, i);
      await plugOk(s, 'rotation: the first boot');
      return replugged(s);
    },
    act: plugMayCut,
  },
  {
    name: 'table-push',
    what: 'a newer signed attack table pushed into a session (S3.11): kept in the saved-login record (firmware/policy-table.ts keepPushedTable)',
    writer: 'firmware',
    prepare: async (w, i) => {
      const s = await freshPhone(w, i);
      await plugOk(s, 'table-push: the first boot');
      s.data = { table: newerTable(s) };
      return s;
    },
    act: async (s) => {
      try {
        s.phone.device.tablePush(s.data!.table as Uint8Array);
      } catch (e) {
        // The firmware halts at a power cut (firmware/device.ts PowerLost); the gateway's push
        // arrives in the device's event loop, which ends the plug-in there. Anything else is a bug.
        if (!(e instanceof PowerLost)) throw e;
        return e.message;
      }
      return s.host.events.some((e) => e.step === 'attack table pushed' && e.ok) ? null : 'the table was not kept';
    },
  },
  {
    name: 'bank-register',
    what: 'bank registration (S4.1, S3.3) of a phone with its SIM and its person: the boot\'s saves, with the fingerprint template and the one-time-code seed going to the chip\'s NVM in between',
    writer: 'firmware',
    prepare: async (w, i) => {
      const name = `cut${i}`;
      const sim = new SimSlot(storyCard(50_000 + i, `+4477${String(1_000_000 + i).padStart(7, '0')}`));
      const s = await freshPhone(w, i, { sim, person: person('register', name) });
      s.data = { name };
      return s;
    },
    act: async (s) => {
      const o = await plugBounded(s.phone, 20_000);
      if (o === 'hang' || !o.ok) return o === 'hang' ? 'a hang' : describeOutcome(o);
      return o.bank?.kind === 'registered' ? null : `the bank step: ${JSON.stringify(o.bank ?? null)}`;
    },
    login: async (s) => {
      // After the cut: the person logs in (or, when the cut came before the bank kept the
      // account, registers again); the chip's person state must still answer.
      const name = s.data!.name as string;
      const seen: string[] = [];
      for (const action of ['login', 'register'] as const) {
        // The password: the one-time code of this time step may be spent already (by the
        // registration) and a finger reading is noisy; what is checked is the account and its
        // binding to this phone, and then that the chip's person state answers.
        s.phone = s.world.replug(s.phone, s.host, s.ip, { sim: s.extra!.sim, person: person(action, name, undefined, ['password']) });
        const o = await plugBounded(s.phone, 20_000);
        if (o === 'hang') return 'bank login: a hang';
        if (!o.ok) return `the phone does not log in: ${describeOutcome(o)}`;
        const b = o.bank;
        if (b && (b.kind === 'page' || b.kind === 'registered')) {
          const st = new SeClient((apdu) => s.phone.bus.se.transmit(apdu)).personStatus();
          return st.ok ? null : `the chip's person status does not answer (${st.status})`;
        }
        seen.push(`${action}: ${JSON.stringify(b ?? null)}`);
        if (action === 'register') return `the bank steps after the cut: ${seen.join('; ')}`;
      }
      return null;
    },
  },
  hostWrite('host-create', 'a host program creates a 13-byte file on the disk unit (FAT, the power-safe disk controller)', ['NOTE.TXT'], (io) => writeFatFile(io.read, io.write, 'NOTE.TXT', te.encode('hello, phone!'))),
  hostWrite('host-overwrite', 'a host program overwrites README.TXT (a new chain first, the old one freed after)', ['README.TXT'], (io) => writeFatFile(io.read, io.write, 'README.TXT', te.encode('replaced by the host\r\n'))),
  hostWrite('host-delete', 'a host program deletes README.TXT', ['README.TXT'], (io) => deleteFatFile(io.read, io.write, 'README.TXT')),
  {
    name: 'cdrom-write',
    what: 'a host program writes over the CD-ROM unit (the virtual zone, AUTORUN.INF and UPMon): refused, no flash operation at all',
    writer: 'host',
    touches: [],
    prepare: (w, i) => freshPhone(w, i),
    act: async (s) => {
      const c = s.phone.bus.cdrom;
      for (let lba = 0; lba < c.blockCount; lba += 64) {
        const st = c.writeBlocks(lba, new Uint8Array(2048).fill(0x5a));
        if (st !== FlashStatus.ERR_READ_ONLY) return `a write at block ${lba} answered ${st}, not ERR_READ_ONLY`;
      }
      return null;
    },
  },
];

/** A scenario by name. */
export function powerCutScenario(name: string): PowerCutScenario {
  const s = POWER_CUT_SCENARIOS.find((x) => x.name === name);
  if (!s) throw new RangeError(`no power-cut scenario "${name}" (${POWER_CUT_SCENARIOS.map((x) => x.name).join(', ')})`);
  return s;
}

/**
 * A world for the search: the servers in this process on loopback; the policy server publishes
 * no table of its own while the search runs (a push in the middle of a run would add operations
 * to one run and not the next), and the bank's password hashing at a test cost (biz-server's own
 * tests run the real one). `stop()` also removes its state directory.
 */
export async function startCutWorld(o: Partial<WorldOptions> = {}): Promise<World & { stop(): Promise<void> }> {
  const dir = makeTempDir('usbphone-cut-world-');
  const world = await startWorld({ gatewayPort: 0, policyPeriodMs: 3_600_000, bankScrypt: { ln: 12, r: 8, p: 1 }, ...o, stateDir: dir });
  const stop = world.stop;
  return Object.assign(world, {
    stop: async () => {
      await stop();
      removeTempDir(dir);
    },
  });
}
