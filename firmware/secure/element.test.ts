// The secure controller, tried as the hostile host computer would (issue 9): every command
// byte, every slot, every data object, malformed APDUs and replays; no response may carry a
// long-term key, a business secret, a record key or the HUK. And the accepted paths: a
// registration handshake and a business login run through the chip against the real server
// handshake, with the keys used inside.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import { FlashChip, FlashStatus } from '../flash/chip.ts';
import { CowBacking } from '../flash/backing.ts';
import { Fuses } from '../flash/fuses.ts';
import type { HiddenPort } from '../flash/hidden-port.ts';
import { parseTable, zoneOf, ZoneType } from '../zones/layout.ts';
import { IDENTITY_KEY_LABEL, storeKeyLabel } from '../zones/hidden.ts';
import { buildImage } from '../factory/image.ts';
import { MasterKeyring, deriveDeviceKey, makeSerialToken } from '../../protocol/keys.ts';
import { ServerHandshake, SecureChannel, passwordLoginKey } from '../../protocol/channel.ts';
import { decode, encode } from '../../protocol/cbor.ts';
import { decodeEnvelope, encodeEnvelope, parseServerProof, MsgType } from '../../protocol/messages.ts';
import { proofInput } from '../../protocol/handshake-keys.ts';
import { keystreamRng } from '../../protocol/seeded-rng.ts';
import { SecureElement, Slot, Record } from './element.ts';
import { memoryNvm, type ControllerNvm } from './nvm.ts';
import { wrapSecret as wrapWith, secretWrapKey } from '../../protocol/secret-wrap.ts';
import type { Rng } from '../../protocol/channel.ts';
const wrapSecret = (dk: Uint8Array, user: string, gen: number, secret: Uint8Array, rng: Rng) => wrapWith(secretWrapKey(dk), user, gen, secret, rng);
import { CLA, Ins, DataObject, SW, encodeCommand, parseCommand, parseResponse, encodeResponse } from './apdu.ts';
import { TEST_VENDOR_KEY, TEST_VENDOR_PUB } from '../factory/test-vendor.ts';
import { DeviceBus } from '../flash/bus.ts';
import { zoneFiles } from '../factory/image.ts';
import { buildIso } from '../zones/iso9660.ts';
import { arraySectors, listFat, parseBootSector } from '../zones/fat.ts';
import { verifyManifest, vendorPublicKey } from '../boot-manifest.ts';

const master = new Uint8Array(32).fill(7);
const keyring = new MasterKeyring([[1, master]]);
const fuses = new Fuses(new Uint8Array(32).fill(0x11), Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8), TEST_VENDOR_PUB);
const SERIAL = 'SN-0000001';
const { image, enrollment } = buildImage({ vendorKey: TEST_VENDOR_KEY, serial: SERIAL, fuses, keyring });
/** The firmware measurement of the factory image: what the chip attests. */
const measurement = hexToBytes(enrollment.firmwareMeasurement);
const table = (() => {
  const p = parseTable(image);
  if (!p.ok) throw new Error('bad table');
  return p.table;
})();
const deviceKey = deriveDeviceKey(master, SERIAL);
const token = makeSerialToken(master, 1, SERIAL);
const USER = 'u-opaque-1';

/** The hidden zone as the controller alone sees it (the bus gives the host no such port). */
function hiddenPort(chip: FlashChip): HiddenPort {
  const z = zoneOf(table, ZoneType.HIDDEN);
  return {
    hiddenBytes: z.size,
    sectorBytes: chip.profile.sectorBytes,
    pageBytes: chip.profile.pageBytes,
    readHidden: (o, n) => chip.read(z.offset + o, n),
    programHidden: (o, d) => chip.program(z.offset + o, d),
    eraseHiddenSector: (o) => chip.eraseSector(z.offset + o),
  };
}

function chipWith(f: Fuses = fuses, base = image, nvm: ControllerNvm = memoryNvm(), seed = 1) {
  const chip = new FlashChip({ backing: new CowBacking(base, 4096), seed });
  // The real wiring: the bus gives the controller the hidden zone and read-only boot media.
  const bus = new DeviceBus(chip, f, table, keystreamRng('se-test'), nvm);
  return { chip, se: bus.se, bus };
}

function call(se: SecureElement, ins: number, o: { p1?: number; p2?: number; data?: unknown } = {}) {
  const data = o.data === undefined ? undefined : o.data instanceof Uint8Array ? o.data : encode(o.data as never);
  return parseResponse(se.transmit(encodeCommand({ ins, p1: o.p1, p2: o.p2, data })));
}

