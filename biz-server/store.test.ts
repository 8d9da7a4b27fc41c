// The business accounts store (real SQLite files): generations, two-phase install/promote,
// idempotent retries, compare-and-set promotion, and refusal of corrupt rows.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { SqliteBizStore, WRAPPED_KEY_BYTES, unwrapLoginKey } from './store.ts';
import { tempDir } from '../deploy/test-util.ts';
import { ImplementationError } from '../protocol/errors.ts';
import { readFileSync, existsSync } from 'node:fs';
import Database from 'better-sqlite3';
import { utf8ToBytes } from '@noble/hashes/utils.js';
import { sealBox, openBox } from '../protocol/sealed-box.ts';
import { systemRng } from '../protocol/rng.ts';

const t = tempDir();
const file = join(t.dir, 'biz.sqlite');
const storageKey = new Uint8Array(32).fill(0x5a);
const store = new SqliteBizStore(file, storageKey);
const key = (b: number) => new Uint8Array(32).fill(b);
const id = (b: number) => new Uint8Array(16).fill(b);
const FAR = Date.now() + 3600_000;
test.after(() => {
  store.close();
  t.remove();
});

test('accounts start at generation 0 with no key; creation is idempotent; conflicts refused', () => {
  assert.is(store.createAccount('acct-1', 'u-1'), 'created');
  assert.is(store.createAccount('acct-1', 'u-1'), 'exists');
  assert.throws(() => store.createAccount('acct-1', 'u-other'), (e: unknown) => e instanceof ImplementationError && e.code === 'BIZ_ACCOUNT_CONFLICT');
  assert.throws(() => store.createAccount('acct-2', 'u-1'), (e: unknown) => e instanceof ImplementationError && e.code === 'BIZ_ACCOUNT_CONFLICT');
  assert.throws(() => store.createAccount('acct-3', 'bad user!'), (e: unknown) => e instanceof ImplementationError && e.code === 'BIZ_BAD_USER');
  const a = store.getByUser('u-1')!;
  assert.equal([a.currentGen, a.currentKey, a.pendingGen, a.maxGen], [0, null, null, 0]);
});

const sealed = (b: number) => new Uint8Array(72).fill(b);

test('installPending: new generation = highest ever + 1; a usable pending one is kept and returned for re-issue; retry is idempotent', () => {
  const r1 = store.installPending('u-1', key(1), sealed(1), FAR, id(1));
  assert.equal([r1.currentGen, r1.pendingGen, r1.installed, r1.sealed, r1.rotationId], [0, 1, true, sealed(1), id(1)]);
  // The retry of the same call: the same generation, still "installed" (its own secret).
  assert.equal(store.installPending('u-1', key(1), sealed(1), FAR, id(1)).installed, true);
  // Another registration while generation 1 is unused: kept, returned for re-issue.
  const r2 = store.installPending('u-1', key(2), sealed(2), FAR, id(2));
  assert.equal([r2.pendingGen, r2.installed, r2.sealed, r2.rotationId], [1, false, sealed(1), id(1)]);
  assert.equal(store.getByUser('u-1')!.pendingKey, key(1));
  assert.throws(() => store.installPending('u-none', key(1), sealed(1), FAR, id(4)), (e: unknown) => e instanceof ImplementationError && e.code === 'BIZ_UNKNOWN_USER');
  assert.throws(() => store.installPending('u-1', key(1), new Uint8Array(3), FAR, id(4)), (e: unknown) => e instanceof ImplementationError && e.code === 'BIZ_BAD_INSTALL');
});

test('promote is a compare-and-set on the pending generation; after it a new generation is installed', () => {
  assert.is(store.promote('u-1', 2), false);
  assert.is(store.promote('u-1', 1), true);
  let a = store.getByUser('u-1')!;
  assert.equal([a.currentGen, a.pendingGen, a.maxGen, a.pendingSealed], [1, null, 1, null]);
  assert.equal(a.currentKey, key(1));
  assert.is(store.promote('u-1', 1), false);
  const r = store.installPending('u-1', key(3), sealed(3), FAR, id(3));
  assert.equal([r.currentGen, r.pendingGen, r.installed], [1, 2, true]);
  assert.is(store.promote('u-1', 2), true);
  a = store.getByUser('u-1')!;
  assert.equal([a.currentGen, a.maxGen], [2, 2]);
});

