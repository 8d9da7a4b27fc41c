// Every role from its JSON file (`usbphone serve <role> --config FILE`, deploy/roles.ts): the
// operator, the policy server, a business server with its bank in mode 2 through that operator,
// a registration server polling the policy server, two gateways sharing Redis and reporting to
// the policy server; a phone registers through one gateway and logs in through the other, its
// credential reply carrying the policy server's table. Then the hostile configurations: each
// refused with its code (CFG_INVALID naming the key, CFG_NO_KEY, CFG_UNREADABLE). The stores on
// the back end STORE_URL selects: their files' "store" key names a fresh schema on PostgreSQL.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir, onFreePort } from './test-util.ts';
import { ensureStateKeys, ensureOperatorClientFile, DEFAULT_INITIAL_TABLE, type Role } from './config.ts';
import { startRole, type RunningRole } from './roles.ts';
import { enrollDevices, accountsInStore } from './enroll.ts';
import { openRegStore } from '../reg-server/pg-store.ts';
import { openBizStores } from '../biz-server/pg-store.ts';
import { chosenBackend } from '../server-kit/store-backends.ts';
import type { StorePlace } from '../server-kit/store-choice.ts';
import { newClientSecret } from '../operator-server/tokens.ts';
import { ensureServerTls } from '../server-kit/tls-ca.ts';
import { readKeyFile } from '../server-kit/keyfiles.ts';
import { makeDevice, register, DeviceWallet, SCRIPTED_FIRMWARE_HEX } from '../server-kit/test-device.ts';
import { dropNamespace, testNamespace, REDIS_URL } from '../server-kit/redis-faults.ts';
import { setLogLevel } from '../server-kit/log.ts';
import { systemRng } from '../protocol/rng.ts';
import { MasterKeyring } from '../protocol/keys.ts';
import { ImplementationError } from '../protocol/errors.ts';
import { readFileSync } from 'node:fs';

setLogLevel('error');
const t = tempDir('usbphone-roles-');
const ns = testNamespace('roles');
const B = chosenBackend();
const running: RunningRole[] = [];
test.after(async () => {
  for (const r of running.reverse()) await r.stop();
  await dropNamespace(ns);
  await B.cleanup();
  t.remove();
});

const write = (name: string, v: unknown) => {
  const f = join(t.dir, name);
  writeFileSync(f, JSON.stringify(v, null, 2));
  return f;
};
async function start(role: Role, name: string, v: unknown): Promise<Record<string, unknown>> {
  const r = await startRole(role, write(name, v));
  running.push(r);
  return r.event;
}