/** A running transcript as protocol/channel.ts keeps it: SHA-256 over len32 || frame. */
function transcript() {
  const h = sha256.create();
  return {
    add(f: Uint8Array) {
      const len = new Uint8Array(4);
      new DataView(len.buffer).setUint32(0, f.length);
      h.update(len).update(f);
    },
    peek(extra?: Uint8Array) {
      const c = h.clone();
      if (extra) c.update(extra);
      return c.digest();
    },
  };
}

/**
 * The client side of one handshake with the long-term key in the chip: the host frames,
 * keeps the transcript and asks the chip for the two MACs; the server is the real one.
 */
function handshake(se: SecureElement, o: { slot: number; type: number; dest: string; fields: unknown[]; serverKey: Uint8Array; proofType: number }) {
  const t = transcript();
  const open = call(se, Ins.hsOpen, { p1: o.slot, data: [o.type, 0, o.dest, o.fields] });
  if (open.sw !== SW.ok) return { sw: open.sw };
  const [nC, m] = decode(open.data) as [Uint8Array, Uint8Array];
  const hello = encodeEnvelope(o.type, 0, o.dest, [...(o.fields as never[]), nC, m]);
  t.add(hello);
  const server = new ServerHandshake(o.dest, keystreamRng('server'));
  const env = decodeEnvelope(hello);
  const body = env.body as unknown[];
  server.acceptOpening(hello, env, { fields: body.slice(0, -2) as never, nonce: nC, mac: m }, o.serverKey);
  if (!server.verifyOpening()) return { sw: SW.ok, serverRefused: true };
  const proofFrame = server.proof(o.proofType);
  const penv = decodeEnvelope(proofFrame);
  const p = parseServerProof(penv.body);
  const th1 = t.peek(proofInput(penv.type, penv.seq, penv.dest, p.nonce));
  t.add(proofFrame);
  const th2 = t.peek();
  const fin = call(se, Ins.hsFinish, { data: [th1, p.nonce, p.mac, th2] });
  if (fin.sw !== SW.ok) return { sw: fin.sw };
  const [finishMac, c2s, s2c] = decode(fin.data) as Uint8Array[];
  const finish = encodeEnvelope(MsgType.finish, 1, o.dest, [finishMac!]);
  const serverCh = server.acceptFinish(finish, decodeEnvelope(finish));
  const clientCh = new SecureChannel('client', o.dest, c2s!, s2c!, 2, 1);
  return { sw: SW.ok, clientCh, serverCh, responses: [open.data, fin.data] };
}

test('APDU codec: cases 1-4, short and extended, both ways; malformed commands are refused', () => {
  const cases = [
    { ins: 0xca, p1: 0, p2: 1 },
    { ins: 0xca, p1: 0, p2: 1, le: 256 },
    { ins: 0x10, p1: 1, data: new Uint8Array(7) },
    { ins: 0x10, p1: 1, data: new Uint8Array(7), le: 9 },
    { ins: 0xd0, p1: 1, data: new Uint8Array(300) },
    { ins: 0xd0, p1: 1, data: new Uint8Array(300), le: 65536 },
    { ins: 0xb0, p1: 1, le: 1000 },
  ];
  for (const c of cases) {
    const p = parseCommand(encodeCommand(c))!;
    assert.ok(p, JSON.stringify(c));
    assert.equal([p.cla, p.ins, p.p1, p.p2, p.data.length, p.le], [CLA, c.ins, c.p1, c.p2 ?? 0, c.data?.length ?? 0, c.le ?? 0]);
  }
  for (const bad of [Uint8Array.of(), Uint8Array.of(0x80, 0xca, 0), Uint8Array.of(0x80, 0xca, 0, 1, 5, 1, 2), Uint8Array.of(0x80, 0xca, 0, 1, 0, 0, 5, 1, 2), Uint8Array.of(0x80, 0xca, 0, 1, 0, 0, 0, 0)]) assert.is(parseCommand(bad), null, bytesToHex(bad));
  assert.equal(parseResponse(encodeResponse(Uint8Array.of(1, 2), SW.ok)), { data: Uint8Array.of(1, 2), sw: SW.ok });
});

