// The operator's store on both back ends (SQLite and PostgreSQL: server-kit/store-backends.ts):
// lines, cards, swaps, suspension, clients, and the refusal of corrupt rows.
import { test, suite } from 'uvu';
import * as assert from 'uvu/assert';
import { statSync } from 'node:fs';
import { SqliteOperatorStore, type CardInfo, type OperatorStore } from './store.ts';
import { openOperatorStore, PgOperatorStore } from './pg-store.ts';
import { withLuhn, isIccid, luhnDigit, isE164, isImsi } from '../protocol/line-ids.ts';
import { backends } from '../server-kit/store-backends.ts';
import { rejects, implCode as code } from '../server-kit/test-assert.ts';

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

test.run();

for (const b of backends()) {
  const test = suite(`operator store [${b.name}]`);
  let store: OperatorStore;
  let file: string | null = null;
  const exec = async (q: string): Promise<void> => {
    if (store instanceof PgOperatorStore) await store.pool.query(q);
    else (store as SqliteOperatorStore).db.exec(q);
  };
  test.before(async () => {
    const place = b.place('operator');
    file = place.kind === 'sqlite' ? place.file : null;
    store = await b.opening(openOperatorStore(place));
  });
  test.after(async () => {
    await store?.close();
    await b.cleanup();
  });

  test('a line on its first card; idempotent; conflicts refused; the file is owner-only', async () => {
    if (file) assert.is(statSync(file).mode & 0o777, 0o600);
    assert.is(await store.createSubscription('+447700900001', card(1), T0), 'created');
    assert.is(await store.createSubscription('+447700900001', card(1), T0 + 5), 'exists');
    const s = (await store.byPhoneNumber('+447700900001'))!;
    assert.equal({ n: s.phoneNumber, iccid: s.card.iccid, status: s.card.status, changed: s.cardChangedAt }, { n: '+447700900001', iccid: card(1).iccid, status: 'active', changed: T0 });
    await rejects(() => store.createSubscription('+447700900001', card(2), T0), code('OP_CONFLICT'));
    await rejects(() => store.createSubscription('+447700900002', card(1), T0), code('OP_CONFLICT'));
    await rejects(() => store.createSubscription('+447700900002', { ...card(2), imsi: card(1).imsi }, T0), code('OP_CONFLICT'));
    for (const [n, c] of [['447700900002', card(2)], ['+447700900002', { ...card(2), iccid: '8944' }], ['+447700900002', { ...card(2), imsi: '12' }], ['+447700900002', { ...card(2), cardType: 'eSIM' }]] as const) {
      await rejects(() => store.createSubscription(n, c as CardInfo, T0), code('OP_BAD_RECORD'));
    }
    assert.is(await store.byPhoneNumber('+447700900002'), null);
    assert.equal(await store.counts(), { subscriptions: 1, cards: 1 });
  });
  
  test('a swap moves the line to the new card, marks the old one replaced and records when; all or nothing', async () => {
    const t1 = T0 + 3_600_000;
    const s = await store.swapCard('+447700900001', card(3), t1);
    assert.is(s.card.iccid, card(3).iccid);
    assert.is(s.cardChangedAt, t1);
    assert.is(s.createdAt, T0);
    const old = (await store.cardByIccid(card(1).iccid))!;
    assert.equal([old.status, old.replacedAt, old.phoneNumber], ['replaced', t1, '+447700900001']);
    assert.is((await store.cardByImsi(card(3).imsi))!.iccid, card(3).iccid);
    assert.is((await store.cardByImsi(card(1).imsi))!.status, 'replaced');
    // A failing swap (the new card was issued already) changes nothing.
    await rejects(() => store.swapCard('+447700900001', card(1), t1 + 1), code('OP_CONFLICT'));
    await rejects(() => store.swapCard('+447700900001', card(4), t1 - 1), code('OP_BAD_RECORD'));
    await rejects(() => store.swapCard('+447700900099', card(4), t1), code('OP_UNKNOWN_LINE'));
    assert.is((await store.byPhoneNumber('+447700900001'))!.card.iccid, card(3).iccid);
    assert.is(await store.cardByIccid(card(4).iccid), null);
    // A replaced card's IMSI may be issued again (to another line).
    assert.is(await store.createSubscription('+447700900005', { ...card(5), imsi: card(1).imsi }, t1), 'created');
    assert.is((await store.cardByImsi(card(1).imsi))!.iccid, card(5).iccid);
  });
  
  test('suspend and resume the live card; a replaced card stays replaced', async () => {
    assert.is(await store.setCardStatus(card(3).iccid, 'suspended'), true);
    assert.is((await store.byPhoneNumber('+447700900001'))!.card.status, 'suspended');
    assert.is(await store.setCardStatus(card(3).iccid, 'active'), true);
    assert.is(await store.setCardStatus(card(1).iccid, 'active'), false);
    assert.is((await store.cardByIccid(card(1).iccid))!.status, 'replaced');
    await rejects(() => store.setCardStatus(card(3).iccid, 'replaced' as 'active'), code('OP_BAD_RECORD'));
  });
  
  test('clients: the secret hash and scopes round-trip; bad records refused', async () => {
    const h = new Uint8Array(32).fill(9);
    await store.putClient('bank', h, ['sim-swap:check', 'card-info:validity'], T0);
    assert.equal((await store.getClient('bank'))!.scopes, ['sim-swap:check', 'card-info:validity']);
    assert.equal((await store.getClient('bank'))!.secretSha256, h);
    assert.is(await store.getClient('nobody'), null);
    await rejects(() => store.putClient('bad id!', h, []), code('OP_BAD_RECORD'));
    await rejects(() => store.putClient('bank', h.subarray(1), []), code('OP_BAD_RECORD'));
    await rejects(() => store.putClient('bank', h, ['Bad Scope']), code('OP_BAD_RECORD'));
  });
  
  test('a corrupt row is refused with STORE_CORRUPT_ROW, never acted on, and listed by the integrity check', async () => {
    assert.equal(await store.check(), []);
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
      // SQLite's columns take any type; PostgreSQL's refuse this one at the UPDATE.
      ...(b.name === 'sqlite' ? ["UPDATE subscriptions SET card_changed_at = 'x' WHERE phone_number = '+447700900001'"] : []),
    ]) {
      await exec(reset);
      assert.ok(await store.byPhoneNumber('+447700900001'));
      await exec(sql);
      assert.ok((await store.check()).length > 0, `check() lists ${sql}`);
      await rejects(() => store.byPhoneNumber('+447700900001'), code('STORE_CORRUPT_ROW'), sql);
      // A swap reads the line first: it refuses too, and writes nothing.
      await rejects(() => store.swapCard('+447700900001', card(7), T0 + 9_000_000), code('STORE_CORRUPT_ROW'), sql);
      assert.is(await store.cardByIccid(card(7).iccid), null);
    }
    await exec(reset);
    assert.equal(await store.check(), []);
    await exec(`UPDATE oauth_clients SET secret_sha256 = ${b.name === 'sqlite' ? "x'00'" : "'\\x00'::bytea"} WHERE client_id = 'bank'`);
    await rejects(() => store.getClient('bank'), code('STORE_CORRUPT_ROW'));
    assert.match((await store.check()).join('\n'), /oauth client row bank: bad secret hash/);
  });

  test.run();
}
