// The fleet's server process (sim/external-stack.ts): a start that does not listen in time is
// SIM_STACK_START with the wait it gave, and the process is killed, not left behind.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { startExternalStack } from './external-stack.ts';
import { ImplementationError } from '../protocol/errors.ts';
import { makeTempDir, removeTempDir } from './lifetime.ts';

/** The pids of this process's children running `serve all` on `dir`. */
const servers = (dir: string) =>
  execFileSync('ps', ['-o', 'pid=,args=', '--ppid', String(process.pid)], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.includes('serve all') && l.includes(dir));

test('a server process that has not listened within startTimeoutMs: SIM_STACK_START naming the wait, and the process is killed', async () => {
  const dir = makeTempDir('external-stack');
  try {
    const t0 = performance.now();
    try {
      await startExternalStack(dir, { startTimeoutMs: 300 });
      assert.unreachable('started');
    } catch (e) {
      assert.instance(e, ImplementationError);
      assert.is((e as ImplementationError).code, 'SIM_STACK_START');
      assert.match((e as Error).message, /did not start within 0\.3 s/);
    }
    assert.ok(performance.now() - t0 < 20_000, 'refused at its deadline, not at the default');
    assert.equal(servers(dir), [], 'no server process left behind');
  } finally {
    removeTempDir(dir);
  }
});

test.run();
