// The firmware's storage seam over the real bus: files of the virtual zone through the
// CD-ROM unit, files of the free zone through the disk unit, and the identity record and
// the saved-login record store through the vendor path (S0.1, S0.4, S0.12). It implements
// the firmware's RecordStorage seam (firmware/storage.ts), with the record codec passed in so
// this file does not depend on the saved-login format. No node imports.
//
// Errors are the flash status names (statusName), e.g. 'ERR_LOCKED', 'ERR_AUTH',
// 'ERR_NOT_FOUND', 'ERR_POWER_LOST'; a record the codec refuses is 'ERR_FORMAT'; a unit whose
// volume does not mount (wiped boot sector or volume descriptor) is 'ERR_NO_VOLUME', never
// "file not found".
import { FlashStatus, statusName } from '../flash/chip.ts';
import { VENDOR_UNLOCK_SEQUENCE, type DeviceBus } from '../flash/bus.ts';
import { readIsoFile, readIsoEntry, listIso } from './iso9660.ts';
import { readFatFile, listFat } from './fat.ts';
import { readIdentity, openStore, type RecordStore, type StoreName } from './hidden.ts';
import type { RecordStorage } from '../storage.ts';

export interface RecordCodec<T> {
  encode(v: T): Uint8Array;
  /** Throws (any error) if the bytes are not a record. */
  decode(b: Uint8Array): T;
}

const fail = (status: number | string) => ({ ok: false as const, status: typeof status === 'string' ? status : statusName(status) });

/**
 * opts.unlockSequence: what the vendor path is opened with (default the real sequence; a
 * test passes a wrong one to see S0.4 refuse).
 */
export function busStorage<T>(bus: DeviceBus, codec: RecordCodec<T>, opts: { store?: StoreName; unlockSequence?: Uint8Array } = {}): RecordStorage<T> {
  const unlock = (): number => (bus.vendor.unlocked ? FlashStatus.OK : bus.vendor.unlock(opts.unlockSequence ?? VENDOR_UNLOCK_SEQUENCE));
  let last = FlashStatus.OK as number;
  const blocks = (lba: number, n: number) => {
    const r = bus.cdrom.readBlocks(lba, n);
    last = r.status;
    return r.status === FlashStatus.OK ? r.data : null;
  };
  const sectors = (lba: number, n: number) => {
    const r = bus.disk.readSectors(lba, n);
    last = r.status;
    return r.status === FlashStatus.OK ? r.data : null;
  };
  // One store per storage instance: its key is derived from the fuses once (as firmware
  // keeps it in RAM), while every access still unlocks and goes through the vendor port.
  let opened: RecordStore | null = null;
  const store = (): { status: number; store?: RecordStore } => {
    const u = unlock();
    if (u !== FlashStatus.OK) return { status: u };
    if (opened) return { status: FlashStatus.OK, store: opened };
    const s = openStore(bus.vendor, opts.store ?? 'login');
    opened = s.store ?? null;
    return s;
  };
  return {
    readVirtualFile(name) {
      last = FlashStatus.OK;
      const b = readIsoFile(blocks, name, bus.cdrom.blockCount);
      if (b) return { ok: true, value: b };
      if (last !== FlashStatus.OK) return fail(last);
      return fail(listIso(blocks, bus.cdrom.blockCount) ? FlashStatus.ERR_NOT_FOUND : last !== FlashStatus.OK ? last : FlashStatus.ERR_NO_VOLUME);
    },
    mountVirtual() {
      last = FlashStatus.OK;
      const list = listIso(blocks, bus.cdrom.blockCount);
      if (!list) return fail(last !== FlashStatus.OK ? last : FlashStatus.ERR_NO_VOLUME);
      return {
        ok: true,
        value: {
          readFile(name: string) {
            last = FlashStatus.OK;
            const b = readIsoEntry(blocks, list, name);
            return b ? { ok: true as const, value: b } : fail(last !== FlashStatus.OK ? last : FlashStatus.ERR_NOT_FOUND);
          },
        },
      };
    },
    readFreeFile(name) {
      last = FlashStatus.OK;
      const b = readFatFile(sectors, name);
      if (b) return { ok: true, value: b };
      if (last !== FlashStatus.OK) return fail(last);
      // Not this file, or no volume at all: a wiped boot sector is not "MAIN.EXE not found".
      return fail(listFat(sectors) ? FlashStatus.ERR_NOT_FOUND : last !== FlashStatus.OK ? last : FlashStatus.ERR_NO_VOLUME);
    },
    readIdentity() {
      const u = unlock();
      if (u !== FlashStatus.OK) return fail(u);
      const r = readIdentity(bus.vendor);
      return r.identity ? { ok: true, value: r.identity } : fail(r.status);
    },
    loadLogin() {
      const s = store();
      if (!s.store) return fail(s.status);
      const r = s.store.read();
      if (r.status === FlashStatus.ERR_EMPTY) return { ok: true, value: null };
      if (r.status !== FlashStatus.OK) return fail(r.status);
      try {
        return { ok: true, value: codec.decode(r.payload!) };
      } catch {
        return fail('ERR_FORMAT');
      }
    },
    saveLogin(v) {
      const s = store();
      if (!s.store) return fail(s.status);
      let bytes: Uint8Array;
      try {
        bytes = codec.encode(v);
      } catch {
        return fail('ERR_FORMAT');
      }
      const st = s.store.write(bytes);
      return st === FlashStatus.OK ? { ok: true, value: undefined } : fail(st);
    },
  };
}
