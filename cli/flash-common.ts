// Shared by the `usbphone` commands: a user error type with a stable code, the one-line
// error report (no stack trace) every command ends with, and checks of --state.
import { existsSync, statSync, openSync, readSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { ImplementationError, ProtocolError } from '../protocol/errors.ts';
import { exitOf } from './codes.ts';

/** A user/input error: printed as one line with its code; its exit code is the code's (cli/codes.ts). */
export class CliError extends Error {
  readonly exitCode: number;
  constructor(
    readonly code: string,
    message: string,
    exitCode?: number,
  ) {
    super(message);
    this.exitCode = exitCode ?? exitOf(code);
  }
}

/** Library codes the CLI reports under its own name (one mistake, one code). */
const RENAMED: Record<string, string> = { BIZ_ACCOUNT_CONFLICT: 'ENROLL_CONFLICT' };

/** Prints one line `usbphone <cmd>: <message> (<CODE>)` and returns the exit code. */
export function reportError(cmd: string, e: unknown): number {
  let code = 'CLI_INTERNAL', msg = String(e), exit = 1;
  if (e instanceof CliError) [code, msg, exit] = [e.code, e.message, e.exitCode];
  else if (e instanceof ImplementationError || e instanceof ProtocolError) {
    code = RENAMED[e.code] ?? e.code;
    [msg, exit] = [e.message.replace(/^[A-Z_]+: /, ''), exitOf(code)];
  } else if (e instanceof Error && typeof (e as Error & { code?: unknown }).code === 'string' && /^E[A-Z]+$/.test((e as Error & { code: string }).code)) {
    // node:fs errors (ENOENT, EACCES, ...): the input is unusable.
    [code, msg, exit] = ['CLI_FILE', e.message, 2];
  } else if (e instanceof Error && /^SQLITE_(NOTADB|CORRUPT)/.test(String((e as Error & { code?: unknown }).code))) {
    [code, msg, exit] = ['CLI_CORRUPT_FILE', `${e.message}: a database in the state directory is damaged; move it away, or 'make clean' to start over`, 2];
  } else if (e instanceof RangeError || e instanceof TypeError) [code, msg, exit] = ['CLI_BAD_ARGS', e.message, 2];
  else if (e instanceof Error) msg = e.message;
  process.stderr.write(`usbphone ${cmd}: ${msg.split('\n')[0]} (${code})\n`);
  return exit;
}

export const hexOf = (n: number, w = 6) => '0x' + n.toString(16).padStart(w, '0');

/**
 * --state DIR: refused when it names a file (CLI_STATE_NOT_DIR) or, unless `create`, a
 * directory that does not exist (CLI_NO_STATE). Returns whether it exists.
 */
export function checkStateDir(dir: string, opts: { create?: boolean; hint?: string } = {}): boolean {
  if (!existsSync(dir)) {
    if (opts.create) return false;
    throw new CliError('CLI_NO_STATE', `state directory ${dir} does not exist${opts.hint ? `: ${opts.hint}` : ''}`);
  }
  if (!statSync(dir).isDirectory()) throw new CliError('CLI_STATE_NOT_DIR', `--state ${dir} is not a directory`);
  checkStateFiles(dir);
  return true;
}

const SQLITE_MAGIC = 'SQLite format 3\0';

/** The SQLite files of a state directory, when present, must be SQLite databases (named, with what to do). */
export function checkStateFiles(dir: string): void {
  for (const name of ['reg.sqlite', 'biz-accounts.sqlite']) {
    const p = join(dir, name);
    if (!existsSync(p)) continue;
    const st = statSync(p);
    if (!st.isFile()) throw new CliError('CLI_CORRUPT_FILE', `${p} is not a file; move it away, or 'make clean' to start over`);
    if (st.size === 0) continue; // SQLite creates an empty file first
    const head = Buffer.alloc(16);
    const fd = openSync(p, 'r');
    try {
      readSync(fd, head, 0, 16, 0);
    } finally {
      closeSync(fd);
    }
    if (head.toString('latin1') !== SQLITE_MAGIC) throw new CliError('CLI_CORRUPT_FILE', `${p} is not a SQLite database (damaged?); move it away, or 'make clean' to start over (the devices enrolled there are lost)`);
  }
}