test('GET DATA gives the public identity and a slot table without key bytes', () => {
  const { se } = chipWith();
  const id = call(se, Ins.getData, { p1: 0, p2: DataObject.identity });
  assert.is(id.sw, SW.ok);
  const [tok, version, serial] = decode(id.data) as [Uint8Array, number, string];
  assert.equal([bytesToHex(tok), version, serial], [bytesToHex(token), 1, SERIAL]);
  const slots = call(se, Ins.getData, { p1: 0, p2: DataObject.slots });
  assert.is(slots.sw, SW.ok);
  assert.equal((decode(slots.data) as unknown[][]).map((s) => [s[0], s[1], s[2]]), [[1, 'device-key', 'set'], [2, 'business-secret', 'empty'], [0x20, 'fingerprint', 'empty'], [0x21, 'otp-seed', 'empty']]);
});

test('registration through the chip: the real server accepts it, both channels agree; the device key never leaves', () => {
  const { se } = chipWith();
  const r = handshake(se, { slot: Slot.deviceKey, type: MsgType.hello, dest: 'reg-primary', fields: [token, measurement], serverKey: deviceKey, proofType: MsgType.helloReply });
  assert.ok(r.clientCh && r.serverCh, `sw ${r.sw?.toString(16)}`);
  const frame = r.clientCh!.seal(MsgType.credRequest, [SERIAL, '127.0.0.1']);
  assert.equal(r.serverCh!.open(decodeEnvelope(frame)), [SERIAL, '127.0.0.1']);
  for (const out of r.responses!) assert.not.ok(contains(out, deviceKey), 'K_dev in a response');
  // A server without the device key is caught by the chip: no traffic keys for it.
  const forged = handshake(se, { slot: Slot.deviceKey, type: MsgType.hello, dest: 'reg-primary', fields: [token, measurement], serverKey: new Uint8Array(32).fill(9), proofType: MsgType.helloReply });
  assert.ok(forged.serverRefused, 'the server refuses the opening under a wrong key');
});

test('a business secret wrapped for this chip is imported, used for the login inside, and older ones retired only after a server accepted the newer', () => {
  const { se } = chipWith();
  const s1 = new Uint8Array(32).fill(0xa1), s2 = new Uint8Array(32).fill(0xa2);
  const rng = keystreamRng('wrap');
  assert.is(call(se, Ins.importSecret, { data: [USER, 1, 0, wrapSecret(deviceKey, USER, 1, s1, rng)] }).sw, SW.ok);
  assert.is(call(se, Ins.importSecret, { data: [USER, 2, 1, wrapSecret(deviceKey, USER, 2, s2, rng)] }).sw, SW.ok);
  const gens = () => (decode(call(se, Ins.getData, { p2: DataObject.slots }).data) as unknown[][])[1]![4];
  assert.equal(gens(), [2, 1]);
  // Before any login with gen 2 was accepted, gen 1 cannot be retired.
  assert.is(call(se, Ins.retireOlder, { data: [2] }).sw, SW.securityNotSatisfied);
  const login = (gen: number, secret: Uint8Array) => handshake(se, { slot: Slot.business, type: MsgType.login, dest: 'biz-east', fields: ['password', USER, gen, new Map()], serverKey: passwordLoginKey(secret, USER), proofType: MsgType.loginOk });
  const r = login(2, s2);
  assert.ok(r.clientCh, `sw ${r.sw?.toString(16)}`);
  for (const out of r.responses!) assert.not.ok(contains(out, s2) || contains(out, passwordLoginKey(s2, USER)));
  assert.is(call(se, Ins.retireOlder, { data: [1] }).sw, SW.securityNotSatisfied, 'only the generation the server accepted');
  assert.is(call(se, Ins.retireOlder, { data: [2] }).sw, SW.ok);
  assert.equal(gens(), [2]);
  // The slot survives a power cycle (sealed in the hidden zone).
  se.reset();
  assert.equal(gens(), [2]);
  assert.ok(login(2, s2).clientCh);
  // S3.2: the opening states the person mechanism that follows; the same key proves the device.
  for (const mech of ['otp', 'fingerprint']) {
    const r2 = handshake(se, { slot: Slot.business, type: MsgType.login, dest: 'biz-east', fields: [mech, USER, 2, new Map()], serverKey: passwordLoginKey(s2, USER), proofType: MsgType.loginOk });
    assert.ok(r2.clientCh, mech);
  }
  assert.is(call(se, Ins.hsOpen, { p1: Slot.business, data: [MsgType.login, 0, 'biz-east', ['telepathy', USER, 2, new Map()]] }).sw, SW.conditionsNotSatisfied);
});

