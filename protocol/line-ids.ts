// The identifiers of a mobile line (S4.2): the phone number (E.164) and the card info a SIM
// card carries (ICCID, IMSI) with its card type. One set of predicates for everyone who
// reads or checks them: the SIM card model and the firmware that reads it, the operator
// server that stores them, the bank's client of the operator's API. Pure predicates: each
// returns whether its argument is well formed; callers refuse with their own code.

/**
 * A phone number in E.164 international format with the leading '+' (ITU-T E.164 §6: a
 * country code never starts with 0; at most 15 digits). The pattern is CAMARA's
 * `PhoneNumber` schema, so a number this accepts is one a real operator's API accepts too.
 */
export const E164_RE = /^\+[1-9][0-9]{4,14}$/;

/**
 * An ICCID as printed on the card: 19 or 20 digits starting with the telecom industry
 * identifier 89 (ITU-T E.118 §4.2), the last one a Luhn check digit over the others.
 */
export const ICCID_RE = /^89[0-9]{17,18}$/;

/**
 * An IMSI: MCC (3 digits) + MNC (2 or 3) + MSIN, 6 to 15 digits in all (3GPP TS 23.003 §2.2);
 * in practice 14 or 15, but the standard allows the shorter ones.
 */
export const IMSI_RE = /^[0-9]{6,15}$/;

/**
 * The card types of S4.2's card info: a GSM SIM (TS 51.011), a UMTS/LTE USIM application
 * (TS 31.102), and the CDMA cards the patent names by their identifiers (UIMID/EUIMID):
 * R-UIM and its successor CSIM. All of them carry an ICCID and an IMSI.
 */
export const CARD_TYPES = ['SIM', 'USIM', 'R-UIM', 'CSIM'] as const;
export type CardType = (typeof CARD_TYPES)[number];

export function isCardType(v: unknown): v is CardType {
  return typeof v === 'string' && (CARD_TYPES as readonly string[]).includes(v);
}

/** The Luhn check digit (ISO/IEC 7812-1 Annex B) of a string of digits. */
export function luhnDigit(digits: string): number {
  let sum = 0;
  // Doubling starts at the rightmost digit, the one the check digit will follow.
  for (let i = digits.length - 1, dbl = true; i >= 0; i--, dbl = !dbl) {
    let d = digits.charCodeAt(i) - 48;
    if (dbl) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return (10 - (sum % 10)) % 10;
}

export function isE164(v: unknown): v is string {
  return typeof v === 'string' && E164_RE.test(v);
}

/** Shape and Luhn check digit. */
export function isIccid(v: unknown): v is string {
  return typeof v === 'string' && ICCID_RE.test(v) && luhnDigit(v.slice(0, -1)) === v.charCodeAt(v.length - 1) - 48;
}

export function isImsi(v: unknown): v is string {
  return typeof v === 'string' && IMSI_RE.test(v);
}

/** An ICCID from its first 18 or 19 digits (starting 89): the Luhn digit appended. */
export function withLuhn(body: string): string {
  if (!/^89[0-9]{16,17}$/.test(body)) throw new RangeError(`ICCID body '${body.slice(0, 24)}' must be 89 followed by 16 or 17 digits`);
  return body + String(luhnDigit(body));
}
