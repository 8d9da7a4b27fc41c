// What the programs need from the flash chip, through the bus and its access rules: files
// of the virtual zone (the CD-ROM unit the host sees), files of the free zone (the disk
// unit), and, through the secure controller only (S0.1, S0.4; firmware/secure/), the public
// identity, the key holders of its slots, the business secrets it imports and retires, and
// the saved-login record it seals. No method returns a key or a secret.
import type { PublicIdentity, SeClient } from './secure/client.ts';
import type { ClientKeyOps } from '../protocol/handshake-keys.ts';

export type { PublicIdentity };

/**
 * The person layer's commands of the secure controller (S3.3; firmware/secure/element.ts): the
 * fingerprint (challenge, enrolment, the site's key, the signature after a match) and the
 * one-time code (the site's seed imported, the code of the chip's own time), and what the chip
 * holds for which site. Nothing returns a key, a seed or a template.
 */
export type PersonChip = Pick<SeClient, 'personStatus' | 'fpChallenge' | 'fpEnroll' | 'fpKey' | 'fpSign' | 'otpImport' | 'otpCode'>;

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
  /** The chip's public identity: serial, serial token, key version (S0.4). */
  readIdentity(): StorageResult<PublicIdentity>;
  /** The vendor's Ed25519 public key from the chip's fuses (public; the boot checks BOOT.SIG with it). */
  vendorKey(): StorageResult<Uint8Array>;
  /**
   * The firmware measurement the chip took at power-on (SHA-256 of the signed manifest's body,
   * 32 bytes) and the manifest's version; 'SW_SECURITY_NOT_SATISFIED' when the chip could not
   * verify the boot files (then its device key serves no hello).
   */
  attestation(): StorageResult<{ measurement: Uint8Array; version: number }>;
  /** The registration handshake under the chip's device-key slot (the key stays inside). */
  deviceKeys(): ClientKeyOps;
  /** A business login under the chip's business-secret slot, for its user and a generation it holds. */
  loginKeys(): ClientKeyOps;
  /** Hands the chip a business secret the registration server wrapped for it (S0.10: saved before use). */
  importSecret(user: string, gen: number, currentGen: number, wrapped: Uint8Array): StorageResult<void>;
  /** Drops the generations older than `gen` once a server accepted `gen` (S0.14). */
  retireOlder(gen: number): StorageResult<void>;
  /** The user and generations of the business secrets the chip holds, newest first; null when none. */
  secrets(): StorageResult<{ user: string; gens: number[] } | null>;
  /** The person layer of the chip (S3.3). */
  readonly person: PersonChip;
  /** The saved record (no secret in it); `value: null` when none was ever saved (or none survives). */
  loadLogin(): StorageResult<T | null>;
  /** Saves the record, power-cut safe: afterwards the old or the new record reads back. */
  saveLogin(s: T): StorageResult<void>;
}

