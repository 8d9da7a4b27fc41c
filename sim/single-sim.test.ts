// The single phone's SIM and person (sim/single-sim.ts), in process: every option value the CLI
// hands on, good and hostile; the card kept across runs; a swap told to a real operator store
// (the back end STORE_URL selects: SQLite, or PostgreSQL under scripts/test-pg.mjs), and its refusals. cli/sim.test.ts runs the same through the CLI, end to end.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ImplementationError } from '../protocol/errors.ts';
import { isIccid, isImsi } from '../protocol/line-ids.ts';
import { openOperatorStore } from '../operator-server/pg-store.ts';
import { chosenBackend } from '../server-kit/store-backends.ts';
import { givenCard, generatedCard, planSim, savedSim, saveSim, tellOperator, bankPerson, newCardFor, SIM_FILE, BANK_PASSWORD_ENV } from './single-sim.ts';

const ICCID = '8944200000000000017';
const IMSI = '234200000000001';

function throwsCode(f: () => unknown, code: string, msg: RegExp, what: string): void {
  try {
    f();
  } catch (e) {
    assert.instance(e, ImplementationError, what);
    assert.is((e as ImplementationError).code, code, what);
    assert.match((e as Error).message, msg, what);
    return;
  }
  assert.unreachable(`${what}: no error`);
}
async function rejectsCode(f: () => Promise<unknown>, code: string, msg: RegExp, what: string): Promise<void> {
  let err: unknown = null;
  await f().catch((e: unknown) => (err = e));
  throwsCode(() => {
    if (err) throw err;
  }, code, msg, what);
}