test('all five roles from their files: a phone registers through one gateway and logs in through the other; the table rides along', async () => {
  const f = ensureStateKeys(t.dir);
  const tls = await ensureServerTls(f.tlsDir, 'operator', ['127.0.0.1']);
  ensureOperatorClientFile(f.operatorClient, () => newClientSecret(systemRng));
  // SQLite: the files the role files name; PostgreSQL: a fresh schema per role, in its "store" key.
  const place = (file: string): StorePlace => (B.name === 'sqlite' ? { kind: 'sqlite', file } : B.place());
  const storeKey = (p: StorePlace) => (p.kind === 'postgres' ? { store: p } : {});
  const [regPlace, bizPlace, opPlace, polPlace] = [place(f.regDb), place(f.bizDb), place(join(t.dir, 'operator.sqlite')), place(join(t.dir, 'policy.sqlite'))];
  const reg = await B.opening(openRegStore(regPlace));
  const { store: biz } = await B.opening(openBizStores(bizPlace, readKeyFile(f.storeKey, 'storage key')));
  await enrollDevices({ reg, accounts: accountsInStore(biz) }, [{ serial: 'SN-ROLES', keyVersion: 1, firmwareMeasurement: SCRIPTED_FIRMWARE_HEX }]);
  await reg.close();
  await biz.close();
  const redis = { url: REDIS_URL, namespace: ns };

  const op = await start('operator', 'operator.json', { port: 0, store: { kind: 'sqlite' }, dbFile: 'operator.sqlite', ...storeKey(opPlace), tls: { cert: tls.certFile, key: tls.keyFile }, tokenKeyFile: 'operator-token.key', clients: ['operator-client.json'] });
  const pol = await start('policy', 'policy.json', { adminPort: 0, adminKeyFile: 'admin.key', dbFile: 'policy.sqlite', ...storeKey(polPlace), policyKeyFile: 'policy.key', initialTable: DEFAULT_INITIAL_TABLE, periodMs: 60_000 });
  const policy = { name: 'policy', adminUrl: pol.adminUrl as string, pollMs: 200 };
  const b = await start('biz', 'biz-east.json', {
    name: 'biz-east', region: 'east', linkPort: 0, adminPort: 0, dbFile: 'biz-accounts.sqlite', ...storeKey(bizPlace), storeKeyFile: 'store.key', linkKeyFile: 'link.key', adminKeyFile: 'admin.key', redis,
    bank: { mode: 2, httpPort: 0, operator: { url: op.url, caFile: tls.caFile, clientFile: 'operator-client.json' } },
  });
  assert.match(String(b.bankPageUrl), /^http:\/\/127\.0\.0\.1:\d+\//);
  const upstreamsOf = (r: Record<string, unknown>) => [{ name: 'reg-primary', linkUrl: `ws://127.0.0.1:${r.linkPort}/` }, { name: 'biz-east', linkUrl: `ws://127.0.0.1:${b.linkPort}/` }];
  // The registration server names gw-2's URL in its reply, so gw-2's port is chosen before
  // either starts: if another process takes it meanwhile, both start again on another port.
  const { r, gw2 } = await onFreePort(async (gw2) => {
    const r = await start('reg', 'reg-primary.json', {
      name: 'reg-primary', linkPort: 0, dbFile: 'reg.sqlite', ...storeKey(regPlace), masterKeyFile: 'master.key', linkKeyFile: 'link.key', adminKeyFile: 'admin.key', redis, policy,
      bizServers: [{ name: 'biz-east', region: 'east', url: `ws://127.0.0.1:${gw2}/biz-east`, adminUrl: `http://127.0.0.1:${b.adminPort}/admin` }],
      regions: [{ cidr: '127.0.0.0/8', region: 'east' }],
    });
    try {
      await start('gateway', 'gw-2.json', { name: 'gw-2', port: gw2, linkKeyFile: 'link.key', adminKeyFile: 'admin.key', upstreams: upstreamsOf(r), redis, policy });
    } catch (e) {
      await running.pop()!.stop(); // the registration server of this try
      throw e;
    }
    return { r, gw2 };
  });
  const g1 = await start('gateway', 'gw-1.json', { name: 'gw-1', port: 0, linkKeyFile: 'link.key', adminKeyFile: 'admin.key', upstreams: upstreamsOf(r), redis, policy });
  assert.is(g1.name, 'gw-1');

  const ring = MasterKeyring.parse(readFileSync(f.masterKey, 'utf8'));
  let res;
  for (let i = 0; i < 100; i++) {
    res = await register(g1.url as string, 'reg-primary', makeDevice(ring, 'SN-ROLES'));
    if (res.kind !== 'error') break;
    await new Promise((x) => setTimeout(x, 50)); // the links come up
  }
  const got = res!;
  assert.ok(got.kind === 'cred', JSON.stringify(got));
  if (got.kind !== 'cred') return;
  assert.ok(got.reply.table instanceof Uint8Array && got.reply.table.length > 0, 'the policy server\'s table rode along');
  const w = new DeviceWallet();
  w.take(got.reply);
  const url = got.reply.servers[0]!.url;
  assert.is(url, `ws://127.0.0.1:${gw2}/biz-east`);
  let gen: number | null = 0;
  for (let i = 0; i < 100 && !gen; i++) {
    gen = await w.login(url, 'biz-east').catch(() => 0);
    if (!gen) await new Promise((x) => setTimeout(x, 50));
  }
  assert.is(gen, 1, 'logged in through the other gateway');
});

test('hostile configurations: refused with their code, naming the key', async () => {
  const cases: [Role, unknown, string, RegExp][] = [
    ['gateway', { port: 1, linkKeyFile: 'link.key', upstreams: [{ name: 'x', linkUrl: 'ws://h/' }], colour: 'red' }, 'CFG_INVALID', /unknown key 'colour'/],
    ['gateway', { port: 1, linkKeyFile: 'link.key', upstreams: [{ name: 'x', linkUrl: 'ws://h/' }], redis: { url: 'http://x', namespace: 'n' } }, 'CFG_INVALID', /redis\.url/],
    ['gateway', { port: 1, linkKeyFile: 'link.key', upstreams: [{ name: 'x', linkUrl: 'ws://h/' }], redis: { url: 'redis://h:1', namespace: 'a b' } }, 'CFG_INVALID', /redis\.namespace/],
    ['gateway', { port: 1, linkKeyFile: 'link.key', upstreams: [{ name: 'x', linkUrl: 'ws://h/' }], attacks: { limit: 0 } }, 'CFG_INVALID', /attacks\.limit/],
    ['gateway', { port: 1, linkKeyFile: 'link.key', upstreams: [{ name: 'x', linkUrl: 'ws://h/' }], policy: { name: 'policy', adminUrl: 'http://h/' } }, 'CFG_INVALID', /adminKeyFile/],
    ['gateway', { port: 1, linkKeyFile: 'missing.key', upstreams: [{ name: 'x', linkUrl: 'ws://h/' }] }, 'CFG_NO_KEY', /missing\.key/],
    ['reg', { name: 'reg-primary', linkPort: 0, store: { kind: 'sqlite' }, bizServers: [{ name: 'biz-east', region: 'east', url: 'ws://h/biz-east', adminUrl: 'http://h/admin' }], regions: [] }, 'CFG_INVALID', /dbFile/],
    ['reg', { name: 'reg-primary', linkPort: 0, store: { kind: 'postgres', url: 'postgres://127.0.0.1/test', schema: 'Reg; DROP SCHEMA public' }, masterKeyFile: 'master.key', linkKeyFile: 'link.key', adminKeyFile: 'admin.key', bizServers: [{ name: 'biz-east', region: 'east', url: 'ws://h/biz-east', adminUrl: 'http://h/admin' }], regions: [] }, 'CFG_INVALID', /store\.schema/],
    ['biz', { name: 'biz-east', region: 'east', linkPort: 0, adminPort: 0, store: { kind: 'mysql' }, storeKeyFile: 'store.key', linkKeyFile: 'link.key', adminKeyFile: 'admin.key' }, 'CFG_INVALID', /store\.kind/],
    // found by review: a typo in a shared store's folder started the server on an empty database
    ['reg', { name: 'reg-primary', linkPort: 0, dbFile: '/nonexistent-usbphone/dir/reg.sqlite', masterKeyFile: 'master.key', linkKeyFile: 'link.key', adminKeyFile: 'admin.key', bizServers: [{ name: 'biz-east', region: 'east', url: 'ws://h/biz-east', adminUrl: 'http://h/admin' }], regions: [] }, 'CFG_INVALID', /folder does not exist/],
    ['biz', { name: 'biz-east', region: 'east', linkPort: 0, adminPort: 0, store: { kind: 'postgres', url: 'mysql://x' }, storeKeyFile: 'store.key', linkKeyFile: 'link.key', adminKeyFile: 'admin.key' }, 'CFG_INVALID', /store\.url/],
    ['biz', { name: 'biz-east', region: 'east', linkPort: 0, adminPort: 0, dbFile: 'b.sqlite', storeKeyFile: 'store.key', linkKeyFile: 'link.key', adminKeyFile: 'admin.key', bank: { mode: 3, httpPort: 0 } }, 'CFG_INVALID', /bank\.mode/],
    ['biz', { name: 'biz-east', region: 'east', linkPort: 0, adminPort: 0, dbFile: 'b.sqlite', storeKeyFile: 'store.key', linkKeyFile: 'link.key', adminKeyFile: 'admin.key', bank: { mode: 2, httpPort: 0, operator: { url: 'http://x', caFile: 'c', clientFile: 'd' } } }, 'CFG_INVALID', /https/],
    ['policy', { adminPort: 0, adminKeyFile: 'admin.key', dbFile: 'p.sqlite', policyKeyFile: 'policy.key', initialTable: DEFAULT_INITIAL_TABLE, periodMs: 10 }, 'CFG_INVALID', /periodMs/],
    ['policy', { adminPort: 0, adminKeyFile: 'admin.key', dbFile: 'p.sqlite', policyKeyFile: 'policy.key', periodMs: 60_000 }, 'CFG_INVALID', /initialTable/],
    ['operator', { port: 0, dbFile: 'o.sqlite', tokenKeyFile: 'operator-token.key' }, 'CFG_INVALID', /tls/],
    ['operator', { port: 0, dbFile: 'o.sqlite', tls: { cert: 'c', key: 'k' }, tokenKeyFile: 'operator-token.key', clients: ['nope.json'] }, 'CFG_UNREADABLE', /nope\.json/],
  ];
  for (const [role, v, code, msg] of cases) {
    const err = await startRole(role, write('bad.json', v)).then(() => null, (e: unknown) => e);
    assert.ok(err instanceof ImplementationError, `${role} ${JSON.stringify(v)}: ${String(err)}`);
    assert.is((err as ImplementationError).code, code, `${role}: ${(err as Error).message}`);
    assert.match((err as Error).message, msg);
  }
  writeFileSync(join(t.dir, 'notjson.json'), '{');
  const e = await startRole('reg', join(t.dir, 'notjson.json')).catch((x: unknown) => x);
  assert.is((e as ImplementationError).code, 'CFG_INVALID');
});

test.run();
