// The SIM card slot (S4.2): the seam through which the firmware reads the card's identity
// itself, so the user never types it, and the in-memory card model the simulator inserts,
// removes and swaps. A card is what a UICC is to the phone: a few elementary files read
// with READ BINARY / READ RECORD, in the encodings of the standards:
//   EF_ICCID  2FE2  10 bytes, BCD, digits swapped in each byte, F-padded    (ETSI TS 102 221 §13.2)
//   EF_IMSI   6F07  9 bytes: length, parity/type nibble, swapped BCD         (3GPP TS 31.102 §4.2.2)
//   EF_MSISDN 6F40  linear fixed, optional: alpha id, BCD length, TON/NPI,  (3GPP TS 31.102 §4.2.26)
//                   10 bytes swapped BCD, CCP, extension
// and a card type (what the phone learns from the card's answer to reset and application list).
//
// Not emulated: APDU framing and status words, PIN verification (the card is unlocked), file
// selection paths (a file is named by its id alone), the CDMA-only identifiers of R-UIM/CSIM
// cards (ESN, UIMID, EUIMID in EF_RUIMID): such a card shows its ICCID and IMSI like the
// others; authentication (RUN GSM ALGORITHM / AUTHENTICATE), SMS and phonebook files.
// Like every model here, it never throws at the firmware: a read with no card, of a file the
// card does not have, or of a record out of range returns null. It throws only when the
// simulator configures a card that could not exist (SIM_BAD_CARD).
import { ImplementationError } from '../../protocol/errors.ts';
import { isIccid, isImsi, isE164, isCardType, type CardType } from '../../protocol/line-ids.ts';

/** The slot as the firmware sees it (HalBase.sim). */
export interface SimCard {
  /** Whether a card sits in the slot (the slot's card-detect switch). */
  present(): boolean;
  /** The inserted card's type, or null with no card. */
  cardType(): CardType | null;
  /** READ BINARY of a whole transparent file; null with no card or no such file. */
  readBinary(fid: number): Uint8Array | null;
  /** READ RECORD `n` (1-based) of a linear fixed file; null with no card, no such file or record. */
  readRecord(fid: number, n: number): Uint8Array | null;
}

/** File ids of the elementary files the model holds. */
export const EF = { ICCID: 0x2fe2, IMSI: 0x6f07, MSISDN: 0x6f40 } as const;

/** What the simulator inserts: a card as the operator issued it. */
export interface SimCardSpec {
  iccid: string;
  imsi: string;
  cardType: CardType;
  /** The line's number when the operator wrote it on the card (EF_MSISDN); many cards have none. */
  msisdn?: string;
}

const nib = (d: string | undefined) => (d === undefined ? 0xf : d.charCodeAt(0) - 48);

/** Digits in swapped BCD (first digit in the low nibble), F-padded to `bytes`. */
function swappedBcd(digits: string, bytes: number): Uint8Array {
  const out = new Uint8Array(bytes).fill(0xff);
  for (let i = 0; i < bytes; i++) out[i] = (nib(digits[2 * i + 1]) << 4) | nib(digits[2 * i]);
  return out;
}

/** EF_ICCID content (10 bytes). */
export function encodeIccid(iccid: string): Uint8Array {
  return swappedBcd(iccid, 10);
}

/** EF_IMSI content (9 bytes): length L, then (digit1, parity|001), then the rest swapped. */
export function encodeImsi(imsi: string): Uint8Array {
  const out = new Uint8Array(9).fill(0xff);
  // TS 24.008 §10.5.1.4: bit 4 of the first octet is 1 for an odd number of digits; 001 = IMSI.
  out[0] = Math.ceil((imsi.length + 1) / 2);
  out[1] = (nib(imsi[0]) << 4) | (imsi.length % 2 === 1 ? 0x9 : 0x1);
  out.set(swappedBcd(imsi.slice(1), 7), 2);
  // Bytes past the length stay FF, as on a real card.
  for (let i = 1 + out[0]!; i < 9; i++) out[i] = 0xff;
  return out;
}

