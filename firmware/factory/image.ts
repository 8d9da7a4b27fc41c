// Factory provisioning: builds a device's whole flash image (partition table, hidden zone
// with the sealed identity record, virtual zone ISO 9660, free zone FAT) and the enrollment
// record the registration server needs. No node:fs here: the CLI (cli/image.ts) does files.
//
// Reproducible: the same serial, fuses, master key and endpoints give byte-identical images
// (fixed file dates, synthetic nonces, volume serial derived from the label).
// The device key appears in no zone in clear and in the enrollment record only when asked
// (includeDeviceKey); the serial appears only inside the sealed identity record.
// Signed boot (issue 9): BOOT.SIG in the virtual zone lists every boot file (AUTORUN.INF,
// UPMON.EXE, UPMON.CFG; MAIN.EXE of the free zone) with its SHA-256, signed with the vendor's
// Ed25519 key (firmware/boot-manifest.ts); the fuses carry the matching public key. The
// enrollment record carries the manifest's measurement, which the registration servers accept.
import { bytesToHex } from '@noble/hashes/utils.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { deriveDeviceKey, makeSerialToken, checkSerial, type MasterKeyring } from '../../protocol/keys.ts';
import { ImplementationError } from '../../protocol/errors.ts';
import { W25Q64, validateProfile, type ChipProfile } from '../flash/chip.ts';
import type { Fuses } from '../flash/fuses.ts';
import { defaultLayout, encodeTable, zoneOf, ZoneFlag, ZoneType, TABLE_OFFSET, type PartitionTable } from '../zones/layout.ts';
import { buildIso } from '../zones/iso9660.ts';
import { buildFat, FatSizeError, FAT_SECTOR } from '../zones/fat.ts';
import { crc32 } from '../zones/crc32.ts';
import { diskVisibleBytes } from '../zones/disk-controller.ts';
import { sealIdentity, IDENTITY_KEY_LABEL, IDENTITY_OFFSET } from '../zones/hidden.ts';
import { equalBytes } from '@noble/ciphers/utils.js';
import { signManifest, verifyManifest, vendorPublicKey, MANIFEST_FILE, type BootManifest, type ManifestEntry } from '../boot-manifest.ts';

export const DEFAULT_REG_PRIMARY = 'ws://127.0.0.1:7400/reg-primary';
export const DEFAULT_REG_BACKUP = 'ws://127.0.0.1:7400/reg-backup';
export const UPMON_PROGRAM = 'UPMON.EXE';
export const MAIN_PROGRAM = 'MAIN.EXE';
export const PROGRAM_VERSION = 1;
export const VOLUME_LABEL = 'USBPHONE';

export interface BuildImageOptions {
  serial: string;
  fuses: Fuses;
  keyring: MasterKeyring;
  /**
   * The vendor's Ed25519 secret key (32 bytes; a factory secret, never written into the image):
   * signs BOOT.SIG. Its public key must be the one burnt into `fuses` (IMAGE_VENDOR_KEY otherwise).
   */
  vendorKey: Uint8Array;
  /** The firmware version written into the signed manifest (default PROGRAM_VERSION). */
  firmwareVersion?: number;
  /** Master key version to derive under (default: the keyring's newest). */
  keyVersion?: number;
  regPrimary?: string;
  regBackup?: string;
  /** The policy server's key and the initial attack table, written into UPMON.CFG (S3.10, S3.11). */
  policy?: FactoryPolicy;
  profile?: ChipProfile;
  /** Put the device key (hex) in the enrollment record. Off by default. */
  includeDeviceKey?: boolean;
}

export interface EnrollmentRecord {
  serial: string;
  keyVersion: number;
  /** The chip's unique id, hex. */
  uniqueId: string;
  imageSha256: string;
  regPrimary: string;
  regBackup: string;
  chip: string;
  /** The firmware version of the signed boot manifest. */
  firmwareVersion: number;
  /** SHA-256 of the signed manifest's body, hex: what the chip attests in its hello (registration servers accept it from here). */
  firmwareMeasurement: string;
  /** Only with includeDeviceKey. */
  deviceKey?: string;
}

const te = new TextEncoder();

/** A simulated program: its bytes are a description, padded to 4 KiB (we simulate programs). */
export function programBlob(title: string, version: number): Uint8Array {
  const text = `${title} v${version}\r\n(simulated program for the usbphone device model; the firmware runs the real logic)\r\n`;
  const out = new Uint8Array(4096).fill(0x20);
  out.set(te.encode(text));
  out[4094] = 0x0d;
  out[4095] = 0x0a;
  return out;
}