test('hostile host: wrong slot policy, forged wraps, rollback, out-of-order commands, every INS and data object', () => {
  const { se } = chipWith();
  const s1 = new Uint8Array(32).fill(0xb1), s2 = new Uint8Array(32).fill(0xb2);
  const rng = keystreamRng('hostile');
  const w1 = wrapSecret(deviceKey, USER, 1, s1, rng);
  const w2 = wrapSecret(deviceKey, USER, 2, s2, rng);
  // The device key is for the hello only: a login opening under it is refused.
  assert.is(call(se, Ins.hsOpen, { p1: Slot.deviceKey, data: [MsgType.login, 0, 'biz-east', ['password', USER, 1, new Map()]] }).sw, SW.conditionsNotSatisfied);
  // A hello that names another token.
  assert.is(call(se, Ins.hsOpen, { p1: Slot.deviceKey, data: [MsgType.hello, 0, 'reg-primary', [new Uint8Array(token.length), measurement]] }).sw, SW.conditionsNotSatisfied);
  // A hello that claims another firmware measurement, or none (the host cannot choose what the chip attests).
  assert.is(call(se, Ins.hsOpen, { p1: Slot.deviceKey, data: [MsgType.hello, 0, 'reg-primary', [token, new Uint8Array(32).fill(0x5a)]] }).sw, SW.conditionsNotSatisfied);
  assert.is(call(se, Ins.hsOpen, { p1: Slot.deviceKey, data: [MsgType.hello, 0, 'reg-primary', [token]] }).sw, SW.conditionsNotSatisfied);
  // A wrap made for another user or generation, or under another key, does not unwrap.
  const tampered = Uint8Array.from(w1);
  tampered[30]! ^= 1;
  for (const data of [[USER, 2, 0, w1], ['u-other', 1, 0, w1], [USER, 1, 0, tampered], [USER, 1, 0, wrapSecret(new Uint8Array(32), USER, 1, s1, rng)]]) {
    assert.is(call(se, Ins.importSecret, { data }).sw, SW.verificationFailed);
  }
  assert.is(call(se, Ins.importSecret, { data: [USER, 2, 1, w2] }).sw, SW.ok);
  // Rollback: a replayed older reply cannot replace the newer generation.
  assert.is(call(se, Ins.importSecret, { data: [USER, 1, 0, w1] }).sw, SW.conditionsNotSatisfied);
  // The business slot answers only for its own user and a held generation.
  assert.is(call(se, Ins.hsOpen, { p1: Slot.business, data: [MsgType.login, 0, 'biz-east', ['password', 'u-other', 2, new Map()]] }).sw, SW.conditionsNotSatisfied);
  assert.is(call(se, Ins.hsOpen, { p1: Slot.business, data: [MsgType.login, 0, 'biz-east', ['password', USER, 7, new Map()]] }).sw, SW.notFound);
  assert.is(call(se, Ins.hsOpen, { p1: Slot.business, data: [MsgType.hello, 0, 'biz-east', ['password', USER, 2, new Map()]] }).sw, SW.conditionsNotSatisfied);
  // Finish without an opening; finish with a server proof that does not verify.
  assert.is(call(se, Ins.hsFinish, { data: [new Uint8Array(32), new Uint8Array(32), new Uint8Array(32), new Uint8Array(32)] }).sw, SW.securityNotSatisfied);
  assert.is(call(se, Ins.hsOpen, { p1: Slot.deviceKey, data: [MsgType.hello, 0, 'reg-primary', [token, measurement]] }).sw, SW.ok);
  assert.is(call(se, Ins.hsFinish, { data: [new Uint8Array(32), new Uint8Array(32), new Uint8Array(32), new Uint8Array(32)] }).sw, SW.verificationFailed);
  assert.is(call(se, Ins.hsFinish, { data: [new Uint8Array(32), new Uint8Array(32), new Uint8Array(32), new Uint8Array(32)] }).sw, SW.securityNotSatisfied, 'one try per opening');
  // Reserved slots hold nothing yet; unknown slots and classes are refused.
  assert.is(call(se, Ins.hsOpen, { p1: Slot.fingerprint, data: [MsgType.login, 0, 'biz-east', ['fingerprint', USER, 0, new Map()]] }).sw, SW.notFound);
  assert.is(call(se, Ins.hsOpen, { p1: 0x7f, data: [MsgType.hello, 0, 'reg-primary', [token, measurement]] }).sw, SW.wrongP1P2);
  assert.is(parseResponse(se.transmit(Uint8Array.of(0x00, Ins.getData, 0, 1))).sw, SW.claNotSupported);

  // Every instruction byte, with every kind of argument a host might try: no response holds a secret.
  const secrets = [deviceKey, s1, s2, passwordLoginKey(s1, USER), passwordLoginKey(s2, USER), fuses.deriveKey(IDENTITY_KEY_LABEL), fuses.deriveKey(storeKeyLabel('login')), fuses.deriveKey(storeKeyLabel('secrets')), new Uint8Array(32).fill(0x11)];
  const payloads: (Uint8Array | undefined)[] = [undefined, new Uint8Array(0), encode([]), encode([MsgType.hello, 0, 'reg-primary', [token, measurement]]), encode([USER, 2, 1, w2]), encode([2]), new Uint8Array(300).fill(0xff)];
  let calls = 0;
  for (let ins = 0; ins < 256; ins++) {
    for (const p1 of [0, 1, 2, 0x20, 0x21, 0xff]) {
      for (const p2 of [0, 1, 2]) {
        for (const data of payloads) {
          const out = se.transmit(encodeCommand({ ins, p1, p2, data }));
          calls++;
          for (const k of secrets) assert.not.ok(contains(out, k, 8), `INS ${ins.toString(16)} P1 ${p1} P2 ${p2}: a secret came out`);
        }
      }
    }
  }
  assert.ok(calls > 30_000);
});

