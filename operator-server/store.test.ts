// The operator's store on real SQLite: lines, cards, swaps, suspension, clients, and the
// refusal of corrupt rows.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteOperatorStore, type CardInfo } from './store.ts';
import { ImplementationError } from '../protocol/errors.ts';
import { withLuhn, isIccid, luhnDigit, isE164, isImsi } from '../protocol/line-ids.ts';

const dir = mkdtempSync(join(tmpdir(), 'usbphone-op-store-'));
const file = join(dir, 'operator.sqlite');
const store = new SqliteOperatorStore(file);
test.after(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});
const code = (c: string) => (e: unknown) => e instanceof ImplementationError && e.code === c;
const card = (n: number, type: CardInfo['cardType'] = 'USIM'): CardInfo => ({ iccid: withLuhn(`894400000000000${String(n).padStart(4, '0')}`), imsi: `2341500000${String(n).padStart(5, '0')}`, cardType: type });
const T0 = Date.UTC(2026, 0, 1);

test('line identifiers: E.164, ICCID with its Luhn digit, IMSI', () => {
  // ISO/IEC 7812-1's worked example: 7992739871 -> check digit 3.
  assert.is(luhnDigit('7992739871'), 3);
  assert.ok(isIccid('89441000300000000058'.slice(0, 19) + String(luhnDigit('8944100030000000005'))));
  const good = card(1).iccid;
  assert.ok(isIccid(good));
  const wrongDigit = good.slice(0, -1) + String((Number(good.at(-1)) + 1) % 10);
  for (const bad of [wrongDigit, '12' + good.slice(2), good.slice(0, 18), good + '00', 'x', 89, null]) assert.not.ok(isIccid(bad), String(bad));
  for (const ok of ['+447700900123', '+12025550100', '+33123']) assert.ok(isE164(ok), ok);
  for (const bad of ['447700900123', '+0447700900', '+1234', '+1234567890123456', '+44 7700 900123', '']) assert.not.ok(isE164(bad), bad);
  assert.ok(isImsi('234150000000001'));
  assert.not.ok(isImsi('2341500000000012'));
  assert.throws(() => withLuhn('12345'), (e: unknown) => e instanceof RangeError);
});

test('a line on its first card; idempotent; conflicts refused; the file is owner-only', () => {
  assert.is(statSync(file).mode & 0o777, 0o600);
  assert.is(store.createSubscription('+447700900001', card(1), T0), 'created');
  assert.is(store.createSubscription('+447700900001', card(1), T0 + 5), 'exists');
  const s = store.byPhoneNumber('+447700900001')!;
  assert.equal({ n: s.phoneNumber, iccid: s.card.iccid, status: s.card.status, changed: s.cardChangedAt }, { n: '+447700900001', iccid: card(1).iccid, status: 'active', changed: T0 });
  assert.throws(() => store.createSubscription('+447700900001', card(2), T0), code('OP_CONFLICT'));
  assert.throws(() => store.createSubscription('+447700900002', card(1), T0), code('OP_CONFLICT'));
  assert.throws(() => store.createSubscription('+447700900002', { ...card(2), imsi: card(1).imsi }, T0), code('OP_CONFLICT'));
  for (const [n, c] of [['447700900002', card(2)], ['+447700900002', { ...card(2), iccid: '8944' }], ['+447700900002', { ...card(2), imsi: '12' }], ['+447700900002', { ...card(2), cardType: 'eSIM' }]] as const) {
    assert.throws(() => store.createSubscription(n, c as CardInfo, T0), code('OP_BAD_RECORD'));
  }
  assert.is(store.byPhoneNumber('+447700900002'), null);
  assert.equal(store.counts(), { subscriptions: 1, cards: 1 });
});

