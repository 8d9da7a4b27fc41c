// A role file's `"store": {"kind": "postgres", ..., "synchronousCommit": false}` reaches the
// store's connections (issue 16, docs/decisions.md: what a PostgreSQL crash may lose): absent =
// synchronous_commit on, false = off on every connection of the role's pool; anything but a
// boolean is refused with CFG_INVALID naming the key.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { storeFrom } from './config.ts';
import { openRegStore, PgRegStore } from '../reg-server/pg-store.ts';
import { testSchema } from '../server-kit/pg.ts';
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

test.run();
