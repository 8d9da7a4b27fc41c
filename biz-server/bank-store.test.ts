// The bank's store on both back ends (SQLite and PostgreSQL: server-kit/store-backends.ts):
// registration all or nothing, re-binding, the one-time code's step used once even by racing
// logins, last logins kept, page tokens only as hashes, TOTP seeds only sealed, the operator's
// SIM-change record of a binding (and a store of the schema before it migrated), corrupt rows
// refused and listed by the integrity check.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { openBizStores, PgBizStore } from './pg-store.ts';
import { SqliteBizStore, type BizStore } from './store.ts';
import { LAST_LOGINS_KEPT, type BankStore, type Registration, type SimChange } from './bank-store.ts';
import type { StorePlace } from '../server-kit/store-choice.ts';
import { backends } from '../server-kit/store-backends.ts';
import { dumpSchema } from '../server-kit/pg.ts';
import { TOTP_DEFAULTS } from '../protocol/person.ts';
import { ImplementationError } from '../protocol/errors.ts';
import { readFileSync, existsSync } from 'node:fs';
import { rejects } from '../server-kit/test-assert.ts';

const storageKey = new Uint8Array(32).fill(0x3c);
const T0 = 1_790_000_000_000;
const SITE = 'biz-east';
const seed = new Uint8Array(20).fill(0xa7);
const corruptRow = (e: unknown) => e instanceof ImplementationError && e.code === 'STORE_CORRUPT_ROW';
const reg = (no: string, name: string, iccid: string, extra: Partial<Registration> = {}): Registration => ({
  accountNo: no, name, verifier: '$scrypt$test', ids: [{ kind: 'iccid', value: iccid }], deviceUser: 'dev-a', now: T0, ...extra,
});

