// The business accounts store, on both back ends (SQLite files and PostgreSQL schemas:
// server-kit/store-backends.ts): generations, two-phase install/promote, idempotent retries,
// compare-and-set promotion, refusal of corrupt rows, login keys only wrapped at rest.
import { test, suite } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { SqliteBizStore, WRAPPED_KEY_BYTES, unwrapLoginKey, type BizStore } from './store.ts';
import { PgBizStore, openBizStores } from './pg-store.ts';
import { tempDir } from '../deploy/test-util.ts';
import { ImplementationError } from '../protocol/errors.ts';
import { readFileSync, existsSync } from 'node:fs';
import Database from 'better-sqlite3';
import { utf8ToBytes } from '@noble/hashes/utils.js';
import { sealBox, openBox } from '../protocol/sealed-box.ts';
import { systemRng } from '../protocol/rng.ts';
import { backends } from '../server-kit/store-backends.ts';
import { dumpSchema } from '../server-kit/pg.ts';
import type { StorePlace } from '../server-kit/store-choice.ts';
import { rejects, implCode as code } from '../server-kit/test-assert.ts';

const t = tempDir();
const storageKey = new Uint8Array(32).fill(0x5a);
const key = (b: number) => new Uint8Array(32).fill(b);
const id = (b: number) => new Uint8Array(16).fill(b);
const FAR = Date.now() + 3600_000;
const sealed = (b: number) => new Uint8Array(72).fill(b);
const corruptRow = (e: unknown) => e instanceof ImplementationError && e.code === 'STORE_CORRUPT_ROW';
test.after(() => t.remove());

test('schema 2 files (keys bound to the user only) are rewrapped at open, in one transaction; a key that does not open refuses the migration and changes nothing', () => {
  const old = join(t.dir, 'biz-v2.sqlite');
  const ring = (f: string) => new SqliteBizStore(f, storageKey);
  // A schema-2 file as the previous build wrote it: the same tables, keys sealed with the old binding.
  for (const f of [old, `${old}.bad`]) {
    const s = ring(f);
    s.createAccount('acct-m', 'u-m');
    s.installPending('u-m', key(0x51), sealed(1), FAR, id(0x51));
    s.promote('u-m', 1);
    s.installPending('u-m', key(0x52), sealed(2), FAR, id(0x52));
    s.createAccount('acct-m0', 'u-m0');
    const v2 = (k: Uint8Array) => sealBox(storageKey, k, utf8ToBytes('usbphone/v1 login key|u-m'), systemRng);
    s.db.prepare("UPDATE accounts SET current_key = ?, pending_key = ? WHERE user = 'u-m'").run(v2(key(0x51)), v2(key(0x52)));
    // Schema 4's bank tables (and schema 5's person table) did not exist yet.
    s.db.exec('DROP TABLE bank_person; DROP TABLE bank_page_tokens; DROP TABLE bank_logins; DROP TABLE bank_bindings; DROP TABLE bank_accounts');
    s.db.exec('DELETE FROM schema_version WHERE version > 2');
    s.close();
  }
  const m = ring(old);
  try {
    const a = m.getByUser('u-m')!;
    assert.equal([a.currentGen, a.currentKey, a.pendingGen, a.pendingKey], [1, key(0x51), 2, key(0x52)]);
    assert.is(m.getByUser('u-m0')!.currentKey, null);
    assert.is((m.db.prepare('SELECT MAX(version) AS v FROM schema_version').get() as { v: number }).v, 6);
    assert.is((m.db.prepare("SELECT COUNT(*) AS n FROM sqlite_master WHERE name = 'bank_accounts'").get() as { n: number }).n, 1, 'schema 4 adds the bank tables');
  } finally {
    m.close();
  }
  // One row that does not open (tampered): nothing migrated, the file stays at schema 2.
  const bad = new Database(`${old}.bad`);
  bad.exec("UPDATE accounts SET pending_key = zeroblob(72) WHERE user = 'u-m'");
  bad.close();
  assert.throws(() => ring(`${old}.bad`), corruptRow);
  const after = new Database(`${old}.bad`);
  assert.is((after.prepare('SELECT MAX(version) AS v FROM schema_version').get() as { v: number }).v, 2);
  const cur = (after.prepare("SELECT current_key FROM accounts WHERE user = 'u-m'").get() as { current_key: Uint8Array }).current_key;
  assert.equal(openBox(storageKey, cur, utf8ToBytes('usbphone/v1 login key|u-m')), key(0x51), 'the current key left with its old binding');
  after.close();
});

