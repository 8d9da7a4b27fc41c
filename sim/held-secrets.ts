// For the tests that look for secrets where they must not be (sim/secrets.test.ts,
// deploy/feed.test.ts): the business secrets a phone's secure controller holds, read the only
// way anyone outside the chip can, with the chip's fuses (factory knowledge): the current
// record of the hidden zone's `secrets` store, opened with its fuse-derived key.
import { decode } from '../protocol/cbor.ts';
import { zoneOf, ZoneType } from '../firmware/zones/layout.ts';
import { classifySlot, HIDDEN_STORES, storeKeyLabel } from '../firmware/zones/hidden.ts';
import type { Phone } from '../firmware/phone.ts';
import type { Fuses } from '../firmware/flash/fuses.ts';

export function heldSecrets(phone: Phone, fuses: Fuses): Uint8Array[] {
  const hz = zoneOf(phone.table, ZoneType.HIDDEN);
  const g = HIDDEN_STORES.secrets;
  const key = fuses.deriveKey(storeKeyLabel('secrets'));
  let best: { seq: number; payload: Uint8Array } | null = null;
  for (let i = 0; i < g.slots; i++) {
    const off = (g.firstSector + i) * 4096;
    const c = classifySlot(phone.chip.peek(hz.offset + off, 4096), g.id, key, i, off);
    if (c.state === 'valid' && (!best || c.seq! > best.seq)) best = { seq: c.seq!, payload: c.payload! };
  }
  if (!best) return [];
  // The controller seals [counter, record] (its rollback counter, firmware/secure/nvm.ts).
  const [, inner] = decode(best.payload) as [number, Uint8Array];
  const v = decode(inner) as [number, string, [number, Uint8Array][]];
  return v[2].map((e) => e[1]);
}
