// A whole virtual phone: the flash chip over a copy-on-write view of a shared base image,
// its fuses, the bus with its access rules, the storage seam, and the firmware Device.
// Wiring as data: give it a base image, fuses and a HAL; a fleet of thousands shares one base.
// The same chip sits in each device of S0.15 (firmware/profiles.ts): `profile` chooses the
// wiring; on the ATM profile the chip is the bank card's and `device` is the ATM's program board.
// The person layer (S3.3): the chip's own clock (Unix ms from the HAL's Clock.epochMs, a real
// chip's battery-backed RTC; none on a bank card, which has no battery) for one-time codes, and
// on a phone the fingerprint sensor paired with the chip at the factory (the pairing key from
// the chip's fuses).
import { FlashChip } from './flash/chip.ts';
import { CowBacking, type FlashBacking } from './flash/backing.ts';
import { DeviceBus } from './flash/bus.ts';
import type { Fuses } from './flash/fuses.ts';
import { parseTable, zoneOf, ZoneType, type PartitionTable } from './zones/layout.ts';
import { IDENTITY_OFFSET } from './zones/hidden.ts';
import { identityRecord, type ZoneFiles } from './factory/image.ts';
import { defaultDeviceConfig, type Device, type DeviceConfig } from './device.ts';
import { wireDevice, type ProfileName } from './profiles.ts';
import { ImplementationError } from '../protocol/errors.ts';
import type { Clock, HalBase } from './hal/hal.ts';
import { memoryNvm, type ControllerNvm } from './secure/nvm.ts';
import { SimFingerprintSensor, SENSOR_PAIRING_LABEL, type Finger } from './hal/fingerprint.ts';

export interface Phone {
  /** The board the programs run on: the phone itself, or (ATM profile) the ATM with the card inserted. */
  device: Device;
  profile: ProfileName;
  /** ATM profile: the ATM's own program files. */
  install?: ZoneFiles;
  chip: FlashChip;
  bus: DeviceBus;
  backing: FlashBacking;
  /** The secure controller's own memory (counters, objects), outside the flash. */
  nvm: ControllerNvm;
  table: PartitionTable;
  /** The fingerprint sensor paired with the chip (S3.3), when the phone has one: place() a finger on it. */
  sensor?: SimFingerprintSensor;
  /** Where the chip's clock reads the time: the HAL of the current plug-in (replug moves it). */
  readonly chipClock: { source: Clock };
}

/** The partition table from the first sector of an image (`chipBytes`: the image's size). */
export function tableOf(head: Uint8Array, chipBytes = head.length): PartitionTable {
  const t = parseTable(head.subarray(0, 4096), chipBytes);
  if (!t.ok || !t.crcOk) throw new ImplementationError('PHONE_BAD_BASE', `base image has no valid partition table${t.ok ? ' (checksum)' : `: ${t.message}`}`);
  return t.table;
}

/**
 * Factory personalization of a copy-on-write device: erases the hidden zone's identity
 * sector in this device's view and writes its own sealed identity record there, so many
 * devices with distinct serials and fuses share one base image.
 */
export function personalize(backing: CowBacking, table: PartitionTable, fuses: Fuses, serial: string, keyVersion: number, master: Uint8Array): void {
  const hidden = zoneOf(table, ZoneType.HIDDEN);
  const at = hidden.offset + IDENTITY_OFFSET;
  backing.fill(at - (at % backing.sectorBytes), backing.sectorBytes, 0xff);
  backing.write(at, identityRecord(fuses, serial, keyVersion, master));
}

export interface PhoneOptions {
  /** The factory image the phone's copy-on-write view starts from (fleets share one)... */
  base?: Uint8Array;
  /** ...or a backing of its own (e.g. an image file, so what the phone saves persists). */
  backing?: FlashBacking;
  table?: PartitionTable;
  fuses: Fuses;
  hal: HalBase;
  config?: DeviceConfig;
  /** Seed of the chip's fault-injection PRNG. */
  chipSeed?: number;
  /** The controller's own memory (rollback counters), outside the flash; default in memory. */
  nvm?: ControllerNvm;
  /** Give this device its own identity over the base (fleets): serial + master key. */
  personalize?: { serial: string; keyVersion: number; master: Uint8Array };
  /** The device this chip sits in (S0.15; default 'usb'). */
  profile?: ProfileName;
  /** 'atm' only: the ATM's own program files (the vendor's signed set, firmware/factory/image.ts zoneFiles). */
  install?: ZoneFiles;
  /**
   * A phone plugged in again from what it kept while unplugged (park): its flash, NVM and wear;
   * give it instead of base/backing, personalize and nvm.
   */
  parked?: ParkedPhone;
  /**
   * A fingerprint sensor, paired with this chip at the factory (S3.3), and the finger on it
   * (null: none yet): its noise seed, so a run replays. Not on the ATM profile (a card's chip has
   * no sensor of its own). The HAL's own sensor (HalBase.fingerprint), if any, wins.
   */
  fingerprint?: { seed: string | number; finger?: Finger | null; poorRate?: number };
}

