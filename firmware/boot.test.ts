// Boot (S0.3): AUTORUN.INF parsing and every way a virtual zone can stop the boot, on a
// real image through the real bus (one flipped byte or one rewritten file at a time).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseAutorun, boot, parseEndpoint } from './boot.ts';
import { buildImage } from './factory/image.ts';
import { Fuses } from './flash/fuses.ts';
import { MasterKeyring } from '../protocol/keys.ts';
import { makePhone } from './phone.ts';
import { simRng, Scheduler, SimNetwork } from './hal/sim-hal.ts';
import { listIso } from './zones/iso9660.ts';
import { zoneOf, ZoneType } from './zones/layout.ts';
import type { TraceEvent } from './hal/hal.ts';
import type { DeviceOutcome } from './device.ts';
import { zoneFiles, VOLUME_LABEL } from './factory/image.ts';
import { buildIso } from './zones/iso9660.ts';
import { crc32 } from './zones/crc32.ts';
import { encodeTable, TABLE_OFFSET } from './zones/layout.ts';
import { checkBootFiles, BOOT_READ_ATTEMPTS } from './boot-manifest.ts';
import { TEST_VENDOR_KEY, TEST_VENDOR_PUB } from './factory/test-vendor.ts';

test('parseAutorun: [autorun] open=, case-insensitive keys, other sections ignored', () => {
  assert.is(parseAutorun('[autorun]\r\nopen=UPMON.EXE\r\nlabel=X\r\n'), 'UPMON.EXE');
  assert.is(parseAutorun('[AutoRun]\nOPEN = upmon.exe\n'), 'UPMON.EXE');
  assert.is(parseAutorun('[other]\nopen=EVIL.EXE\n[autorun]\nlabel=x\n'), null);
  assert.is(parseAutorun(''), null);
});

const ring = new MasterKeyring([[1, new Uint8Array(32).fill(5)]]);
const fuses = Fuses.generate(simRng(1, 'fuses'), TEST_VENDOR_PUB);
const { image } = buildImage({ vendorKey: TEST_VENDOR_KEY, serial: 'SN-BOOT-1', fuses, keyring: ring });

function phoneWith(mutate?: (p: ReturnType<typeof makePhone>, at: (name: string) => number) => void) {
  const sched = new Scheduler();
  const events: TraceEvent[] = [];
  const p = makePhone({ base: image, fuses, hal: { clock: sched.clock(), rng: simRng(1), net: new SimNetwork(sched).device('127.1.0.1'), host: { trace: (e) => events.push(e), notice: () => {} } } });
  const v = zoneOf(p.table, ZoneType.VIRTUAL);
  const entries = listIso((lba, n) => p.chip.peek(v.offset + lba * 2048, n * 2048)) ?? [];
  const at = (name: string) => v.offset + entries.find((e) => e.name === name)!.lba * 2048;
  mutate?.(p, at);
  return { r: boot(p.device), events };
}

test('a factory image boots: every boot file matches the signed manifest, configuration read', () => {
  const { r, events } = phoneWith();
  assert.ok(r.ok);
  assert.ok(r.ok && /reg-primary$/.test(r.config.regPrimary.url) && r.config.regPrimary.dest === 'reg-primary' && r.config.mainProgram === 'MAIN.EXE');
  assert.is(events[0]!.feature, 'S0.3');
});

test('S3.10, S3.11: the policy key and the initial attack table ship in the signed UPMON.CFG; a malformed one stops the boot', () => {
  const bootWith = (policy: { key?: Uint8Array; initialTable?: unknown }) => {
    const { image: img } = buildImage({ vendorKey: TEST_VENDOR_KEY, serial: 'SN-BOOT-2', fuses, keyring: ring, policy });
    const sched = new Scheduler();
    const p = makePhone({ base: img, fuses, hal: { clock: sched.clock(), rng: simRng(1), net: new SimNetwork(sched).device('127.1.0.1'), host: { trace: () => {}, notice: () => {} } } });
    return boot(p.device);
  };
  const key = new Uint8Array(32).fill(7);
  const r = bootWith({ key, initialTable: { sites: [{ site: 'biz-east', mechanisms: ['password', 'otp'], floor: 'password', degree: 0.3 }] } });
  assert.ok(r.ok && r.config.policy.key && r.config.policy.key.every((b) => b === 7));
  assert.equal(r.ok && r.config.policy.initial?.sites.map((s) => [s.site, s.mechs.map((m) => m.mech)]), [['biz-east', ['password', 'otp']]]);
  const none = bootWith({});
  assert.equal(none.ok && none.config.policy, { key: null, initial: null });
  const bad = bootWith({ initialTable: { sites: [{ site: 'biz-east', mechanisms: ['telepathy'], floor: 'password', degree: 0.3 }] } });
  assert.match(!bad.ok ? bad.reason : '', /^BOOT_BAD_CONFIG: initialTable: /);
});

