// docs/features.md stays true: every S0 feature has a row, and every file a row names
// exists. docs/errors.md lists the codes the firmware and simulator report.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, existsSync, readdirSync } from 'node:fs';
import { CLI_CODES } from '../cli/codes.ts';

const features = readFileSync('docs/features.md', 'utf8');
const stories = readFileSync('sim/scenarios.ts', 'utf8') + readFileSync('sim/bank-scenarios.ts', 'utf8') + readFileSync('sim/attack-scenarios.ts', 'utf8');

test('docs/features.md states every feature id it builds on (S0.1-15, S3.1-11, S4.1-8), one line each', () => {
  const stated = features.slice(features.indexOf('## Features'), features.indexOf('## Traceability'));
  for (const [p, n] of [['S0', 15], ['S3', 11], ['S4', 8]] as const) {
    for (let i = 1; i <= n; i++) assert.match(stated, new RegExp(`^\\| ${p}\\.${i} \\| [^|]{20,} \\|$`, 'm'), `${p}.${i}`);
  }
  // The project carries its own statement: nothing points outside the repository for it.
  for (const f of ['README.md', ...readdirSync('docs').filter((x) => x.endsWith('.md')).map((x) => `docs/${x}`)]) {
    assert.not.match(readFileSync(f, 'utf8'), /\.\.\/shared\//, `${f} cites ../shared/`);
  }
});

test('every S0 feature (S0.1-S0.15) has a row in the traceability table of docs/features.md', () => {
  const trace = features.slice(features.indexOf('## Traceability'));
  for (let i = 1; i <= 15; i++) assert.match(trace, new RegExp(`^\\| S0\\.${i}( |\\b)`, 'm'), `S0.${i}`);
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
        // sim/scenarios.test.ts, sim/bank-scenarios.test.ts and sim/attack-scenarios.test.ts name their tests `scenario ${story}`, one per story.
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

test('docs/errors.md §CLI and cli/codes.ts agree: the same codes, each with the same exit code', () => {
  const errors = readFileSync('docs/errors.md', 'utf8');
  const start = errors.indexOf('## CLI (`cli/`)');
  const section = errors.slice(start, errors.indexOf('\n## ', start + 5));
  const documented: Record<string, number> = {};
  for (const m of section.matchAll(/^\| `([A-Z_]+)` \| .* \| (\d+) \|$/gm)) documented[m[1]!] = Number(m[2]);
  const table = Object.fromEntries(Object.entries(CLI_CODES).map(([c, v]) => [c, v.exit]));
  assert.equal(documented, table);
  // Elsewhere in errors.md a CLI code is only referred to, never given another exit.
  const rest = errors.slice(0, start) + errors.slice(start + section.length);
  for (const code of Object.keys(CLI_CODES)) assert.not.match(rest, new RegExp(`^\\| [^|]*\`${code}\``, 'm'), `${code} has a row outside §CLI`);
});

test('every code the CLI reports is in cli/codes.ts or documented in docs/errors.md', () => {
  const errors = readFileSync('docs/errors.md', 'utf8');
  const files = ['bin/usbphone.js', ...readdirSync('cli').filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts')).map((f) => `cli/${f}`)];
  const codes = new Set<string>();
  for (const f of files) {
    const src = readFileSync(f, 'utf8');
    for (const m of src.matchAll(/(?:CliError\(|\()'([A-Z][A-Z0-9]*_[A-Z0-9_]+)'/g)) codes.add(m[1]!);
    for (const m of src.matchAll(/\(([A-Z][A-Z0-9]*_[A-Z0-9_]+)\)\\n/g)) codes.add(m[1]!);
  }
  assert.ok(codes.size >= 10, `found ${[...codes]}`);
  for (const c of codes) assert.ok(c in CLI_CODES || errors.includes(`\`${c}\``), `${c} is reported by the CLI but not documented`);
});

test.run();
