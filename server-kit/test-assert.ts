// Assertions the server-side tests share (uvu): a call that must be refused, and the check
// that a refusal carries a given code of the error table (protocol/errors.ts).
import * as assert from 'uvu/assert';
import { ImplementationError } from '../protocol/errors.ts';

/** A check for rejects(): an ImplementationError (a store's or a tool's refusal) with code `c`. */
export const implCode = (c: string) => (e: unknown): boolean => e instanceof ImplementationError && e.code === c;

/** Awaits `f`, which must throw or reject with an error `check` accepts; `msg` names the case in a failure. */
export async function rejects(f: () => unknown, check: (e: unknown) => boolean, msg = ''): Promise<void> {
  try {
    await f();
  } catch (e) {
    assert.ok(check(e), `${msg} ${String(e)}`.trim());
    return;
  }
  assert.unreachable(`expected a refusal ${msg}`.trim());
}
