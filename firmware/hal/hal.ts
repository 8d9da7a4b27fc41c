// The firmware's only window on the world (no firmware module imports node:*). Two
// implementations: hal/node/ (real sockets, real clock, crypto randomness) and sim-hal.ts
// (in-memory network with loss and delay, virtual clock, seeded rng). The SIM card slot
// (sim-card.ts) has one model, the in-memory SimSlot, used by both.
import type { SimCard } from './sim-card.ts';
import type { FingerprintSensor } from './fingerprint.ts';
import type { PersonInput } from './person.ts';

export type Rng = (n: number) => Uint8Array;

export interface Clock {
  /** Milliseconds since an arbitrary origin. */
  now(): number;
  /**
   * Wall-clock time, ms since the Unix epoch: what the phone believes the date is (a real
   * phone sets it from the network). Used only where a date is compared with one a server
   * signed (the attack table's expiry, S3.11); never for timeouts, which use now().
   */
  epochMs(): number;
  setTimer(ms: number, fn: () => void): unknown;
  clearTimer(handle: unknown): void;
}

export interface NetHandlers {
  onOpen(): void;
  onMessage(data: Uint8Array): void;
  /** Always called once, also when the connection never opened (code 1006). */
  onClose(code: number, reason: string): void;
}

export interface NetSocket {
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}

export interface Network {
  /** The address this device's sockets are bound to (what it reports as its local IP). */
  readonly localIp: string;
  connect(url: string, handlers: NetHandlers): NetSocket;
}

/** One line of the readable trace: a step of a program, tagged with its feature id. */
export interface TraceEvent {
  /** Firmware clock, ms since plug-in. */
  t: number;
  feature: string;
  step: string;
  detail: string;
  ok: boolean;
  /** Duration of the step, when it has one. */
  ms?: number;
}

/** The host computer the phone is plugged into: where notices show and the trace goes. */
export interface Host {
  trace(e: TraceEvent): void;
  /** A notice shown to the user (S0.9 "not found"). */
  notice(text: string): void;
}

export interface HalBase {
  clock: Clock;
  rng: Rng;
  net: Network;
  host: Host;
  /**
   * The SIM card slot (S4.2), on devices that have one: the firmware reads the card's
   * identity through it (firmware/card-info.ts). Absent on a device without a slot (a bank
   * card in an ATM, S0.15), and wherever the programs do not need it yet.
   */
  sim?: SimCard;
  /**
   * The fingerprint sensor (S3.3), paired with the secure controller at the factory: it seals
   * each reading for the chip (firmware/hal/fingerprint.ts). Absent on a phone without one.
   */
  fingerprint?: FingerprintSensor;
  /** The person at the device (S4.1): the bank step's login name and password, asked once, never stored. */
  person?: PersonInput;
}
