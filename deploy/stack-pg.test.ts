// The embedded stack with its stores on PostgreSQL (issue 16): the S0 story (first boot, then a
// second boot that rotates and logs in), an S4 bank story and an S3 attack-table story run
// through a stack whose registration, business (bank) and operator stores are PostgreSQL
// schemas; then a registration server process killed with SIGKILL in the middle of a rotation,
// after which the device still logs in and every store passes its integrity check. Each stack
// gets its own schema prefix, dropped afterwards. PostgreSQL unreachable = these tests FAIL.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { runStory } from '../sim/scenarios.ts';
import { testStack } from './test-util.ts';
import { dropStackSchemas, stackSchemas, checkStores } from './stack-schemas.ts';
import { testPgUrl, pgUrl } from '../server-kit/pg.ts';
import { storeChoiceFrom, type StoreChoice } from '../server-kit/store-choice.ts';
import { makeDevice, register, DeviceWallet } from '../server-kit/test-device.ts';
import { setLogSink } from '../server-kit/log.ts';
import { readKeyFile } from '../server-kit/keyfiles.ts';
import { ensureStateKeys, regConfigFrom, bizConfigFrom, policyConfigFrom, DEFAULT_INITIAL_TABLE } from './config.ts';
import { tempDir } from './test-util.ts';
import { ImplementationError } from '../protocol/errors.ts';

setLogSink(() => {});
const url = testPgUrl();
const FAST = { bankScrypt: { ln: 12, r: 8, p: 1 } };
const prefixes: string[] = [];
/** A fresh PostgreSQL place for one stack's stores. */
function pgStore(): StoreChoice & { schema: string } {
  const schema = `s_${randomBytes(6).toString('hex')}`;
  prefixes.push(schema);
  return { kind: 'postgres', url, schema };
}
test.after(async () => {
  for (const p of prefixes) await dropStackSchemas(url, p);
});

/** Rows of a table in a stack's schema, read directly from PostgreSQL: the story really ran on it. */
async function rows(schema: string, sql: string): Promise<Record<string, unknown>[]> {
  const c = new pg.Client({ connectionString: pgUrl(url) });
  await c.connect();
  try {
    return (await c.query(sql.replaceAll('$schema', schema))).rows;
  } finally {
    await c.end();
  }
}

/** Every store of a stack under `prefix` passes its integrity check (opened afresh). */
const integrity = (prefix: string, storageKey?: Uint8Array) => checkStores(url, stackSchemas(prefix), storageKey);

test('STORE_URL selects PostgreSQL when the configuration says nothing; an explicit choice wins; anything else is SQLite', () => {
  assert.equal(storeChoiceFrom(undefined, { STORE_URL: 'postgres://root@127.0.0.1/test' }), { kind: 'postgres', url: 'postgres://root@127.0.0.1/test' });
  assert.equal(storeChoiceFrom({ kind: 'sqlite' }, { STORE_URL: 'postgres://x/y' }), { kind: 'sqlite' });
  assert.equal(storeChoiceFrom(undefined, {}), { kind: 'sqlite' });
  assert.equal(storeChoiceFrom(undefined, { STORE_URL: 'redis://x' }), { kind: 'sqlite' });
});

