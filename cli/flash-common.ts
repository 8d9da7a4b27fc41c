// Shared by `usbphone image` and `usbphone inspect`: a usage error type with a stable code,
// and the one-line error report (no stack trace) both commands end with.
import { ImplementationError, ProtocolError } from '../protocol/errors.ts';

/** A user/input error: printed as one line with its code; exit 2 (bad usage, unusable input). */
export class CliError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly exitCode = 2,
  ) {
    super(message);
  }
}

/** Prints one line `usbphone <cmd>: <message> (<CODE>)` and returns the exit code. */
export function reportError(cmd: string, e: unknown): number {
  let code = 'CLI_INTERNAL', msg = String(e), exit = 1;
  if (e instanceof CliError) [code, msg, exit] = [e.code, e.message, e.exitCode];
  else if (e instanceof ImplementationError || e instanceof ProtocolError) [code, msg, exit] = [e.code, e.message.replace(/^[A-Z_]+: /, ''), 2];
  else if (e instanceof Error && typeof (e as Error & { code?: unknown }).code === 'string' && /^E[A-Z]+$/.test((e as Error & { code: string }).code)) {
    // node:fs errors (ENOENT, EACCES, ...): the input is unusable.
    [code, msg, exit] = ['CLI_FILE', e.message, 2];
  } else if (e instanceof RangeError || e instanceof TypeError) [code, msg, exit] = ['CLI_BAD_ARGS', e.message, 2];
  else if (e instanceof Error) msg = e.message;
  process.stderr.write(`usbphone ${cmd}: ${msg.split('\n')[0]} (${code})\n`);
  return exit;
}

export const hexOf = (n: number, w = 6) => '0x' + n.toString(16).padStart(w, '0');
