// The Board: everything the firmware programs (boot, UPMon, the main program, a client
// session) need from the phone they run on, and nothing else. Device (device.ts) is the real
// board: a HAL, the flash storage, one event loop; a test may give any other (board.test.ts
// runs UPMon and the main program on a fake one with no socket). Programs import this
// interface, never Device, so device.ts can import the programs without an import circle.
import type { Clock, Network, Rng } from './hal/hal.ts';
import type { SimCard } from './hal/sim-card.ts';
import type { StorageResult } from './storage.ts';
import type { PersonInput } from './hal/person.ts';
import type { FingerprintSensor } from './hal/fingerprint.ts';
import type { EventLoop } from './loop.ts';
import type { PhoneStorage } from './saved-login.ts';
import { Limits } from '../protocol/limits.ts';
import type { DeviceMutant, StoreMutant } from './mutant.ts';

export interface DeviceConfig {
  /** How long a session waits for each expected frame, ms. */
  stepTimeoutMs: number;
  /** Rounds over (primary, backup) before UPMon gives up on registration (S0.6, S0.13). */
  regRounds: number;
  /** Rounds over the business servers while they are only unreachable. */
  loginRounds: number;
  backoffBaseMs: number;
  backoffCapMs: number;
  /** TEST ONLY (firmware/mutant.ts): one rule broken on purpose, for the conformance suite's mutant devices. Never set in production. */
  mutant?: DeviceMutant;
  /** TEST ONLY (firmware/mutant.ts): the chip's record stores break their power-cut rule (sim/power-cut-search.test.ts). Never set in production. */
  storeMutant?: StoreMutant;
}

export const defaultDeviceConfig: DeviceConfig = {
  stepTimeoutMs: Limits.stepTimeoutMs,
  regRounds: 2,
  loginRounds: 2,
  backoffBaseMs: 50,
  backoffCapMs: 1_000,
};

/**
 * The device the programs run in (S0.15; the wiring of each is firmware/profiles.ts):
 * - 'usb': the USB phone; the host computer's AutoRun starts UPMon from the virtual zone;
 * - 'mobile': a mobile phone (PDA/phone); its own operating system launches UPMon, no AutoRun;
 * - 'atm': a bank card in an ATM; the ATM's program plays UPMon and the main program and
 *   reaches the card only through its secure controller's commands.
 */
export type ProfileName = 'usb' | 'mobile' | 'atm';

export interface Board {
  /** Which device this is (S0.15). */
  readonly profile: ProfileName;
  readonly clock: Clock;
  /** The device's own randomness (nonces, backoff jitter). */
  readonly rng: Rng;
  readonly net: Network;
  /** The one run-to-completion loop every network event and timer goes through. */
  readonly loop: EventLoop;
  readonly storage: PhoneStorage;
  readonly config: DeviceConfig;
  /** One line of the readable trace, tagged with its feature id (S0.x); `ms` a step's duration. */
  trace(feature: string, step: string, detail: string, ok?: boolean, ms?: number): void;
  /** A notice shown to the user (S0.9 "not found"): on the host computer, the phone's or the ATM's screen. */
  notice(text: string): void;
  /**
   * S3.11: a signed attack table the gateway pushed into a session (protocol/messages.ts
   * peekTablePush); the board keeps it if it passes (firmware/policy-table.ts keepPushedTable).
   * Absent on a board that keeps no table: the push is then ignored.
   */
  tablePush?(table: Uint8Array): void;
  /**
   * S3.11: how many tables tablePush was given since the board was made, kept or refused (a
   * count, never decreasing). The main program re-reads the saved record before its own write
   * (firmware/policy-table.ts withNewestTable) only when this moved since it read its login; a
   * board with tablePush but no count is re-read every time. Absent on a board with no tablePush.
   */
  readonly tablesPushed?: number;
  /**
   * The device's SIM slot (HalBase.sim), where it has one (the USB and the mobile phone): the
   * source of the first identifier (S4.2) on a phone. Absent on the ATM profile.
   */
  readonly sim?: SimCard;
  /**
   * ATM profile only (S0.15): the inserted card's number, its first identifier (S4.2): the
   * serial of the identity record in the card's hidden zone, read through the secure
   * controller (GET DATA identity; public, as a card number is). Absent on the phones, whose
   * first identifier is the SIM's card info. Errors are the controller's statuses.
   */
  readonly cardIdentity?: () => StorageResult<string>;
  /** The person at the device (S4.1): the bank step's input, when there is one. */
  readonly person?: PersonInput;
  /** The fingerprint sensor paired with the chip (HalBase.fingerprint, S3.3), where the device has one. */
  readonly fingerprint?: FingerprintSensor;
}