test('each corruption of the virtual zone stops the boot with its status', () => {
  const cases: [string, (p: ReturnType<typeof makePhone>, at: (n: string) => number) => void, RegExp][] = [
    ['a bit of UPMON.EXE', (p, at) => p.chip.flipBit(at('UPMON.EXE') + 7, 0), /^BOOT_HASH_MISMATCH/],
    ['AUTORUN.INF rewritten (names no program)', (p, at) => p.backing.write(at('AUTORUN.INF'), new TextEncoder().encode('[autorun]\r\nxxxx=UPMON.EXE')), /^BOOT_HASH_MISMATCH/],
    ['the signed manifest is garbage', (p, at) => p.backing.write(at('BOOT.SIG'), new TextEncoder().encode('garbage!')), /^BOOT_BAD_MANIFEST/],
    ['a bit of the manifest signature', (p, at) => p.chip.flipBit(at('BOOT.SIG') + 20, 3), /^BOOT_BAD_(SIGNATURE|MANIFEST)/],
    ['the configuration rewritten', (p, at) => p.backing.write(at('UPMON.CFG'), new TextEncoder().encode('garbage!')), /^BOOT_HASH_MISMATCH/],
    ['the ISO directory is erased', (p) => p.backing.fill(zoneOf(p.table, ZoneType.VIRTUAL).offset, 64 * 1024, 0xff), /^BOOT_NO_AUTORUN/],
  ];
  for (const [what, mutate, code] of cases) {
    const { r, events } = phoneWith(mutate);
    assert.is(r.ok, false, what);
    assert.match(!r.ok ? r.reason : '', code, what);
    assert.is(events.at(-1)!.ok, false, `${what}: traced as a failure`);
  }
});

// ---- signed boot, tried as an attacker with write access to the flash (issue 9)

const EVIL = 'ws://evil.test:6666';

/** A phone on a simulated network where the genuine servers and an attacker's server listen; counts who is contacted. */
async function plugged(mutate?: (p: ReturnType<typeof makePhone>) => void, opts: { flipAt?: (p: ReturnType<typeof makePhone>, at: (n: string) => number) => void } = {}) {
  const sched = new Scheduler();
  const net = new SimNetwork(sched);
  const contacted: string[] = [];
  for (const origin of ['ws://127.0.0.1:7400', EVIL]) net.listen(origin, (c) => { contacted.push(origin); c.close(1000, 'test'); });
  const events: TraceEvent[] = [];
  const p = makePhone({ base: image, fuses, hal: { clock: sched.clock(), rng: simRng(1), net: net.device('127.1.0.1'), host: { trace: (e) => events.push(e), notice: () => {} } } });
  mutate?.(p);
  const v = zoneOf(p.table, ZoneType.VIRTUAL);
  const entries = listIso((lba, n) => p.chip.peek(v.offset + lba * 2048, n * 2048)) ?? [];
  opts.flipAt?.(p, (name) => v.offset + entries.find((e) => e.name === name)!.lba * 2048);
  let outcome: DeviceOutcome | null = null;
  const done = p.device.plugIn().then((o) => (outcome = o));
  for (let i = 0; i < 50 && !outcome; i++) {
    sched.run(sched.now() + 60_000);
    await Promise.race([done, new Promise((r) => setTimeout(r, 1))]);
  }
  return { outcome: outcome as DeviceOutcome | null, contacted, events, p };
}

/** The attacker's rewrite: UPMON.CFG pointing at their server, every hash recomputed, the manifest signed with their own key, the ISO and the partition table's CRC rebuilt, written straight to the flash. */
function rewriteVirtualZone(p: ReturnType<typeof makePhone>, signer: Uint8Array) {
  const files = zoneFiles(`${EVIL}/reg-primary`, `${EVIL}/reg-backup`, signer);
  const iso = buildIso(files.virtual, VOLUME_LABEL);
  const v = zoneOf(p.table, ZoneType.VIRTUAL);
  p.backing.fill(v.offset, v.size, 0xff);
  p.backing.write(v.offset, iso);
  const table = { ...p.table, entries: p.table.entries.map((e) => (e.type === ZoneType.VIRTUAL ? { ...e, usedBytes: iso.length, contentCrc: crc32(iso) } : e)) };
  p.backing.fill(TABLE_OFFSET, 4096, 0xff);
  p.backing.write(TABLE_OFFSET, encodeTable(table));
}

test('signed boot, attack: endpoints rewritten, every hash recomputed, BOOT.SIG re-signed with another key: BOOT_BAD_SIGNATURE, nothing sent', async () => {
  const attacker = new Uint8Array(32).fill(0x66);
  const { outcome, contacted, events } = await plugged((p) => rewriteVirtualZone(p, attacker));
  assert.is(outcome?.kind, 'boot-failed');
  assert.match(outcome && !outcome.ok ? outcome.reason : '', /^BOOT_BAD_SIGNATURE/);
  assert.equal(contacted, [], 'no connection to anyone, the attacker least of all');
  assert.ok(events.every((e) => e.feature === 'S0.3'), 'the boot stopped before UPMon');
});

