// The Board: everything the firmware programs (boot, UPMon, the main program, a client
// session) need from the phone they run on, and nothing else. Device (device.ts) is the real
// board: a HAL, the flash storage, one event loop; a test may give any other (board.test.ts
// runs UPMon and the main program on a fake one with no socket). Programs import this
// interface, never Device, so device.ts can import the programs without an import circle.
import type { Clock, Network, Rng } from './hal/hal.ts';
import type { EventLoop } from './loop.ts';
import type { PhoneStorage } from './saved-login.ts';
import { Limits } from '../protocol/limits.ts';
import type { DeviceMutant } from './mutant.ts';

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
}

export const defaultDeviceConfig: DeviceConfig = {
  stepTimeoutMs: Limits.stepTimeoutMs,
  regRounds: 2,
  loginRounds: 2,
  backoffBaseMs: 50,
  backoffCapMs: 1_000,
};

export interface Board {
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
  /** A notice shown to the user on the host (S0.9 "not found"). */
  notice(text: string): void;
}