function tmp(): { dir: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-single-sim-'));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

test('givenCard: a valid card as given; every hostile value refused with CLI_BAD_ARGS naming its option', () => {
  assert.equal(givenCard(ICCID, IMSI, '+447700900001'), { iccid: ICCID, imsi: IMSI, cardType: 'USIM', msisdn: '+447700900001' });
  assert.equal(givenCard(ICCID, IMSI, undefined), { iccid: ICCID, imsi: IMSI, cardType: 'USIM' });
  const table: [string | undefined, string | undefined, string | undefined, RegExp][] = [
    [ICCID, undefined, undefined, /--iccid and --imsi go together/],
    [undefined, IMSI, undefined, /--iccid and --imsi go together/],
    ['8944200000000000011', IMSI, undefined, /--iccid must be an ICCID/],
    ['1944200000000000017', IMSI, undefined, /--iccid must be an ICCID/],
    ['894420000000000001', IMSI, undefined, /--iccid must be an ICCID/],
    ['89442000000000000170000', IMSI, undefined, /--iccid must be an ICCID/],
    ['', IMSI, undefined, /--iccid must be an ICCID/],
    ['８944200000000000017', IMSI, undefined, /--iccid must be an ICCID/],
    [ICCID, '23420', undefined, /--imsi must be 6 to 15 digits/],
    [ICCID, '2342000000000001', undefined, /--imsi must be 6 to 15 digits/],
    [ICCID, '23420abc', undefined, /--imsi must be 6 to 15 digits/],
    [ICCID, IMSI, '447700900001', /--msisdn must be an E\.164 number/],
    [ICCID, IMSI, '+047700900001', /--msisdn must be an E\.164 number/],
    [ICCID, IMSI, '+4477009000011234', /--msisdn must be an E\.164 number/],
    [ICCID, IMSI, '', /--msisdn must be an E\.164 number/],
    [ICCID, IMSI, '+44 7700 900001', /--msisdn must be an E\.164 number/],
  ];
  for (const [i, m, n, msg] of table) throwsCode(() => givenCard(i, m, n), 'CLI_BAD_ARGS', msg, `${i} ${m} ${n}`);
});

test('generatedCard: card N is valid and the same for the same N; 1..9999 only', () => {
  const a = generatedCard(3);
  assert.ok(isIccid(a.iccid) && isImsi(a.imsi) && /^\+99901\d{8}$/.test(a.msisdn!));
  assert.equal(generatedCard(3), a);
  assert.is.not(generatedCard(4).iccid, a.iccid);
  for (const n of [0, -1, 10_000, 1.5, Number.NaN]) throwsCode(() => generatedCard(n), 'CLI_BAD_ARGS', /--sim-card must be a card number 1\.\.9999/, String(n));
});

test('planSim: the given or generated card; kept across runs; a swap makes a new card for the same line; refusals', () => {
  const t = tmp();
  try {
    assert.equal(planSim(t.dir, { kind: 'kept' }, false), { card: undefined });
    throwsCode(() => planSim(t.dir, { kind: 'swap' }, false), 'CLI_BAD_ARGS', /--swap-sim needs the card the phone has: it has none/, 'usb, no card');
    // A mobile phone's own card is card 1: a swap starts from it.
    const m = planSim(t.dir, { kind: 'swap' }, true);
    assert.equal(m.swappedFrom, generatedCard(1));
    const c = generatedCard(7);
    saveSim(t.dir, c);
    assert.equal(savedSim(t.dir), c);
    assert.equal(planSim(t.dir, { kind: 'kept' }, false), { card: c });
    const s = planSim(t.dir, { kind: 'swap' }, false);
    assert.equal(s.swappedFrom, c);
    const n = s.card!;
    assert.ok(isIccid(n.iccid) && isImsi(n.imsi), 'a valid new card');
    assert.is(n.msisdn, c.msisdn);
    assert.is(n.iccid.slice(0, 8), c.iccid.slice(0, 8));
    assert.is(n.imsi.slice(0, 5), c.imsi.slice(0, 5));
    assert.is(n.iccid.length, c.iccid.length);
    assert.is.not(n.iccid, c.iccid);
    // planSim writes nothing: the CLI saves once the operator took the swap.
    assert.equal(savedSim(t.dir), c);
    saveSim(t.dir, { iccid: ICCID, imsi: IMSI, cardType: 'USIM' });
    throwsCode(() => planSim(t.dir, { kind: 'swap' }, false), 'CLI_BAD_ARGS', /carries no number/, 'no number');
    for (const bad of ['not json', '{}', '{"iccid": "12", "imsi": "234200000000001", "cardType": "USIM"}', `{"iccid": "${ICCID}", "imsi": "${IMSI}", "cardType": "eSIM"}`, `{"iccid": "${ICCID}", "imsi": "${IMSI}", "cardType": "USIM", "msisdn": "0044"}`, 'null', '[]']) {
      writeFileSync(join(t.dir, SIM_FILE), bad);
      throwsCode(() => savedSim(t.dir), 'CLI_CORRUPT_FILE', /phone\.sim\.json is not (JSON|a SIM card)/, bad);
    }
  } finally {
    t.remove();
  }
});

test('tellOperator: the line created once, a swap moves it (the old card replaced, the change time now); a number on another card or a card on another number is SIM_LINE_CONFLICT', async () => {
  const t = tmp();
  const B = chosenBackend();
  const store = await B.opening(openOperatorStore(B.place('operator')));
  try {
    const c = generatedCard(5);
    assert.match(await tellOperator(store, { card: c }), /the operator's line \+99901\d{8} is on this card/);
    assert.match(await tellOperator(store, { card: c }), /is on this card/, 'idempotent');
    const before = Date.now();
    const n = newCardFor(c);
    assert.match(await tellOperator(store, { card: n, swappedFrom: c }), /the operator moved line \+99901\d{8} from card 8900101…\d{4} to card 8900101…\d{4}/);
    const sub = (await store.byPhoneNumber(c.msisdn!))!;
    assert.is(sub.card.iccid, n.iccid);
    assert.ok(sub.cardChangedAt >= before);
    assert.is((await store.cardByIccid(c.iccid))!.status, 'replaced');
    // The old card again with the line's number: the line is on the new card.
    await rejectsCode(() => tellOperator(store, { card: c }), 'SIM_LINE_CONFLICT', /will not pair \+99901\d{8} with card .*that line is on card 8900101…/, 'old card');
    // The new card with another number: the card is the other line's.
    await rejectsCode(() => tellOperator(store, { card: { ...n, msisdn: '+447700900999' } }), 'SIM_LINE_CONFLICT', /will not pair \+447700900999/, 'card on another number');
    assert.is(await store.byPhoneNumber('+447700900999'), null, 'a refused pairing stores nothing');
    assert.match(await tellOperator(store, { card: { iccid: ICCID, imsi: IMSI, cardType: 'USIM' } }), /carries no number: the operator is not told/);
  } finally {
    await store.close();
    await B.cleanup();
    t.remove();
  }
});

test('bankPerson: the entry the firmware asks for, the password from the environment or the first line of a file; every hostile input refused, the password in no message', () => {
  const t = tmp();
  const pw = 'amber-heron-58-quarry';
  try {
    assert.equal(bankPerson('register', 'alice.test', undefined, { [BANK_PASSWORD_ENV]: pw }).bankEntry(), { action: 'register', name: 'alice.test', password: pw });
    const f = join(t.dir, 'pw');
    writeFileSync(f, `${pw}\r\nsecond line\n`);
    assert.equal(bankPerson('rebind', 'bob@bank', f, {}).bankEntry(), { action: 'rebind', name: 'bob@bank', password: pw });
    const table: [string, string | undefined, string | undefined, NodeJS.ProcessEnv, string, RegExp][] = [
      ['transfer', 'alice', undefined, { [BANK_PASSWORD_ENV]: pw }, 'CLI_BAD_ARGS', /--bank must be register, login, rebind, not 'transfer'/],
      ['__proto__', 'alice', undefined, { [BANK_PASSWORD_ENV]: pw }, 'CLI_BAD_ARGS', /--bank must be/],
      ['LOGIN', 'alice', undefined, { [BANK_PASSWORD_ENV]: pw }, 'CLI_BAD_ARGS', /--bank must be/],
      ['login', undefined, undefined, { [BANK_PASSWORD_ENV]: pw }, 'CLI_BAD_ARGS', /--bank needs --bank-name NAME/],
      ['login', 'al', undefined, { [BANK_PASSWORD_ENV]: pw }, 'CLI_BAD_ARGS', /--bank-name must be 3\.\.64/],
      ['login', 'a b c', undefined, { [BANK_PASSWORD_ENV]: pw }, 'CLI_BAD_ARGS', /--bank-name must be 3\.\.64/],
      ['login', 'x'.repeat(65), undefined, { [BANK_PASSWORD_ENV]: pw }, 'CLI_BAD_ARGS', /--bank-name must be 3\.\.64/],
      ['login', 'alice', undefined, {}, 'CLI_BAD_ARGS', /set USBPHONE_BANK_PASSWORD or give --bank-password-file FILE \(never on the command line/],
      ['login', 'alice', f, { [BANK_PASSWORD_ENV]: pw }, 'CLI_BAD_ARGS', /not both/],
      ['login', 'alice', undefined, { [BANK_PASSWORD_ENV]: '' }, 'CLI_BAD_ARGS', /must be 1\.\.256 bytes/],
      ['login', 'alice', undefined, { [BANK_PASSWORD_ENV]: 'é'.repeat(129) }, 'CLI_BAD_ARGS', /must be 1\.\.256 bytes/],
      ['login', 'alice', join(t.dir, 'missing'), {}, 'CLI_FILE', /--bank-password-file .*missing: ENOENT/],
      ['login', 'alice', t.dir, {}, 'CLI_FILE', /--bank-password-file .*: EISDIR/],
    ];
    for (const [action, name, file, env, code, msg] of table) {
      let err: unknown;
      try {
        bankPerson(action, name, file, env);
      } catch (e) {
        err = e;
      }
      assert.instance(err, ImplementationError, `${action} ${name}`);
      assert.is((err as ImplementationError).code, code, `${action} ${name}`);
      assert.match((err as Error).message, msg, `${action} ${name}`);
      assert.not.ok((err as Error).message.includes(pw), 'no password in a message');
    }
    writeFileSync(f, '\n');
    throwsCode(() => bankPerson('login', 'alice', f, {}), 'CLI_BAD_ARGS', /must be 1\.\.256 bytes/, 'an empty first line');
    assert.ok(existsSync(f));
  } finally {
    t.remove();
  }
});

test.run();
