// The SIM card and the person of the single phone (`usbphone sim`, issue 11 "sim, CLI"; S4.2,
// S4.1): which card sits in the phone's slot (one the user names, a generated valid one, or the
// one it had on its last run: a card stays in its phone, so the choice is kept in the state
// directory), a swap to a new card for the same line (the operator's store moves the line to it
// first, as sim/bank-scenarios.ts does for its stories, so a mode-2 bank sees the change), and
// what the person at the keypad asks of the bank, with the password read from the environment
// or a file (never from argv, which other users of the machine can read).
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { randomInt } from 'node:crypto';
import { join } from 'node:path';
import { ImplementationError } from '../protocol/errors.ts';
import { isCardType, isE164, isIccid, isImsi, withLuhn } from '../protocol/line-ids.ts';
import { BANK_NAME_RE, BANK_PASSWORD_MAX } from '../protocol/bank-messages.ts';
import { utf8Length } from '../protocol/messages.ts';
import type { SimCardSpec } from '../firmware/hal/sim-card.ts';
import type { BankAction, PersonInput } from '../firmware/hal/person.ts';
import type { OperatorStore } from '../operator-server/store.ts';
import { simCardOf } from './world.ts';

/** The card of the single phone's slot, kept beside its image (not a secret: what the card shows anyone). */
export const SIM_FILE = 'phone.sim.json';

/** The environment variable the bank password is read from (argv is visible to other users: `ps`). */
export const BANK_PASSWORD_ENV = 'USBPHONE_BANK_PASSWORD';

/** Most generated cards (`--sim-card N`, 1..N). */
export const MAX_SIM_CARD = 9999;

const bad = (message: string): never => {
  throw new ImplementationError('CLI_BAD_ARGS', message);
};

/** How the user chose the card, from the options. */
export type SimChoice =
  /** `--iccid --imsi [--msisdn]`: this card. */
  | { kind: 'given'; card: SimCardSpec }
  /** `--sim-card N`: the generated valid card N (a USIM of the test network 001-01; the same N, the same card). */
  | { kind: 'generated'; n: number }
  /** `--swap-sim`: a new card for the line of the card the phone has. */
  | { kind: 'swap' }
  /** Nothing said: the card the phone had last run, else the profile's default. */
  | { kind: 'kept' };

/** The card `--iccid/--imsi/--msisdn` describe, checked as the operator would (CLI_BAD_ARGS, naming the option). */
export function givenCard(iccid: string | undefined, imsi: string | undefined, msisdn: string | undefined): SimCardSpec {
  if (iccid === undefined || imsi === undefined) bad('--iccid and --imsi go together: a card has both (--msisdn is optional: many cards carry no number)');
  if (!isIccid(iccid)) bad(`--iccid must be an ICCID: 89 then 17 or 18 digits, the last a Luhn check digit; not '${iccid!.slice(0, 24)}'`);
  if (!isImsi(imsi)) bad(`--imsi must be 6 to 15 digits (MCC, MNC, MSIN); not '${imsi!.slice(0, 24)}'`);
  if (msisdn !== undefined && !isE164(msisdn)) bad(`--msisdn must be an E.164 number: '+', a country code not starting with 0, at most 15 digits; not '${String(msisdn).slice(0, 24)}'`);
  return { iccid: iccid!, imsi: imsi!, cardType: 'USIM', ...(msisdn === undefined ? {} : { msisdn }) };
}

/** The generated card N (1..MAX_SIM_CARD): a mobile phone's own card is card 1. */
export function generatedCard(n: number): SimCardSpec {
  if (!Number.isInteger(n) || n < 1 || n > MAX_SIM_CARD) bad(`--sim-card must be a card number 1..${MAX_SIM_CARD}`);
  return simCardOf(0, n);
}

/** The card saved in `stateDir`, or null; CLI_CORRUPT_FILE when the file is not a card. */
export function savedSim(stateDir: string): SimCardSpec | null {
  const f = join(stateDir, SIM_FILE);
  if (!existsSync(f)) return null;
  let v: unknown;
  try {
    v = JSON.parse(readFileSync(f, 'utf8'));
  } catch (e) {
    throw new ImplementationError('CLI_CORRUPT_FILE', `${f} is not JSON (${(e as Error).message}); delete it and choose the card again (--sim-card N or --iccid/--imsi)`);
  }
  const c = v as Partial<SimCardSpec> | null;
  if (!c || typeof c !== 'object' || !isIccid(c.iccid) || !isImsi(c.imsi) || !isCardType(c.cardType) || (c.msisdn !== undefined && !isE164(c.msisdn))) {
    throw new ImplementationError('CLI_CORRUPT_FILE', `${f} is not a SIM card {iccid, imsi, cardType, msisdn?}; delete it and choose the card again`);
  }
  return { iccid: c.iccid, imsi: c.imsi, cardType: c.cardType, ...(c.msisdn ? { msisdn: c.msisdn } : {}) };
}

export function saveSim(stateDir: string, card: SimCardSpec): void {
  writeFileSync(join(stateDir, SIM_FILE), JSON.stringify(card, null, 2) + '\n');
}

/**
 * A new card for the line of `old`: the same issuer (the ICCID's first 8 digits), network (the
 * IMSI's MCC and MNC) and number, new serial digits. Random: the new card is then saved.
 */
