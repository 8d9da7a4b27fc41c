// A role file's `"store": {"kind": "postgres", ..., "synchronousCommit": false}` reaches the
// store's connections (issue 16, docs/decisions.md: what a PostgreSQL crash may lose): absent =
// synchronous_commit on, false = off on every connection of the role's pool; anything but a
// boolean is refused with CFG_INVALID naming the key. The embedded stack's store choice
// (StackOptions.store) reaches every role's store the same way, a child reg server's included.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { storeFrom } from './config.ts';
import { openRegStore, PgRegStore } from '../reg-server/pg-store.ts';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { testSchema, testPgUrl } from '../server-kit/pg.ts';
import { testStack } from './test-util.ts';
import { ImplementationError } from '../protocol/errors.ts';

const made: { drop(): Promise<void> }[] = [];
test.after(async () => {
  for (const s of made) await s.drop();
});

async function settingOf(store: Record<string, unknown>): Promise<string> {
  const s = testSchema();
  made.push(s);
  const place = storeFrom({ store: { kind: 'postgres', url: s.url, schema: s.schema, ...store } }, 'reg.json', '.');
  assert.is(place.kind, 'postgres');
  const reg = await openRegStore(place);
  try {
    assert.ok(reg instanceof PgRegStore);
    return (await (reg as PgRegStore).pool.query('SHOW synchronous_commit')).rows[0].synchronous_commit as string;
  } finally {
    await reg.close();
  }
}

test('synchronousCommit from the role file: absent = on, true = on, false = off on the store\'s connections', async () => {
  assert.is(await settingOf({}), 'on');
  assert.is(await settingOf({ synchronousCommit: true }), 'on');
  assert.is(await settingOf({ synchronousCommit: false }), 'off');
});

test('a synchronousCommit that is not a boolean is refused (CFG_INVALID), naming the key', () => {
  for (const v of ['off', 0, null]) {
    assert.throws(() => storeFrom({ store: { kind: 'postgres', url: 'postgres://h/d', synchronousCommit: v } }, 'reg.json', '.'), (e: unknown) => e instanceof ImplementationError && e.code === 'CFG_INVALID' && /synchronousCommit/.test(e.message), String(v));
  }
});

/** PostgreSQL's synchronous_commit on a store's connections, or null for a store not on PostgreSQL. */
async function storeSetting(store: unknown): Promise<string | null> {
  const pool = (store as { pool?: { query(sql: string): Promise<{ rows: { synchronous_commit: string }[] }> } }).pool;
  return pool ? (await pool.query('SHOW synchronous_commit')).rows[0]!.synchronous_commit : null;
}

test("the stack's store choice reaches every role's store: synchronousCommit false = off on the reg, biz, bank, operator and policy stores, and in a child reg server's file; absent = on", async () => {
  for (const synchronousCommit of [false, undefined]) {
    const want = synchronousCommit === false ? 'off' : 'on';
    const schema = `s_${randomBytes(6).toString('hex')}`;
    const stack = await testStack({ store: { kind: 'postgres', url: testPgUrl(), schema, ...(synchronousCommit === undefined ? {} : { synchronousCommit }) } });
    try {
      const biz = stack.biz(stack.dests.biz[0]!)!;
      const stores: [string, unknown][] = [
        ['stack regStore', stack.regStore], ['stack bizStore', stack.bizStore],
        ['reg-primary', stack.reg('reg-primary')!.store], ['biz', biz.store], ['bank', biz.bank?.store],
        ['operator', stack.operator()!.store], ['policy', stack.policy.store],
      ];
      const onPg: string[] = [];
      for (const [name, store] of stores) {
        const v = await storeSetting(store);
        if (v === null) continue;
        onPg.push(name);
        assert.is(v, want, `${name} (synchronousCommit ${synchronousCommit})`);
      }
      assert.equal(onPg, stores.map(([name]) => name), 'every store on PostgreSQL');
      // A child reg server reads its store from the file the stack writes for it.
      await stack.stopReg('reg-backup');
      await stack.startReg('reg-backup', { process: 'child' });
      const cfg = JSON.parse(readFileSync(join(stack.stateDir, 'run', 'reg-backup.json'), 'utf8')) as { store: Record<string, unknown> };
      assert.is(cfg.store.kind, 'postgres');
      assert.is(cfg.store.synchronousCommit, synchronousCommit);
    } finally {
      await stack.stop();
    }
  }
});

test.run();
