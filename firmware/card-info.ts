// The firmware reads its SIM card's identity itself (S4.2, S4.8: the user never types it)
// through the HAL's slot (firmware/hal/sim-card.ts), decoding the elementary files as the
// standards lay them out. A card that is absent or whose files do not decode to well-formed
// identifiers is reported as such, never guessed at: what the phone sends the bank is
// exactly what the card holds.
import type { SimCard } from './hal/sim-card.ts';
import { EF } from './hal/sim-card.ts';
import { isIccid, isImsi, isE164, type CardType } from '../protocol/line-ids.ts';

export interface CardInfo {
  iccid: string;
  imsi: string;
  cardType: CardType;
  /** From EF_MSISDN when the card has one. */
  msisdn?: string;
}

export type CardRead = { ok: true; info: CardInfo } | { ok: false; reason: 'NO_SIM_SLOT' | 'NO_CARD' | 'CARD_UNREADABLE'; detail: string };

/** Swapped BCD digits up to the first F nibble; null on a nibble A-E or an F before the end's padding. */
function unswapBcd(b: Uint8Array, from = 0, to = b.length): string | null {
  let s = '';
  let ended = false;
  for (let i = from; i < to; i++) {
    for (const n of [b[i]! & 0xf, b[i]! >> 4]) {
      if (n === 0xf) ended = true;
      else if (ended || n > 9) return null;
      else s += String.fromCharCode(48 + n);
    }
  }
  return s;
}

/** EF_ICCID (ETSI TS 102 221 §13.2) -> ICCID, or null. */
export function decodeIccid(b: Uint8Array | null): string | null {
  if (!b || b.length !== 10) return null;
  const s = unswapBcd(b);
  return s !== null && isIccid(s) ? s : null;
}

/** EF_IMSI (3GPP TS 31.102 §4.2.2) -> IMSI, or null. */
export function decodeImsi(b: Uint8Array | null): string | null {
  if (!b || b.length !== 9) return null;
  const len = b[0]!;
  if (len < 1 || len > 8 || (b[1]! & 0x7) !== 0x1) return null;
  const first = b[1]! >> 4;
  if (first > 9) return null;
  const rest = unswapBcd(b, 2, 1 + len);
  if (rest === null) return null;
  const imsi = String.fromCharCode(48 + first) + rest;
  // The parity bit must agree with the number of digits (TS 24.008 §10.5.1.4).
  const odd = (b[1]! & 0x8) !== 0;
  return odd === (imsi.length % 2 === 1) && isImsi(imsi) ? imsi : null;
}

/** An EF_MSISDN record (3GPP TS 31.102 §4.2.26; the last 14 bytes follow any alpha identifier) -> E.164, or null. */
export function decodeMsisdn(r: Uint8Array | null): string | null {
  if (!r || r.length < 14) return null;
  const x = r.length - 14;
  const len = r[x]!;
  // 0xFF: the record is empty (the card has no number written).
  if (len === 0xff || len < 2 || len > 11) return null;
  if (r[x + 1] !== 0x91) return null;
  const digits = unswapBcd(r, x + 2, x + 1 + len);
  return digits !== null && isE164('+' + digits) ? '+' + digits : null;
}

/** Reads the card info from the slot, or says why it cannot. */
export function readCardInfo(sim: SimCard | undefined): CardRead {
  if (!sim) return { ok: false, reason: 'NO_SIM_SLOT', detail: 'this device has no SIM slot' };
  if (!sim.present()) return { ok: false, reason: 'NO_CARD', detail: 'no SIM card in the slot' };
  const cardType = sim.cardType();
  const iccid = decodeIccid(sim.readBinary(EF.ICCID));
  const imsi = decodeImsi(sim.readBinary(EF.IMSI));
  if (!cardType || !iccid || !imsi) {
    const bad = [!cardType && 'card type', !iccid && 'EF_ICCID', !imsi && 'EF_IMSI'].filter(Boolean).join(', ');
    return { ok: false, reason: 'CARD_UNREADABLE', detail: `the card's ${bad} did not decode` };
  }
  const msisdn = decodeMsisdn(sim.readRecord(EF.MSISDN, 1));
  return { ok: true, info: msisdn ? { iccid, imsi, cardType, msisdn } : { iccid, imsi, cardType } };
}