for (const b of backends()) {
  const test = suite(`bank store [${b.name}]`);
  let biz: BizStore;
  let bank: BankStore;
  let placeFile: string | null = null;
  let place: StorePlace;
  const sql = async (q: string, ...params: unknown[]): Promise<void> => {
    if (biz instanceof PgBizStore) {
      let n = 0;
      await biz.pool.query(q.replace(/\?/g, () => `$${++n}`), params);
    } else (biz as SqliteBizStore).db.prepare(q).run(...params);
  };
  test.before(async () => {
    place = b.place('bank');
    placeFile = place.kind === 'sqlite' ? place.file : null;
    ({ store: biz, bank } = await b.opening(openBizStores(place, storageKey)));
  });
  test.after(async () => {
    await biz?.close();
    await b.cleanup();
  });

  test('register: all or nothing; name, line and number clashes refused; the person keys kept at the site', async () => {
    const person = { site: SITE, fpPublicKey: new Uint8Array(32).fill(9), otp: { seed: Uint8Array.from(seed), params: TOTP_DEFAULTS } };
    assert.is(await bank.register(reg('620000000000001', 'alice', '89440000000000000011', { person })), 'ok');
    assert.is(await bank.register(reg('620000000000002', 'alice', '89440000000000000022')), 'name-taken');
    assert.is(await bank.register(reg('620000000000002', 'bob', '89440000000000000011')), 'id-bound');
    assert.is(await bank.register(reg('620000000000001', 'bob', '89440000000000000022')), 'number-taken');
    assert.is(await bank.accountByName('bob'), null, 'nothing of a refused registration');
    assert.is(await bank.binding({ kind: 'iccid', value: '89440000000000000022' }), null);
    const a = (await bank.accountByName('alice'))!;
    assert.equal([a.accountNo, a.mode, a.createdAt], ['620000000000001', null, T0]);
    assert.equal((await bank.accountByNumber('620000000000001'))!.name, 'alice');
    assert.equal((await bank.bindingsOf(a.accountNo)).map((x) => [x.kind, x.value, x.deviceUser, x.boundAt]), [['iccid', '89440000000000000011', 'dev-a', T0]]);
    const p = (await bank.person(a.accountNo, SITE))!;
    assert.equal([p.fpPublicKey, p.otp?.seed, p.otp?.params, p.lastStep], [new Uint8Array(32).fill(9), seed, TOTP_DEFAULTS, null]);
    assert.is(await bank.person(a.accountNo, 'biz-west'), null);
    await rejects(() => bank.register(reg('620000000000003', 'carl', '89440000000000000033', { person: { ...person, site: 'not a site!' } })), (e) => e instanceof ImplementationError && e.code === 'BANK_BAD_SITE');
  });

  test('rebind replaces the bindings; a line of another account refuses it and changes nothing', async () => {
    assert.is(await bank.register(reg('620000000000004', 'dora', '89440000000000000044')), 'ok');
    assert.is(await bank.rebind('620000000000001', [{ kind: 'iccid', value: '89440000000000000044' }], 'dev-b', T0 + 1), 'id-bound');
    assert.is((await bank.bindingsOf('620000000000001'))[0]!.value, '89440000000000000011');
    assert.is(await bank.rebind('620000000000001', [{ kind: 'iccid', value: '89440000000000000055' }, { kind: 'msisdn', value: '+447700900055' }], 'dev-b', T0 + 2), 'ok');
    assert.equal((await bank.bindingsOf('620000000000001')).map((x) => [x.kind, x.value, x.deviceUser]), [['iccid', '89440000000000000055', 'dev-b'], ['msisdn', '+447700900055', 'dev-b']]);
    assert.is(await bank.binding({ kind: 'iccid', value: '89440000000000000011' }), null, 'the old card is unbound');
  });

  test("the operator's SIM-change record: kept with every binding by register and rebind (at null: none known), null when not asked; a malformed one is refused before anything is written", async () => {
    const simChanges = async (no: string) => (await bank.bindingsOf(no)).map((x) => x.simChange);
    const ids = (n: string) => [{ kind: 'iccid' as const, value: `894400000000000${n}` }, { kind: 'msisdn' as const, value: `+4477009${n}` }];
    assert.is(await bank.register(reg('620000000000090', 'sam', '', { ids: ids('00090'), simChange: { at: T0 - 5 } })), 'ok');
    assert.equal(await simChanges('620000000000090'), [{ at: T0 - 5 }, { at: T0 - 5 }]);
    assert.equal((await bank.binding({ kind: 'msisdn', value: '+447700900090' }))!.simChange, { at: T0 - 5 });
    assert.is(await bank.rebind('620000000000090', ids('00091'), 'dev-a', T0 + 1, { at: null }), 'ok');
    assert.equal(await simChanges('620000000000090'), [{ at: null }, { at: null }], 'asked, none known');
    assert.is(await bank.rebind('620000000000090', ids('00092'), 'dev-a', T0 + 2), 'ok');
    assert.equal(await simChanges('620000000000090'), [null, null], 'not asked (mode 1)');
    assert.is(await bank.register(reg('620000000000091', 'sue', '89440000000000000093')), 'ok');
    assert.equal(await simChanges('620000000000091'), [null]);
    const bad = (e: unknown) => e instanceof ImplementationError && e.code === 'BANK_BAD_SIM_CHANGE';
    for (const c of [{ at: -1 }, { at: 1.5 }, { at: '2026' }, 7] as unknown as SimChange[]) {
      await rejects(async () => bank.register(reg('620000000000092', 'tess', '89440000000000000094', { simChange: c })), bad);
      await rejects(async () => bank.rebind('620000000000090', ids('00095'), 'dev-a', T0 + 3, c), bad);
    }
    assert.is(await bank.accountByName('tess'), null, 'nothing of the refused registration');
    assert.is((await bank.bindingsOf('620000000000090'))[0]!.value, '89440000000000000092', 'nor of the refused re-binding');
  });

  test('a store of the schema before the SIM-change record (SQLite 5, PostgreSQL 1) migrates at open: its bindings kept, read as not asked', async () => {
    assert.is(await bank.register(reg('620000000000093', 'uma', '89440000000000000096', { simChange: { at: T0 } })), 'ok');
    const sqlite = !(biz instanceof PgBizStore);
    await sql('ALTER TABLE bank_bindings DROP COLUMN sim_change_at');
    await sql('ALTER TABLE bank_bindings DROP COLUMN sim_change_asked');
    await sql(`DELETE FROM schema_version WHERE version > ${sqlite ? 5 : 1}`);
    const other = await openBizStores(place, storageKey);
    try {
      const v = other.store instanceof PgBizStore
        ? (await other.store.pool.query('SELECT MAX(version) AS v FROM schema_version')).rows[0].v
        : ((other.store as SqliteBizStore).db.prepare('SELECT MAX(version) AS v FROM schema_version').get() as { v: number }).v;
      assert.is(v, sqlite ? 6 : 2);
      const kept = await other.bank.bindingsOf('620000000000093');
      assert.equal(kept.map((x) => [x.value, x.deviceUser, x.boundAt, x.simChange]), [['89440000000000000096', 'dev-a', T0, null]]);
      assert.equal(await other.bank.check(), []);
    } finally {
      await other.store.close();
    }
  });

  test('a one-time code step is used once, even by logins racing for it; the last logins are kept newest first', async () => {
    const no = '620000000000001';
    assert.is(await bank.recordLogin(no, T0 + 10, 1, 'dev-b', { site: SITE, step: 100 }), true);
    assert.is(await bank.recordLogin(no, T0 + 11, 1, 'dev-b', { site: SITE, step: 100 }), false, 'the same step again');
    assert.is(await bank.recordLogin(no, T0 + 12, 1, 'dev-b', { site: SITE, step: 99 }), false, 'an older step');
    const race = await Promise.all([...Array(6).keys()].map((i) => bank.recordLogin(no, T0 + 20 + i, 1, 'dev-b', { site: SITE, step: 101 })));
    assert.is(race.filter(Boolean).length, 1, 'one of the racing logins');
    assert.is(await bank.recordLogin('620000000000004', T0, 1, 'dev-a', { site: SITE, step: 1 }), false, 'no seed at this site');
    assert.is((await bank.person(no, SITE))!.lastStep, 101);
    for (let i = 0; i < LAST_LOGINS_KEPT + 3; i++) assert.ok(await bank.recordLogin(no, T0 + 100 + i, i % 2 ? 2 : 1, 'dev-b'));
    const last = await bank.lastLogins(no);
    assert.is(last.length, LAST_LOGINS_KEPT);
    assert.equal(last[0], { at: T0 + 100 + LAST_LOGINS_KEPT + 2, mode: (LAST_LOGINS_KEPT + 2) % 2 ? 2 : 1 });
    assert.equal(await bank.lastLogins(no, 2), last.slice(0, 2));
  });

  test('mode override; page tokens stored as hashes, expired, or never issued', async () => {
    assert.is(await bank.setMode('alice', 2), true);
    assert.is((await bank.accountByName('alice'))!.mode, 2);
    assert.is(await bank.setMode('alice', null), true);
    assert.is(await bank.setMode('nobody', 2), false);
    const tok = new Uint8Array(32).fill(0xee);
    await bank.putPageToken(tok, '620000000000001', T0 + 1000, T0);
    assert.equal(await bank.pageToken(tok, T0 + 999), { accountNo: '620000000000001' });
    assert.is(await bank.pageToken(tok, T0 + 1000), 'expired');
    assert.is(await bank.pageToken(new Uint8Array(32).fill(0xef), T0), null);
    await bank.putPageToken(new Uint8Array(32).fill(0xed), '620000000000001', T0 + 5000, T0 + 2000);
    assert.is(await bank.pageToken(tok, T0), null, 'purged once expired');
  });

  test('at rest: the TOTP seed only sealed and page tokens only hashed (every table of the store)', async () => {
    const tok = new Uint8Array(32).fill(0xed);
    const needles = [Buffer.from(seed), Buffer.from(tok), Buffer.from(Buffer.from(seed).toString('hex')), Buffer.from(Buffer.from(tok).toString('hex'))];
    if (biz instanceof PgBizStore) {
      const dump = await dumpSchema(biz.pool, biz.schema);
      const cells = Object.values(dump).flatMap((rows) => rows.flatMap((r) => Object.values(r)));
      assert.ok(dump.bank_person!.length >= 1 && dump.bank_page_tokens!.length >= 1);
      for (const v of cells) {
        const bytes = v instanceof Uint8Array ? Buffer.from(v) : Buffer.from(String(v));
        for (const n of needles) assert.not.ok(bytes.includes(n), 'a seed or a page token in clear in a PostgreSQL row');
      }
    } else {
      for (const f of [placeFile!, `${placeFile}-wal`]) {
        if (!existsSync(f)) continue;
        const bytes = readFileSync(f);
        for (const n of needles) assert.not.ok(bytes.includes(n), `a seed or a page token in clear in ${f}`);
      }
    }
  });

  test('corrupt bank rows are refused (STORE_CORRUPT_ROW) and listed by the integrity check', async () => {
    assert.equal(await bank.check(), []);
    await sql("UPDATE bank_accounts SET mode = 7 WHERE name = 'dora'");
    await rejects(() => bank.accountByName('dora'), corruptRow);
    assert.match((await bank.check()).join('\n'), /bank account row: bad mode/);
    await sql("UPDATE bank_accounts SET mode = NULL WHERE name = 'dora'");
    // A seed moved to another account's row does not open there.
    await sql("INSERT INTO bank_person (account_no, site, fp_public_key, otp_seed, otp_last_step, created_at) SELECT '620000000000004', site, NULL, otp_seed, NULL, created_at FROM bank_person WHERE account_no = '620000000000001'");
    await rejects(() => bank.person('620000000000004', SITE), corruptRow);
    assert.match((await bank.check()).join('\n'), /TOTP seed does not open/);
    await sql("DELETE FROM bank_person WHERE account_no = '620000000000004'");
    await sql("UPDATE bank_bindings SET device_user = 'bad user' WHERE account_no = '620000000000004'");
    assert.match((await bank.check()).join('\n'), /bank binding row: bad device user/);
    await sql("UPDATE bank_bindings SET device_user = 'dev-a' WHERE account_no = '620000000000004'");
    // The operator's SIM-change record: a time that is none, a flag that is neither 0 nor 1, a time without the flag.
    const card = { kind: 'iccid' as const, value: '89440000000000000044' };
    for (const [set, why] of [['sim_change_asked = 1, sim_change_at = -5', /bad sim_change_at/], ['sim_change_asked = 2', /bad sim_change_asked/], ['sim_change_asked = 0, sim_change_at = 5', /a sim_change_at without sim_change_asked/]] as const) {
      await sql(`UPDATE bank_bindings SET ${set} WHERE account_no = '620000000000004'`);
      await rejects(async () => bank.binding(card), corruptRow, set);
      await rejects(async () => bank.bindingsOf('620000000000004'), corruptRow, set);
      assert.match((await bank.check()).join('\n'), why);
      await sql("UPDATE bank_bindings SET sim_change_asked = 0, sim_change_at = NULL WHERE account_no = '620000000000004'");
    }
    assert.equal(await bank.check(), []);
  });

  test.run();
}
