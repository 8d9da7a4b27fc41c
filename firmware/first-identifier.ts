// The device's first identifier (S4.2), by profile (S0.15): on a phone (USB or mobile) the card
// info of its SIM, read by the firmware itself (card-info.ts); on a bank card in an ATM, which
// has no SIM, the card's number (Board.cardIdentity: the serial of the identity record in the
// card's hidden zone, through the secure controller). The main program asks this, never the
// user; a device whose source is missing or unreadable says so, with a reason code.
import type { Board } from './board.ts';
import { readCardInfo, type CardInfo } from './card-info.ts';

export type FirstIdentifier =
  | { ok: true; kind: 'sim'; info: CardInfo }
  | { ok: true; kind: 'card'; cardNumber: string }
  | { ok: false; reason: 'NO_SIM_SLOT' | 'NO_CARD' | 'CARD_UNREADABLE'; detail: string };

export function firstIdentifier(dev: Board): FirstIdentifier {
  if (dev.cardIdentity) {
    const r = dev.cardIdentity();
    return r.ok ? { ok: true, kind: 'card', cardNumber: r.value } : { ok: false, reason: 'CARD_UNREADABLE', detail: `the card's identity is unreadable from its secure controller (${r.status})` };
  }
  const c = readCardInfo(dev.sim);
  return c.ok ? { ok: true, kind: 'sim', info: c.info } : c;
}

/** A card number as a screen or a log may show it: the last four digits only (as PCI DSS masks a PAN). */
export function maskCardNumber(n: string): string {
  return n.length <= 4 ? '****' : `${'*'.repeat(Math.min(n.length - 4, 12))}${n.slice(-4)}`;
}
