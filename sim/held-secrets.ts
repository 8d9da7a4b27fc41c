// For the tests that look for secrets where they must not be (sim/secrets.test.ts,
// deploy/feed.test.ts) and for the power-cut search (sim/power-cut-search.ts): what a phone's
// secure controller holds in the hidden zone's record stores, read the only way anyone outside
// the chip can, with the chip's fuses (factory knowledge): a store's current record, opened
// with its fuse-derived key.
import { decode } from '../protocol/cbor.ts';
import { zoneOf, ZoneType } from '../firmware/zones/layout.ts';
import { classifySlot, HIDDEN_STORES, storeKeyLabel, type StoreName } from '../firmware/zones/hidden.ts';
import type { Phone } from '../firmware/phone.ts';
import type { Fuses } from '../firmware/flash/fuses.ts';

/** A store's current record: its slot's sequence number, the controller's counter sealed with it, and the record itself. */
export interface CurrentRecord {
  seq: number;
  slot: number;
  /** The controller's rollback counter the record was sealed with (firmware/secure/nvm.ts). */
  counter: number;
  record: Uint8Array;
}

/**
 * The valid slot with the highest sequence number of store `name`, as the controller picks it
 * (firmware/zones/hidden.ts RecordStore.read), unwrapped from the controller's [counter, record];
 * null when no slot holds one. Throws when a slot authenticates but is not [counter, record].
 */
export function currentRecord(phone: Pick<Phone, 'table' | 'chip'>, fuses: Fuses, name: StoreName): CurrentRecord | null {
  const hz = zoneOf(phone.table, ZoneType.HIDDEN);
  const g = HIDDEN_STORES[name];
  const key = fuses.deriveKey(storeKeyLabel(name));
  let best: { seq: number; slot: number; payload: Uint8Array } | null = null;
  for (let i = 0; i < g.slots; i++) {
    const off = (g.firstSector + i) * 4096;
    const c = classifySlot(phone.chip.peek(hz.offset + off, 4096), g.id, key, i, off);
    if (c.state === 'valid' && (!best || c.seq! > best.seq)) best = { seq: c.seq!, slot: i, payload: c.payload! };
  }
  key.fill(0);
  if (!best) return null;
  const v = decode(best.payload);
  if (!Array.isArray(v) || v.length !== 2 || typeof v[0] !== 'number' || !(v[1] instanceof Uint8Array)) throw new TypeError(`store ${name}: the current record is not [counter, record]`);
  return { seq: best.seq, slot: best.slot, counter: v[0], record: v[1] };
}

export function heldSecrets(phone: Phone, fuses: Fuses): Uint8Array[] {
  const cur = currentRecord(phone, fuses, 'secrets');
  if (!cur) return [];
  const v = decode(cur.record) as [number, string, [number, Uint8Array][]];
  return v[2].map((e) => e[1]);
}