test('a swap moves the line to the new card, marks the old one replaced and records when; all or nothing', () => {
  const t1 = T0 + 3_600_000;
  const s = store.swapCard('+447700900001', card(3), t1);
  assert.is(s.card.iccid, card(3).iccid);
  assert.is(s.cardChangedAt, t1);
  assert.is(s.createdAt, T0);
  const old = store.cardByIccid(card(1).iccid)!;
  assert.equal([old.status, old.replacedAt, old.phoneNumber], ['replaced', t1, '+447700900001']);
  assert.is(store.cardByImsi(card(3).imsi)!.iccid, card(3).iccid);
  assert.is(store.cardByImsi(card(1).imsi)!.status, 'replaced');
  // A failing swap (the new card was issued already) changes nothing.
  assert.throws(() => store.swapCard('+447700900001', card(1), t1 + 1), code('OP_CONFLICT'));
  assert.throws(() => store.swapCard('+447700900001', card(4), t1 - 1), code('OP_BAD_RECORD'));
  assert.throws(() => store.swapCard('+447700900099', card(4), t1), code('OP_UNKNOWN_LINE'));
  assert.is(store.byPhoneNumber('+447700900001')!.card.iccid, card(3).iccid);
  assert.is(store.cardByIccid(card(4).iccid), null);
  // A replaced card's IMSI may be issued again (to another line).
  assert.is(store.createSubscription('+447700900005', { ...card(5), imsi: card(1).imsi }, t1), 'created');
  assert.is(store.cardByImsi(card(1).imsi)!.iccid, card(5).iccid);
});

test('suspend and resume the live card; a replaced card stays replaced', () => {
  assert.is(store.setCardStatus(card(3).iccid, 'suspended'), true);
  assert.is(store.byPhoneNumber('+447700900001')!.card.status, 'suspended');
  assert.is(store.setCardStatus(card(3).iccid, 'active'), true);
  assert.is(store.setCardStatus(card(1).iccid, 'active'), false);
  assert.is(store.cardByIccid(card(1).iccid)!.status, 'replaced');
  assert.throws(() => store.setCardStatus(card(3).iccid, 'replaced' as 'active'), code('OP_BAD_RECORD'));
});

test('clients: the secret hash and scopes round-trip; bad records refused', () => {
  const h = new Uint8Array(32).fill(9);
  store.putClient('bank', h, ['sim-swap:check', 'card-info:validity'], T0);
  assert.equal(store.getClient('bank')!.scopes, ['sim-swap:check', 'card-info:validity']);
  assert.equal(store.getClient('bank')!.secretSha256, h);
  assert.is(store.getClient('nobody'), null);
  assert.throws(() => store.putClient('bad id!', h, []), code('OP_BAD_RECORD'));
  assert.throws(() => store.putClient('bank', h.subarray(1), []), code('OP_BAD_RECORD'));
  assert.throws(() => store.putClient('bank', h, ['Bad Scope']), code('OP_BAD_RECORD'));
});

test('a corrupt row is refused with STORE_CORRUPT_ROW, never acted on', () => {
  const live = card(3).iccid;
  const reset = `UPDATE cards SET status = 'active', replaced_at = NULL, imsi = '${card(3).imsi}', card_type = 'USIM', phone_number = '+447700900001' WHERE iccid = '${live}';
    UPDATE subscriptions SET card_changed_at = ${T0 + 3_600_000} WHERE phone_number = '+447700900001'`;
  for (const sql of [
    `UPDATE cards SET status = 'stolen' WHERE iccid = '${live}'`,
    `UPDATE cards SET imsi = '12' WHERE iccid = '${live}'`,
    `UPDATE cards SET card_type = 'eSIM' WHERE iccid = '${live}'`,
    `UPDATE cards SET replaced_at = 5 WHERE iccid = '${live}'`,
    `UPDATE cards SET status = 'replaced', replaced_at = 5 WHERE iccid = '${live}'`,
    `UPDATE cards SET phone_number = '+447700900005' WHERE iccid = '${live}'`,
    "UPDATE subscriptions SET card_changed_at = -1 WHERE phone_number = '+447700900001'",
    "UPDATE subscriptions SET card_changed_at = 'x' WHERE phone_number = '+447700900001'",
  ]) {
    store.db.exec(reset);
    assert.ok(store.byPhoneNumber('+447700900001'));
    store.db.pragma('foreign_keys = OFF');
    store.db.exec(sql);
    store.db.pragma('foreign_keys = ON');
    assert.throws(() => store.byPhoneNumber('+447700900001'), code('STORE_CORRUPT_ROW'), sql);
    // A swap reads the line first: it refuses too, and writes nothing.
    assert.throws(() => store.swapCard('+447700900001', card(7), T0 + 9_000_000), code('STORE_CORRUPT_ROW'), sql);
    assert.is(store.cardByIccid(card(7).iccid), null);
  }
  store.db.exec(reset);
  store.db.exec("UPDATE oauth_clients SET secret_sha256 = x'00' WHERE client_id = 'bank'");
  assert.throws(() => store.getClient('bank'), code('STORE_CORRUPT_ROW'));
});

test.run();
