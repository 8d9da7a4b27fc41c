// Factory provisioning: builds a device's whole flash image (partition table, hidden zone
// with the sealed identity record, virtual zone ISO 9660, free zone FAT) and the enrollment
// record the registration server needs. No node:fs here: the CLI (cli/image.ts) does files.
//
// Reproducible: the same serial, fuses, master key and endpoints give byte-identical images
// (fixed file dates, synthetic nonces, volume serial derived from the label).
// The device key appears in no zone in clear and in the enrollment record only when asked
// (includeDeviceKey); the serial appears only inside the sealed identity record.
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
  /** Master key version to derive under (default: the keyring's newest). */
  keyVersion?: number;
  regPrimary?: string;
  regBackup?: string;
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

export function manifest(program: string, blob: Uint8Array, version = PROGRAM_VERSION): Uint8Array {
  return te.encode(JSON.stringify({ program, sha256: bytesToHex(sha256(blob)), version }) + '\n');
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

/** The files of the virtual and free zones (no secrets in any of them). */
export function zoneFiles(regPrimary: string, regBackup: string): ZoneFiles {
  const upmon = programBlob('usbphone UPMon', PROGRAM_VERSION);
  const main = programBlob('usbphone MAIN', PROGRAM_VERSION);
  const json = (o: unknown) => te.encode(JSON.stringify(o) + '\n');
  return {
    virtual: [
      { name: 'AUTORUN.INF', data: te.encode(`[autorun]\r\nopen=${UPMON_PROGRAM}\r\nlabel=${VOLUME_LABEL}\r\n`) },
      { name: UPMON_PROGRAM, data: upmon },
      { name: 'UPMON.MAN', data: manifest(UPMON_PROGRAM, upmon) },
      { name: 'UPMON.CFG', data: json({ regPrimary, regBackup, mainProgram: MAIN_PROGRAM, mainSha256: bytesToHex(sha256(main)) }) },
    ],
    free: [
      { name: MAIN_PROGRAM, data: main },
      { name: 'MAIN.MAN', data: manifest(MAIN_PROGRAM, main) },
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

  const files = zoneFiles(regPrimary, regBackup);
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
  };
  if (o.includeDeviceKey) enrollment.deviceKey = bytesToHex(deviceKey);
  deviceKey.fill(0);
  return { image, enrollment, table };
}
