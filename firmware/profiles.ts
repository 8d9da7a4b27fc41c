// Device profiles (S0.15: "the same method can sit in a USB phone, a PDA/phone, or a bank card
// read by an ATM"): one table, and the wiring of each row from the same parts: the flash chip,
// its bus and secure controller (firmware/flash/, firmware/secure/), the storage seam
// (zones/bus-storage.ts), the Board (device.ts) and the same three programs (boot.ts, upmon.ts,
// main-program.ts). No profile copies a program; a row only says how the parts are joined.
//
//   usb     the USB phone (the default): the host computer sees the virtual zone (CD-ROM) and
//           the free zone (disk); its AutoRun starts UPMon (S0.3).
//   mobile  a mobile phone (PDA/phone): the programs run on the phone itself. There is no host
//           computer and no AutoRun: the phone's own OS launches UPMON.EXE by name (boot.ts
//           launch). The virtual zone is present, read-only, as the phone's system partition
//           holding the same vendor-signed files (so the controller measures and attests the
//           same firmware the servers accept), but nothing auto-runs it and AUTORUN.INF is
//           never parsed. The SIM is the phone's own (HalBase.sim, required).
//   atm     a bank card in an ATM: the card is the chip with its secure controller and hidden
//           zone, reached only through its contacts (APDUs to the controller, the same SeClient
//           a USB phone's programs use); the ATM sees no virtual or free zone of the card. The
//           ATM's own program plays UPMon and the main program, read from the ATM's own
//           install (the vendor's signed program set, checked against BOOT.SIG with the vendor
//           key from the card's fuses). No SIM: the card's number (the serial of the identity
//           record in its hidden zone) is the first identifier (Board.cardIdentity).
//
// What the ATM card does not change (docs/decisions.md): the card's controller measures the
// signed program store in its own flash at power-on, as every chip of this part does, and
// attests that; a card cannot measure the ATM's software. Its zones stay in the card's flash,
// reachable by nothing but that measurement. The ATM is the hostile host: it holds only the
// contacts, and no command returns a key (element.ts).
import { Device, type DeviceWiring } from './device.ts';
import type { DeviceConfig, ProfileName } from './board.ts';
import type { DeviceBus } from './flash/bus.ts';
import type { HalBase } from './hal/hal.ts';
import type { ZoneFiles } from './factory/image.ts';
import type { StorageResult, VirtualVolume, RecordStorage } from './storage.ts';
import { busStorage, secureStorage } from './zones/bus-storage.ts';
import { SeClient } from './secure/client.ts';
import { encodeSavedLogin, decodeSavedLogin, type PhoneStorage, type SavedLoginRecord } from './saved-login.ts';
import { ImplementationError } from '../protocol/errors.ts';

export type { ProfileName };

export interface DeviceProfile extends DeviceWiring {
  summary: string;
  /**
   * What of the chip the device's programs reach: 'usb-units' (the host's CD-ROM and disk units
   * and the controller), 'internal' (the same units, read by the phone's own OS; no host),
   * 'card-contacts' (the controller's APDUs only; the programs' files are the terminal's own).
   */
  chipInterface: 'usb-units' | 'internal' | 'card-contacts';
  /** The SIM slot: the HAL must give one ('required'), may ('optional'), must not ('none'). */
  simSlot: 'required' | 'optional' | 'none';
}

export const PROFILES: Readonly<Record<ProfileName, Readonly<DeviceProfile>>> = Object.freeze({
  usb: { profile: 'usb', summary: 'a USB phone: the host computer auto-runs UPMon from the virtual zone', start: 'autorun', firstIdentifier: 'sim', chipInterface: 'usb-units', simSlot: 'optional' },
  mobile: { profile: 'mobile', summary: "a mobile phone: its own OS launches UPMon, no AutoRun; the SIM is the phone's own", start: 'launcher', firstIdentifier: 'sim', chipInterface: 'internal', simSlot: 'required' },
  atm: { profile: 'atm', summary: "a bank card in an ATM: the ATM's program uses the card's secure controller; the card number is the first identifier", start: 'launcher', firstIdentifier: 'card', chipInterface: 'card-contacts', simSlot: 'none' },
});

