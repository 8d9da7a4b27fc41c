// The business accounts store (real SQLite files): generations, two-phase install/promote,
// idempotent retries, compare-and-set promotion, and refusal of corrupt rows.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { SqliteBizStore } from './store.ts';
import { tempDir } from '../server-kit/test-util.ts';
import { ImplementationError } from '../protocol/errors.ts';

const t = tempDir();
const file = join(t.dir, 'biz.sqlite');
const store = new SqliteBizStore(file);
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

test('installPending: new generation = highest ever + 1, replaces the pending one, keeps current; retry is idempotent', () => {
  assert.equal(store.installPending('u-1', key(1), FAR, id(1), null), { currentGen: 0, pendingGen: 1, installed: true });
  assert.equal(store.installPending('u-1', key(1), FAR, id(1), null), { currentGen: 0, pendingGen: 1, installed: true });
  assert.equal(store.installPending('u-1', key(2), FAR, id(2), null), { currentGen: 0, pendingGen: 2, installed: true });
  assert.equal(store.getByUser('u-1')!.pendingKey, key(2));
  // keepGen: the pending one is still unused -> kept, nothing changes.
  assert.equal(store.installPending('u-1', key(3), FAR, id(3), 2), { currentGen: 0, pendingGen: 2, installed: false });
  assert.equal(store.getByUser('u-1')!.pendingKey, key(2));
  assert.throws(() => store.installPending('u-none', key(1), FAR, id(4), null), (e: unknown) => e instanceof ImplementationError && e.code === 'BIZ_UNKNOWN_USER');
});

test('promote is a compare-and-set on the pending generation', () => {
  assert.is(store.promote('u-1', 1), false);
  assert.is(store.promote('u-1', 2), true);
  let a = store.getByUser('u-1')!;
  assert.equal([a.currentGen, a.pendingGen, a.maxGen], [2, null, 2]);
  assert.equal(a.currentKey, key(2));
  assert.is(store.promote('u-1', 2), false);
  // A rotation that raced the login: the login's generation is no longer pending.
  store.installPending('u-1', key(4), FAR, id(5), null);
  store.installPending('u-1', key(5), FAR, id(6), null);
  assert.is(store.promote('u-1', 3), false);
  assert.is(store.promote('u-1', 4), true);
  a = store.getByUser('u-1')!;
  assert.equal([a.currentGen, a.maxGen], [4, 4]);
  // keepGen naming a generation that was promoted: a new one is installed.
  assert.equal(store.installPending('u-1', key(6), FAR, id(7), 4), { currentGen: 4, pendingGen: 5, installed: true });
});

test('expired pending generations cannot be promoted while a current one exists', () => {
  store.installPending('u-1', key(7), Date.now() - 1, id(8), null);
  assert.is(store.promote('u-1', 6), false);
  assert.is(store.confirm('u-1', 4), true);
  assert.is(store.confirm('u-1', 6), false);
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
  ];
  for (const sql of corruptions) {
    store.db.exec("UPDATE accounts SET status = 'active', current_gen = 0, current_key = NULL, pending_gen = NULL, pending_key = NULL, pending_expires = NULL, max_gen = 0 WHERE user = 'u-c'");
    assert.ok(store.getByUser('u-c'));
    store.db.exec(sql);
    assert.throws(() => store.getByUser('u-c'), isCorrupt, sql);
    assert.throws(() => store.installPending('u-c', key(1), FAR, id(9), null), isCorrupt, sql);
  }
});

test('a second connection to the same file (another business server) sees the same accounts', () => {
  const other = new SqliteBizStore(file);
  try {
    assert.is(other.getByUser('u-1')!.currentGen, 4);
    const v = other.db.prepare('SELECT MAX(version) AS v FROM schema_version').get() as { v: number };
    assert.is(v.v, 1);
    assert.is(String(other.db.pragma('journal_mode', { simple: true })), 'wal');
  } finally {
    other.close();
  }
});

test.run();
