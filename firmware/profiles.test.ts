// The device profiles (S0.15) without sockets: the launcher of the mobile phone and the ATM
// never takes the host-AutoRun path (an AUTORUN.INF that names nothing, or another program,
// stops the USB phone's boot and not theirs); each profile's wiring; its refusals; the first
// identifier of each. End to end over real sockets: sim/profiles.test.ts.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { sha256 } from '@noble/hashes/sha2.js';
import { boot, launch } from './boot.ts';
import { PROFILES, PROFILE_NAMES, wireDevice, installStorage, isProfileName } from './profiles.ts';
import { firstIdentifier, maskCardNumber } from './first-identifier.ts';
import { EventLoop } from './loop.ts';
import { defaultDeviceConfig, type Board, type ProfileName } from './board.ts';
import { Scheduler, SimNetwork, simRng } from './hal/sim-hal.ts';
import { SimSlot } from './hal/sim-card.ts';
import { BOOT_FILES, buildImage, zoneFiles, type ZoneFiles } from './factory/image.ts';
import { signManifest, MANIFEST_FILE } from './boot-manifest.ts';
import { TEST_VENDOR_KEY, TEST_VENDOR_PUB } from './factory/test-vendor.ts';
import { FlashChip, FlashStatus } from './flash/chip.ts';
import { CowBacking } from './flash/backing.ts';
import { DeviceBus } from './flash/bus.ts';
import { Fuses } from './flash/fuses.ts';
import { parseTable, zoneOf, ZoneType } from './zones/layout.ts';
import { IDENTITY_OFFSET } from './zones/hidden.ts';
import { MasterKeyring } from '../protocol/keys.ts';
import { withLuhn } from '../protocol/line-ids.ts';
import { ImplementationError } from '../protocol/errors.ts';
import type { PhoneStorage } from './saved-login.ts';
import type { HalBase } from './hal/hal.ts';

const te = new TextEncoder();
const REG1 = 'ws://reg.test:7300/reg-primary', REG2 = 'ws://reg.test:7300/reg-backup';

/** The vendor's program set with AUTORUN.INF replaced, and BOOT.SIG signed again over it by the vendor. */
function withAutorun(text: string): ZoneFiles {
  const f = zoneFiles(REG1, REG2, TEST_VENDOR_KEY);
  const virtual = f.virtual.filter((x) => x.name !== MANIFEST_FILE).map((x) => (x.name === 'AUTORUN.INF' ? { name: x.name, data: te.encode(text) } : x));
  const data = (zone: 'cdrom' | 'disk', name: string) => (zone === 'cdrom' ? virtual : f.free).find((x) => x.name === name)!.data;
  const manifest = signManifest({ version: 1, entries: BOOT_FILES.map(({ zone, name }) => ({ zone, name, sha256: sha256(data(zone, name)) })) }, TEST_VENDOR_KEY);
  return { virtual: [...virtual, { name: MANIFEST_FILE, data: manifest }], free: f.free };
}

/** A board over a program set, with the vendor key a chip would give: what boot and launch read. */
function board(profile: ProfileName, files: ZoneFiles) {
  const sched = new Scheduler();
  const clock = sched.clock();
  const traces: string[] = [];
  const none = () => {
    throw new Error('boot and launch use only the files and the vendor key');
  };
  const storage = { ...installStorage(files), vendorKey: () => ({ ok: true, value: TEST_VENDOR_PUB }) } as unknown as PhoneStorage;
  for (const k of ['readIdentity', 'attestation', 'deviceKeys', 'loginKeys', 'importSecret', 'retireOlder', 'secrets', 'loadLogin', 'saveLogin'] as const) (storage as unknown as Record<string, unknown>)[k] = none;
  const b: Board = {
    profile,
    clock,
    rng: simRng(1, 'profiles'),
    net: new SimNetwork(sched).device('10.0.0.9'),
    loop: new EventLoop(clock),
    storage,
    config: defaultDeviceConfig,
    trace: (f, step, d, ok = true) => void traces.push(`${f} ${step} ${ok} ${d}`),
    notice: () => {},
  };
  return { b, traces };
}