test('attestation: the chip measures the boot files at power-on and at each attestation; GET DATA gives the vendor key and the measurement the hello must carry', () => {
  const { se } = chipWith();
  const vk = call(se, Ins.getData, { p2: DataObject.vendorKey });
  assert.equal([vk.sw, bytesToHex(vk.data)], [SW.ok, bytesToHex(TEST_VENDOR_PUB)]);
  const m = call(se, Ins.getData, { p2: DataObject.bootMeasurement });
  assert.is(m.sw, SW.ok);
  assert.equal(decode(m.data), [measurement, 1]);
  // At power-on, and again for this GET DATA: the measurement is of the files as they are now.
  assert.is(se.counters.measurements, 2);
  se.reset();
  call(se, Ins.getData, { p2: DataObject.vendorKey });
  assert.is(se.counters.measurements, 3, 'and again after a power cycle');
});

test('attestation, attack: boot files rewritten and BOOT.SIG re-signed with another key: no measurement, and the device key serves no hello', () => {
  const { chip, se } = chipWith();
  const v = zoneOf(table, ZoneType.VIRTUAL);
  const evil = zoneFiles('ws://evil.test/reg-primary', 'ws://evil.test/reg-backup', new Uint8Array(32).fill(0x66));
  chip.backing.fill(v.offset, v.size, 0xff);
  chip.backing.write(v.offset, buildIso(evil.virtual, 'USBPHONE'));
  const forged = verifyManifest(evil.manifest, vendorPublicKey(new Uint8Array(32).fill(0x66)));
  assert.ok(forged.ok);
  assert.is(call(se, Ins.getData, { p2: DataObject.bootMeasurement }).sw, SW.securityNotSatisfied);
  for (const claimed of [measurement, forged.ok ? forged.measurement : measurement]) {
    assert.is(call(se, Ins.hsOpen, { p1: Slot.deviceKey, data: [MsgType.hello, 0, 'reg-primary', [token, claimed]] }).sw, SW.securityNotSatisfied);
  }
  // The public identity stays readable (the host may show it); the key is what is withheld.
  assert.is(call(se, Ins.getData, { p2: DataObject.identity }).sw, SW.ok);
});