/** An EF_MSISDN record without alpha identifier (14 bytes): length, TON/NPI 0x91, number, FF FF. */
export function encodeMsisdn(e164: string): Uint8Array {
  const digits = e164.slice(1);
  const out = new Uint8Array(14).fill(0xff);
  out[0] = 1 + Math.ceil(digits.length / 2);
  // TS 24.008 §10.5.4.7: 1 001 0001 = international number, ISDN/telephony numbering plan.
  out[1] = 0x91;
  out.set(swappedBcd(digits, 10), 2);
  return out;
}

interface Inserted { spec: SimCardSpec; files: Map<number, Uint8Array>; records: Map<number, Uint8Array[]> }

function build(spec: SimCardSpec): Inserted {
  if (!isIccid(spec.iccid)) throw new ImplementationError('SIM_BAD_CARD', `ICCID '${String(spec.iccid).slice(0, 24)}' is not 19-20 digits starting 89 with a valid Luhn digit`);
  if (!isImsi(spec.imsi)) throw new ImplementationError('SIM_BAD_CARD', `IMSI '${String(spec.imsi).slice(0, 24)}' is not 6-15 digits`);
  if (!isCardType(spec.cardType)) throw new ImplementationError('SIM_BAD_CARD', `card type '${String(spec.cardType).slice(0, 16)}' is not SIM, USIM, R-UIM or CSIM`);
  if (spec.msisdn !== undefined && !isE164(spec.msisdn)) throw new ImplementationError('SIM_BAD_CARD', `MSISDN '${String(spec.msisdn).slice(0, 24)}' is not E.164`);
  const files = new Map([[EF.ICCID, encodeIccid(spec.iccid)], [EF.IMSI, encodeImsi(spec.imsi)]]);
  const records = new Map<number, Uint8Array[]>();
  if (spec.msisdn !== undefined) records.set(EF.MSISDN, [encodeMsisdn(spec.msisdn)]);
  return { spec: { ...spec }, files, records };
}

/**
 * The in-memory slot: the simulator's side (insert, remove, swap, and `poke` for a card
 * whose files were damaged or written by someone else) and the firmware's side (SimCard).
 */
export class SimSlot implements SimCard {
  #card: Inserted | null = null;
  /** Card changes seen by the slot (inserts and swaps), for tests and traces. */
  changes = 0;

  constructor(card?: SimCardSpec) {
    if (card) this.insert(card);
  }

  /** Puts a card in an empty slot; SIM_SLOT_FULL when one is there (use swap). */
  insert(card: SimCardSpec): void {
    if (this.#card) throw new ImplementationError('SIM_SLOT_FULL', 'a card is already in the slot: remove it or swap');
    this.#card = build(card);
    this.changes++;
  }

  /** Takes the card out; returns it (null when the slot was empty). */
  remove(): SimCardSpec | null {
    const c = this.#card;
    this.#card = null;
    return c ? { ...c.spec } : null;
  }

  /** Replaces the card (SIM swap): returns the one taken out, or null. */
  swap(card: SimCardSpec): SimCardSpec | null {
    const next = build(card);
    const old = this.remove();
    this.#card = next;
    this.changes++;
    return old;
  }

  /** What the simulator put in, or null. */
  inserted(): SimCardSpec | null {
    return this.#card ? { ...this.#card.spec } : null;
  }

  /** Overwrites a transparent file's bytes (a damaged or foreign card); false with no card. */
  poke(fid: number, bytes: Uint8Array): boolean {
    if (!this.#card) return false;
    this.#card.files.set(fid, new Uint8Array(bytes));
    return true;
  }

  present(): boolean {
    return this.#card !== null;
  }

  cardType(): CardType | null {
    return this.#card?.spec.cardType ?? null;
  }

  readBinary(fid: number): Uint8Array | null {
    const f = this.#card?.files.get(fid);
    return f ? new Uint8Array(f) : null;
  }

  readRecord(fid: number, n: number): Uint8Array | null {
    const r = this.#card?.records.get(fid)?.[n - 1];
    return r && Number.isInteger(n) && n >= 1 ? new Uint8Array(r) : null;
  }
}
