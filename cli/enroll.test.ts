// `usbphone enroll`, run as the real command. `--state` on the back end STORE_URL selects (SQLite
// files, or the state directory's PostgreSQL schemas under scripts/test-pg.mjs), as serve does.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync, spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../deploy/test-util.ts';
import { openRegStore } from '../reg-server/pg-store.ts';
import { openBizStores } from '../biz-server/pg-store.ts';
import { storeChoiceFrom, type StorePlace } from '../server-kit/store-choice.ts';
import { stackSchemaPrefix, stackSchemas, dropStackSchemas } from '../deploy/stack-schemas.ts';
import { readKeyFile } from '../server-kit/keyfiles.ts';
import { startStack } from '../deploy/stack.ts';
import { setLogLevel } from '../server-kit/log.ts';
import { testStack } from '../deploy/test-util.ts';
import { stateFiles } from '../deploy/config.ts';
import { testPgUrl } from '../server-kit/pg.ts';
import { randomBytes } from 'node:crypto';

const t = tempDir();
const choice = storeChoiceFrom(undefined);
/** The stores of a state directory, where `enroll --state` and the stack put them. */
const placesOf = (dir: string): { reg: StorePlace; biz: StorePlace } => {
  if (choice.kind === 'sqlite') return { reg: { kind: 'sqlite', file: join(dir, 'reg.sqlite') }, biz: { kind: 'sqlite', file: join(dir, 'biz-accounts.sqlite') } };
  const s = stackSchemas(stackSchemaPrefix(dir));
  return { reg: { ...choice, schema: s.reg }, biz: { ...choice, schema: s.biz } };
};
test.after(async () => {
  if (choice.kind === 'postgres') {
    for (const dir of [t.dir, join(t.dir, 'live')]) if (existsSync(join(dir, 'pg-schema'))) await dropStackSchemas(choice.url, stackSchemaPrefix(dir));
  }
  t.remove();
});
const cli = (...args: string[]) => {
  const r = spawnSync(process.execPath, [join(import.meta.dirname, '..', 'bin', 'usbphone.js'), 'enroll', ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
};

/** `usbphone enroll` with STORE_URL set to `storeUrl`, or unset (SQLite). */
const cliOn = (storeUrl: string | undefined, ...args: string[]) => {
  const env = { ...process.env };
  if (storeUrl === undefined) delete env.STORE_URL;
  else env.STORE_URL = storeUrl;
  const r = spawnSync(process.execPath, [join(import.meta.dirname, '..', 'bin', 'usbphone.js'), 'enroll', ...args], { encoding: 'utf8', env });
  return { code: r.status, out: r.stdout, err: r.stderr };
};

test('a state directory whose stores are on the other back end is refused (STACK_STORE_MISMATCH, exit 2), by enroll and by the stack; a fresh directory works on either', async () => {
  const pgUrl = testPgUrl();
  const rec = join(t.dir, 'mismatch.json');
  writeFileSync(rec, JSON.stringify({ serial: 'SN-MM1', keyVersion: 1 }));
  const onSqlite = join(t.dir, 'mm-sqlite'), onPg = join(t.dir, 'mm-pg');
  try {
    // Fresh directories: each back end makes its own stores.
    const a = cliOn(undefined, '--state', onSqlite, '--record', rec, '--create');
    assert.is(a.code, 0, a.err);
    assert.ok(existsSync(join(onSqlite, 'reg.sqlite')) && !existsSync(join(onSqlite, 'pg-schema')));
    const b = cliOn(pgUrl, '--state', onPg, '--record', rec, '--create');
    assert.is(b.code, 0, b.err);
    assert.ok(existsSync(join(onPg, 'pg-schema')) && !existsSync(join(onPg, 'reg.sqlite')));
    // The reviewer's attack: SQLite stores, STORE_URL set in the shell -> new, empty PG schemas, exit 0.
    const c = cliOn(pgUrl, '--state', onSqlite, '--record', rec);
    assert.is(c.code, 2, c.err);
    assert.match(c.err, /holds SQLite stores \(reg\.sqlite, biz-accounts\.sqlite.*unset STORE_URL.*\(STACK_STORE_MISMATCH\)/);
    assert.not.ok(existsSync(join(onSqlite, 'pg-schema')), 'no PostgreSQL schema made for it');
    // The other way: a PostgreSQL directory, STORE_URL forgotten -> new SQLite files.
    const d = cliOn(undefined, '--state', onPg, '--record', rec);
    assert.is(d.code, 2, d.err);
    assert.match(d.err, /holds PostgreSQL stores \(schemas s_[0-9a-f]{12}_\*.*set STORE_URL.*\(STACK_STORE_MISMATCH\)/);
    assert.not.ok(existsSync(join(onPg, 'reg.sqlite')), 'no SQLite store made beside it');
    // The stack (`usbphone serve all --state`) refuses the same directories, before making anything in them.
    const refusal = async (start: () => Promise<{ stop(): Promise<void> }>) => {
      try {
        await (await start()).stop();
        return 'started';
      } catch (e) {
        return (e as { code?: string }).code;
      }
    };
    assert.is(await refusal(() => startStack({ stateDir: onSqlite, gatewayPort: 0, store: { kind: 'postgres', url: pgUrl } })), 'STACK_STORE_MISMATCH');
    assert.not.ok(existsSync(join(onSqlite, 'pg-schema')));
    assert.is(await refusal(() => startStack({ stateDir: onPg, gatewayPort: 0, store: { kind: 'sqlite' } })), 'STACK_STORE_MISMATCH');
    assert.not.ok(existsSync(join(onPg, 'reg.sqlite')));
  } finally {
    if (existsSync(join(onPg, 'pg-schema'))) await dropStackSchemas(pgUrl, stackSchemaPrefix(onPg));
  }
});

test('--help, and bad usage exits 2 with a stable code', () => {
  assert.is(cli('--help').code, 0);
  assert.match(cli('--help').out, /usage: usbphone enroll/);
  const r = cli('--state', t.dir);
  assert.is(r.code, 2);
  assert.match(r.err, /^usbphone enroll: .*\(CLI_BAD_ARGS\)\n$/);
  assert.is(cli('--bogus').code, 2);
});

test('a record, then a batch of JSON lines; re-enrolling is idempotent; --disable', async () => {
  const rec = join(t.dir, 'one.json');
  writeFileSync(rec, JSON.stringify({ serial: 'SN-C1', keyVersion: 1, uniqueId: 'ab', imageSha256: '00', regPrimary: 'ws://x/', regBackup: 'ws://y/' }));
  const r1 = cli('--state', t.dir, '--record', rec, '--json');
  assert.is(r1.code, 0, r1.err);
  const [e1] = JSON.parse(r1.out) as { user: string }[];
  assert.match(e1!.user, /^u-[0-9a-f]{20}$/, 'an opaque user name, nothing of the serial');
  assert.equal(JSON.parse(r1.out), [{ serial: 'SN-C1', user: e1!.user, account: 'acct-SN-C1', device: 'created', bizAccount: 'created' }]);
  assert.match(cli('--state', t.dir, '--record', rec).out, /SN-C1: device exists/);
  const batch = join(t.dir, 'batch.jsonl');
  writeFileSync(batch, ['SN-C2', 'SN-C3'].map((s) => JSON.stringify({ serial: s, keyVersion: 1 })).join('\n') + '\n');
  assert.is(cli('--state', t.dir, '--batch', batch).code, 0);
  assert.is(cli('--state', t.dir, '--disable', 'SN-C2').code, 0);
  const p = placesOf(t.dir);
  const reg = await openRegStore(p.reg);
  const { store: biz } = await openBizStores(p.biz, readKeyFile(join(t.dir, 'store.key'), 'storage key'));
  try {
    const status = async (serial: string) => (await reg.getDevice(serial))?.status;
    assert.equal([await status('SN-C1'), await status('SN-C2'), await status('SN-C3')], ['active', 'disabled', 'active']);
    assert.is((await biz.getByUser((await reg.getDevice('SN-C3'))!.user))!.account, 'acct-SN-C3');
  } finally {
    await reg.close();
    await biz.close();
  }
});

test('errors: unknown serial (1), bad record (2), conflicting user (1)', () => {
  const r = cli('--state', t.dir, '--disable', 'SN-NOPE');
  assert.equal([r.code, /ENROLL_UNKNOWN_SERIAL/.test(r.err)], [1, true]);
  const bad = join(t.dir, 'bad.json');
  writeFileSync(bad, '{"serial":"has space","keyVersion":1}');
  const r2 = cli('--state', t.dir, '--record', bad);
  assert.equal([r2.code, /ENROLL_BAD_RECORD/.test(r2.err)], [2, true]);
  const rec = join(t.dir, 'c1.json');
  writeFileSync(rec, '{"serial":"SN-C1","keyVersion":1}');
  const r3 = cli('--state', t.dir, '--record', rec, '--user', 'mallory');
  assert.equal([r3.code, /CONFLICT/.test(r3.err)], [1, true]);
});

/** The command without blocking this process's event loop (a stack in this process must answer it). */
const cliAsync = (...args: string[]) =>
  new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
    const p = spawn(process.execPath, [join(import.meta.dirname, '..', 'bin', 'usbphone.js'), 'enroll', ...args]);
    let out = '', err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('close', (code) => resolve({ code, out, err }));
  });

test('with the servers of --state running, the account is made through their admin API; stopped, in the file', async () => {
  setLogLevel('error');
  const dir = join(t.dir, 'live');
  const stack = await startStack({ stateDir: dir, gatewayPort: 0 });
  const rec = join(t.dir, 'live.json');
  writeFileSync(rec, JSON.stringify({ serial: 'SN-L1', keyVersion: 1 }));
  try {
    const r = await cliAsync('--state', dir, '--record', rec, '--json');
    assert.is(r.code, 0, r.err);
    assert.match(r.err, /through the admin API of biz-east, biz-west/);
    const [l1] = JSON.parse(r.out) as { user: string }[];
    assert.equal(JSON.parse(r.out), [{ serial: 'SN-L1', user: l1!.user, account: 'acct-SN-L1', device: 'created', bizAccount: 'created' }]);
    assert.is((await stack.bizStore.getByUser(l1!.user))!.account, 'acct-SN-L1');
    // A conflict comes back from the server with its code.
    const r2 = await cliAsync('--state', dir, '--record', rec, '--user', 'mallory');
    assert.equal([r2.code, /CONFLICT/.test(r2.err)], [1, true], r2.err);
    // Every business server stopped: the stack withdraws their endpoints, so enrollment is offline.
    await stack.stopBiz('biz-east');
    await stack.stopBiz('biz-west');
    writeFileSync(rec, JSON.stringify({ serial: 'SN-L2', keyVersion: 1 }));
    const r3 = await cliAsync('--state', dir, '--record', rec);
    assert.equal([r3.code, /no server of this state directory is running/.test(r3.err)], [0, true], r3.err);
  } finally {
    await stack.stop();
  }
  writeFileSync(rec, JSON.stringify({ serial: 'SN-L3', keyVersion: 1 }));
  const r4 = await cliAsync('--state', dir, '--record', rec);
  assert.equal([r4.code, /no server of this state directory is running/.test(r4.err)], [0, true], r4.err);
});

test('--config REG.json: the devices into the store the role file names (PostgreSQL here), the accounts through the admin API of the business servers it lists; unreachable servers fail it; --config with --state is bad usage', async () => {
  setLogLevel('error');
  // A deployment on PostgreSQL has no state directory to enroll into (found by review).
  const stack = await testStack({ store: { kind: 'postgres', url: testPgUrl(), schema: `s_${randomBytes(6).toString('hex')}` } });
  try {
    const f = stateFiles(stack.stateDir);
    const biz = ['biz-east', 'biz-west'].map((n) => ({ name: n, region: n.slice(4), url: `ws://h/${n}`, adminUrl: stack.biz(n)!.adminUrl }));
    const reg = (bizServers: unknown[]) => {
      const file = join(t.dir, `reg-${randomBytes(3).toString('hex')}.json`);
      writeFileSync(file, JSON.stringify({ name: 'reg-primary', linkPort: 0, store: { kind: 'postgres', url: testPgUrl(), schema: stack.store.schemas!.reg }, masterKeyFile: f.masterKey, linkKeyFile: f.linkKey, adminKeyFile: f.adminKey, bizServers, regions: [] }));
      return file;
    };
    const rec = join(t.dir, 'pg.json');
    writeFileSync(rec, JSON.stringify({ serial: 'SN-PG1', keyVersion: 1 }));
    const r = await cliAsync('--config', reg(biz), '--record', rec, '--json');
    assert.is(r.code, 0, r.err);
    assert.match(r.err, /devices in the PostgreSQL store of reg-primary; business accounts through the admin API of biz-east, biz-west/);
    const [e] = JSON.parse(r.out) as { user: string; device: string }[];
    assert.is(e!.device, 'created');
    assert.is((await stack.regStore.getDevice('SN-PG1'))!.user, e!.user);
    assert.is((await stack.bizStore.getByUser(e!.user))!.account, 'acct-SN-PG1');
    const d = await cliAsync('--config', reg(biz), '--disable', 'SN-PG1');
    assert.is(d.code, 0, d.err);
    assert.is((await stack.regStore.getDevice('SN-PG1'))!.status, 'disabled');
    // The business servers it lists do not answer: the enrollment fails with its code, exit 1.
    writeFileSync(rec, JSON.stringify({ serial: 'SN-PG2', keyVersion: 1 }));
    const down = await cliAsync('--config', reg([{ name: 'biz-east', region: 'east', url: 'ws://h/biz-east', adminUrl: 'http://127.0.0.1:1/admin' }]), '--record', rec);
    assert.equal([down.code, /ENROLL_FAILED/.test(down.err)], [1, true], down.err);
    const both = cli('--config', reg(biz), '--state', stack.stateDir, '--record', rec);
    assert.equal([both.code, /CLI_BAD_ARGS/.test(both.err)], [2, true], both.err);
  } finally {
    await stack.stop();
  }
});

test.run();
