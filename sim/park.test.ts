// A fleet's unplugged phone keeps only what a real one keeps (firmware/phone.ts park: its
// copy-on-write pages, its controller's NVM, its chip's wear) and is rebuilt from it at the
// next plug-in: it logs in again with a password change (its saved login and secret came
// along); wiped, the same parked phone has no identity; parking what cannot be parked is refused.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startWorld, type World } from './world.ts';
import { park, makePhone } from '../firmware/phone.ts';
import { CowBacking, MemoryBacking } from '../firmware/flash/backing.ts';
import { setLogSink } from '../server-kit/log.ts';
import { ImplementationError } from '../protocol/errors.ts';

setLogSink(() => {}, 'warn');
const dir = mkdtempSync(join(tmpdir(), 'usbphone-park-test-'));
let world: World;
const host = { trace() {}, notice() {} };
test.before(async () => {
  world = await startWorld({ stateDir: dir, gatewayPort: 0, seed: 5 });
});
test.after(async () => {
  await world.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('parked and plugged in again: the phone logs in with its next password generation; its parked state is pages, NVM and wear only', async () => {
  const { phone } = await world.phone(0, host);
  const first = await phone.device.plugIn();
  assert.ok(first.ok, JSON.stringify(first));
  const parked = park(phone);
  assert.ok(parked.backing.privateBytes > 0 && parked.backing.privateBytes < 2048, `${parked.backing.privateBytes} bytes of pages`);
  assert.ok(parked.wear && parked.wear.length % 2 === 0 && parked.wear.length > 0, 'erase counters kept as (sector, count) pairs');
  assert.equal(Object.keys(parked), ['backing', 'nvm', 'wear']);
  const again = await world.phone(0, host, { enroll: false, parked });
  assert.is(again.phone.backing, parked.backing);
  // The chip's wear came along.
  for (let j = 0; j < parked.wear!.length; j += 2) assert.is(again.phone.chip.eraseCount(parked.wear![j]!), parked.wear![j + 1]);
  const second = await again.phone.device.plugIn();
  assert.ok(second.ok, JSON.stringify(second));
  if (first.ok && second.ok) assert.is(second.gen, first.gen + 1, 'the second plug-in changed the password (S0.14): the saved login and secret were kept');
});

test('a parked phone whose flash is wiped plugs in without an identity: not logged in', async () => {
  const { phone } = await world.phone(1, host);
  assert.ok((await phone.device.plugIn()).ok);
  const parked = park(phone);
  (parked.backing as CowBacking).reset();
  const again = await world.phone(1, host, { enroll: false, parked });
  const r = await again.phone.device.plugIn();
  assert.is(r.ok, false);
});

test('refused: parking a phone over a plain backing; a parked phone given a personalization or an NVM', async () => {
  const { phone } = await world.phone(2, host, { enroll: false });
  const plain = { ...phone, backing: new MemoryBacking(16) };
  try {
    park(plain);
    assert.unreachable('parked');
  } catch (e) {
    assert.instance(e, ImplementationError);
    assert.is((e as ImplementationError).code, 'PHONE_PARK');
  }
  const parked = park(phone);
  const hal = { clock: { now: () => 0, epochMs: () => 0 }, rng: (n: number) => new Uint8Array(n), net: {} as never, host };
  assert.throws(() => makePhone({ parked, fuses: {} as never, hal: hal as never, personalize: { serial: 'SN-X', keyVersion: 1, master: new Uint8Array(32) } }), (e: unknown) => (e as ImplementationError).code === 'PHONE_BACKING');
  assert.throws(() => makePhone({ parked, base: world.base, fuses: {} as never, hal: hal as never }), (e: unknown) => (e as ImplementationError).code === 'PHONE_BACKING');
});

test.run();
