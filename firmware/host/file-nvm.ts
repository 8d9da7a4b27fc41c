// The secure controller's non-volatile memory (firmware/secure/nvm.ts) kept in a file beside a
// phone's image, so that `make sim`'s phone keeps its rollback counters across runs as a real
// chip keeps its EEPROM. It is not part of the image: restoring an older image file does not
// restore it, which is the point. Written whole and atomically (temp file, rename) at each change.
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import type { ControllerNvm } from '../secure/nvm.ts';

const MAGIC = 'usbphone-controller-nvm v1';

/**
 * The counters and objects in `path` (a missing file: all 0, no objects; a file that is not
 * ours: all 0 and overwritten on the first write). The objects (S3.3: fingerprint template and
 * keys, TOTP seeds) are the chip's EEPROM content: the file stands for the chip, mode 0600.
 */
export function fileNvm(path: string): ControllerNvm {
  const counters = new Map<number, number>();
  const objects = new Map<string, Uint8Array>();
  try {
    const v = JSON.parse(readFileSync(path, 'utf8')) as { magic?: unknown; counters?: Record<string, unknown>; objects?: Record<string, unknown> };
    if (v.magic === MAGIC && v.counters && typeof v.counters === 'object') {
      for (const [k, n] of Object.entries(v.counters)) if (Number.isSafeInteger(n) && (n as number) >= 0) counters.set(Number(k), n as number);
    }
    if (v.magic === MAGIC && v.objects && typeof v.objects === 'object') {
      for (const [k, h] of Object.entries(v.objects)) if (typeof h === 'string' && /^(?:[0-9a-f]{2})*$/.test(h)) objects.set(k, hexToBytes(h));
    }
  } catch {
    // No file yet (a new chip), or not ours: counters start at 0.
  }
  const save = () => {
    const o = Object.fromEntries([...objects].map(([k, b]) => [k, bytesToHex(b)]));
    writeFileSync(path + '.tmp', JSON.stringify({ magic: MAGIC, counters: Object.fromEntries(counters), objects: o }) + '\n', { mode: 0o600 });
    renameSync(path + '.tmp', path);
  };
  return {
    read: (store) => counters.get(store) ?? 0,
    write(store, value) {
      counters.set(store, value);
      save();
    },
    readObject: (name) => {
      const b = objects.get(name);
      return b ? Uint8Array.from(b) : null;
    },
    writeObject(name, value) {
      if (value === null) objects.delete(name);
      else objects.set(name, Uint8Array.from(value));
      save();
    },
  };
}
