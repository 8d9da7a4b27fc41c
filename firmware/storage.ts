// What the programs need from the flash chip, through the bus and its access rules: files
// of the virtual zone (the CD-ROM unit the host sees), files of the free zone (the disk
// unit), and, through the vendor command path only, the identity record and the
// power-cut-safe record store of the hidden zone (S0.1, S0.4).
import type { SavedLogin } from './saved-login.ts';

export interface Identity {
  serial: string;
  keyVersion: number;
  deviceKey: Uint8Array;
  /** The encrypted serial number the hello carries (S0.1, S0.8). */
  serialToken: Uint8Array;
}

export type StorageResult<T> = { ok: true; value: T } | { ok: false; status: string };

/** The virtual zone mounted once: its directory read and checked, files read by entry. */
export interface VirtualVolume {
  readFile(name: string): StorageResult<Uint8Array>;
}

export interface PhoneStorage {
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
  loadLogin(): StorageResult<SavedLogin | null>;
  /** Saves the login, power-cut safe: afterwards the old or the new record reads back. */
  saveLogin(s: SavedLogin): StorageResult<void>;
}