test('an expired pending generation: unusable while a current one exists (replaced by the next install); usable forever without one', () => {
  store.installPending('u-1', key(4), sealed(4), Date.now() - 1, id(5));
  assert.is(store.promote('u-1', 3), false);
  const r = store.installPending('u-1', key(5), sealed(5), FAR, id(6));
  assert.equal([r.pendingGen, r.installed], [4, true]);
  store.createAccount('acct-new', 'u-new');
  store.installPending('u-new', key(6), sealed(6), Date.now() - 1, id(7));
  assert.equal(store.installPending('u-new', key(7), sealed(7), FAR, id(8)).installed, false);
  assert.is(store.promote('u-new', 1), true);
  assert.is(store.confirm('u-1', 2), true);
  assert.is(store.confirm('u-1', 4), false);
});

test('a corrupt row is refused with STORE_CORRUPT_ROW, never acted on', () => {
  store.createAccount('acct-c', 'u-c');
  const isCorrupt = (e: unknown) => e instanceof ImplementationError && e.code === 'STORE_CORRUPT_ROW';
  const corruptions = [
    "UPDATE accounts SET current_gen = 3 WHERE user = 'u-c'",
    "UPDATE accounts SET current_gen = 0, current_key = x'00' WHERE user = 'u-c'",
    "UPDATE accounts SET status = 'weird' WHERE user = 'u-c'",
    "UPDATE accounts SET max_gen = 5, pending_gen = 5, pending_key = x'0102', pending_expires = 1 WHERE user = 'u-c'",
    "UPDATE accounts SET max_gen = -1 WHERE user = 'u-c'",
    "UPDATE accounts SET max_gen = 1, pending_gen = 1, pending_key = zeroblob(32), pending_expires = 1, last_rotation_id = zeroblob(16), last_rotation_gen = 1 WHERE user = 'u-c'",
  ];
  for (const sql of corruptions) {
    store.db.exec("UPDATE accounts SET status = 'active', current_gen = 0, current_key = NULL, pending_gen = NULL, pending_key = NULL, pending_expires = NULL, max_gen = 0 WHERE user = 'u-c'");
    assert.ok(store.getByUser('u-c'));
    store.db.exec(sql);
    assert.throws(() => store.getByUser('u-c'), isCorrupt, sql);
    assert.throws(() => store.installPending('u-c', key(1), sealed(1), FAR, id(9)), isCorrupt, sql);
  }
});

test('a second connection to the same file (another business server) sees the same accounts', () => {
  const other = new SqliteBizStore(file, storageKey);
  try {
    assert.is(other.getByUser('u-1')!.currentGen, 2);
    const v = other.db.prepare('SELECT MAX(version) AS v FROM schema_version').get() as { v: number };
    assert.is(v.v, 5);
    assert.is(String(other.db.pragma('journal_mode', { simple: true })), 'wal');
  } finally {
    other.close();
  }
});

test('login keys are stored only wrapped: no plaintext key in the database, another storage key or another row opens nothing', () => {
  const plain = new Uint8Array(32).fill(0xc3);
  store.createAccount('acct-w1', 'u-w1');
  store.createAccount('acct-w2', 'u-w2');
  store.installPending('u-w1', plain, sealed(9), FAR, id(9));
  assert.equal(store.getByUser('u-w1')!.pendingKey, plain);
  const row = store.db.prepare('SELECT pending_key FROM accounts WHERE user = ?').get('u-w1') as { pending_key: Uint8Array };
  assert.is(row.pending_key.length, WRAPPED_KEY_BYTES);
  assert.not.ok(Buffer.from(row.pending_key).includes(Buffer.from(plain)), 'the login key in clear in its row');
  for (const f of [file, `${file}-wal`]) {
    if (existsSync(f)) assert.not.ok(readFileSync(f).includes(Buffer.from(plain)), `the login key in clear in ${f}`);
  }
  const corruptRow = (e: unknown) => e instanceof ImplementationError && e.code === 'STORE_CORRUPT_ROW';
  // Another business deployment's storage key: the row is refused, never half-read.
  const stranger = new SqliteBizStore(file, new Uint8Array(32).fill(0x11));
  try {
    assert.throws(() => stranger.getByUser('u-w1'), corruptRow);
  } finally {
    stranger.close();
  }
  // The wrapped key copied into another user's row does not open there (bound to the user).
  store.db.prepare('UPDATE accounts SET pending_gen = 1, pending_key = ?, pending_sealed = ?, pending_expires = ?, max_gen = 1, last_rotation_id = ?, last_rotation_gen = 1 WHERE user = ?').run(row.pending_key, sealed(9), FAR, id(9), 'u-w2');
  assert.throws(() => store.getByUser('u-w2'), corruptRow);
  assert.equal(unwrapLoginKey(storageKey, 'u-w1', 1, row.pending_key), plain);
  assert.is(unwrapLoginKey(storageKey, 'u-w2', 1, row.pending_key), null);
});

