// Rotation steps against a real business server's admin API: the admin answer lost (the
// retry with the same rotation id installs nothing new), an unused secret re-issued, two
// registrations racing, no business server reachable (REG_BIZ_UNAVAILABLE, nothing changes),
// a corrupt sealed secret refused. Both stores on the back end STORE_URL selects (SQLite, or
// PostgreSQL under scripts/test-pg.mjs and make test's PostgreSQL pass).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { rotate, openSealedSecret } from './rotation.ts';
import type { AdminCaller } from '../server-kit/admin-messages.ts';
import { openRegStore } from './pg-store.ts';
import type { RegStore } from './store.ts';
import { chosenBackend, storeConfig, storeSql } from '../server-kit/store-backends.ts';
import { enrollDevices, accountsInStore } from '../deploy/enroll.ts';
import { startBizServer, type BizServer } from '../biz-server/server.ts';
import { AdminClient, AdminError } from '../server-kit/admin-rpc.ts';
import { createLogger, setLogLevel } from '../server-kit/log.ts';
import { MasterKeyring } from '../protocol/keys.ts';
import { ProtocolError, ImplementationError } from '../protocol/errors.ts';
import { passwordLoginKey } from '../protocol/channel.ts';

setLogLevel('error');
const B = chosenBackend();
const adminKey = new Uint8Array(32).fill(6);
const ring = new MasterKeyring([[1, new Uint8Array(32).fill(1)]]);
let biz: BizServer;
let reg: RegStore;

/** The opaque user name enrollment gave a serial. */
let U: (serial: string) => string;
const device = async (serial: string) => (await reg.getDevice(serial))!;
const server = () => ({ name: 'biz-east', region: 'east', url: 'ws://x/biz-east', adminUrl: biz.adminUrl, healthy: true, load: 0, checkedAt: null });
const log = createLogger('test');

test.before(async () => {
  biz = await startBizServer({ name: 'biz-east', region: 'east', host: '127.0.0.1', devicePort: null, linkPort: 0, adminPort: 0, ...storeConfig(B, 'biz'), storageKey: new Uint8Array(32).fill(9), linkKey: new Uint8Array(32), adminKey });
  reg = await B.opening(openRegStore(B.place('reg')));
  await enrollDevices({ reg, accounts: accountsInStore(biz.store) }, [{ serial: 'SN-R1', keyVersion: 1 }, { serial: 'SN-R2', keyVersion: 1 }]);
  const users = new Map([['SN-R1', (await device('SN-R1')).user], ['SN-R2', (await device('SN-R2')).user]]);
  U = (serial) => users.get(serial)!;
});
test.after(async () => {
  await reg.close();
  await biz.close();
  await B.cleanup();
});

/** An admin client whose first `drop` answers are lost after the call took effect. */
function lossy(drop: number): AdminCaller & { calls: number } {
  const real = new AdminClient({ target: 'biz-east', url: biz.adminUrl, key: adminKey });
  const c = {
    calls: 0,
    async call(op: string, args: Parameters<AdminClient['call']>[1]) {
      c.calls++;
      const v = await real.call(op, args);
      if (drop-- > 0) throw new AdminError('ADMIN_UNREACHABLE', 'answer lost');
      return v;
    },
  };
  return c;
}

const deps = (client: AdminCaller, pauseAt?: () => Promise<void>) => ({ store: reg, ring, adminClient: () => client, pendingTtlMs: 60_000, log, pauseAt });
const real = () => new AdminClient({ target: 'biz-east', url: biz.adminUrl, key: adminKey });

test('the admin answer is lost: the retry with the same rotation id returns the same generation', async () => {
  const client = lossy(1);
  const r = await rotate(deps(client), await device('SN-R1'), [server()]);
  assert.is(client.calls, 2);
  assert.equal([r.gen, r.currentGen, r.reissued], [1, 0, false]);
  const a = (await biz.store.getByUser(U('SN-R1')))!;
  assert.equal([a.pendingGen, a.maxGen], [1, 1]);
  assert.equal(a.pendingKey, passwordLoginKey(r.secret, U('SN-R1')));
  assert.equal(openSealedSecret(ring, await device('SN-R1'), a.pendingRotationId!, a.pendingSealed!), r.secret);
  const d = await device('SN-R1');
  assert.equal([d.currentGen, d.pendingGen, d.rotations], [0, 1, 1]);
});

test('an unused pending secret is re-issued, not replaced; once used, the next registration rotates', async () => {
  const first = (await biz.store.getByUser(U('SN-R1')))!;
  const r = await rotate(deps(real()), await device('SN-R1'), [server()]);
  assert.equal([r.gen, r.reissued], [1, true]);
  assert.equal(passwordLoginKey(r.secret, U('SN-R1')), first.pendingKey);
  assert.is((await biz.store.getByUser(U('SN-R1')))!.maxGen, 1);
  assert.is((await device('SN-R1')).reissues, 1);
  await biz.store.promote(U('SN-R1'), 1);
  const r2 = await rotate(deps(real()), await device('SN-R1'), [server()]);
  assert.equal([r2.gen, r2.currentGen, r2.reissued], [2, 1, false]);
});

test('two registrations racing (a retry while the first still runs) cannot undo each other', async () => {
  // A stops before its install; B runs to the end and its reply reaches the device; then A
  // finishes (its reply is lost: the device gave up on it). The device never logged in, so
  // B's secret is all it has: it must still be the pending one.
  let release: () => void = () => {};
  const gate = new Promise<void>((r) => (release = r));
  const a = rotate({ ...deps(real()), pauseAt: (step) => (step === 'beforeInstall' ? gate : undefined) }, await device('SN-R2'), [server()]);
  const b = await rotate(deps(real()), await device('SN-R2'), [server()]);
  release();
  const ra = await a;
  const acct = (await biz.store.getByUser(U('SN-R2')))!;
  assert.equal(acct.pendingKey, passwordLoginKey(b.secret, U('SN-R2')));
  assert.equal([ra.gen, ra.reissued, acct.maxGen], [b.gen, true, b.gen]);
  assert.equal(ra.secret, b.secret);
});

test('no business server answers: REG_BIZ_UNAVAILABLE (1013), nothing recorded', async () => {
  const before = await device('SN-R2');
  const dead = { ...server(), adminUrl: 'http://127.0.0.1:1/admin' };
  try {
    await rotate({ ...deps(real()), adminClient: (s) => new AdminClient({ target: s.name, url: s.adminUrl, key: adminKey, timeoutMs: 500 }) }, before, [dead, dead]);
    assert.unreachable();
  } catch (e) {
    assert.ok(e instanceof ProtocolError && e.code === 'REG_BIZ_UNAVAILABLE' && e.closeCode === 1013);
  }
  assert.equal(await reg.getDevice('SN-R2'), before);
});

test('a sealed secret that does not open is refused (STORE_CORRUPT_ROW), nothing recorded', async () => {
  assert.is(await storeSql(biz.store, 'UPDATE accounts SET pending_sealed = ? WHERE "user" = ?', new Uint8Array(72), U('SN-R2')), 1);
  const before = await device('SN-R2');
  try {
    await rotate(deps(real()), before, [server()]);
    assert.unreachable();
  } catch (e) {
    assert.ok(e instanceof ImplementationError && e.code === 'STORE_CORRUPT_ROW', String(e));
  }
  assert.equal(await reg.getDevice('SN-R2'), before);
});

test.run();
