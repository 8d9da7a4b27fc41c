// Every --help agrees with the program: each option line names an option the command takes,
// every option it takes has a line, and no other option is mentioned that it does not take
// (mentions of another command, 'usbphone X ...', are that command's). `make help` names
// every target the Makefile has.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const root = join(import.meta.dirname, '..');
const help = (cmd: string) => {
  const r = spawnSync(process.execPath, [join(root, 'bin', 'usbphone.js'), cmd, '--help'], { encoding: 'utf8' });
  assert.is(r.status, 0, r.stderr);
  return r.stdout;
};

for (const cmd of ['sim', 'serve', 'image', 'inspect', 'enroll', 'conformance', 'simulate', 'certs']) {
  test(`usbphone ${cmd} --help names exactly the options it takes`, async () => {
    const { OPTIONS } = (await import(`./${cmd}.ts`)) as { OPTIONS: Record<string, { short?: string }> };
    const text = help(cmd);
    const defined = new Set([...text.matchAll(/^ {2}(?:-[a-z], )?--([a-z][a-z-]*)/gm)].map((m) => m[1]!));
    assert.equal([...defined].sort(), Object.keys(OPTIONS).sort(), 'option lines vs options');
    for (const [k, o] of Object.entries(OPTIONS)) if (o.short) assert.match(text, new RegExp(`-${o.short}, --${k}`), `-${o.short}`);
    // Any other mention: an option of this command, unless it is quoted as another command's.
    const own = text.replace(/'usbphone (\w+)[^']*'/g, (m, c) => (c === cmd ? m : ''));
    for (const m of own.matchAll(/(?<![\w-])--([a-z][a-z-]*)/g)) assert.ok(m[1]! in OPTIONS, `--${m[1]} is mentioned but not an option of ${cmd}`);
  });
}

test('make help names every target of the Makefile, and make clean', () => {
  const mk = readFileSync(join(root, 'Makefile'), 'utf8');
  const phony = /^\.PHONY: (.*)$/m.exec(mk)![1]!.split(/\s+/);
  const r = spawnSync('make', ['-s', 'help'], { cwd: root, encoding: 'utf8' });
  assert.is(r.status, 0);
  for (const tgt of phony.filter((x) => !['all', 'deps', 'tools', 'typecheck', 'help'].includes(x))) assert.match(r.stdout, new RegExp(`^make ${tgt} `, 'm'), tgt);
  // What make help says of test-slow is what it runs: the exhaustive power cuts are in plain make test.
  assert.match(r.stdout, /make test-slow .*1000-phone fleet/);
});

test.run();
