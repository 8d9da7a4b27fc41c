// Rotation steps against a real business server's admin API, with the admin answer lost:
// the retry (same rotation id) installs nothing new; with no business server reachable the
// registration fails with REG_BIZ_UNAVAILABLE and nothing changes; a corrupt sealed secret
// is refused before anything is installed.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { rotate, openSealedSecret, type AdminCaller } from './rotation.ts';
import { SqliteRegStore } from './store.ts';
import { enrollDevices } from './enroll.ts';
import { startBizServer, type BizServer } from '../biz-server/server.ts';
import { AdminClient, AdminError } from '../server-kit/admin-rpc.ts';
import { tempDir } from '../server-kit/test-util.ts';
import { createLogger, setLogLevel } from '../server-kit/log.ts';
import { MasterKeyring } from '../protocol/keys.ts';
import { ProtocolError, ImplementationError } from '../protocol/errors.ts';
import { passwordLoginKey } from '../protocol/channel.ts';

setLogLevel('error');
const t = tempDir();
const adminKey = new Uint8Array(32).fill(6);
const ring = new MasterKeyring([[1, new Uint8Array(32).fill(1)]]);
let biz: BizServer;
let reg: SqliteRegStore;
const server = () => ({ name: 'biz-east', region: 'east', url: 'ws://x/biz-east', adminUrl: biz.adminUrl, healthy: true, load: 0, checkedAt: null });
const log = createLogger('test');

test.before(async () => {
  biz = await startBizServer({ name: 'biz-east', region: 'east', host: '127.0.0.1', devicePort: null, linkPort: 0, adminPort: 0, dbFile: join(t.dir, 'biz.sqlite'), linkKey: new Uint8Array(32), adminKey });
  reg = new SqliteRegStore(join(t.dir, 'reg.sqlite'));
  enrollDevices({ reg, biz: biz.store }, [{ serial: 'SN-R1', keyVersion: 1 }, { serial: 'SN-R2', keyVersion: 1 }]);
});
test.after(async () => {
  reg.close();
  await biz.close();
  t.remove();
});

/** An admin client whose first `drop` answers are lost after the call took effect. */
function lossy(drop: number): AdminCaller & { calls: number } {
  const real = new AdminClient(biz.adminUrl, adminKey);
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

test('the admin answer is lost: the retry with the same rotation id returns the same generation', async () => {
  const client = lossy(1);
  const r = await rotate({ store: reg, ring, adminClient: () => client, pendingTtlMs: 60_000, log }, reg.getDevice('SN-R1')!, [server()]);
  assert.is(client.calls, 2);
  assert.equal([r.gen, r.currentGen, r.reissued], [1, 0, false]);
  const a = biz.store.getByUser('u-SN-R1')!;
  assert.equal([a.pendingGen, a.maxGen], [1, 1]);
  assert.equal(a.pendingKey, passwordLoginKey(r.secret, 'u-SN-R1'));
  const d = reg.getDevice('SN-R1')!;
  assert.equal([d.currentGen, d.pendingGen], [0, 1]);
  assert.equal(openSealedSecret(ring, d), r.secret);
});

test('an unused pending secret is re-issued, not replaced', async () => {
  const before = reg.getDevice('SN-R1')!;
  const r = await rotate({ store: reg, ring, adminClient: () => new AdminClient(biz.adminUrl, adminKey), pendingTtlMs: 60_000, log }, before, [server()]);
  assert.equal([r.gen, r.reissued], [1, true]);
  assert.equal(r.secret, openSealedSecret(ring, before));
  assert.is(biz.store.getByUser('u-SN-R1')!.maxGen, 1);
  biz.store.promote('u-SN-R1', 1);
  const r2 = await rotate({ store: reg, ring, adminClient: () => new AdminClient(biz.adminUrl, adminKey), pendingTtlMs: 60_000, log }, reg.getDevice('SN-R1')!, [server()]);
  assert.equal([r2.gen, r2.currentGen, r2.reissued], [2, 1, false]);
});

test('no business server answers: REG_BIZ_UNAVAILABLE (1013), nothing recorded', async () => {
  const before = reg.getDevice('SN-R2')!;
  const dead = { ...server(), adminUrl: 'http://127.0.0.1:1/admin' };
  try {
    await rotate({ store: reg, ring, adminClient: (s) => new AdminClient(s.adminUrl, adminKey, 500), pendingTtlMs: 60_000, log }, before, [dead, dead]);
    assert.unreachable();
  } catch (e) {
    assert.ok(e instanceof ProtocolError && e.code === 'REG_BIZ_UNAVAILABLE' && e.closeCode === 1013);
  }
  assert.equal(reg.getDevice('SN-R2'), before);
});

test('a sealed secret that does not open is refused (STORE_CORRUPT_ROW) before any install', async () => {
  const client = lossy(0);
  await rotate({ store: reg, ring, adminClient: () => client, pendingTtlMs: 60_000, log }, reg.getDevice('SN-R2')!, [server()]);
  reg.db.prepare("UPDATE devices SET sealed_secret = ? WHERE serial = 'SN-R2'").run(new Uint8Array(72));
  const calls = client.calls;
  try {
    await rotate({ store: reg, ring, adminClient: () => client, pendingTtlMs: 60_000, log }, reg.getDevice('SN-R2')!, [server()]);
    assert.unreachable();
  } catch (e) {
    assert.ok(e instanceof ImplementationError && e.code === 'STORE_CORRUPT_ROW');
  }
  assert.is(client.calls, calls);
});

test.run();
