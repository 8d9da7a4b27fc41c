// The `usbphone` front door: help lists every command, unknown commands and no command are
// usage errors (exit 2), every subcommand answers --help with exit 0.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';

const run = (...args: string[]) => spawnSync(process.execPath, ['bin/usbphone.js', ...args], { encoding: 'utf8', timeout: 60_000 });
const COMMANDS = ['certs', 'conformance', 'enroll', 'image', 'inspect', 'serve', 'sim'];

test('--help lists every command with its summary', () => {
  const r = run('--help');
  assert.is(r.status, 0);
  for (const c of COMMANDS) assert.match(r.stdout, new RegExp(`^  ${c} +\\S`, 'm'));
});

test('no command, or an unknown one: exit 2 with a clear line', () => {
  assert.is(run().status, 2);
  const r = run('frobnicate');
  assert.is(r.status, 2);
  assert.match(r.stderr, /^usbphone: unknown command 'frobnicate'; see 'usbphone --help' \(CLI_UNKNOWN_COMMAND\)\n$/);
});

test('every subcommand has --help (exit 0, a usage line)', () => {
  for (const c of COMMANDS) {
    const r = run(c, '--help');
    assert.is(r.status, 0, c);
    assert.match(r.stdout, /usage: usbphone /, c);
  }
});

test.run();