test('attestation, attacks of a host program (review): MAIN.EXE rewritten after power-on, or the host units shown other bytes, cannot get a genuine measurement attested', () => {
  const free = zoneOf(table, ZoneType.FREE);
  const mainSector = (chip: FlashChip) => {
    const { read } = arraySectors(chip.peek(free.offset, free.size));
    const e = listFat(read)!.find((x) => x.name === 'MAIN.EXE')!;
    const g = parseBootSector(read(0, 1)!).geometry!;
    return g.dataSector + (e.cluster - 2) * g.sectorsPerCluster;
  };
  const hello = [MsgType.hello, 0, 'reg-primary', [token, measurement]];
  // 1. Time of check, time of use: the chip answers a first command (its power-on measurement),
  // then the host rewrites MAIN.EXE through the disk unit and asks for the hello.
  const a = chipWith();
  assert.is(call(a.se, Ins.getData, { p2: DataObject.vendorKey }).sw, SW.ok);
  const lba = mainSector(a.chip);
  const evil = new Uint8Array(512).fill(0x20);
  evil.set(new TextEncoder().encode('EVIL MAIN PROGRAM'));
  assert.is(a.bus.disk.writeSectors(lba, evil), FlashStatus.OK);
  assert.is(call(a.se, Ins.hsOpen, { p1: Slot.deviceKey, data: hello }).sw, SW.securityNotSatisfied, 'no hello over rewritten firmware');
  assert.is(call(a.se, Ins.getData, { p2: DataObject.bootMeasurement }).sw, SW.securityNotSatisfied);
  // 2. The host replaces its own unit's read method to show the genuine sectors: the
  // controller reads the flash through a path of its own, and sees the rewrite.
  const b = chipWith();
  const genuine = b.chip.peek(free.offset, free.size);
  const lb = mainSector(b.chip);
  assert.is(b.bus.disk.writeSectors(lb, evil), FlashStatus.OK);
  (b.bus.disk as unknown as { readSectors: (l: number, n: number) => unknown }).readSectors = (l: number, n: number) => ({ status: FlashStatus.OK, data: genuine.slice(l * 512, (l + n) * 512) });
  assert.is(call(b.se, Ins.hsOpen, { p1: Slot.deviceKey, data: hello }).sw, SW.securityNotSatisfied, 'the chip does not read through the host units');
  // The accepted path: nothing rewritten, the same hello is served.
  assert.is(call(chipWith().se, Ins.hsOpen, { p1: Slot.deviceKey, data: hello }).sw, SW.ok);
});

test("a fleet's chip keeps a good measurement while the flash is unwritten (issue 15); attack: MAIN.EXE rewritten after it was kept, through the disk unit or in the flash itself, gets no hello", () => {
  const free = zoneOf(table, ZoneType.FREE);
  const mainSector = (chip: FlashChip) => {
    const { read } = arraySectors(chip.peek(free.offset, free.size));
    const e = listFat(read)!.find((x) => x.name === 'MAIN.EXE')!;
    const g = parseBootSector(read(0, 1)!).geometry!;
    return g.dataSector + (e.cluster - 2) * g.sectorsPerCluster;
  };
  const hello = [MsgType.hello, 0, 'reg-primary', [token, measurement]];
  const evil = new Uint8Array(512).fill(0x20);
  evil.set(new TextEncoder().encode('EVIL MAIN PROGRAM'));
  // Nothing written: the power-on measurement stands for the query and the hello (one reading of the files).
  const a = chipWith();
  a.se.keepMeasurementWhileUnwritten();
  assert.equal(decode(call(a.se, Ins.getData, { p2: DataObject.bootMeasurement }).data), [measurement, 1]);
  assert.is(call(a.se, Ins.hsOpen, { p1: Slot.deviceKey, data: hello }).sw, SW.ok);
  assert.is(a.se.counters.measurements, 1, 'kept: measured once');
  // 1. The host rewrites MAIN.EXE through its disk unit after the kept measurement.
  const b = chipWith();
  b.se.keepMeasurementWhileUnwritten();
  assert.is(call(b.se, Ins.getData, { p2: DataObject.bootMeasurement }).sw, SW.ok);
  assert.is(b.bus.disk.writeSectors(mainSector(b.chip), evil), FlashStatus.OK);
  assert.is(call(b.se, Ins.hsOpen, { p1: Slot.deviceKey, data: hello }).sw, SW.securityNotSatisfied, 'no hello over firmware rewritten after a kept measurement');
  assert.is(call(b.se, Ins.getData, { p2: DataObject.bootMeasurement }).sw, SW.securityNotSatisfied);
  assert.is(b.se.counters.measurements, 3, 'measured again after the write, and again for the query (a failed measurement is not kept)');
  // 2. The bytes changed in the flash itself (its backing written directly: a clip on the chip), one bit.
  const c = chipWith();
  c.se.keepMeasurementWhileUnwritten();
  assert.is(call(c.se, Ins.getData, { p2: DataObject.bootMeasurement }).sw, SW.ok);
  const d = zoneOf(table, ZoneType.FREE).offset;
  c.chip.flipBit(d + mainSector(c.chip) * 512 + 3, 0);
  assert.is(call(c.se, Ins.hsOpen, { p1: Slot.deviceKey, data: hello }).sw, SW.securityNotSatisfied, 'a flipped stored bit is seen');
  // 3. A failed measurement is not kept: the files repaired, the next query measures again and passes.
  const e = chipWith();
  e.se.keepMeasurementWhileUnwritten();
  const lba = mainSector(e.chip);
  const genuine = e.chip.peek(free.offset + lba * 512, 512);
  assert.is(e.bus.disk.writeSectors(lba, evil), FlashStatus.OK);
  assert.is(call(e.se, Ins.getData, { p2: DataObject.bootMeasurement }).sw, SW.securityNotSatisfied);
  assert.is(e.bus.disk.writeSectors(lba, genuine), FlashStatus.OK);
  assert.is(call(e.se, Ins.hsOpen, { p1: Slot.deviceKey, data: hello }).sw, SW.ok);
  // Without the option (the default), every query measures: the write-free case reads the files each time.
  const f = chipWith();
  call(f.se, Ins.getData, { p2: DataObject.bootMeasurement });
  call(f.se, Ins.hsOpen, { p1: Slot.deviceKey, data: hello });
  assert.is(f.se.counters.measurements, 3);
});

