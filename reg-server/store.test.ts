// The registration store (real SQLite), enrollment and placement.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { SqliteRegStore } from './store.ts';
import { SqliteBizStore } from '../biz-server/store.ts';
import { enrollDevices, parseEnrollmentRecords, userNameFor, accountsInStore } from '../deploy/enroll.ts';
import { chooseServers, regionOf } from './placement.ts';
import { tempDir } from '../deploy/test-util.ts';
import { ImplementationError } from '../protocol/errors.ts';
import { USER_RE } from '../protocol/messages.ts';

const t = tempDir();
const reg = new SqliteRegStore(join(t.dir, 'reg.sqlite'));
const biz = new SqliteBizStore(join(t.dir, 'biz.sqlite'), new Uint8Array(32).fill(7));
test.after(() => {
  reg.close();
  biz.close();
  t.remove();
});
const code = (c: string) => (e: unknown) => e instanceof ImplementationError && e.code === c;
async function rejects(f: () => Promise<unknown>, check: (e: unknown) => boolean): Promise<void> {
  try {
    await f();
  } catch (e) {
    assert.ok(check(e), String(e));
    return;
  }
  assert.unreachable('expected a rejection');
}

test('enrollment records: one object, an array, or JSON lines; bad records refused', () => {
  const one = { serial: 'SN-1', keyVersion: 1, uniqueId: 'abc', imageSha256: 'ff' };
  assert.is(parseEnrollmentRecords(JSON.stringify(one)).length, 1);
  assert.is(parseEnrollmentRecords(JSON.stringify([one, { ...one, serial: 'SN-2' }])).length, 2);
  assert.is(parseEnrollmentRecords(`${JSON.stringify(one)}\n${JSON.stringify({ ...one, serial: 'SN-2' })}\n`).length, 2);
  assert.throws(() => parseEnrollmentRecords(''), code('ENROLL_BAD_RECORD'));
  assert.throws(() => parseEnrollmentRecords('{"serial":"bad serial!","keyVersion":1}'), code('ENROLL_BAD_RECORD'));
  assert.throws(() => parseEnrollmentRecords('{"serial":"SN-1","keyVersion":0}'), code('ENROLL_BAD_RECORD'));
  assert.throws(() => parseEnrollmentRecords('{"serial":"SN-1"}\nnot json'), code('ENROLL_BAD_RECORD'));
});

test('enroll: device row + business account, idempotent, key version update, conflicts refused', async () => {
  const accounts = accountsInStore(biz);
  const r = await enrollDevices({ reg, accounts }, [{ serial: 'SN-1', keyVersion: 1, uniqueId: 'u1' }]);
  const u1 = r[0]!.user;
  // The user name is opaque and random: nothing of the serial in it (it travels in clear).
  assert.match(u1, /^u-[0-9a-f]{20}$/);
  assert.not.match(u1, /SN/);
  assert.equal(r, [{ serial: 'SN-1', user: u1, account: 'acct-SN-1', device: 'created', bizAccount: 'created' }]);
  const again = await enrollDevices({ reg, accounts }, [{ serial: 'SN-1', keyVersion: 1 }]);
  assert.equal([again[0]!.device, again[0]!.user], ['exists', u1], 're-enrolling keeps the name');
  assert.equal((await enrollDevices({ reg, accounts }, [{ serial: 'SN-1', keyVersion: 2 }]))[0]!.device, 'updated');
  assert.is(reg.getDevice('SN-1')!.keyVersion, 2);
  assert.is(biz.getByUser(u1)!.account, 'acct-SN-1');
  await rejects(() => enrollDevices({ reg, accounts }, [{ serial: 'SN-1', keyVersion: 2 }], { user: 'someone-else' }), code('BIZ_ACCOUNT_CONFLICT'));
  assert.equal((await enrollDevices({ reg, accounts }, [{ serial: 'SN-9', keyVersion: 1 }], { user: 'alice', account: 'bank-42' }))[0]!.user, 'alice');
  await rejects(() => enrollDevices({ reg, accounts }, [{ serial: 'SN-3', keyVersion: 1 }, { serial: 'SN-4', keyVersion: 1 }], { user: 'x' }), code('ENROLL_USAGE'));
  const k = reg.userNameKey();
  assert.equal(reg.userNameKey(), k, 'one key per deployment, kept');
  assert.ok(USER_RE.test(userNameFor(k, 'S'.repeat(64))));
  assert.is(userNameFor(k, 'SN-1'), u1);
  assert.is.not(userNameFor(new Uint8Array(32), 'SN-1'), u1, 'another deployment, another name');
});