test.run();

for (const b of backends()) {
  const test = suite(`business store [${b.name}]`);
  const pg = b.name === 'postgres';
  let place: StorePlace;
  let store: BizStore;
  // Raw SQL on the store's own tables, in either dialect: '?' parameters, "user" quoted on PostgreSQL.
  const U = pg ? '"user"' : 'user';
  const zero = (n: number) => (pg ? `decode(repeat('00', ${n}), 'hex')` : `zeroblob(${n})`);
  const hexLit = (h: string) => (pg ? `'\\x${h}'::bytea` : `x'${h}'`);
  async function sql(q: string, ...params: unknown[]): Promise<Record<string, unknown>[]> {
    if (store instanceof PgBizStore) {
      let n = 0;
      return (await store.pool.query(q.replace(/\?/g, () => `$${++n}`), params)).rows;
    }
    const st = (store as SqliteBizStore).db.prepare(q);
    return st.reader ? (st.all(...params) as Record<string, unknown>[]) : (st.run(...params), []);
  }
  test.before(async () => {
    place = b.place('biz');
    store = (await b.opening(openBizStores(place, storageKey))).store;
  });
  test.after(async () => {
    await store?.close();
    await b.cleanup();
  });

  test('accounts start at generation 0 with no key; creation is idempotent; conflicts refused', async () => {
    assert.is(await store.createAccount('acct-1', 'u-1'), 'created');
    assert.is(await store.createAccount('acct-1', 'u-1'), 'exists');
    await rejects(() => store.createAccount('acct-1', 'u-other'), code('BIZ_ACCOUNT_CONFLICT'));
    await rejects(() => store.createAccount('acct-2', 'u-1'), code('BIZ_ACCOUNT_CONFLICT'));
    await rejects(() => store.createAccount('acct-3', 'bad user!'), code('BIZ_BAD_USER'));
    const a = (await store.getByUser('u-1'))!;
    assert.equal([a.currentGen, a.currentKey, a.pendingGen, a.maxGen], [0, null, null, 0]);
    assert.is(await store.getByUser('u-none'), null);
  });

  test('installPending: new generation = highest ever + 1; a usable pending one is kept and returned for re-issue; retry is idempotent', async () => {
    const r1 = await store.installPending('u-1', key(1), sealed(1), FAR, id(1));
    assert.equal([r1.currentGen, r1.pendingGen, r1.installed, r1.sealed, r1.rotationId], [0, 1, true, sealed(1), id(1)]);
    // The retry of the same call: the same generation, still "installed" (its own secret).
    assert.equal((await store.installPending('u-1', key(1), sealed(1), FAR, id(1))).installed, true);
    // Another registration while generation 1 is unused: kept, returned for re-issue.
    const r2 = await store.installPending('u-1', key(2), sealed(2), FAR, id(2));
    assert.equal([r2.pendingGen, r2.installed, r2.sealed, r2.rotationId], [1, false, sealed(1), id(1)]);
    assert.equal((await store.getByUser('u-1'))!.pendingKey, key(1));
    await rejects(() => store.installPending('u-none', key(1), sealed(1), FAR, id(4)), code('BIZ_UNKNOWN_USER'));
    await rejects(() => store.installPending('u-1', key(1), new Uint8Array(3), FAR, id(4)), code('BIZ_BAD_INSTALL'));
  });

  test('promote is a compare-and-set on the pending generation; after it a new generation is installed', async () => {
    assert.is(await store.promote('u-1', 2), false);
    assert.is(await store.promote('u-1', 1), true);
    let a = (await store.getByUser('u-1'))!;
    assert.equal([a.currentGen, a.pendingGen, a.maxGen, a.pendingSealed], [1, null, 1, null]);
    assert.equal(a.currentKey, key(1));
    assert.is(await store.promote('u-1', 1), false);
    // The install of generation 1, replayed once it was promoted, installs nothing (found by review: it made the old secret pending again as generation 2).
    await rejects(() => store.installPending('u-1', key(1), sealed(1), FAR, id(1)), code('BIZ_INSTALL_REPLAYED'));
    assert.equal([(await store.getByUser('u-1'))!.pendingGen, (await store.getByUser('u-1'))!.maxGen], [null, 1]);
    const r = await store.installPending('u-1', key(3), sealed(3), FAR, id(3));
    assert.equal([r.currentGen, r.pendingGen, r.installed], [1, 2, true]);
    assert.is(await store.promote('u-1', 2), true);
    a = (await store.getByUser('u-1'))!;
    assert.equal([a.currentGen, a.maxGen], [2, 2]);
    assert.is(await store.promote('u-none', 1), false);
  });

  test('racing installs and promotions for one account (two servers): one generation each time, nothing lost', async () => {
    await store.createAccount('acct-race', 'u-race');
    // Eight registrations at once, each with its own rotation id: exactly one installs.
    const rs = await Promise.all([...Array(8).keys()].map((i) => store.installPending('u-race', key(0x60 + i), sealed(0x60 + i), FAR, id(0x60 + i))));
    assert.is(rs.filter((r) => r.installed).length, 1);
    assert.equal(new Set(rs.map((r) => r.pendingGen)), new Set([1]));
    const winner = rs.find((r) => r.installed)!;
    assert.ok(rs.every((r) => r.rotationId.join() === winner.rotationId.join()), 'every loser re-issues the winner\'s secret');
    // Eight logins with the pending generation at once: one promotes.
    const ps = await Promise.all([...Array(8).keys()].map(() => store.promote('u-race', 1)));
    assert.is(ps.filter(Boolean).length, 1);
    const a = (await store.getByUser('u-race'))!;
    assert.equal([a.currentGen, a.pendingGen, a.maxGen], [1, null, 1]);
    assert.equal(await store.check(), []);
  });

  test('an expired pending generation: unusable while a current one exists (replaced by the next install); usable forever without one', async () => {
    await store.installPending('u-1', key(4), sealed(4), Date.now() - 1, id(5));
    assert.is(await store.promote('u-1', 3), false);
    const r = await store.installPending('u-1', key(5), sealed(5), FAR, id(6));
    assert.equal([r.pendingGen, r.installed], [4, true]);
    await store.createAccount('acct-new', 'u-new');
    await store.installPending('u-new', key(6), sealed(6), Date.now() - 1, id(7));
    assert.equal((await store.installPending('u-new', key(7), sealed(7), FAR, id(8))).installed, false);
    assert.is(await store.promote('u-new', 1), true);
    assert.is(await store.confirm('u-1', 2), true);
    assert.is(await store.confirm('u-1', 4), false);
  });

  test('a corrupt row is refused with STORE_CORRUPT_ROW, never acted on, and the integrity check lists it', async () => {
    await store.createAccount('acct-c', 'u-c');
    const corruptions = [
      `UPDATE accounts SET current_gen = 3 WHERE ${U} = 'u-c'`,
      `UPDATE accounts SET current_gen = 0, current_key = ${hexLit('00')} WHERE ${U} = 'u-c'`,
      `UPDATE accounts SET status = 'weird' WHERE ${U} = 'u-c'`,
      `UPDATE accounts SET max_gen = 5, pending_gen = 5, pending_key = ${hexLit('0102')}, pending_expires = 1 WHERE ${U} = 'u-c'`,
      `UPDATE accounts SET max_gen = -1 WHERE ${U} = 'u-c'`,
      `UPDATE accounts SET max_gen = 1, pending_gen = 1, pending_key = ${zero(32)}, pending_expires = 1, last_rotation_id = ${zero(16)}, last_rotation_gen = 1 WHERE ${U} = 'u-c'`,
    ];
    const heal = `UPDATE accounts SET status = 'active', current_gen = 0, current_key = NULL, pending_gen = NULL, pending_key = NULL, pending_expires = NULL, max_gen = 0 WHERE ${U} = 'u-c'`;
    for (const q of corruptions) {
      await sql(heal);
      assert.ok(await store.getByUser('u-c'));
      assert.equal(await store.check(), []);
      await sql(q);
      await rejects(() => store.getByUser('u-c'), corruptRow, q);
      await rejects(() => store.installPending('u-c', key(1), sealed(1), FAR, id(9)), corruptRow, q);
      assert.match((await store.check()).join('\n'), /account row u-c/, q);
    }
    await sql(heal);
  });

  test('a second store on the same place (another business server) sees the same accounts', async () => {
    const other = (await openBizStores(place, storageKey)).store;
    try {
      assert.is((await other.getByUser('u-1'))!.currentGen, 2);
      if (other instanceof SqliteBizStore) {
        assert.is((other.db.prepare('SELECT MAX(version) AS v FROM schema_version').get() as { v: number }).v, 6);
        assert.is(String(other.db.pragma('journal_mode', { simple: true })), 'wal');
      } else {
        assert.equal((await (other as PgBizStore).pool.query('SELECT MAX(version) AS v FROM schema_version')).rows[0], { v: 2 });
      }
    } finally {
      await other.close();
    }
  });

  test('login keys are stored only wrapped: no plaintext key at rest, another storage key or another row opens nothing', async () => {
    const plain = new Uint8Array(32).fill(0xc3);
    await store.createAccount('acct-w1', 'u-w1');
    await store.createAccount('acct-w2', 'u-w2');
    await store.installPending('u-w1', plain, sealed(9), FAR, id(9));
    assert.equal((await store.getByUser('u-w1'))!.pendingKey, plain);
    const [row] = (await sql(`SELECT pending_key FROM accounts WHERE ${U} = ?`, 'u-w1')) as { pending_key: Uint8Array }[];
    assert.is(row!.pending_key.length, WRAPPED_KEY_BYTES);
    assert.not.ok(Buffer.from(row!.pending_key).includes(Buffer.from(plain)), 'the login key in clear in its row');
    if (place.kind === 'sqlite') {
      for (const f of [place.file, `${place.file}-wal`]) {
        if (existsSync(f)) assert.not.ok(readFileSync(f).includes(Buffer.from(plain)), `the login key in clear in ${f}`);
      }
    } else {
      // Every row of every table of the schema (SELECT *), as an attacker with a dump has it.
      const dump = await dumpSchema((store as PgBizStore).pool, (store as PgBizStore).schema);
      assert.ok(Object.keys(dump).includes('accounts') && Object.keys(dump).includes('bank_person'), Object.keys(dump).join());
      const cells = Object.values(dump).flatMap((rows) => rows.flatMap((r) => Object.values(r)));
      assert.ok(cells.length > 20);
      for (const v of cells) {
        const bytes = v instanceof Uint8Array ? Buffer.from(v) : Buffer.from(String(v));
        assert.not.ok(bytes.includes(Buffer.from(plain)) || bytes.includes(Buffer.from(Buffer.from(plain).toString('hex'))), 'the login key in clear in a PostgreSQL row');
      }
    }
    // Another business deployment's storage key: the row is refused, never half-read.
    const stranger = (await openBizStores(place, new Uint8Array(32).fill(0x11))).store;
    try {
      await rejects(() => stranger.getByUser('u-w1'), corruptRow);
    } finally {
      await stranger.close();
    }
    // The wrapped key copied into another user's row does not open there (bound to the user).
    await sql(`UPDATE accounts SET pending_gen = 1, pending_key = ?, pending_sealed = ?, pending_expires = ?, max_gen = 1, last_rotation_id = ?, last_rotation_gen = 1 WHERE ${U} = ?`, row!.pending_key, sealed(9), FAR, id(9), 'u-w2');
    await rejects(() => store.getByUser('u-w2'), corruptRow);
    assert.equal(unwrapLoginKey(storageKey, 'u-w1', 1, row!.pending_key), plain);
    assert.is(unwrapLoginKey(storageKey, 'u-w2', 1, row!.pending_key), null);
    assert.match((await store.check()).join('\n'), /account row u-w2/);
    await sql(`UPDATE accounts SET pending_gen = NULL, pending_key = NULL, pending_sealed = NULL, pending_expires = NULL, last_rotation_id = NULL, last_rotation_gen = NULL WHERE ${U} = ?`, 'u-w2');
    assert.equal(await store.check(), []);
  });

  test('a wrapped key moved to another generation (its own row\'s other column, or a renumbered generation) is refused as STORE_CORRUPT_ROW', async () => {
    await store.createAccount('acct-g', 'u-g');
    await store.installPending('u-g', key(0x41), sealed(1), FAR, id(0x41));
    assert.is(await store.promote('u-g', 1), true);
    await store.installPending('u-g', key(0x42), sealed(2), FAR, id(0x42));
    const a = (await store.getByUser('u-g'))!;
    assert.equal([a.currentGen, a.pendingGen, a.currentKey, a.pendingKey], [1, 2, key(0x41), key(0x42)]);
    const [snapshot] = await sql(`SELECT * FROM accounts WHERE ${U} = ?`, 'u-g');
    const restore = () => sql(`UPDATE accounts SET current_gen = ?, current_key = ?, pending_gen = ?, pending_key = ?, max_gen = ?, last_rotation_gen = ? WHERE ${U} = ?`,
      snapshot!.current_gen, snapshot!.current_key, snapshot!.pending_gen, snapshot!.pending_key, snapshot!.max_gen, snapshot!.last_rotation_gen, 'u-g');
    const moves = [
      // generation 2's key into generation 1's column: a login with gen 1 would verify under the new key.
      `UPDATE accounts SET current_key = pending_key WHERE ${U} = 'u-g'`,
      // and the other way round: the old key offered as the pending generation.
      `UPDATE accounts SET pending_key = current_key WHERE ${U} = 'u-g'`,
      // the current key renumbered as a generation it never was.
      `UPDATE accounts SET current_gen = 3, max_gen = 4, pending_gen = 4, last_rotation_gen = 4 WHERE ${U} = 'u-g'`,
    ];
    for (const q of moves) {
      await restore();
      assert.ok(await store.getByUser('u-g'));
      await sql(q);
      await rejects(() => store.getByUser('u-g'), corruptRow, q);
      await rejects(() => store.promote('u-g', 2), corruptRow, q);
    }
    // The login path refuses it too, for the generation whose key was moved.
    await restore();
    await sql(moves[0]!);
    await rejects(() => store.loginKey('u-g', 1, Date.now()), corruptRow);
    await restore();
    assert.equal((await store.loginKey('u-g', 1, Date.now()))!.key, key(0x41));
    assert.equal((await store.loginKey('u-g', 2, Date.now()))!.key, key(0x42));
  });

  test('loginKey: the current or a usable pending generation; null for an unknown user, another generation or an expired pending one', async () => {
    const now = Date.now();
    assert.equal(await store.loginKey('u-g', 1, now), { key: key(0x41), pending: false, active: true });
    assert.equal(await store.loginKey('u-g', 2, now), { key: key(0x42), pending: true, active: true });
    assert.is(await store.loginKey('u-g', 3, now), null);
    assert.is(await store.loginKey('u-g', 0, now), null);
    assert.is(await store.loginKey('u-g', 2 ** 40, now), null, 'a generation beyond any column');
    assert.is(await store.loginKey('u-nobody', 1, now), null);
    assert.is(await store.loginKey('u-g', 2, FAR + 1), null, 'expired while a current key exists');
    assert.is(await store.setStatus('u-g', 'disabled'), true);
    assert.is((await store.loginKey('u-g', 1, now))!.active, false);
    await store.setStatus('u-g', 'active');
    assert.is(await store.setStatus('u-nobody', 'active'), false);
  });

  test('generations: the current and pending generation from the checked row, no key opened; null for no user; a corrupt row refused', async () => {
    await store.createAccount('acct-n', 'u-n');
    assert.equal(await store.generations('u-n'), { currentGen: 0, pendingGen: null });
    await store.installPending('u-n', key(0x61), sealed(1), FAR, id(0x61));
    assert.equal(await store.generations('u-n'), { currentGen: 0, pendingGen: 1 });
    assert.is(await store.promote('u-n', 1), true);
    await store.installPending('u-n', key(0x62), sealed(2), FAR, id(0x62));
    assert.equal(await store.generations('u-n'), { currentGen: 1, pendingGen: 2 });
    assert.is(await store.generations('u-nobody'), null);
    // A key altered in place: the generations are still read (no key is opened); getByUser, which opens, refuses.
    const [row] = await sql(`SELECT current_key FROM accounts WHERE ${U} = ?`, 'u-n');
    const altered = Uint8Array.from(row!.current_key as Uint8Array);
    altered[40]! ^= 1;
    await sql(`UPDATE accounts SET current_key = ? WHERE ${U} = ?`, altered, 'u-n');
    assert.equal(await store.generations('u-n'), { currentGen: 1, pendingGen: 2 });
    await rejects(() => store.getByUser('u-n'), corruptRow);
    await sql(`UPDATE accounts SET current_key = ? WHERE ${U} = ?`, row!.current_key, 'u-n');
    await sql(`UPDATE accounts SET status = 'weird' WHERE ${U} = 'u-n'`);
    await rejects(() => store.generations('u-n'), corruptRow, 'a row failing its checks');
    await sql(`UPDATE accounts SET status = 'active' WHERE ${U} = 'u-n'`);
  });

  test('installPending decides on the checked row without opening a key; the key altered in place is refused where a key is used (loginKey, promote, check)', async () => {
    await store.createAccount('acct-i', 'u-i');
    await store.installPending('u-i', key(0x71), sealed(1), FAR, id(0x71));
    assert.is(await store.promote('u-i', 1), true);
    const [row] = await sql(`SELECT current_key FROM accounts WHERE ${U} = ?`, 'u-i');
    const altered = Uint8Array.from(row!.current_key as Uint8Array);
    altered[40]! ^= 1;
    await sql(`UPDATE accounts SET current_key = ? WHERE ${U} = ?`, altered, 'u-i');
    // The install needs the generations only: it goes ahead, and current is untouched.
    assert.equal(await store.installPending('u-i', key(0x72), sealed(2), FAR, id(0x72)), { currentGen: 1, pendingGen: 2, installed: true, sealed: sealed(2), rotationId: id(0x72) });
    await rejects(() => store.loginKey('u-i', 1, Date.now()), corruptRow, 'the altered current key');
    assert.equal((await store.loginKey('u-i', 2, Date.now()))!.key, key(0x72), 'the new pending key opens');
    await rejects(() => store.promote('u-i', 2), corruptRow, 'promote opens both keys of the row it changes');
    assert.match((await store.check()).join('\n'), /account row u-i/);
    await sql(`UPDATE accounts SET current_key = ? WHERE ${U} = ?`, row!.current_key, 'u-i');
    assert.is(await store.promote('u-i', 2), true);
    assert.equal((await store.loginKey('u-i', 2, Date.now()))!.key, key(0x72));
    assert.equal(await store.check(), []);
  });

  test.run();
}