export const PROFILE_NAMES = Object.keys(PROFILES) as ProfileName[];

export function isProfileName(v: unknown): v is ProfileName {
  return typeof v === 'string' && Object.hasOwn(PROFILES, v);
}

/** The card's contacts (ISO/IEC 7816: command APDU in, response APDU out): all an ATM holds of a card. */
export interface CardContacts {
  transmit(apdu: Uint8Array): Uint8Array;
}

/** The contacts of the card whose chip is on `bus`: a function of the controller, nothing else of the bus. */
export function cardContacts(bus: DeviceBus): CardContacts {
  const se = bus.se;
  return Object.freeze({ transmit: (apdu: Uint8Array) => se.transmit(apdu) });
}

type FileHalf = Pick<RecordStorage<SavedLoginRecord>, 'readVirtualFile' | 'mountVirtual' | 'readFreeFile'>;

/**
 * A terminal's own program files (the ATM's install: the vendor's signed set, `cdrom` files
 * beside BOOT.SIG and `disk` files as the manifest names them), read-only. Each read returns
 * a copy, so a program cannot change the install; an absent file is 'ERR_NOT_FOUND'.
 */
export function installStorage(install: ZoneFiles): FileHalf {
  const index = (files: ZoneFiles['virtual']) => new Map(files.map((f) => [f.name, Uint8Array.from(f.data)]));
  const cdrom = index(install.virtual), disk = index(install.free);
  const read = (m: Map<string, Uint8Array>, name: string): StorageResult<Uint8Array> => {
    const b = m.get(name);
    return b ? { ok: true, value: Uint8Array.from(b) } : { ok: false, status: 'ERR_NOT_FOUND' };
  };
  return {
    readVirtualFile: (name) => read(cdrom, name),
    mountVirtual: (): StorageResult<VirtualVolume> => ({ ok: true, value: { readFile: (name) => read(cdrom, name) } }),
    readFreeFile: (name) => read(disk, name),
  };
}

const codec = { encode: encodeSavedLogin, decode: decodeSavedLogin };

/** The storage the programs of `profile` see on the chip behind `bus`. */
export function profileStorage(p: DeviceProfile, bus: DeviceBus, install?: ZoneFiles): PhoneStorage {
  if (p.chipInterface !== 'card-contacts') return busStorage(bus, codec);
  if (!install) throw new ImplementationError('PROFILE_NO_INSTALL', `the ${p.profile} profile runs the terminal's own programs: give its install`);
  const contacts = cardContacts(bus);
  return { ...installStorage(install), ...secureStorage(new SeClient((apdu) => contacts.transmit(apdu)), codec) };
}

/**
 * The Device of `profile` over the chip behind `bus` (a phone's own chip, or the card inserted
 * in the ATM): its storage by the row's chip interface, its start by the row's `start`.
 * Throws ImplementationError PROFILE_UNKNOWN, PROFILE_SIM_SLOT (a HAL with a SIM slot on the
 * ATM, or none on the mobile phone) or PROFILE_NO_INSTALL (an ATM without its programs).
 */
export function wireDevice(profile: ProfileName, bus: DeviceBus, hal: HalBase, config: DeviceConfig, install?: ZoneFiles): Device {
  if (!isProfileName(profile)) throw new ImplementationError('PROFILE_UNKNOWN', `no device profile '${String(profile).slice(0, 16)}'; one of ${PROFILE_NAMES.join(', ')}`);
  const p = PROFILES[profile];
  if (p.simSlot === 'none' && hal.sim) throw new ImplementationError('PROFILE_SIM_SLOT', `the ${profile} profile has no SIM slot: its HAL must not give one`);
  if (p.simSlot === 'required' && !hal.sim) throw new ImplementationError('PROFILE_SIM_SLOT', `the ${profile} profile has its own SIM slot: its HAL must give one (HalBase.sim)`);
  if (install && p.chipInterface !== 'card-contacts') throw new ImplementationError('PROFILE_NO_INSTALL', `the ${profile} profile runs the programs of its own chip, not a terminal install`);
  const { profile: name, start, firstIdentifier } = p;
  return new Device(hal, profileStorage(p, bus, install), config, { profile: name, start, firstIdentifier });
}