test('a wrapped key moved to another generation (its own row\'s other column, or a renumbered generation) is refused as STORE_CORRUPT_ROW', () => {
  const corruptRow = (e: unknown) => e instanceof ImplementationError && e.code === 'STORE_CORRUPT_ROW';
  store.createAccount('acct-g', 'u-g');
  store.installPending('u-g', key(0x41), sealed(1), FAR, id(0x41));
  assert.is(store.promote('u-g', 1), true);
  store.installPending('u-g', key(0x42), sealed(2), FAR, id(0x42));
  const a = store.getByUser('u-g')!;
  assert.equal([a.currentGen, a.pendingGen, a.currentKey, a.pendingKey], [1, 2, key(0x41), key(0x42)]);
  const snapshot = store.db.prepare('SELECT * FROM accounts WHERE user = ?').get('u-g') as Record<string, unknown>;
  const restore = () => store.db.prepare('UPDATE accounts SET current_gen = ?, current_key = ?, pending_gen = ?, pending_key = ?, max_gen = ?, last_rotation_gen = ? WHERE user = ?')
    .run(snapshot.current_gen, snapshot.current_key, snapshot.pending_gen, snapshot.pending_key, snapshot.max_gen, snapshot.last_rotation_gen, 'u-g');
  const moves = [
    // generation 2's key into generation 1's column: a login with gen 1 would verify under the new key.
    "UPDATE accounts SET current_key = pending_key WHERE user = 'u-g'",
    // and the other way round: the old key offered as the pending generation.
    "UPDATE accounts SET pending_key = current_key WHERE user = 'u-g'",
    // the current key renumbered as a generation it never was.
    "UPDATE accounts SET current_gen = 3, max_gen = 4, pending_gen = 4, last_rotation_gen = 4 WHERE user = 'u-g'",
  ];
  for (const sql of moves) {
    restore();
    assert.ok(store.getByUser('u-g'));
    store.db.exec(sql);
    assert.throws(() => store.getByUser('u-g'), corruptRow, sql);
    assert.throws(() => store.promote('u-g', 2), corruptRow, sql);
  }
  // The login path refuses it too, for the generation whose key was moved.
  restore();
  store.db.exec(moves[0]!);
  assert.throws(() => store.loginKey('u-g', 1, Date.now()), corruptRow);
  restore();
  assert.equal(store.loginKey('u-g', 1, Date.now())!.key, key(0x41));
  assert.equal(store.loginKey('u-g', 2, Date.now())!.key, key(0x42));
});

test('loginKey: the current or a usable pending generation; null for an unknown user, another generation or an expired pending one', () => {
  const now = Date.now();
  assert.equal(store.loginKey('u-g', 1, now), { key: key(0x41), pending: false, active: true });
  assert.equal(store.loginKey('u-g', 2, now), { key: key(0x42), pending: true, active: true });
  assert.is(store.loginKey('u-g', 3, now), null);
  assert.is(store.loginKey('u-g', 0, now), null);
  assert.is(store.loginKey('u-nobody', 1, now), null);
  assert.is(store.loginKey('u-g', 2, FAR + 1), null, 'expired while a current key exists');
  store.setStatus('u-g', 'disabled');
  assert.is(store.loginKey('u-g', 1, now)!.active, false);
  store.setStatus('u-g', 'active');
});

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
    assert.is((m.db.prepare('SELECT MAX(version) AS v FROM schema_version').get() as { v: number }).v, 5);
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
const corruptRow = (e: unknown) => e instanceof ImplementationError && e.code === 'STORE_CORRUPT_ROW';

test.run();
