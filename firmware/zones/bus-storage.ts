// The firmware's storage seam over the real bus: files of the virtual zone through the
// CD-ROM unit, files of the free zone through the disk unit, and everything of the hidden
// zone through the secure controller's commands (S0.1, S0.4, S0.12; firmware/secure/). It
// implements the firmware's RecordStorage seam (firmware/storage.ts), with the record codec
// passed in so this file does not depend on the saved-login format. No node imports.
// The controller's half (secureStorage) stands alone too: a bank card in an ATM (S0.15,
// firmware/profiles.ts) is that half over the card's contacts, with the ATM's own files.
//
// Errors are the flash status names (statusName), e.g. 'ERR_NOT_FOUND', 'ERR_POWER_LOST', or
// the controller's status words ('SW_NOT_FOUND', 'SW_MEMORY_FAILURE', ...); a record the codec
// refuses is 'ERR_FORMAT'; a unit whose volume does not mount (wiped boot sector or volume
// descriptor) is 'ERR_NO_VOLUME', never "file not found".
import { FlashStatus, statusName } from '../flash/chip.ts';
import type { DeviceBus } from '../flash/bus.ts';
import { SeClient } from '../secure/client.ts';
import { readIsoFile, readIsoEntry, listIso } from './iso9660.ts';
import { readFatFile, listFat } from './fat.ts';
import type { RecordStorage } from '../storage.ts';

export interface RecordCodec<T> {
  encode(v: T): Uint8Array;
  /** Throws (any error) if the bytes are not a record. */
  decode(b: Uint8Array): T;
}

const fail = (status: number | string) => ({ ok: false as const, status: typeof status === 'string' ? status : statusName(status) });

/** What of the storage seam goes through the secure controller alone: the hidden zone, the fuses, the key slots. */
export type SecureHalf<T> = Omit<RecordStorage<T>, 'readVirtualFile' | 'mountVirtual' | 'readFreeFile'>;

/** The storage seam's controller half, over any transport of its APDUs (the bus, a card's contacts). */
export function secureStorage<T>(se: SeClient, codec: RecordCodec<T>): SecureHalf<T> {
  return {
    readIdentity() { return se.identity(); },
    vendorKey() { return se.vendorKey(); },
    attestation() { return se.attestation(); },
    deviceKeys() { return se.deviceKeyOps(); },
    loginKeys() { return se.loginKeyOps(); },
    importSecret(user, gen, currentGen, wrapped) { return se.importSecret(user, gen, currentGen, wrapped); },
    retireOlder(gen) { return se.retireOlder(gen); },
    secrets() { return se.secrets(); },
    person: {
      personStatus() { return se.personStatus(); },
      fpChallenge() { return se.fpChallenge(); },
      fpEnroll(r) { return se.fpEnroll(r); },
      fpKey(site, gen) { return se.fpKey(site, gen); },
      fpSign(site, challenge, r) { return se.fpSign(site, challenge, r); },
      otpImport(site, gen, w) { return se.otpImport(site, gen, w); },
      otpCode(site) { return se.otpCode(site); },
    },
    loadLogin() {
      const r = se.readRecord();
      if (!r.ok || r.value === null) return r as { ok: true; value: null } | { ok: false; status: string };
      try {
        return { ok: true, value: codec.decode(r.value) };
      } catch {
        return fail('ERR_FORMAT');
      }
    },
    saveLogin(v) {
      let bytes: Uint8Array;
      try {
        bytes = codec.encode(v);
      } catch {
        return fail('ERR_FORMAT');
      }
      return se.writeRecord(bytes);
    },
  };
}

export function busStorage<T>(bus: DeviceBus, codec: RecordCodec<T>): RecordStorage<T> {
  const se = new SeClient((apdu) => bus.se.transmit(apdu));
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
    ...secureStorage(se, codec),
  };
}
