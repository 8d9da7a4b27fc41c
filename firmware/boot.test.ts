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

test('parseAutorun: [autorun] open=, case-insensitive keys, other sections ignored', () => {
  assert.is(parseAutorun('[autorun]\r\nopen=UPMON.EXE\r\nlabel=X\r\n'), 'UPMON.EXE');
  assert.is(parseAutorun('[AutoRun]\nOPEN = upmon.exe\n'), 'UPMON.EXE');
  assert.is(parseAutorun('[other]\nopen=EVIL.EXE\n[autorun]\nlabel=x\n'), null);
  assert.is(parseAutorun(''), null);
});

const ring = new MasterKeyring([[1, new Uint8Array(32).fill(5)]]);
const fuses = Fuses.generate(simRng(1, 'fuses'));
const { image } = buildImage({ serial: 'SN-BOOT-1', fuses, keyring: ring });

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

test('a factory image boots: UPMon found, hash checked, configuration read', () => {
  const { r, events } = phoneWith();
  assert.ok(r.ok);
  assert.ok(r.ok && /reg-primary$/.test(r.config.regPrimary.url) && r.config.regPrimary.dest === 'reg-primary' && r.config.mainProgram === 'MAIN.EXE');
  assert.is(events[0]!.feature, 'S0.3');
});

test('each corruption of the virtual zone stops the boot with its status', () => {
  const cases: [string, (p: ReturnType<typeof makePhone>, at: (n: string) => number) => void, RegExp][] = [
    ['a bit of UPMON.EXE', (p, at) => p.chip.flipBit(at('UPMON.EXE') + 7, 0), /^BOOT_HASH_MISMATCH/],
    ['AUTORUN.INF names no program', (p, at) => p.backing.write(at('AUTORUN.INF'), new TextEncoder().encode('[autorun]\r\nxxxx=UPMON.EXE')), /^BOOT_BAD_AUTORUN/],
    ['the manifest is not JSON', (p, at) => p.backing.write(at('UPMON.MAN'), new TextEncoder().encode('garbage!')), /^BOOT_BAD_MANIFEST/],
    ['the configuration is not JSON', (p, at) => p.backing.write(at('UPMON.CFG'), new TextEncoder().encode('garbage!')), /^BOOT_BAD_CONFIG/],
    ['the ISO directory is erased', (p) => p.backing.fill(zoneOf(p.table, ZoneType.VIRTUAL).offset, 64 * 1024, 0xff), /^BOOT_NO_AUTORUN/],
  ];
  for (const [what, mutate, code] of cases) {
    const { r, events } = phoneWith(mutate);
    assert.is(r.ok, false, what);
    assert.match(!r.ok ? r.reason : '', code, what);
    assert.is(events.at(-1)!.ok, false, `${what}: traced as a failure`);
  }
});

test('parseEndpoint: the dest is the last path segment; anything else is refused', () => {
  assert.equal(parseEndpoint('ws://127.0.0.1:7400/reg-primary'), { url: 'ws://127.0.0.1:7400/reg-primary', dest: 'reg-primary' });
  assert.equal(parseEndpoint('wss://gw.example/v1/reg-backup/'), { url: 'wss://gw.example/v1/reg-backup/', dest: 'reg-backup' });
  for (const bad of ['ws://127.0.0.1:7400/', 'ws://127.0.0.1:7400', 'http://h/reg', 'ws://h/Reg', 'ws://h b/reg', 'ws://h/' + 'a'.repeat(33), 7, null, 'ws://h/' + 'a/'.repeat(200) + 'x']) {
    assert.is(parseEndpoint(bad), null, String(bad));
  }
});

test.run();