test("a server configuration's store: absent or sqlite is the SQLite file, postgres needs a postgres:// URL and a valid schema; anything else CFG_INVALID", () => {
  const t = tempDir();
  try {
    const f = ensureStateKeys(t.dir);
    const file = join(t.dir, 'reg.json');
    const reg = (store?: unknown) => regConfigFrom({
      name: 'reg-primary', linkPort: 0, dbFile: f.regDb, masterKeyFile: f.masterKey, linkKeyFile: f.linkKey, adminKeyFile: f.adminKey,
      bizServers: [{ name: 'biz-east', region: 'east', url: 'ws://h/biz-east', adminUrl: 'http://h/admin' }], regions: [], ...(store === undefined ? {} : { store }),
    }, file).store;
    assert.is(reg(), undefined);
    // The same URL from the environment (STORE_URL) is refused where every pool is opened.
    assert.throws(() => pgUrl('postgres://db/x?options=-c%20search_path%3Dreg'), (e: unknown) => e instanceof ImplementationError && e.code === 'STORE_CONFIG');
    assert.is(pgUrl('postgres://db/x?sslmode=disable').startsWith('postgres://'), true);
    assert.equal(reg({ kind: 'sqlite' }), { kind: 'sqlite' });
    assert.equal(reg({ kind: 'postgres', url: 'postgres://u@db:5432/prod', schema: 'reg_eu' }), { kind: 'postgres', url: 'postgres://u@db:5432/prod', schema: 'reg_eu' });
    const biz = bizConfigFrom({ name: 'biz-east', region: 'east', linkPort: 0, adminPort: 0, dbFile: f.bizDb, storeKeyFile: f.storeKey, linkKeyFile: f.linkKey, adminKeyFile: f.adminKey, store: { kind: 'postgres', url: 'postgresql://db/x' } }, file);
    assert.equal(biz.store, { kind: 'postgres', url: 'postgresql://db/x' });
    // The policy server too (it refused PostgreSQL before its process ran on the shared store).
    const pol = policyConfigFrom({ adminPort: 0, adminKeyFile: f.adminKey, policyKeyFile: f.policyKey, initialTable: DEFAULT_INITIAL_TABLE, periodMs: 60_000, store: { kind: 'postgres', url: 'postgres://db/x', schema: 'policy_eu' } }, file);
    assert.equal(pol.store, { kind: 'postgres', url: 'postgres://db/x', schema: 'policy_eu' });
    for (const bad of ['postgres', { kind: 'mysql', url: 'mysql://x' }, { kind: 'postgres' }, { kind: 'postgres', url: 'http://db/x' }, { kind: 'postgres', url: 'postgres://db/x', schema: 'Bad; DROP' },
      // found by review: a URL's ?options= overrode the schema (search_path into another role's store), and keys inside store went unchecked
      { kind: 'postgres', url: 'postgres://db/x?options=-c%20search_path%3Dreg', schema: 'biz' }, { kind: 'postgres', url: 'postgres://db/x', extra: 1 }]) {
      assert.throws(() => reg(bad), (e: unknown) => e instanceof ImplementationError && e.code === 'CFG_INVALID', JSON.stringify(bad));
    }
  } finally {
    t.remove();
  }
});

test('S0 on PostgreSQL: a phone boots, registers and logs in; its second boot rotates the password and logs in', async () => {
  const store = pgStore();
  const lines: string[] = [];
  const r = await runStory('second-boot-rotates', { print: (l) => lines.push(l), world: { store } });
  assert.ok(r.ok, `${r.verdict}\n${lines.join('\n')}`);
  // The rotation is in PostgreSQL: the device row and the account row agree on the generations.
  const [d] = await rows(stackSchemas(store.schema).reg, 'SELECT serial, current_gen, pending_gen, rotations FROM $schema.devices');
  assert.ok(d && (d.rotations as number) >= 2, JSON.stringify(d));
  const [a] = await rows(stackSchemas(store.schema).biz, 'SELECT current_gen, max_gen FROM $schema.accounts');
  assert.ok(a && (a.current_gen as number) >= 1 && a.max_gen === d.pending_gen, `${JSON.stringify(a)} ${JSON.stringify(d)}`);
  assert.equal(await integrity(store.schema), []);
});

test('S4 on PostgreSQL: a bank account opened from the phone, then a login to its page', async () => {
  const store = pgStore();
  const lines: string[] = [];
  const r = await runStory('bank-register-and-login', { print: (l) => lines.push(l), world: { ...FAST, store } });
  assert.ok(r.ok, `${r.verdict}\n${lines.join('\n')}`);
  const s = stackSchemas(store.schema).biz;
  assert.is((await rows(s, 'SELECT COUNT(*)::int AS n FROM $schema.bank_accounts'))[0]!.n, 1);
  assert.ok(((await rows(s, 'SELECT COUNT(*)::int AS n FROM $schema.bank_logins'))[0]!.n as number) >= 1);
  assert.equal(await integrity(store.schema), []);
});