/** A registration endpoint: ws:// or wss:// URL whose last path segment is the envelope destination. */
export function checkEndpoint(url: string, what: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new ImplementationError('IMAGE_BAD_URL', `${what}: not a URL: ${url}`);
  }
  if ((u.protocol !== 'ws:' && u.protocol !== 'wss:') || !/\/[A-Za-z0-9._-]+$/.test(u.pathname) || url.length > 200) {
    throw new ImplementationError('IMAGE_BAD_URL', `${what}: need ws:// or wss://host:port/<destination> (<= 200 chars): ${url}`);
  }
  return url;
}

export interface ZoneFiles {
  virtual: { name: string; data: Uint8Array }[];
  free: { name: string; data: Uint8Array }[];
}

/** The boot files the signed manifest lists: every file the boot reads before UPMon runs, and the main program. */
export const BOOT_FILES: readonly { zone: 'cdrom' | 'disk'; name: string }[] = [
  { zone: 'cdrom', name: 'AUTORUN.INF' },
  { zone: 'cdrom', name: UPMON_PROGRAM },
  { zone: 'cdrom', name: 'UPMON.CFG' },
  { zone: 'disk', name: MAIN_PROGRAM },
];

/**
 * The files of the virtual and free zones (no secrets in any of them), BOOT.SIG signed with
 * the vendor's secret key over BOOT_FILES. The per-program JSON manifests (UPMON.MAN,
 * MAIN.MAN) are gone: BOOT.SIG replaces them (docs/decisions.md).
 */
/**
 * What UPMON.CFG says about attack tables (S3.10, S3.11): the policy server's Ed25519 public
 * key (32 bytes) and the initial table's JSON form (protocol/attack-table.ts initialTable).
 */
export interface FactoryPolicy {
  key?: Uint8Array;
  initialTable?: unknown;
}

export function zoneFiles(regPrimary: string, regBackup: string, vendorKey: Uint8Array, firmwareVersion = PROGRAM_VERSION, policy: FactoryPolicy = {}): ZoneFiles & { manifest: Uint8Array } {
  const upmon = programBlob('usbphone UPMon', firmwareVersion);
  const main = programBlob('usbphone MAIN', firmwareVersion);
  const json = (o: unknown) => te.encode(JSON.stringify(o) + '\n');
  const virtual = [
    { name: 'AUTORUN.INF', data: te.encode(`[autorun]\r\nopen=${UPMON_PROGRAM}\r\nlabel=${VOLUME_LABEL}\r\n`) },
    { name: UPMON_PROGRAM, data: upmon },
    {
      name: 'UPMON.CFG',
      data: json({
        regPrimary, regBackup, mainProgram: MAIN_PROGRAM, mainSha256: bytesToHex(sha256(main)),
        ...(policy.key ? { policyKey: bytesToHex(policy.key) } : {}),
        ...(policy.initialTable !== undefined ? { initialTable: policy.initialTable } : {}),
      }),
    },
  ];
  const data = (zone: 'cdrom' | 'disk', name: string) => (zone === 'disk' ? (name === MAIN_PROGRAM ? main : null) : virtual.find((f) => f.name === name)?.data ?? null);
  const entries: ManifestEntry[] = BOOT_FILES.map(({ zone, name }) => ({ zone, name, sha256: sha256(data(zone, name)!) }));
  const m: BootManifest = { version: firmwareVersion, entries };
  const signed = signManifest(m, vendorKey);
  virtual.push({ name: MANIFEST_FILE, data: signed });
  return {
    manifest: signed,
    virtual,
    free: [
      { name: MAIN_PROGRAM, data: main },
      { name: 'MAIN.CFG', data: json({ saveLogin: true }) },
      {
        name: 'README.TXT',
        data: te.encode('USBPHONE\r\n\r\nThis disk holds the phone\'s main program (MAIN.EXE) and room for your files.\r\nThe phone starts by itself when plugged in (AUTORUN on its CD-ROM).\r\n'),
      },
    ],
  };
}

/**
 * The sealed identity record of one device (S0.1, S0.2): serial, device key, key version and
 * encrypted serial, under the key its fuses derive. Also used to personalize a copy-on-write
 * device over a shared base image (sim fleets).
 */
export function identityRecord(fuses: Fuses, serial: string, version: number, master: Uint8Array): Uint8Array {
  const deviceKey = deriveDeviceKey(master, checkSerial(serial));
  const idKey = fuses.deriveKey(IDENTITY_KEY_LABEL);
  const record = sealIdentity(idKey, { serial, deviceKey, keyVersion: version, serialToken: makeSerialToken(master, version, serial), uniqueId: fuses.uniqueId() });
  idKey.fill(0);
  deviceKey.fill(0);
  return record;
}

