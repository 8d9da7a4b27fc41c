// The person at the phone (S4.1, S4.2): what they enter when the main program reaches the bank
// step, through the device's keypad or screen. The firmware asks once per plug-in and keeps
// nothing of it: the password goes, sealed, into the one bank request and is never written to
// flash or traced. The simulator fills it (sim/bank.ts); a device without a person at it has none.
export type BankAction = 'register' | 'login' | 'rebind';

export interface PersonEntry {
  action: BankAction;
  /** The person's login name at the bank (not the device's S0 user). */
  name: string;
  password: string;
}

export interface PersonInput {
  /** What the person asks of the bank now, or null: no bank step on this plug-in. */
  bankEntry(): PersonEntry | null;
}
