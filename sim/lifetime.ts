// Nothing left behind: temporary state directories (they hold master.key and store.key)
// and child server processes are registered here, and removed / killed on every way out
// of the process: a normal end, process.exit (SIGINT, SIGTERM, SIGHUP, a closed output
// pipe). A child that outlives a parent killed with SIGKILL stops by itself when its stdin
// pipe closes (PARENT_PIPE_ENV, see cli/serve.ts).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';

import { PARENT_PIPE_ENV } from '../deploy/config.ts';

export { PARENT_PIPE_ENV };

const dirs = new Set<string>();
const children = new Set<ChildProcess>();
let installed = false;

function cleanupNow(): void {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  children.clear();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs.clear();
}

function install(): void {
  if (installed) return;
  installed = true;
  process.on('exit', cleanupNow);
}

/** A fresh directory under the system temp dir, removed at exit if still there. */
export function makeTempDir(prefix: string): string {
  install();
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.add(d);
  return d;
}

export function removeTempDir(d: string): void {
  rmSync(d, { recursive: true, force: true });
  dirs.delete(d);
}

/** A child process killed (SIGKILL) at exit if still running. */
export function trackChild(c: ChildProcess): void {
  install();
  children.add(c);
  c.once('exit', () => children.delete(c));
}

const SIGNALS = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 } as const;

/**
 * On SIGINT, SIGTERM or SIGHUP: `onSignal` (e.g. stop the servers; at most `graceMs`), then
 * exit 128 + the signal number; the exit handler removes what is registered. Returns the
 * function that removes the handlers.
 */
export function exitOnSignals(onSignal?: (sig: string) => Promise<void> | void, graceMs = 3_000): () => void {
  install();
  let fired = false;
  const handler = (sig: keyof typeof SIGNALS) => {
    if (fired) return;
    fired = true;
    const done = () => process.exit(128 + SIGNALS[sig]);
    setTimeout(done, graceMs).unref();
    Promise.resolve()
      .then(() => onSignal?.(sig))
      .catch(() => {})
      .finally(done);
  };
  const hs = Object.keys(SIGNALS).map((s) => {
    const h = () => handler(s as keyof typeof SIGNALS);
    process.on(s, h);
    return [s, h] as const;
  });
  return () => {
    for (const [s, h] of hs) process.off(s, h);
  };
}

/** Output into a closed pipe (`| head`): exit quietly (141, as SIGPIPE would), leaving nothing behind. */
export function quietOnClosedPipe(): void {
  install();
  for (const s of [process.stdout, process.stderr]) {
    s.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE') process.exit(141);
      throw e;
    });
  }
}

/** In a child started with PARENT_PIPE_ENV: calls `stop` once the parent's end of stdin closes. */
export function stopWithParent(stop: () => void): void {
  if (process.env[PARENT_PIPE_ENV] !== '1') return;
  process.stdin.on('data', () => {});
  process.stdin.once('end', stop);
  process.stdin.once('close', stop);
  process.stdin.once('error', stop);
}

/** Lets go of stdin (so the process can end) after stopWithParent. */
export function releaseParentPipe(): void {
  if (process.env[PARENT_PIPE_ENV] === '1') process.stdin.destroy();
}