export function buildImage(o: BuildImageOptions): { image: Uint8Array; enrollment: EnrollmentRecord; table: PartitionTable } {
  const serial = checkSerial(o.serial);
  // A chip the layout or the FAT formatter cannot handle is a coded error, not a RangeError.
  const badSize = (e: unknown): never => {
    if (e instanceof RangeError) throw new ImplementationError('IMAGE_BAD_SIZE', `cannot build an image for this chip: ${e.message}`);
    throw e;
  };
  let profile: ChipProfile, table: PartitionTable;
  try {
    profile = validateProfile(o.profile ?? W25Q64);
    table = defaultLayout(profile);
  } catch (e) {
    return badSize(e);
  }
  const regPrimary = checkEndpoint(o.regPrimary ?? DEFAULT_REG_PRIMARY, 'primary registration server');
  const regBackup = checkEndpoint(o.regBackup ?? DEFAULT_REG_BACKUP, 'backup registration server');
  const version = o.keyVersion ?? o.keyring.current;
  const master = o.keyring.key(version);

  const image = new Uint8Array(profile.sizeBytes).fill(profile.erasedValue);
  const hidden = zoneOf(table, ZoneType.HIDDEN), virtual = zoneOf(table, ZoneType.VIRTUAL), free = zoneOf(table, ZoneType.FREE);

  // Hidden zone: the identity record, sealed under the fuse-derived identity key (S0.1, S0.2).
  const deviceKey = deriveDeviceKey(master, serial);
  const uniqueId = o.fuses.uniqueId();
  image.set(identityRecord(o.fuses, serial, version, master), hidden.offset + IDENTITY_OFFSET);

  if (!(o.vendorKey instanceof Uint8Array) || o.vendorKey.length !== 32) throw new ImplementationError('IMAGE_VENDOR_KEY', 'the vendor key must be a 32-byte Ed25519 secret key');
  // An image signed with a key the chip does not hold would never boot: refuse to build it.
  if (!equalBytes(vendorPublicKey(o.vendorKey), o.fuses.vendorPublicKey())) throw new ImplementationError('IMAGE_VENDOR_KEY', "the vendor key does not match the public key in the chip's fuses");
  const files = zoneFiles(regPrimary, regBackup, o.vendorKey, o.firmwareVersion ?? PROGRAM_VERSION, o.policy);
  const checked = verifyManifest(files.manifest, o.fuses.vendorPublicKey());
  if (!checked.ok) throw new ImplementationError('IMAGE_VENDOR_KEY', `the signed manifest does not verify: ${checked.reason}`);
  const iso = buildIso(files.virtual, VOLUME_LABEL);
  if (iso.length > virtual.size) throw new ImplementationError('IMAGE_TOO_BIG', `virtual zone content (${iso.length} bytes) exceeds the zone (${virtual.size})`);
  image.set(iso, virtual.offset);
  virtual.usedBytes = iso.length;
  virtual.contentCrc = crc32(iso);
  virtual.flags |= ZoneFlag.CHECKSUMMED;

  // The disk controller keeps the free zone's last sectors (spares, journal): erased here.
  // Boot sector, FATs, root directory and every cluster each in flash sectors of their own.
  const perFlashSector = Math.min(64, profile.sectorBytes / FAT_SECTOR);
  let fat: Uint8Array;
  try {
    fat = buildFat(files.free, diskVisibleBytes(free.size, profile.sectorBytes), VOLUME_LABEL, { fill: profile.erasedValue, alignSectors: perFlashSector, minClusterSectors: perFlashSector });
  } catch (e) {
    if (e instanceof FatSizeError && /do not fit|too many files/.test(e.message)) throw new ImplementationError('IMAGE_TOO_BIG', `free zone content: ${e.message}`);
    return badSize(e);
  }
  image.set(fat, free.offset);
  image.set(encodeTable(table), TABLE_OFFSET);

  const enrollment: EnrollmentRecord = {
    serial,
    keyVersion: version,
    uniqueId: bytesToHex(uniqueId),
    imageSha256: bytesToHex(sha256(image)),
    regPrimary,
    regBackup,
    chip: profile.name,
    firmwareVersion: checked.manifest.version,
    firmwareMeasurement: bytesToHex(checked.measurement),
  };
  if (o.includeDeviceKey) enrollment.deviceKey = bytesToHex(deviceKey);
  deviceKey.fill(0);
  return { image, enrollment, table };
}