export function makePhone(o: PhoneOptions): Phone {
  if ([o.base, o.backing, o.parked].filter(Boolean).length !== 1) throw new ImplementationError('PHONE_BACKING', 'give one of a base image, a backing or a parked phone');
  if (o.parked && (o.personalize || o.nvm)) throw new ImplementationError('PHONE_BACKING', 'a parked phone brings its own identity and NVM');
  const backing = o.parked?.backing ?? o.backing ?? new CowBacking(o.base!, 4096);
  const head = new Uint8Array(4096);
  backing.readInto(0, head);
  const table = o.table ?? tableOf(head, backing.sizeBytes);
  if (o.personalize) {
    if (!(backing instanceof CowBacking)) throw new ImplementationError('PHONE_PERSONALIZE', 'only a copy-on-write device is personalized over its base');
    personalize(backing, table, o.fuses, o.personalize.serial, o.personalize.keyVersion, o.personalize.master);
  }
  const chip = new FlashChip({ backing, seed: o.chipSeed ?? 1 });
  if (o.parked?.wear) chip.loadEraseCounts(unpackWear(o.parked.wear, chip.sizeBytes / chip.profile.sectorBytes));
  const nvm = o.parked ? memoryNvm(o.parked.nvm?.counters, o.parked.nvm?.objects) : o.nvm ?? memoryNvm();
  const profile = o.profile ?? 'usb';
  // The chip's clock: a phone's battery-backed RTC; a bank card has none (no one-time codes on it).
  const chipClock = { source: o.hal.clock };
  // The controller draws its nonces from the phone's own randomness (seeded in a simulation, so a run replays).
  const storeMutant = o.config?.storeMutant;
  const bus = new DeviceBus(chip, o.fuses, table, o.hal.rng, nvm, profile === 'atm' ? null : () => chipClock.source.epochMs(), storeMutant ? { mutant: storeMutant } : {});
  let sensor: SimFingerprintSensor | undefined;
  if (o.fingerprint && profile !== 'atm') {
    const pairingKey = o.fuses.deriveKey(SENSOR_PAIRING_LABEL);
    sensor = new SimFingerprintSensor({ pairingKey, seed: o.fingerprint.seed, poorRate: o.fingerprint.poorRate });
    pairingKey.fill(0);
    sensor.place(o.fingerprint.finger ?? null);
  }
  const hal = sensor && !o.hal.fingerprint ? { ...o.hal, fingerprint: sensor } : o.hal;
  const device = wireDevice(profile, bus, hal, o.config ?? defaultDeviceConfig, o.install);
  const p: Phone = { device, profile, chip, bus, backing, nvm, table, chipClock, ...(sensor ? { sensor } : {}) };
  return o.install ? { ...p, install: o.install } : p;
}

/**
 * Unplug and plug in again (a phone), or take the card out and insert it again (ATM): the chip
 * powers up anew (the controller forgets its RAM state), the programs restart.
 */
export function replug(p: Phone, hal: HalBase, config: DeviceConfig = p.device.config): Phone {
  p.bus.powerCycle();
  p.chipClock.source = hal.clock;
  // The sensor is part of the phone: it stays unless the HAL brings one.
  const h = p.sensor && !hal.fingerprint ? { ...hal, fingerprint: p.sensor } : hal;
  return { ...p, device: wireDevice(p.profile, p.bus, h, config, p.install) };
}

/**
 * What a phone keeps while it is unplugged: its flash (the copy-on-write pages over the shared
 * base), its controller's NVM (counters, objects) and its chip's wear. Everything else (the bus,
 * the controller's RAM, the firmware) is power-up state, rebuilt from the fuses when it is plugged
 * in again (makePhone({ parked })), as a real phone's is. A fleet of a million holds this, about
 * 2 KiB a phone, instead of the running objects (docs/decisions.md).
 */
export interface ParkedPhone {
  readonly backing: CowBacking;
  /** null: the controller never wrote a counter or an object. */
  readonly nvm: { counters: Record<number, number>; objects: [string, Uint8Array][] } | null;
  /** Erase counters as (sector, count) pairs; null before any erase. */
  readonly wear: Uint32Array | null;
}

/** Unplugs a phone for good (its running objects are dropped): what it keeps. Needs a copy-on-write phone with its NVM in memory. */
export function park(p: Phone): ParkedPhone {
  if (!(p.backing instanceof CowBacking)) throw new ImplementationError('PHONE_PARK', 'only a copy-on-write phone is parked');
  // Unplugged: the connection it held after its login closes (docs/protocol.md §2.1).
  p.device.unplug();
  const m = p.nvm as ControllerNvm & { snapshot?: () => Record<number, number>; objectNames?: () => string[] };
  if (!m.snapshot || !m.objectNames) throw new ImplementationError('PHONE_PARK', "only a phone whose controller NVM is in memory is parked (a file NVM keeps itself)");
  const counters = m.snapshot();
  const objects = m.objectNames().map((n): [string, Uint8Array] => [n, m.readObject(n)!]);
  const counts = p.chip.eraseCounts();
  let used = 0;
  for (const n of counts) if (n) used++;
  const wear = used ? new Uint32Array(used * 2) : null;
  if (wear) for (let s = 0, j = 0; s < counts.length; s++) if (counts[s]) (wear[j++] = s), (wear[j++] = counts[s]!);
  return { backing: p.backing, nvm: Object.keys(counters).length || objects.length ? { counters, objects } : null, wear };
}

function unpackWear(pairs: Uint32Array, sectors: number): Uint32Array {
  const out = new Uint32Array(sectors);
  for (let j = 0; j + 1 < pairs.length; j += 2) out[pairs[j]!] = pairs[j + 1]!;
  return out;
}
