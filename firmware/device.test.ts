// The real board's own bookkeeping, without boot or sockets (the programs on it run end to end
// in sim/; on a fake board in board.test.ts).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Device } from './device.ts';
import { Scheduler, SimNetwork, simRng } from './hal/sim-hal.ts';
import type { PhoneStorage } from './saved-login.ts';

test('S3.11 (issue 15): the Device counts every table pushed to it, kept or not, even before its boot read a policy: the main program reads the record again before its save only when the count moved', () => {
  const sched = new Scheduler();
  // No storage call is expected: with no policy yet (no boot), a push is counted and ignored.
  const storage = new Proxy({}, { get: (_t, k) => () => assert.unreachable(`storage.${String(k)} called`) }) as unknown as PhoneStorage;
  const dev = new Device({ clock: sched.clock(), rng: simRng(1, 'device test'), net: new SimNetwork(sched).device('10.0.0.7'), host: { trace: () => {}, notice: () => {} } }, storage);
  assert.is(dev.tablesPushed, 0);
  dev.tablePush(new Uint8Array([1, 2, 3]));
  dev.tablePush(new Uint8Array([1, 2, 3]));
  assert.is(dev.tablesPushed, 2, 'each push counts, the same bytes again too');
});

test.run();
