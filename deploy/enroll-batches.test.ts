// Enrollment in batches (issue 15: a million phones): one transaction per batch in each
// database; every record enrolled as one by one would; a batch that fails (an account bound
// to another) is rolled back in both databases, the batches before it stay, and a second run
// completes the rest.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { enrollInBatches, accountsInStore } from './enroll.ts';
import { tempDir } from './test-util.ts';
import { SqliteRegStore } from '../reg-server/store.ts';
import { SqliteBizStore } from '../biz-server/store.ts';
import { setLogLevel } from '../server-kit/log.ts';

setLogLevel('error');
const t = tempDir();
const rec = (i: number) => ({ serial: `SN-B-${String(i).padStart(6, '0')}`, keyVersion: 1 });

function stores(name: string) {
  const reg = new SqliteRegStore(join(t.dir, `${name}-reg.sqlite`));
  const biz = new SqliteBizStore(join(t.dir, `${name}-biz.sqlite`), new Uint8Array(32).fill(3));
  return { reg, biz, target: { reg, accounts: accountsInStore(biz) }, close: () => (reg.close(), biz.close()) };
}

test('2,500 records in batches of 1,000: every device and account created, 3 transactions; again: all exist', async () => {
  const s = stores('ok');
  try {
    let commits = 0;
    const count = (db: SqliteRegStore['db']) => ({ exec: (sql: string) => ((commits += sql === 'COMMIT' ? 1 : 0), db.exec(sql)), get inTransaction() { return db.inTransaction; } });
    const r = await enrollInBatches([count(s.reg.db), count(s.biz.db)], s.target, Array.from({ length: 2500 }, (_, i) => rec(i)), {}, 1000);
    assert.is(r.length, 2500);
    assert.is(commits, 3 * 2);
    assert.ok(r.every((x) => x.device === 'created' && x.bizAccount === 'created'));
    assert.is(s.reg.getDevice(rec(2499).serial)?.account, `acct-${rec(2499).serial}`);
    const again = await enrollInBatches([s.reg.db, s.biz.db], s.target, Array.from({ length: 2500 }, (_, i) => rec(i)), {}, 1000);
    assert.ok(again.every((x) => x.device === 'exists' && x.bizAccount === 'exists'));
  } finally {
    s.close();
  }
});

test('a batch that fails is rolled back in both databases, the batches before it stay; a second run completes the rest', async () => {
  const s = stores('fail');
  try {
    // Record 1,500's account name is taken by another user: the second batch (1,000..1,999) fails.
    s.biz.createAccount(`acct-${rec(1500).serial}`, 'u-someoneelse00000000');
    let err: unknown = null;
    await enrollInBatches([s.reg.db, s.biz.db], s.target, Array.from({ length: 2500 }, (_, i) => rec(i)), {}, 1000).catch((e) => (err = e));
    assert.is((err as { code?: string })?.code, 'BIZ_ACCOUNT_CONFLICT');
    assert.ok(!s.reg.db.inTransaction && !s.biz.db.inTransaction, 'no transaction left open');
    assert.ok(s.reg.getDevice(rec(999).serial), 'the first batch stays');
    assert.is(s.reg.getDevice(rec(1000).serial), null, "the failed batch's devices rolled back");
    assert.is((s.biz.db.prepare('SELECT count(*) AS n FROM accounts WHERE account = ?').get(`acct-${rec(1000).serial}`) as { n: number }).n, 0, "and its accounts");
    assert.is(s.reg.getDevice(rec(2000).serial), null, 'no batch after it');
    // Without the conflicting record, a second run enrolls the rest.
    const rest = Array.from({ length: 2500 }, (_, i) => rec(i)).filter((_, i) => i !== 1500);
    const r = await enrollInBatches([s.reg.db, s.biz.db], s.target, rest, {}, 1000);
    assert.is(r.filter((x) => x.device === 'created').length, 1499);
  } finally {
    s.close();
  }
});

test.after(() => t.remove());

test.run();
