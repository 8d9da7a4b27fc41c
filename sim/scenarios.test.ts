// Every S0 story over real sockets, each in a fresh state directory.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { runStory, STORIES } from './scenarios.ts';
import { setLogSink } from '../server-kit/log.ts';
import { ATTACK_STORIES } from './attack-scenarios.ts';

setLogSink(() => {});

// The bank's stories run in sim/bank-scenarios.test.ts (with the page and capture checks), the
// S3 ones in sim/attack-scenarios.test.ts (both with a lower scrypt cost).
for (const name of Object.keys(STORIES).filter((n) => !n.startsWith('bank-') && !(n in ATTACK_STORIES))) {
  test(`scenario ${name}`, async () => {
    const lines: string[] = [];
    const r = await runStory(name, { print: (l) => lines.push(l) });
    assert.ok(r.ok, `${name}: ${r.verdict}\n${lines.join('\n')}\n${r.trace.map((e) => `${e.feature} ${e.step} ${e.detail} ${e.ok}`).join('\n')}`);
  });
}

test('the stories fail when their claim is false (the verdicts can fail)', async () => {
  // unknown-device with the phone enrolled after all would log in: the story must not pass.
  const story = STORIES['unknown-device']!;
  const orig = story.run;
  story.run = async (c) => {
    await c.world.stack.enroll(c.world.enrollment(0));
    return orig(c);
  };
  try {
    const r = await runStory('unknown-device');
    assert.is(r.ok, false);
    assert.ok(r.outcomes[0]?.ok, 'the enrolled phone logged in');
  } finally {
    story.run = orig;
  }
});

test.run();
