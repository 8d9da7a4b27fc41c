// The person at the phone (S4.1, S4.2): what they enter when the main program reaches the bank
// step, through the device's keypad or screen. The firmware asks once per plug-in and keeps
// nothing of it: the password goes, sealed, into the one bank request and is never written to
// flash or traced. The simulator fills it (sim/bank-scenarios.ts); a device without a person at it has none.
// The fingerprint (S3.3) is not here: the person's finger is on the sensor (HalBase.fingerprint).
import type { Mechanism } from '../../protocol/messages.ts';

export type BankAction = 'register' | 'login' | 'rebind';

export interface PersonEntry {
  action: BankAction;
  /** The person's login name at the bank (not the device's S0 user). */
  name: string;
  password: string;
  /**
   * The mechanisms the person agrees to use this time (a login): the smart client chooses among
   * these only (S3.1). Default: any the device can prove.
   */
  mechanisms?: Mechanism[];
}

export interface PersonInput {
  /** What the person asks of the bank now, or null: no bank step on this plug-in. */
  bankEntry(): PersonEntry | null;
}
