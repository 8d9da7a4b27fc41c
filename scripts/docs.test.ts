// docs/features.md stays true: every S0 feature has a row, and every file a row names
// exists. docs/errors.md lists the codes the firmware and simulator report.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, existsSync } from 'node:fs';

const features = readFileSync('docs/features.md', 'utf8');
const stories = readFileSync('sim/scenarios.ts', 'utf8');

test('every S0 feature (S0.1-S0.15) has a row in docs/features.md', () => {
  for (let i = 1; i <= 15; i++) assert.match(features, new RegExp(`^\\| S0\\.${i}( |\\b)`, 'm'), `S0.${i}`);
});

test('every file docs/features.md names exists', () => {
  const paths = new Set([...features.matchAll(/`([a-z-]+\/[A-Za-z0-9_./-]+\.(?:ts|md|json))`/g)].map((m) => m[1]!));
  assert.ok(paths.size > 30, `found ${paths.size} paths`);
  for (const p of paths) assert.ok(existsSync(p), `${p} (named in docs/features.md) does not exist`);
});

test('every test name docs/features.md quotes is a test in the file it names', () => {
  // Rows cite tests as: `file.test.ts` "name", "name" (up to the next backticked file).
  for (const m of features.matchAll(/`([a-z-]+\/[A-Za-z0-9_./-]+\.test\.ts)`((?:[^`|])*)/g)) {
    const file = m[1]!;
    const src = readFileSync(file, 'utf8');
    for (const q of m[2]!.matchAll(/"([^"]{8,})"/g)) {
      // "..." in a quoted name stands for words left out.
      for (const part of q[1]!.split('...').map((x) => x.trim()).filter((x) => x.length >= 6)) {
        // sim/scenarios.test.ts names its tests `scenario ${story}`, one per story.
        const story = /^scenario ([a-z-]+)$/.exec(part)?.[1];
        const found = src.includes(part) || (story !== undefined && stories.includes(`'${story}'`));
        assert.ok(found, `${file} has no test "${q[1]}"`);
      }
    }
  }
});

test('docs/errors.md lists the firmware outcomes and the BOOT_ codes', () => {
  const errors = readFileSync('docs/errors.md', 'utf8');
  const boot = readFileSync('firmware/boot.ts', 'utf8');
  for (const code of new Set([...boot.matchAll(/(BOOT_[A-Z_]+)/g)].map((m) => m[1]!))) assert.ok(errors.includes(`\`${code}\``), code);
  const device = readFileSync('firmware/device.ts', 'utf8');
  const kinds = /kind: '([a-z-]+)'( \| '([a-z-]+)')*/.exec(device.slice(device.indexOf("ok: false; kind:")))![0];
  for (const k of kinds.matchAll(/'([a-z-]+)'/g)) assert.ok(errors.includes(`\`${k[1]}\``), `outcome ${k[1]}`);
});

test.run();
