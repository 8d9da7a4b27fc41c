// A whole virtual phone: the flash chip over a copy-on-write view of a shared base image,
// its fuses, the bus with its access rules, the storage seam, and the firmware Device.
// Wiring as data: give it a base image, fuses and a HAL; a fleet of thousands shares one base.
import { FlashChip } from './flash/chip.ts';
import { CowBacking, type FlashBacking } from './flash/backing.ts';
import { DeviceBus } from './flash/bus.ts';
import type { Fuses } from './flash/fuses.ts';
import { parseTable, zoneOf, ZoneType, type PartitionTable } from './zones/layout.ts';
import { IDENTITY_OFFSET } from './zones/hidden.ts';
import { busStorage } from './zones/bus-storage.ts';
import { identityRecord } from './factory/image.ts';
import { Device, defaultDeviceConfig, type DeviceConfig } from './device.ts';
import { encodeSavedLogin, decodeSavedLogin } from './saved-login.ts';
import { ImplementationError } from '../protocol/errors.ts';
import type { HalBase } from './hal/hal.ts';
import type { ControllerNvm } from './secure/nvm.ts';

export interface Phone {
  device: Device;
  chip: FlashChip;
  bus: DeviceBus;
  backing: FlashBacking;
  table: PartitionTable;
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
}

export function makePhone(o: PhoneOptions): Phone {
  if (!o.base === !o.backing) throw new ImplementationError('PHONE_BACKING', 'give a base image or a backing, not both');
  const backing = o.backing ?? new CowBacking(o.base!, 4096);
  const head = new Uint8Array(4096);
  backing.readInto(0, head);
  const table = o.table ?? tableOf(head, backing.sizeBytes);
  if (o.personalize) {
    if (!(backing instanceof CowBacking)) throw new ImplementationError('PHONE_PERSONALIZE', 'only a copy-on-write device is personalized over its base');
    personalize(backing, table, o.fuses, o.personalize.serial, o.personalize.keyVersion, o.personalize.master);
  }
  const chip = new FlashChip({ backing, seed: o.chipSeed ?? 1 });
  // The controller draws its nonces from the phone's own randomness (seeded in a simulation, so a run replays).
  const bus = new DeviceBus(chip, o.fuses, table, o.hal.rng, o.nvm);
  const storage = busStorage(bus, { encode: encodeSavedLogin, decode: decodeSavedLogin });
  const device = new Device(o.hal, storage, o.config ?? defaultDeviceConfig);
  return { device, chip, bus, backing, table };
}

/** Unplug and plug in again: the chip powers up anew (the controller forgets its RAM state), the firmware restarts. */
export function replug(p: Phone, hal: HalBase, config: DeviceConfig = p.device.config): Phone {
  p.bus.powerCycle();
  const storage = busStorage(p.bus, { encode: encodeSavedLogin, decode: decodeSavedLogin });
  return { ...p, device: new Device(hal, storage, config) };
}