test('attestation read retry: a transient flip while the chip measures heals; a stored flip in MAIN.EXE leaves no measurement', () => {
  const free = zoneOf(table, ZoneType.FREE);
  const mainAt = (chip: FlashChip) => {
    const { read } = arraySectors(chip.peek(free.offset, free.size));
    const e = listFat(read)!.find((x) => x.name === 'MAIN.EXE')!;
    const g = parseBootSector(read(0, 1)!).geometry!;
    return free.offset + (g.dataSector + (e.cluster - 2) * g.sectorsPerCluster) * 512 + 17;
  };
  // Two flipped reads: power-on's measurement takes the first, the query's first attempt the
  // second (one flip alone would be healed by the query measuring again, retry or not); the
  // query's retry reads clean.
  const a = chipWith();
  a.chip.faults.readFlipAt = { addr: mainAt(a.chip), count: 2 };
  assert.is(call(a.se, Ins.getData, { p2: DataObject.bootMeasurement }).sw, SW.ok);
  assert.is(a.chip.faults.readFlips, 2);
  const b = chipWith();
  b.chip.flipBit(mainAt(b.chip), 4);
  assert.is(call(b.se, Ins.getData, { p2: DataObject.bootMeasurement }).sw, SW.securityNotSatisfied);
});

test('attestation read retry: the CD-ROM directory, read once per attempt, is read again on a retry (a transient flip in a file name heals; a stored one leaves no measurement)', () => {
  const virt = zoneOf(table, ZoneType.VIRTUAL);
  const nameAt = (chip: FlashChip) => {
    const bytes = chip.peek(virt.offset, virt.size);
    const at = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).indexOf('UPMON.EXE;1', 0, 'latin1');
    assert.ok(at > 0, 'UPMON.EXE directory record');
    return virt.offset + at + 6; // the 'E' of the extension: a flip of bit 0 reads "UPMON.DXE", still a valid name
  };
  // Two reads of the directory come back flipped: the first one (in which BOOT.SIG is found)
  // and the next. UPMON.EXE is missing from a flipped reading (a flip of bits 0-4 leaves a
  // valid name, "UPMON.DXE"; others an invalid directory), so the measurement stands only if
  // each retry reads the directory again (the query measures again after power-on's: a
  // directory kept across retries would fail both). The chip's seed picks the bits.
  for (let seed = 1; seed <= 16; seed++) {
    const a = chipWith(fuses, image, memoryNvm(), seed);
    a.chip.faults.readFlipAt = { addr: nameAt(a.chip), count: 2 };
    assert.is(call(a.se, Ins.getData, { p2: DataObject.bootMeasurement }).sw, SW.ok, `seed ${seed}`);
    assert.is(a.chip.faults.readFlips, 2);
  }
  const b = chipWith();
  b.chip.flipBit(nameAt(b.chip), 0);
  assert.is(call(b.se, Ins.getData, { p2: DataObject.bootMeasurement }).sw, SW.securityNotSatisfied);
});

