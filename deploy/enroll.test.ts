// Enrollment through a real business server's admin API (enrollAccount): created, then
// idempotent; an account bound to another refused with BIZ_ACCOUNT_CONFLICT and no device row
// written; an unreachable server skipped, none reachable refused; the running-servers file.
// The stores on the back end STORE_URL selects (SQLite, or PostgreSQL under scripts/test-pg.mjs).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { mkdirSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { enrollDevices, accountsViaAdmin, writeRunningBizServers, readRunningBizServers, runningBizFile, userNameFor } from './enroll.ts';
import { tempDir } from './test-util.ts';
import { openRegStore } from '../reg-server/pg-store.ts';
import type { RegStore } from '../reg-server/store.ts';
import { chosenBackend, storeConfig } from '../server-kit/store-backends.ts';
import { startBizServer, type BizServer } from '../biz-server/server.ts';
import { AdminClient } from '../server-kit/admin-rpc.ts';
import { setLogLevel } from '../server-kit/log.ts';
import { ImplementationError } from '../protocol/errors.ts';
import { rejects } from '../server-kit/test-assert.ts';

setLogLevel('error');
const t = tempDir();
const B = chosenBackend();
const adminKey = new Uint8Array(32).fill(6);
let biz: BizServer;
let reg: RegStore;

/** The opaque user name enrollment gave a serial. */
const U = async (serial: string) => (await reg.getDevice(serial))!.user;
const clients: AdminClient[] = [];
const client = (target: string, url: string, timeoutMs = 3_000) => {
  const c = new AdminClient({ target, url, key: adminKey, timeoutMs });
  clients.push(c);
  return c;
};

test.before(async () => {
  biz = await startBizServer({ name: 'biz-east', region: 'east', host: '127.0.0.1', devicePort: null, linkPort: 0, adminPort: 0, ...storeConfig(B, 'biz'), storageKey: new Uint8Array(32).fill(9), linkKey: new Uint8Array(32), adminKey });
  reg = await B.opening(openRegStore(B.place('reg')));
});
test.after(async () => {
  for (const c of clients) c.close();
  await reg.close();
  await biz.close();
  await B.cleanup();
  t.remove();
});

test('the account is created by the business server (enrollAccount), then exists: idempotent', async () => {
  const accounts = accountsViaAdmin([client('biz-east', biz.adminUrl)]);
  const [r] = await enrollDevices({ reg, accounts }, [{ serial: 'SN-A1', keyVersion: 1 }]);
  assert.equal(r, { serial: 'SN-A1', user: await U('SN-A1'), account: 'acct-SN-A1', device: 'created', bizAccount: 'created' });
  assert.is((await biz.store.getByUser(await U('SN-A1')))!.currentGen, 0);
  const [again] = await enrollDevices({ reg, accounts }, [{ serial: 'SN-A1', keyVersion: 1 }]);
  assert.equal([again!.device, again!.bizAccount], ['exists', 'exists']);
});

test('an account bound to another: BIZ_ACCOUNT_CONFLICT from the server, and no device row', async () => {
  const accounts = accountsViaAdmin([client('biz-east', biz.adminUrl)]);
  await rejects(() => enrollDevices({ reg, accounts }, [{ serial: 'SN-A2', keyVersion: 1 }], { account: 'acct-SN-A1', user: 'u-other' }), (e) => e instanceof ImplementationError && e.code === 'BIZ_ACCOUNT_CONFLICT');
  assert.is(await reg.getDevice('SN-A2'), null);
});

test('an unreachable server is skipped; none reachable: ADMIN_UNREACHABLE and nothing written', async () => {
  const dead = 'http://127.0.0.1:1/admin';
  const [r] = await enrollDevices({ reg, accounts: accountsViaAdmin([client('biz-west', dead, 500), client('biz-east', biz.adminUrl)]) }, [{ serial: 'SN-A3', keyVersion: 1 }]);
  assert.is(r!.bizAccount, 'created');
  await rejects(() => enrollDevices({ reg, accounts: accountsViaAdmin([client('biz-west', dead, 500)]) }, [{ serial: 'SN-A4', keyVersion: 1 }]), (e) => (e as { code?: string }).code === 'ADMIN_UNREACHABLE');
  assert.is(await reg.getDevice('SN-A4'), null);
  assert.is(await biz.store.getByUser(userNameFor(await reg.userNameKey(), 'SN-A4')), null);
  // A request bound to another server does not authenticate: it is not an unreachable one to skip.
  await rejects(() => enrollDevices({ reg, accounts: accountsViaAdmin([client('biz-west', biz.adminUrl)]) }, [{ serial: 'SN-A5', keyVersion: 1 }]), (e) => (e as { code?: string }).code === 'ADMIN_BAD_AUTH');
  assert.throws(() => accountsViaAdmin([]), (e: unknown) => e instanceof ImplementationError && e.code === 'ENROLL_NO_SERVER');
});

test('running servers file: published, withdrawn; a dead process or garbage counts as none', () => {
  const dir = join(t.dir, 'state');
  assert.equal(readRunningBizServers(dir), []);
  writeRunningBizServers(dir, [{ name: 'biz-east', adminUrl: biz.adminUrl }]);
  assert.equal(readRunningBizServers(dir), [{ name: 'biz-east', adminUrl: biz.adminUrl }]);
  writeRunningBizServers(dir, null);
  assert.equal(readRunningBizServers(dir), []);
  // A process that exited without withdrawing its file (kill -9).
  const gone = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout;
  mkdirSync(join(dir, 'run'), { recursive: true });
  writeFileSync(runningBizFile(dir), JSON.stringify({ pid: Number(gone), servers: [{ name: 'biz-east', adminUrl: biz.adminUrl }] }));
  assert.equal(readRunningBizServers(dir), []);
  for (const text of ['', 'not json', '{"pid":"1","servers":[]}', `{"pid":${process.pid}}`]) {
    writeFileSync(runningBizFile(dir), text);
    assert.equal(readRunningBizServers(dir), [], text);
  }
});

test.run();
