// The power-cut search (sim/power-cut-search.ts) over the phone's own flash writes: every
// mutating flash operation of the first boot, a rotation and a pushed attack table (a bank
// registration: sim/power-cut-search-bank.test.ts) is cut in turn (and every program torn in its middle) on a fresh phone, and what
// the next power-on writes to recover is cut again at each of its operations; the phone is then
// replugged: each record store holds its old record or a newer whole one, the virtual and
// free zones are byte-identical, and the phone logs in. A host's write over the CD-ROM makes no
// flash operation at all. Each zone's invariant fails when broken (rogue writes), and a record
// store that writes in place (a mutant) is caught, with the operation index, and the failure
// replays from that index alone.
// The host's writes to the disk unit: sim/power-cut-search-host.test.ts (create),
// -overwrite.test.ts, -delete.test.ts, one per file to keep each under a minute.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { setLogSink } from '../server-kit/log.ts';
import { searchPowerCuts, powerCutScenario, startCutWorld, type PowerCutScenario } from './power-cut-search.ts';
import { zoneOf, ZoneType } from '../firmware/zones/layout.ts';
import { deleteFatFile } from '../firmware/zones/fat.ts';
import { diskIo } from '../firmware/host/disk-check.ts';
import { figures, show, firmwareWriteSearchTest, suiteCutWorld } from './power-cut-tests.ts';

setLogSink(() => {});

const world = suiteCutWorld();

// What each scenario's uncut run must change: a search over a write that writes nothing proves nothing.
firmwareWriteSearchTest(world, 'first-boot', ['login', 'secrets'], 1000);
firmwareWriteSearchTest(world, 'rotation', ['login', 'secrets'], 2000);
firmwareWriteSearchTest(world, 'table-push', ['login'], 3000);
let index = 10_000;

test('a host writing over the whole CD-ROM unit: refused, not one flash operation, the virtual zone byte-identical, the phone logs in', async () => {
  const r = await searchPowerCuts(powerCutScenario('cdrom-write'), { world: world(), firstIndex: (index += 1000) });
  console.log(figures(r));
  assert.equal(r.failures, [], show(r));
  assert.is(r.ops, 0);
  assert.is(r.cuts, 0);
  assert.equal(r.wrote, []);
});

test('each zone invariant fails when broken: a stray erase in the virtual zone, a firmware write into the free zone, a host write that removes a file it does not own', async () => {
  const fresh = powerCutScenario('cdrom-write').prepare;
  const rogue: [PowerCutScenario, string, RegExp][] = [
    [{ name: 'stray-virtual-erase', what: '', writer: 'host', touches: [], prepare: fresh, act: async (s) => (s.phone.chip.eraseSector(zoneOf(s.phone.table, ZoneType.VIRTUAL).offset + 8 * 4096), null) }, 'virtual', /the virtual zone changed \(first difference at zone offset 0x8000\)/],
    [{ name: 'firmware-into-free', what: '', writer: 'firmware', prepare: fresh, act: async (s) => (s.phone.chip.program(zoneOf(s.phone.table, ZoneType.FREE).offset + 5, Uint8Array.of(0)), null) }, 'free', /the free zone changed \(first difference at zone offset 0x5\)/],
    [{ name: 'host-deletes-unowned', what: '', writer: 'host', touches: ['NOTE.TXT'], prepare: fresh, act: async (s) => (deleteFatFile(diskIo(s.phone.bus.disk).read, diskIo(s.phone.bus.disk).write, 'README.TXT'), null) }, 'free', /untouched file README\.TXT is unreadable or gone/],
  ];
  for (const [sc, invariant, detail] of rogue) {
    const r = await searchPowerCuts(sc, { world: world(), firstIndex: (index += 1000), maxFailures: 2, torn: false, secondCuts: false });
    console.log(figures(r));
    console.log(show(r));
    const uncut = r.failures.find((f) => f.op === -1);
    assert.ok(uncut && uncut.invariant === invariant && detail.test(uncut.detail), `${sc.name}: ${show(r)}`);
  }
});

test('mutant: a record store that overwrites its current slot in place: the search reports the lost record at the operation that erased it, and that one cut replays it', async () => {
  const bad = await startCutWorld({ device: { storeMutant: 'in-place' } });
  try {
    const sc = powerCutScenario('rotation');
    const r = await searchPowerCuts(sc, { world: bad, firstIndex: 100, torn: false, secondCuts: false });
    console.log(figures(r));
    console.log(show(r));
    assert.ok(r.failures.length > 0, 'the search finds the broken rule');
    assert.ok(r.failures.every((f) => f.op >= 0), 'the uncut run itself is fine: only a cut shows the break');
    // Rotation's first operation erases the secrets store's slot for the new secret: in place,
    // that is the slot of the only record it has.
    const first = r.failures[0]!;
    assert.is(first.op, 0);
    assert.is(first.invariant, 'hidden');
    assert.match(first.detail, /cut at op 0 erase hidden\+0x[0-9a-f]+ .*store secrets: its record \(seq 1\) is gone/);
    const again = await searchPowerCuts(sc, { world: bad, firstIndex: 900, torn: false, secondCuts: false, only: [first.op] });
    assert.is(again.cuts, 1);
    assert.ok(again.failures.some((f) => f.op === first.op && f.invariant === first.invariant && f.detail === first.detail), show(again));
  } finally {
    await bad.stop();
  }
});

test.run();
