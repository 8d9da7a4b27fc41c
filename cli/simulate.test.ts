// `usbphone simulate`, run as the real command: what review found in its arguments (issue 14).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

const cli = (...args: string[]) => {
  const r = spawnSync(process.execPath, [join(import.meta.dirname, '..', 'bin', 'usbphone.js'), 'simulate', ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
};

test('a run past the last seed --seed takes, and --trace with --json: bad usage (exit 2, CLI_BAD_ARGS), nothing run', () => {
  for (const args of [['--seeds', '10', '--from', '2147483645'], ['--seed', '7', '--trace', '--json'], ['--seeds', '1', '--faults', 'none,loss']]) {
    const r = cli(...args);
    assert.equal([r.code, /CLI_BAD_ARGS/.test(r.err), r.out], [2, true, ''], `${args.join(' ')}: ${r.err}`);
  }
  assert.is(cli('--seeds', '1', '--from', '2147483647', '--faults', 'none').code, 0);
});

test('the fault kinds are a set: their order and repeats do not change the run; --json names them', () => {
  const strip = (out: string) => {
    const j = JSON.parse(out) as Record<string, unknown>;
    delete j.seconds;
    return j;
  };
  const a = cli('--seed', '132', '--faults', 'corrupt,power-cut', '--json');
  const b = cli('--seed', '132', '--faults', 'power-cut,corrupt,corrupt', '--json');
  assert.is(a.code, 0, a.err);
  assert.equal(strip(a.out), strip(b.out));
  assert.equal((strip(a.out) as { kinds: string[] }).kinds, ['corrupt', 'power-cut'], "in the table's order");
});

test.run();
