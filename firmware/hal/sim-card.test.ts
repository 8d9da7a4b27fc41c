// The SIM slot model and the firmware's reader: golden file encodings both ways, insert /
// remove / swap as the simulator uses them, and damaged cards reported, never guessed at.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import { SimSlot, EF, encodeIccid, encodeImsi, encodeMsisdn, type SimCardSpec } from './sim-card.ts';
import { readCardInfo, decodeIccid, decodeImsi, decodeMsisdn } from '../card-info.ts';
import { ImplementationError } from '../../protocol/errors.ts';
import { withLuhn } from '../../protocol/line-ids.ts';
import type { HalBase } from './hal.ts';

const A: SimCardSpec = { iccid: withLuhn('894410000000000001'), imsi: '234150999999999', cardType: 'USIM', msisdn: '+447700900123' };
const B: SimCardSpec = { iccid: withLuhn('8944100000000000027'), imsi: '23415099999998', cardType: 'SIM' };
const code = (c: string) => (e: unknown) => e instanceof ImplementationError && e.code === c;

test('golden encodings, both ways (TS 102 221 §13.2, TS 31.102 §4.2.2 and §4.2.26)', () => {
  assert.is(A.iccid, '8944100000000000018');
  assert.is(bytesToHex(encodeIccid(A.iccid)), '984401000000000010f8');
  assert.is(decodeIccid(hexToBytes('984401000000000010f8')), A.iccid);
  // 3GPP's own example IMSI: length 8, '2' with odd parity (9), then the digits swapped.
  assert.is(bytesToHex(encodeImsi('234150999999999')), '082943519099999999');
  assert.is(decodeImsi(hexToBytes('082943519099999999')), '234150999999999');
  assert.is(bytesToHex(encodeImsi(B.imsi)), '0821435190999999f8');
  assert.is(decodeImsi(hexToBytes('0821435190999999f8')), B.imsi);
  assert.is(bytesToHex(encodeMsisdn('+447700900123')), '0791447700091032ffffffffffff');
  assert.is(decodeMsisdn(hexToBytes('0791447700091032ffffffffffff')), '+447700900123');
  // With a 4-byte alpha identifier in front ("Mine"), as many cards write it.
  assert.is(decodeMsisdn(hexToBytes('4d696e65' + '0791447700091032ffffffffffff')), '+447700900123');
  // A 20-digit ICCID fills all ten bytes.
  const twenty = withLuhn('8944100000000000027');
  assert.is(decodeIccid(encodeIccid(twenty)), twenty);
});

test('the firmware reads the card itself; insert, remove and swap change what it reads', () => {
  const slot = new SimSlot();
  const hal: Pick<HalBase, 'sim'> = { sim: slot };
  assert.equal(readCardInfo(hal.sim), { ok: false, reason: 'NO_CARD', detail: 'no SIM card in the slot' });
  assert.is(readCardInfo(undefined).ok, false);
  assert.is((readCardInfo(undefined) as { reason: string }).reason, 'NO_SIM_SLOT');
  slot.insert(A);
  assert.equal(readCardInfo(hal.sim), { ok: true, info: { iccid: A.iccid, imsi: A.imsi, cardType: 'USIM', msisdn: '+447700900123' } });
  assert.throws(() => slot.insert(B), code('SIM_SLOT_FULL'));
  assert.equal(slot.swap(B), A);
  assert.equal(readCardInfo(hal.sim), { ok: true, info: { iccid: B.iccid, imsi: B.imsi, cardType: 'SIM' } });
  assert.is(slot.changes, 2);
  assert.equal(slot.remove(), B);
  assert.is(slot.present(), false);
  assert.is(slot.readBinary(EF.ICCID), null);
  assert.is(slot.cardType(), null);
  assert.is(slot.remove(), null);
  // What the firmware reads is a copy: scribbling on it changes no card.
  slot.insert(A);
  slot.readBinary(EF.ICCID)!.fill(0);
  assert.is(decodeIccid(slot.readBinary(EF.ICCID)), A.iccid);
  assert.is(slot.readRecord(EF.MSISDN, 2), null);
  assert.is(slot.readRecord(EF.MSISDN, 0), null);
  assert.is(slot.readBinary(0x6f38), null);
});

test('a card that could not exist is refused when configured (SIM_BAD_CARD); a failed swap keeps the old card', () => {
  const slot = new SimSlot(A);
  for (const bad of [{ ...A, iccid: A.iccid.slice(0, -1) + '0' }, { ...A, imsi: '12' }, { ...A, cardType: 'eSIM' }, { ...A, msisdn: '447700900123' }]) {
    assert.throws(() => slot.swap(bad as SimCardSpec), code('SIM_BAD_CARD'));
  }
  assert.equal(slot.inserted(), A);
});

test('damaged or foreign file contents: CARD_UNREADABLE, never a guessed identifier', () => {
  const hostile: [number, string][] = [
    [EF.ICCID, ''], [EF.ICCID, '9844010000000000'], [EF.ICCID, '984401000000000010f800'], [EF.ICCID, 'ffffffffffffffffffff'],
    [EF.ICCID, '9844010000000000a0f8'], [EF.ICCID, '98f40100000000001 0f8'.replace(' ', '')], [EF.ICCID, '984401000000000010f9'],
    [EF.IMSI, '092943519099999999'], [EF.IMSI, '002943519099999999'], [EF.IMSI, '082143519099999999'], [EF.IMSI, '0829435190999999f9'],
    [EF.IMSI, '0828435190999999ff'], [EF.IMSI, '08f943519099999999'], [EF.IMSI, '0829435190999999'], [EF.IMSI, 'ffffffffffffffffff'],
  ];
  for (const [fid, hex] of hostile) {
    const slot = new SimSlot(A);
    slot.poke(fid, hexToBytes(hex));
    const r = readCardInfo(slot);
    assert.is(r.ok, false, `${fid.toString(16)} ${hex}`);
    assert.is((r as { reason: string }).reason, 'CARD_UNREADABLE');
  }
  for (const hex of ['ffffffffffffffffffffffffffff', '0781447700091032ffffffffffff', '0c91447700091032ffffffffffff', '0791447700a91032ffffffffffff', '01914477', '0791f47700091032ffffffffffff']) {
    assert.is(decodeMsisdn(hexToBytes(hex)), null, hex);
  }
  assert.is(new SimSlot().poke(EF.ICCID, new Uint8Array(10)), false);
});

test.run();
