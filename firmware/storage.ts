// What the programs need from the flash chip, through the bus and its access rules: files
// of the virtual zone (the CD-ROM unit the host sees), files of the free zone (the disk
// unit), and, through the vendor command path only, the identity record and the
// power-cut-safe record store of the hidden zone (S0.1, S0.4).
import type { SavedLogin } from './saved-login.ts';
import type { Identity } from './zones/hidden.ts';

export type { Identity };

export type StorageResult<T> = { ok: true; value: T } | { ok: false; status: string };

/** The virtual zone mounted once: its directory read and checked, files read by entry. */
export interface VirtualVolume {
  readFile(name: string): StorageResult<Uint8Array>;
}

/** The storage seam, over a record type T kept in the hidden zone's record store. */
export interface RecordStorage<T> {
  readVirtualFile(name: string): StorageResult<Uint8Array>;
  /**
   * Reads and checks the virtual zone's directory once (what a boot does before reading
   * several files, as real firmware caches the mounted directory); the files are then read
   * from the unit on each readFile. Mount again after anything may have changed the zone.
   */
  mountVirtual(): StorageResult<VirtualVolume>;
  readFreeFile(name: string): StorageResult<Uint8Array>;
  /** Reads and unseals the identity record with the fuse-derived key (S0.4). */
  readIdentity(): StorageResult<Identity>;
  /** The saved login; `value: null` when none was ever saved (or none survives). */
  loadLogin(): StorageResult<T | null>;
  /** Saves the login, power-cut safe: afterwards the old or the new record reads back. */
  saveLogin(s: T): StorageResult<void>;
}

/** What the phone's programs use: the seam with the saved login as its record. */
export type PhoneStorage = RecordStorage<SavedLogin>;