test('S3 on PostgreSQL: a stale attack table is refused by the phone, which keeps the one it holds', async () => {
  const store = pgStore();
  const lines: string[] = [];
  const r = await runStory('stale-table', { print: (l) => lines.push(l), world: { ...FAST, store } });
  assert.ok(r.ok, `${r.verdict}\n${lines.join('\n')}`);
  assert.ok((await rows(stackSchemas(store.schema).reg, 'SELECT COUNT(*)::int AS n FROM $schema.devices'))[0]!.n as number >= 1);
  assert.equal(await integrity(store.schema), []);
});

test('kill -9 of a registration server process mid-rotation on PostgreSQL: the device logs in, the backup re-issues, every store passes its check', async () => {
  const store = pgStore();
  const stack = await testStack({ store });
  const storageKey = readKeyFile(join(stack.stateDir, 'store.key'), 'storage key');
  try {
    assert.equal(stack.store.schemas, stackSchemas(store.schema));
    const [e] = await stack.enroll({ serial: 'SN-PG-K1', keyVersion: 1 });
    const dev = makeDevice(stack.ring, 'SN-PG-K1');
    const w = new DeviceWallet();
    const first = await register(stack.gatewayUrl, 'reg-primary', dev);
    assert.ok(first.kind === 'cred');
    if (first.kind === 'cred') w.take(first.reply);
    assert.is(await w.login(stack.urlFor('biz-east'), 'biz-east'), 1);
    // The primary as a child process on the same PostgreSQL, stopped after its install.
    await stack.stopReg('reg-primary');
    await stack.startReg('reg-primary', { process: 'child', pauseAt: 'afterInstall' });
    try {
      const pending = register(stack.gatewayUrl, 'reg-primary', dev);
      assert.is(await stack.waitPaused('reg-primary'), 'afterInstall');
      await stack.killReg('reg-primary');
      assert.equal(await pending, { kind: 'error', code: 'GW_UPSTREAM_LOST', closeCode: 1013 });
      // The child's install is in the shared business store: the backup re-issues it.
      const b = await register(stack.gatewayUrl, 'reg-backup', dev);
      assert.ok(b.kind === 'cred' && b.reply.gen === 2, JSON.stringify(b));
      if (b.kind === 'cred') w.take(b.reply);
      assert.is(await w.login(stack.urlFor('biz-west'), 'biz-west'), 2);
      const d = (await stack.regStore.getDevice('SN-PG-K1'))!;
      assert.equal([d.reissues, d.pendingGen], [1, 2]);
      assert.is((await stack.bizStore.getByUser(e!.user))!.maxGen, 2);
      assert.not.ok(existsSync(join(stack.stateDir, 'reg.sqlite')), 'no SQLite store was opened: the child ran on PostgreSQL too');
      assert.equal([...(await stack.regStore.check()), ...(await stack.bizStore.check())], []);
      // Every store opened afresh (as a checker after a crash would), the business and bank
      // stores with their storage key; a row really there, so the check is not of an empty store.
      assert.ok(((await rows(stackSchemas(store.schema).biz, 'SELECT COUNT(*)::int AS n FROM $schema.accounts'))[0]!.n as number) >= 1);
      assert.equal(await integrity(store.schema, storageKey), []);
    } finally {
      await stack.killReg('reg-primary');
      await stack.startReg('reg-primary');
    }
  } finally {
    // testStack's stop drops the stack's schemas.
    await stack.stop();
  }
});

test('the integrity check fails on a store a crash could have damaged: a pending generation at or below the current one', async () => {
  const store = pgStore();
  const stack = await testStack({ store });
  try {
    await stack.enroll({ serial: 'SN-PG-K2', keyVersion: 1 });
    await stack.regStore.recordRotation('SN-PG-K2', 3, 3);
    assert.equal(await stack.regStore.check(), ['device SN-PG-K2: pending generation 3 is not above the current 3']);
  } finally {
    await stack.stop();
  }
});

test.run();