test('disable / enable', () => {
  assert.is(reg.setDeviceStatus('SN-1', 'disabled'), true);
  assert.is(reg.getDevice('SN-1')!.status, 'disabled');
  assert.is(reg.setDeviceStatus('SN-none', 'disabled'), false);
  reg.setDeviceStatus('SN-1', 'active');
});

test('a corrupt device row is refused with STORE_CORRUPT_ROW', () => {
  for (const sql of [
    "UPDATE devices SET status = 'gone' WHERE serial = 'SN-9'",
    "UPDATE devices SET key_version = 300 WHERE serial = 'SN-9'",
    "UPDATE devices SET biz_user = 'bad user' WHERE serial = 'SN-9'",
    "UPDATE devices SET reissues = -1 WHERE serial = 'SN-9'",
    "UPDATE devices SET current_gen = 'x' WHERE serial = 'SN-9'",
  ]) {
    reg.db.exec("UPDATE devices SET status = 'active', key_version = 1, biz_user = 'alice', reissues = 0, current_gen = 0 WHERE serial = 'SN-9'");
    assert.ok(reg.getDevice('SN-9'));
    reg.db.exec(sql);
    assert.throws(() => reg.getDevice('SN-9'), code('STORE_CORRUPT_ROW'), sql);
  }
});

test('placement: region of the most specific CIDR; healthy, least loaded first; alternates after; none unhealthy', () => {
  const regions = [
    { cidr: '127.1.0.0/16', region: 'east' },
    { cidr: '127.2.0.0/16', region: 'west' },
    { cidr: '127.2.5.0/24', region: 'east' },
    { cidr: 'fd00::/8', region: 'west' },
  ];
  assert.is(regionOf('127.1.3.4', regions), 'east');
  assert.is(regionOf('127.2.3.4', regions), 'west');
  assert.is(regionOf('127.2.5.9', regions), 'east');
  assert.is(regionOf('::ffff:127.2.3.4', regions), 'west');
  assert.is(regionOf('fd12::1', regions), 'west');
  assert.is(regionOf('10.0.0.1', regions), null);
  const s = (name: string, region: string, load: number, healthy = true) => ({ name, region, url: `ws://x/${name}`, adminUrl: 'http://x/admin', load, healthy, checkedAt: null });
  const servers = [s('e1', 'east', 5), s('e2', 'east', 1), s('w1', 'west', 0), s('e3', 'east', 0, false)];
  assert.equal(chooseServers('127.1.0.1', regions, servers).map((x) => x.name), ['e2', 'e1', 'w1']);
  assert.equal(chooseServers('127.2.0.1', regions, servers).map((x) => x.name), ['w1', 'e2', 'e1']);
  assert.equal(chooseServers('10.0.0.1', regions, servers).map((x) => x.name), ['w1', 'e2', 'e1']);
  assert.equal(chooseServers('127.1.0.1', regions, servers.map((x) => ({ ...x, healthy: false }))), []);
});

test('topology sync keeps health, replaces regions', () => {
  reg.syncTopology([{ name: 'biz-a', region: 'east', url: 'ws://h/biz-a', adminUrl: 'http://h/admin' }], [{ cidr: '10.0.0.0/8', region: 'east' }]);
  reg.setServerHealth('biz-a', false, 7);
  reg.syncTopology([{ name: 'biz-a', region: 'east', url: 'ws://h2/biz-a', adminUrl: 'http://h/admin' }, { name: 'biz-b', region: 'west', url: 'ws://h/biz-b', adminUrl: 'http://h/admin' }], [{ cidr: '10.1.0.0/16', region: 'west' }]);
  const list = reg.listServers();
  assert.equal(list.map((x) => [x.name, x.healthy, x.load, x.url]), [['biz-a', false, 7, 'ws://h2/biz-a'], ['biz-b', true, 0, 'ws://h/biz-b']]);
  assert.equal(reg.listRegions(), [{ cidr: '10.1.0.0/16', region: 'west' }]);
});

test.run();
