// The secure controller's non-volatile memory (firmware/secure/nvm.ts) kept in a file beside a
// phone's image, so that `make sim`'s phone keeps its rollback counters across runs as a real
// chip keeps its EEPROM. It is not part of the image: restoring an older image file does not
// restore it, which is the point. Written whole and atomically (temp file, rename) at each change.
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import type { ControllerNvm } from '../secure/nvm.ts';

const MAGIC = 'usbphone-controller-nvm v1';

/** The counters in `path` (a missing file: all 0; a file that is not ours: ImplementationError-free, all 0 and overwritten on the first write). */
export function fileNvm(path: string): ControllerNvm {
  const counters = new Map<number, number>();
  try {
    const v = JSON.parse(readFileSync(path, 'utf8')) as { magic?: unknown; counters?: Record<string, unknown> };
    if (v.magic === MAGIC && v.counters && typeof v.counters === 'object') {
      for (const [k, n] of Object.entries(v.counters)) if (Number.isSafeInteger(n) && (n as number) >= 0) counters.set(Number(k), n as number);
    }
  } catch {
    // No file yet (a new chip), or not ours: counters start at 0.
  }
  return {
    read: (store) => counters.get(store) ?? 0,
    write(store, value) {
      counters.set(store, value);
      writeFileSync(path + '.tmp', JSON.stringify({ magic: MAGIC, counters: Object.fromEntries(counters) }) + '\n', { mode: 0o600 });
      renameSync(path + '.tmp', path);
    },
  };
}
