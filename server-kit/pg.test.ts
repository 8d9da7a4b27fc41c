// server-kit/pg.ts against the real PostgreSQL (PG_TEST_URL, default the local one): migrations
// applied once under the advisory lock by servers starting together, a database ahead of the
// build refused, a serialization failure retried, an int8 beyond 2^53 refused, bytea as
// Uint8Array, every pooled connection in its own schema. PostgreSQL unreachable = FAIL.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import pg from 'pg';
import { randomBytes } from 'node:crypto';
import { openPool, openMigrated, migrate, tx, testSchema, dumpSchema, redactUrl, pgUrl, testPgUrl, type PgMigration } from './pg.ts';
import { rejects, implCode as code } from './test-assert.ts';

const made: { drop(): Promise<void> }[] = [];
const fresh = () => {
  const s = testSchema();
  made.push(s);
  return s;
};
test.after(async () => {
  for (const s of made) await s.drop();
});

test('five servers migrating one schema at once: each step runs once, schema_version counts them', async () => {
  const s = fresh();
  let fnRuns = 0;
  const steps: PgMigration[] = [
    'CREATE TABLE t (id INTEGER PRIMARY KEY, v BIGINT)',
    async (c) => {
      fnRuns++;
      await c.query('INSERT INTO t (id, v) VALUES (1, 10)');
    },
    'ALTER TABLE t ADD COLUMN b BYTEA',
  ];
  const pools = await Promise.all([...Array(5).keys()].map(() => openMigrated(s.url, { schema: s.schema }, steps)));
  try {
    assert.is(fnRuns, 1, 'the function step ran once');
    const { rows } = await pools[0]!.query('SELECT version FROM schema_version ORDER BY version');
    assert.equal(rows.map((r) => r.version), [1, 2, 3]);
    assert.equal((await pools[4]!.query('SELECT * FROM t')).rows, [{ id: 1, v: 10, b: null }]);
    // A build that knows fewer steps than the database has: refused, nothing run.
    await rejects(() => migrate(pools[0]!, s.schema, steps.slice(0, 2)), code('STORE_SCHEMA_NEWER'));
  } finally {
    for (const p of pools) await p.end();
  }
});

test('a failing step rolls the whole migration back: nothing of it stays, the next start retries', async () => {
  const s = fresh();
  await rejects(() => openMigrated(s.url, { schema: s.schema }, ['CREATE TABLE a (x INTEGER)', 'CREATE TABLE a (x INTEGER)']), (e) => (e as { code?: string }).code === '42P07');
  const p = await openMigrated(s.url, { schema: s.schema }, ['CREATE TABLE a (x INTEGER)', 'CREATE TABLE b (x INTEGER)']);
  try {
    assert.equal((await p.query('SELECT MAX(version) AS v FROM schema_version')).rows[0], { v: 2 });
  } finally {
    await p.end();
  }
});

test('types: int8 as a number, beyond 2^53 refused (STORE_CORRUPT_ROW); bytea as a Uint8Array; the pool stays in its schema', async () => {
  const s = fresh();
  const p = await openMigrated(s.url, { schema: s.schema }, ['CREATE TABLE n (v BIGINT, b BYTEA)']);
  try {
    await p.query('INSERT INTO n VALUES ($1, $2)', [2 ** 52, new Uint8Array([1, 2, 3])]);
    const [r] = (await p.query('SELECT * FROM n')).rows;
    assert.is(r.v, 2 ** 52);
    assert.ok(r.b instanceof Uint8Array && !Buffer.isBuffer(r.b));
    assert.equal([...r.b], [1, 2, 3]);
    await p.query('UPDATE n SET v = $1', ['9007199254740993']);
    await rejects(() => p.query('SELECT v FROM n'), code('STORE_CORRUPT_ROW'));
    await p.query('UPDATE n SET v = 1');
    // Ten connections at once: every one sees this schema's table, and only it.
    const seen = await Promise.all([...Array(10).keys()].map(async () => (await p.query('SHOW search_path')).rows[0].search_path));
    assert.equal(new Set(seen), new Set([s.schema]));
    assert.equal(Object.keys(await dumpSchema(p, s.schema)), ['n', 'schema_version']);
  } finally {
    await p.end();
  }
  assert.throws(() => openPool(s.url, { schema: 'Bad-Name; DROP' }), code('STORE_CONFIG'));
});