export function newCardFor(old: SimCardSpec): SimCardSpec {
  const digits = (n: number) => Array.from({ length: n }, () => String(randomInt(10))).join('');
  const body = old.iccid.slice(0, -1);
  const iccid = withLuhn(body.slice(0, 8) + digits(body.length - 8));
  return { ...old, iccid, imsi: old.imsi.slice(0, 5) + digits(old.imsi.length - 5) };
}

/** What the phone's slot holds this run, and the card it replaces on a swap. */
export interface SimPlan {
  /** undefined: the profile's default (none on a USB phone, card 1 on a mobile phone). */
  card: SimCardSpec | undefined;
  swappedFrom?: SimCardSpec;
}

/** The card of this run from the choice and what `stateDir` holds (nothing is written here). */
export function planSim(stateDir: string, choice: SimChoice, mobile: boolean): SimPlan {
  if (choice.kind === 'given') return { card: choice.card };
  if (choice.kind === 'generated') return { card: generatedCard(choice.n) };
  const saved = savedSim(stateDir);
  if (choice.kind === 'kept') return { card: saved ?? undefined };
  const old = saved ?? (mobile ? generatedCard(1) : null);
  if (!old) bad('--swap-sim needs the card the phone has: it has none (choose one first: --sim-card N, or --iccid/--imsi/--msisdn)');
  if (!old!.msisdn) bad('--swap-sim moves a line to a new card: the phone\'s card carries no number (give one with --msisdn)');
  return { card: newCardFor(old!), swappedFrom: old! };
}

/**
 * Tells the operator's store about the line of this run's card: the subscription of a card
 * that carries a number (created once, S4.6), and on a swap the line moved to the new card,
 * its change time now (the bank's SIM-swap check, mode 2). Returns what to tell the user.
 * SIM_LINE_CONFLICT when the operator has the number on another card, or the card on another
 * number (a swap goes through --swap-sim).
 */
export async function tellOperator(store: OperatorStore, plan: SimPlan): Promise<string> {
  const card = plan.card;
  const from = plan.swappedFrom;
  const line = from ?? card;
  if (!card || !line?.msisdn) return 'the card carries no number: the operator is not told of it';
  const info = (c: SimCardSpec) => ({ iccid: c.iccid, imsi: c.imsi, cardType: c.cardType });
  try {
    await store.createSubscription(line.msisdn, info(line));
    if (!from) return `the operator's line ${line.msisdn} is on this card`;
    await store.swapCard(line.msisdn, info(card));
    return `the operator moved line ${line.msisdn} from card ${maskIccid(from.iccid)} to card ${maskIccid(card.iccid)} (now)`;
  } catch (e) {
    if (e instanceof ImplementationError && e.code === 'OP_CONFLICT') {
      const now = await store.byPhoneNumber(line.msisdn);
      throw new ImplementationError('SIM_LINE_CONFLICT', `the operator will not pair ${line.msisdn} with card ${maskIccid(line.iccid)}: ${now ? `that line is on card ${maskIccid(now.card.iccid)}` : e.message.replace(/^[A-Z_]+: /, '')}; --swap-sim moves a line to a new card, --sim-card N picks another line`);
    }
    throw e;
  }
}

/** An ICCID as the CLI shows it: the issuer's first digits and the last four. */
export const maskIccid = (iccid: string): string => `${iccid.slice(0, 7)}…${iccid.slice(-4)}`;

export const BANK_ACTIONS: readonly BankAction[] = ['register', 'login', 'rebind'];

/**
 * The person at the keypad for `--bank ACTION --bank-name NAME`: the password from
 * `passwordFile` (its first line) or else the environment variable USBPHONE_BANK_PASSWORD.
 * CLI_BAD_ARGS for a bad action or name, no password or both sources; CLI_FILE for an
 * unreadable file. The password is kept only in the closure the firmware asks once.
 */
export function bankPerson(action: string, name: string | undefined, passwordFile: string | undefined, env: NodeJS.ProcessEnv): PersonInput {
  if (!(BANK_ACTIONS as readonly string[]).includes(action)) bad(`--bank must be ${BANK_ACTIONS.join(', ')}, not '${action.slice(0, 32)}'`);
  if (name === undefined) bad('--bank needs --bank-name NAME: the person\'s login name at the bank');
  if (!BANK_NAME_RE.test(name!)) bad(`--bank-name must be 3..64 of letters, digits and . _ @ -, not '${name!.slice(0, 64)}'`);
  const fromEnv = env[BANK_PASSWORD_ENV];
  if (passwordFile !== undefined && fromEnv !== undefined) bad(`the bank password comes from --bank-password-file or ${BANK_PASSWORD_ENV}, not both`);
  let password: string;
  if (passwordFile !== undefined) {
    let text: string;
    try {
      text = readFileSync(passwordFile, 'utf8');
    } catch (e) {
      throw new ImplementationError('CLI_FILE', `--bank-password-file ${passwordFile}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    password = text.split(/\r?\n/)[0]!;
  } else if (fromEnv !== undefined) password = fromEnv;
  else return bad(`--bank needs the person's password: set ${BANK_PASSWORD_ENV} or give --bank-password-file FILE (never on the command line: other users can read it)`);
  if (password.length === 0 || utf8Length(password) > BANK_PASSWORD_MAX) bad(`the bank password must be 1..${BANK_PASSWORD_MAX} bytes of UTF-8`);
  const entry = { action: action as BankAction, name: name!, password };
  return { bankEntry: () => entry };
}
