// Nothing left behind: a fleet or a scenario run ended by a signal, by its parent's death or
// by a closed output pipe leaves no server process and no temporary state (with its
// master.key and store.key). Each run gets TMPDIR of its own, so what is left is seen.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../deploy/test-util.ts';

const bin = join(import.meta.dirname, '..', 'bin', 'usbphone.js');
const t = tempDir('usbphone-life-test-');
test.after(() => t.remove());
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Processes whose command line mentions `needle`. */
function processesWith(needle: string): number[] {
  const pids: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      if (readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(needle)) pids.push(Number(p));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

async function until(what: string, f: () => boolean, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

function sim(tmp: string, ...args: string[]): { proc: ChildProcess; exit: Promise<{ code: number | null; signal: string | null }>; out: () => string; err: () => string } {
  mkdirSync(tmp, { recursive: true });
  const proc = spawn(process.execPath, [bin, 'sim', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TMPDIR: tmp } });
  let out = '', err = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (err += d));
  const exit = new Promise<{ code: number | null; signal: string | null }>((r) => proc.once('exit', (code, signal) => r({ code, signal })));
  return { proc, exit, out: () => out, err: () => err };
}

for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
  test(`a fleet killed with ${sig}: its server process is gone, its temporary state removed`, async () => {
    const tmp = join(t.dir, `fleet-${sig}`);
    const r = sim(tmp, '--devices', '5000', '--concurrency', '2');
    // The `serve all` child names its temporary state directory on its command line.
    await until('the server process', () => processesWith(`${tmp}/usbphone-fleet-`).length === 1);
    await until('the key files', () => readdirSync(tmp).some((d) => d.startsWith('usbphone-') && readdirSync(join(tmp, d)).includes('master.key')));
    r.proc.kill(sig);
    const e = await r.exit;
    assert.is(e.code, 128 + { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 }[sig], r.err());
    await until('the server process to end', () => processesWith(`${tmp}/usbphone-fleet-`).length === 0, 15_000);
    assert.equal(readdirSync(tmp).filter((d) => d.startsWith('usbphone-')), [], 'no temporary state left');
    assert.match(r.err(), /interrupted/);
  });
}

test('a scenario run killed with SIGTERM mid-story: no temporary state left', async () => {
  const tmp = join(t.dir, 'scenario');
  const r = sim(tmp, '--scenario', 'all', '-q');
  await until('a story', () => /== second-boot-rotates/.test(r.out()));
  r.proc.kill('SIGTERM');
  assert.is((await r.exit).code, 143);
  assert.equal(readdirSync(tmp).filter((d) => d.startsWith('usbphone-')), []);
});

test('the fleet parent killed with SIGKILL: its server process notices and stops by itself', async () => {
  const tmp = join(t.dir, 'fleet-kill9');
  const r = sim(tmp, '--devices', '5000', '--concurrency', '2');
  await until('the server process', () => processesWith(`${tmp}/usbphone-fleet-`).length === 1);
  // Killed once the server process runs (its keys written): a process still loading its code
  // notices the parent's death only once loaded (CI at load 20: more than 10 s).
  await until('the key files', () => readdirSync(tmp).some((d) => d.startsWith('usbphone-') && readdirSync(join(tmp, d)).includes('master.key')));
  r.proc.kill('SIGKILL');
  await r.exit;
  await until('the orphaned server process to stop', () => processesWith(`${tmp}/usbphone-fleet-`).length === 0, 30_000);
});

for (const args of [['--scenario', 'all'], ['--devices', '40', '--concurrency', '4'], ['--scenario', 'first-boot', '--json']]) {
  test(`output into a closed pipe (sim ${args.join(' ')} | head -1): exits quietly, nothing left`, async () => {
    const tmp = join(t.dir, `pipe-${args[1]}`);
    const r = sim(tmp, ...args);
    await until('a line', () => r.out().length > 0);
    r.proc.stdout!.destroy();
    const e = await r.exit;
    assert.ok(e.code === 141 || e.code === 0, `exit ${e.code}: ${r.err()}`);
    assert.is(r.err(), '', 'nothing on stderr');
    assert.equal(readdirSync(tmp).filter((d) => d.startsWith('usbphone-')), []);
    await until('no server process', () => processesWith(tmp + '/').length === 0, 5_000);
  });
}

test.run();