test('the launcher starts UPMON.EXE by name; the host-AutoRun path is not involved', () => {
  // The vendor's own files: both start UPMon with the same configuration.
  const good = zoneFiles(REG1, REG2, TEST_VENDOR_KEY);
  const a = board('usb', good), m = board('mobile', good);
  const viaAutorun = boot(a.b), viaLauncher = launch(m.b);
  assert.ok(viaAutorun.ok && viaLauncher.ok);
  assert.equal(viaLauncher, viaAutorun);
  assert.ok(a.traces.some((t) => t.startsWith('S0.3 autorun true') && /AUTORUN\.INF -> UPMON\.EXE/.test(t)));
  assert.ok(m.traces.some((t) => t.startsWith('S0.15 launch true') && /mobile profile's launcher starts UPMON\.EXE \(no AutoRun\)/.test(t)), m.traces.join('\n'));
  // A signed AUTORUN.INF that names no program, or a program that is not signed: the AutoRun
  // stops, the launcher never reads what AUTORUN.INF names.
  for (const [text, code] of [['[autorun]\r\nlabel=X\r\n', 'BOOT_BAD_AUTORUN'], ['[autorun]\r\nopen=EVIL.EXE\r\n', 'BOOT_BAD_SIGNATURE: EVIL.EXE']] as const) {
    const files = withAutorun(text);
    const u = boot(board('usb', files).b);
    assert.ok(!u.ok && u.reason.startsWith(code), JSON.stringify(u));
    for (const p of ['mobile', 'atm'] as const) {
      const l = launch(board(p, files).b);
      assert.ok(l.ok && l.config.mainProgram === 'MAIN.EXE', `${p}: ${JSON.stringify(l)}`);
    }
  }
});

test('the launcher checks the signed boot files as the AutoRun does: a rewritten file does not start', () => {
  const good = zoneFiles(REG1, REG2, TEST_VENDOR_KEY);
  const bad = { virtual: good.virtual.map((f) => (f.name === 'UPMON.CFG' ? { name: f.name, data: te.encode('{"regPrimary":"ws://evil.test/reg-primary"}') } : f)), free: good.free };
  const m = board('mobile', bad);
  const r = launch(m.b);
  assert.ok(!r.ok && /^BOOT_HASH_MISMATCH|^BOOT_BAD_SIGNATURE/.test(r.reason), JSON.stringify(r));
  assert.ok(m.traces.some((t) => t.startsWith('S0.15 launch false')));
  // The ATM's install without its main program.
  const noMain = { virtual: good.virtual, free: good.free.filter((f) => f.name !== 'MAIN.EXE') };
  const n = launch(board('atm', noMain).b);
  assert.ok(!n.ok, JSON.stringify(n));
});

test('the profile table: the USB phone auto-runs, the mobile phone and the ATM launch; only the ATM reaches the chip through card contacts', () => {
  assert.equal(PROFILE_NAMES, ['usb', 'mobile', 'atm']);
  assert.is(PROFILES.usb.start, 'autorun');
  assert.is(PROFILES.mobile.start, 'launcher');
  assert.is(PROFILES.atm.start, 'launcher');
  assert.is(PROFILES.atm.chipInterface, 'card-contacts');
  assert.is(PROFILES.atm.firstIdentifier, 'card');
  assert.ok(Object.isFrozen(PROFILES));
  for (const v of ['usb', 'mobile', 'atm']) assert.ok(isProfileName(v));
  for (const v of ['USB', 'pda', '', 'toString', '__proto__', 'constructor', null, 1, {}]) assert.not.ok(isProfileName(v), String(v));
});

// A real chip and bus, for the wiring.
const fuses = new Fuses(new Uint8Array(32).fill(0x21), Uint8Array.of(8, 7, 6, 5, 4, 3, 2, 1), TEST_VENDOR_PUB);
const { image } = buildImage({ vendorKey: TEST_VENDOR_KEY, serial: '9999001000000007', fuses, keyring: new MasterKeyring([[1, new Uint8Array(32).fill(3)]]), regPrimary: REG1, regBackup: REG2 });
const table = (() => {
  const p = parseTable(image);
  if (!p.ok) throw new Error('bad table');
  return p.table;
})();
const bus = () => new DeviceBus(new FlashChip({ backing: new CowBacking(image, 4096), seed: 1 }), fuses, table, simRng(2, 'se'));
const hal = (sim?: SimSlot): HalBase => {
  const sched = new Scheduler();
  const h: HalBase = { clock: sched.clock(), rng: simRng(3, 'hal'), net: new SimNetwork(sched).device('10.0.0.7'), host: { trace: () => {}, notice: () => {} } };
  if (sim) h.sim = sim;
  return h;
};
const code = (c: string) => (e: unknown) => e instanceof ImplementationError && e.code === c;
const card = { iccid: withLuhn('890010100000000000'), imsi: '001010000000001', cardType: 'USIM' as const };

test('each profile is a wiring of the same parts; a HAL or an install that does not fit the profile is refused', () => {
  const install = zoneFiles(REG1, REG2, TEST_VENDOR_KEY);
  const usb = wireDevice('usb', bus(), hal(), defaultDeviceConfig);
  const mobile = wireDevice('mobile', bus(), hal(new SimSlot(card)), defaultDeviceConfig);
  const atm = wireDevice('atm', bus(), hal(), defaultDeviceConfig, install);
  assert.equal([usb.profile, usb.wiring.start, mobile.profile, mobile.wiring.start, atm.profile, atm.wiring.start], ['usb', 'autorun', 'mobile', 'launcher', 'atm', 'launcher']);
  // The phones read their own chip's zones; the ATM its own install (the card's zones are not reachable).
  assert.ok(usb.storage.readVirtualFile('AUTORUN.INF').ok && mobile.storage.readFreeFile('MAIN.EXE').ok);
  const atmFile = atm.storage.readFreeFile('README.TXT');
  assert.ok(atmFile.ok);
  assert.is(atm.storage.readVirtualFile('NOPE.EXE').ok, false);
  // All three use the same secure controller the same way.
  for (const d of [usb, mobile, atm]) {
    const id = d.storage.readIdentity();
    assert.ok(id.ok && id.value.serial === '9999001000000007');
  }
  assert.throws(() => wireDevice('atm', bus(), hal(new SimSlot(card)), defaultDeviceConfig, install), code('PROFILE_SIM_SLOT'));
  assert.throws(() => wireDevice('mobile', bus(), hal(), defaultDeviceConfig), code('PROFILE_SIM_SLOT'));
  assert.throws(() => wireDevice('atm', bus(), hal(), defaultDeviceConfig), code('PROFILE_NO_INSTALL'));
  assert.throws(() => wireDevice('usb', bus(), hal(), defaultDeviceConfig, install), code('PROFILE_NO_INSTALL'));
  for (const bad of ['pda', '__proto__', '', 7]) assert.throws(() => wireDevice(bad as ProfileName, bus(), hal(), defaultDeviceConfig), code('PROFILE_UNKNOWN'));
});

test('the install a terminal reads is its own and read-only: a program that changes what it read changes nothing', () => {
  const install = zoneFiles(REG1, REG2, TEST_VENDOR_KEY);
  const s = installStorage(install);
  const a = s.readVirtualFile('UPMON.EXE');
  assert.ok(a.ok);
  a.value.fill(0);
  const b = s.readVirtualFile('UPMON.EXE');
  assert.ok(b.ok && b.value.some((x) => x !== 0));
  const m = s.mountVirtual();
  assert.ok(m.ok && m.value.readFile('BOOT.SIG').ok);
  // Changing the caller's arrays after the install was made changes nothing either.
  install.free.find((f) => f.name === 'MAIN.EXE')!.data.fill(0);
  const main = s.readFreeFile('MAIN.EXE');
  assert.ok(main.ok && main.value.some((x) => x !== 0));
  assert.equal(s.readFreeFile('../MAIN.EXE'), { ok: false, status: 'ERR_NOT_FOUND' });
});

test('the first identifier: the SIM card info on a phone, the card number on the ATM; a missing source is said with its reason', () => {
  const install = zoneFiles(REG1, REG2, TEST_VENDOR_KEY);
  const atm = wireDevice('atm', bus(), hal(), defaultDeviceConfig, install);
  assert.equal(firstIdentifier(atm), { ok: true, kind: 'card', cardNumber: '9999001000000007' });
  const slot = new SimSlot(card);
  const mobile = wireDevice('mobile', bus(), hal(slot), defaultDeviceConfig);
  assert.equal(firstIdentifier(mobile), { ok: true, kind: 'sim', info: card });
  slot.remove();
  assert.is((firstIdentifier(mobile) as { reason: string }).reason, 'NO_CARD');
  const usb = wireDevice('usb', bus(), hal(), defaultDeviceConfig);
  assert.is(usb.cardIdentity, undefined);
  assert.is((firstIdentifier(usb) as { reason: string }).reason, 'NO_SIM_SLOT');
  // A card whose identity record is gone (its hidden zone's identity sector erased): unreadable, said so.
  const chip = new FlashChip({ backing: new CowBacking(image, 4096), seed: 1 });
  const at = zoneOf(table, ZoneType.HIDDEN).offset + IDENTITY_OFFSET;
  assert.is(chip.eraseSector(at - (at % 4096)), FlashStatus.OK);
  const dead = wireDevice('atm', new DeviceBus(chip, fuses, table, simRng(2, 'se')), hal(), defaultDeviceConfig, install);
  const r = firstIdentifier(dead);
  assert.ok(!r.ok && r.reason === 'CARD_UNREADABLE' && /SW_NOT_FOUND/.test(r.detail), JSON.stringify(r));
  assert.is(maskCardNumber('9999001000000007'), '************0007');
  assert.is(maskCardNumber('123'), '****');
});

test.run();