test('a copied flash image in another chip (other fuses) opens nothing: no identity, no secrets', () => {
  const { chip, se } = chipWith();
  assert.is(call(se, Ins.importSecret, { data: [USER, 1, 0, wrapSecret(deviceKey, USER, 1, new Uint8Array(32).fill(0xc1), keystreamRng('c'))] }).sw, SW.ok);
  assert.is(call(se, Ins.writeRecord, { p1: Record.savedLogin, data: encode(['saved', 1]) }).sw, SW.ok);
  const copy = chip.peek(0, chip.sizeBytes);
  assert.not.ok(contains(copy, deviceKey, 8) || contains(copy, new Uint8Array(32).fill(0xc1), 8), 'a secret in the flash image');
  const other = chipWith(new Fuses(new Uint8Array(32).fill(0x22), Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8), TEST_VENDOR_PUB), copy).se;
  assert.is.not(call(other, Ins.getData, { p2: DataObject.identity }).sw, SW.ok);
  assert.is.not(call(other, Ins.hsOpen, { p1: Slot.deviceKey, data: [MsgType.hello, 0, 'reg-primary', [token, measurement]] }).sw, SW.ok);
  assert.is.not(call(other, Ins.readRecord, { p1: Record.savedLogin }).sw, SW.ok);
});

/** Whether `hay` holds `needle`, or (window > 0) any `window`-byte piece of it. */
function contains(hay: Uint8Array, needle: Uint8Array, window = needle.length): boolean {
  const h = bytesToHex(hay);
  for (let i = 0; i + window <= needle.length; i++) {
    const piece = bytesToHex(needle.subarray(i, i + window));
    for (let at = h.indexOf(piece); at !== -1; at = h.indexOf(piece, at + 1)) if (at % 2 === 0) return true;
  }
  return false;
}

test('rollback: an older copy of the flash written back is refused (the counters live in the controller, not the flash); a cut between the record and the counter is no rollback', () => {
  const nvm = memoryNvm();
  const { chip, se } = chipWith(fuses, image, nvm);
  const rng = keystreamRng('rollback');
  const s1 = new Uint8Array(32).fill(0xd1), s2 = new Uint8Array(32).fill(0xd2);
  assert.is(call(se, Ins.importSecret, { data: [USER, 1, 0, wrapSecret(deviceKey, USER, 1, s1, rng)] }).sw, SW.ok);
  assert.is(call(se, Ins.writeRecord, { p1: Record.savedLogin, data: encode(['first', 1]) }).sw, SW.ok);
  // The attacker keeps this copy of the flash...
  const older = chip.peek(0, chip.sizeBytes);
  // ...the phone moves on (a newer secret, a newer record)...
  assert.is(call(se, Ins.importSecret, { data: [USER, 2, 1, wrapSecret(deviceKey, USER, 2, s2, rng)] }).sw, SW.ok);
  assert.is(call(se, Ins.writeRecord, { p1: Record.savedLogin, data: encode(['second', 2]) }).sw, SW.ok);
  // ...and the attacker writes the older copy back, into the same chip (same fuses, same controller memory).
  const restored = chipWith(fuses, older, nvm).se;
  assert.is(call(restored, Ins.readRecord, { p1: Record.savedLogin }).sw, SW.notFound, 'the older record is refused');
  const gens = (decode(call(restored, Ins.getData, { p2: DataObject.slots }).data) as unknown[][])[1]!;
  assert.equal([gens[2], gens[4]], ['empty', []], 'the older secrets are refused');
  assert.is(restored.counters.rollbacks, 2);
  // The same copy in the chip it came from, before anything newer: read back as it is.
  const fresh = memoryNvm();
  const a = chipWith(fuses, image, fresh);
  assert.is(call(a.se, Ins.writeRecord, { p1: Record.savedLogin, data: encode(['only', 1]) }).sw, SW.ok);
  assert.equal(decode(call(chipWith(fuses, a.chip.peek(0, a.chip.sizeBytes), fresh).se, Ins.readRecord, { p1: Record.savedLogin }).data), ['only', 1]);
  // Power lost after the record reached the flash, before the counter: the record is newer
  // than the counter, accepted, and the counter catches up.
  const lagging = memoryNvm();
  const b = chipWith(fuses, image, lagging);
  assert.is(call(b.se, Ins.writeRecord, { p1: Record.savedLogin, data: encode(['r', 1]) }).sw, SW.ok);
  lagging.write(1, 0);
  assert.is(call(chipWith(fuses, b.chip.peek(0, b.chip.sizeBytes), lagging).se, Ins.readRecord, { p1: Record.savedLogin }).sw, SW.ok);
  assert.is(lagging.read(1), 1);
});

test.run();