test('signed boot, accepted path: the same rewrite signed with the vendor key (a vendor release) boots and contacts the endpoints it names', async () => {
  const { outcome, contacted, events } = await plugged((p) => rewriteVirtualZone(p, TEST_VENDOR_KEY));
  assert.ok(events.some((e) => e.feature === 'S0.3' && e.ok && /boot manifest signature ok/.test(e.detail)));
  assert.ok(contacted.length > 0 && contacted.every((c) => c === EVIL), contacted.join());
  assert.is(outcome?.ok, false); // the test servers only close
});

test('signed boot: a factory image boots and its registration goes to the genuine endpoint; the trace names the signature and the measurement', async () => {
  const { contacted, events } = await plugged();
  const ok = events.find((e) => e.feature === 'S0.3' && e.ok)!;
  assert.match(ok.detail, /boot manifest signature ok: 4 files, firmware v1, measurement [0-9a-f]{16}/);
  assert.ok(contacted.length > 0 && contacted.every((c) => c === 'ws://127.0.0.1:7400'));
});

test('boot read retry: one transient bit flip in UPMON.EXE on the read path boots; a stored one is refused and nothing is sent', async () => {
  const transient = await plugged(undefined, { flipAt: (p, at) => (p.chip.faults.readFlipAt = { addr: at('UPMON.EXE') + 100, count: 1 }) });
  assert.is(transient.p.chip.faults.readFlips, 1, 'the flip happened');
  assert.ok(transient.events.some((e) => e.feature === 'S0.3' && e.ok), 'booted');
  assert.ok(transient.contacted.length > 0, 'and went on to register');
  // Two flips in a row still heal within BOOT_READ_ATTEMPTS reads.
  const twice = await plugged(undefined, { flipAt: (p, at) => (p.chip.faults.readFlipAt = { addr: at('UPMON.CFG') + 3, count: 2 }) });
  assert.is(twice.p.chip.faults.readFlips, 2);
  assert.ok(twice.events.some((e) => e.feature === 'S0.3' && e.ok), 'booted after two flips');
  const stored = await plugged(undefined, { flipAt: (p, at) => p.chip.flipBit(at('UPMON.EXE') + 100, 2) });
  assert.is(stored.outcome?.kind, 'boot-failed');
  assert.match(stored.outcome && !stored.outcome.ok ? stored.outcome.reason : '', /^BOOT_HASH_MISMATCH: virtual zone UPMON.EXE does not match the signed manifest \(3 reads\)/);
  assert.equal(stored.contacted, []);
});

test('checkBootFiles reads each file at most BOOT_READ_ATTEMPTS times and stops at a power cut', () => {
  const vendor = TEST_VENDOR_KEY;
  const files = zoneFiles('ws://h/reg-primary', 'ws://h/reg-backup', vendor);
  const all = new Map<string, Uint8Array>([...files.virtual.map((f) => ['cdrom:' + f.name, f.data] as const), ...files.free.map((f) => ['disk:' + f.name, f.data] as const)]);
  const reads = new Map<string, number>();
  const reader = (bad: (k: string, n: number) => 'flip' | 'lost' | null) => (zone: string, name: string) => {
    const k = `${zone}:${name}`;
    const n = (reads.get(k) ?? 0) + 1;
    reads.set(k, n);
    const d = Uint8Array.from(all.get(k)!);
    const b = bad(k, n);
    if (b === 'lost') return { ok: false as const, status: 'ERR_POWER_LOST' };
    if (b === 'flip') d[0]! ^= 1;
    return { ok: true as const, data: d };
  };
  const ok = checkBootFiles(reader((k, n) => (k === 'disk:MAIN.EXE' && n < BOOT_READ_ATTEMPTS ? 'flip' : null)), TEST_VENDOR_PUB);
  assert.ok(ok.ok && ok.retries === BOOT_READ_ATTEMPTS - 1);
  reads.clear();
  const bad = checkBootFiles(reader((k) => (k === 'disk:MAIN.EXE' ? 'flip' : null)), TEST_VENDOR_PUB);
  assert.is(bad.ok, false);
  assert.is(reads.get('disk:MAIN.EXE'), BOOT_READ_ATTEMPTS);
  reads.clear();
  const lost = checkBootFiles(reader((k) => (k === 'cdrom:UPMON.EXE' ? 'lost' : null)), TEST_VENDOR_PUB);
  assert.ok(!lost.ok && lost.powerLost === true && reads.get('cdrom:UPMON.EXE') === 1);
});

test('parseEndpoint: the dest is the last path segment; anything else is refused', () => {
  assert.equal(parseEndpoint('ws://127.0.0.1:7400/reg-primary'), { url: 'ws://127.0.0.1:7400/reg-primary', dest: 'reg-primary' });
  assert.equal(parseEndpoint('wss://gw.example/v1/reg-backup/'), { url: 'wss://gw.example/v1/reg-backup/', dest: 'reg-backup' });
  for (const bad of ['ws://127.0.0.1:7400/', 'ws://127.0.0.1:7400', 'http://h/reg', 'ws://h/Reg', 'ws://h b/reg', 'ws://h/' + 'a'.repeat(33), 7, null, 'ws://h/' + 'a/'.repeat(200) + 'x']) {
    assert.is(parseEndpoint(bad), null, String(bad));
  }
});

test.run();
