// The simulated HAL replays: one seed, one trace, byte for byte (first-boot and both-down).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { runDeterministic } from './deterministic.ts';
import { setLogSink } from '../server-kit/log.ts';

setLogSink(() => {});

for (const name of ['first-boot', 'both-down-uses-saved']) {
  test(`${name} on the simulated HAL: same seed, same trace`, async () => {
    const a = await runDeterministic(name, { seed: 42 });
    const b = await runDeterministic(name, { seed: 42 });
    assert.ok(a.ok, a.verdict);
    assert.ok(a.lines.length >= 8, 'a whole story was traced');
    assert.equal(b.lines, a.lines);
  });
}

test('with frame loss the story still replays exactly, and the seed changes it', async () => {
  const a = await runDeterministic('both-down-uses-saved', { seed: 3, loss: 0.1 });
  const b = await runDeterministic('both-down-uses-saved', { seed: 3, loss: 0.1 });
  assert.equal(b.lines, a.lines);
  const c = await runDeterministic('both-down-uses-saved', { seed: 4, loss: 0.1 });
  assert.not.equal(c.lines, a.lines);
});

test.run();