test('tx: committed or rolled back whole; a serialization failure is retried, a limit of attempts kept', async () => {
  const s = fresh();
  const p = await openMigrated(s.url, { schema: s.schema }, ['CREATE TABLE c (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)', 'INSERT INTO c VALUES (1, 0)']);
  try {
    await rejects(() => tx(p, async (c) => {
      await c.query('UPDATE c SET n = 99');
      throw new Error('boom');
    }), (e) => (e as Error).message === 'boom');
    assert.is((await p.query('SELECT n FROM c')).rows[0].n, 0, 'rolled back');
    // Twenty read-modify-write increments at once under SERIALIZABLE: each retried until it
    // commits, none lost.
    await Promise.all([...Array(20).keys()].map(() => tx(p, async (c) => {
      const n = (await c.query('SELECT n FROM c WHERE id = 1')).rows[0].n as number;
      await c.query('UPDATE c SET n = $1 WHERE id = 1', [n + 1]);
    }, { attempts: 50 })));
    assert.is((await p.query('SELECT n FROM c')).rows[0].n, 20);
    // One attempt only: a conflict surfaces as the 40001 it is.
    const one = await Promise.allSettled([...Array(6).keys()].map(() => tx(p, async (c) => {
      const n = (await c.query('SELECT n FROM c WHERE id = 1')).rows[0].n as number;
      await new Promise((r) => setTimeout(r, 20));
      await c.query('UPDATE c SET n = $1 WHERE id = 1', [n + 1]);
    }, { attempts: 1 })));
    const failed = one.filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
    assert.ok(failed.length >= 1 && failed.every((r) => r.reason.code === '40001'), JSON.stringify(failed.map((r) => r.reason.code)));
    assert.is((await p.query('SELECT n FROM c')).rows[0].n, 20 + one.length - failed.length);
  } finally {
    await p.end();
  }
});

test('synchronous_commit is set on every connection: on by default even in a database whose default is off; off when asked', async () => {
  // A database of its own whose default is off: a pool that left the setting to the server
  // would inherit it (and a store's commit would stop meaning "on disk").
  const db = `t_sc_${randomBytes(5).toString('hex')}`;
  const admin = async (sql: string) => {
    const c = new pg.Client({ connectionString: pgUrl(testPgUrl()) });
    await c.connect();
    try {
      await c.query(sql);
    } finally {
      await c.end();
    }
  };
  await admin(`CREATE DATABASE ${db}`);
  const u = new URL(pgUrl(testPgUrl()));
  u.pathname = `/${db}`;
  const url = u.toString();
  const pools: pg.Pool[] = [];
  try {
    await admin(`ALTER DATABASE ${db} SET synchronous_commit = off`);
    const raw = new pg.Client({ connectionString: url });
    await raw.connect();
    const inherited = (await raw.query('SHOW synchronous_commit')).rows[0].synchronous_commit;
    await raw.end();
    assert.is(inherited, 'off', "the database's own default (what an implicit setting would get)");
    const show = async (p: pg.Pool) => {
      // Several connections at once: every one of the pool's, not only the first, is set.
      const cs = await Promise.all([p.connect(), p.connect(), p.connect()]);
      try {
        return [...new Set(await Promise.all(cs.map(async (c) => (await c.query('SHOW synchronous_commit')).rows[0].synchronous_commit as string)))];
      } finally {
        for (const c of cs) c.release();
      }
    };
    const durable = openPool(url, { schema: 'public' });
    const fast = openPool(url, { schema: 'public', synchronousCommit: false });
    const explicit = openPool(url, { schema: 'public', synchronousCommit: true });
    pools.push(durable, fast, explicit);
    assert.equal(await show(durable), ['on']);
    assert.equal(await show(explicit), ['on']);
    assert.equal(await show(fast), ['off']);
  } finally {
    for (const p of pools) await p.end();
    await admin(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  }
});

test('PostgreSQL not answering: STORE_UNAVAILABLE naming where (never the password), not a hang', async () => {
  const t0 = Date.now();
  await rejects(() => openMigrated('postgres://root:s3cret@127.0.0.1:1/test', { schema: 't_unreachable' }, []), (e) => code('STORE_UNAVAILABLE')(e) && /127\.0\.0\.1:1/.test((e as Error).message) && !(e as Error).message.includes('s3cret'));
  assert.ok(Date.now() - t0 < 5_000);
  assert.is(redactUrl('postgres://u:pw@h:5/d'), 'postgres://u:***@h:5/d');
});

test.run();
