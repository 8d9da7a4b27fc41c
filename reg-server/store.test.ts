// The registration store, on both back ends (SQLite and PostgreSQL: server-kit/store-backends.ts),
// enrollment and placement.
import { test, suite } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import type { RegStore } from './store.ts';
import { openRegStore, PgRegStore } from './pg-store.ts';
import type { BizStore } from '../biz-server/store.ts';
import { openBizStores } from '../biz-server/pg-store.ts';
import { enrollDevices, parseEnrollmentRecords, userNameFor, accountsInStore } from '../deploy/enroll.ts';
import { chooseServers, regionOf } from './placement.ts';
import { tempDir } from '../deploy/test-util.ts';
import { USER_RE } from '../protocol/messages.ts';
import { backends } from '../server-kit/store-backends.ts';
import { rejects, implCode as code } from '../server-kit/test-assert.ts';

const t = tempDir();
test.after(() => t.remove());
/** Raw SQL on a store's own tables (the corruption tests): both back ends. */
async function exec(reg: RegStore, sql: string): Promise<void> {
  if (reg instanceof PgRegStore) await reg.pool.query(sql);
  else (reg as unknown as { db: { exec(s: string): void } }).db.exec(sql);
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

test.run();

for (const b of backends()) {
  const test = suite(`registration store [${b.name}]`);
  let reg: RegStore;
  // The accounts enrollment writes: a business store on the same back end.
  let biz: BizStore;
  test.before(async () => {
    reg = await b.opening(openRegStore(b.place('reg')));
    biz = (await b.opening(openBizStores(b.place('biz'), new Uint8Array(32).fill(7)))).store;
  });
  test.after(async () => {
    await reg?.close();
    await biz?.close();
    await b.cleanup();
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
    assert.is((await reg.getDevice('SN-1'))!.keyVersion, 2);
    assert.is((await biz.getByUser(u1))!.account, 'acct-SN-1');
    await rejects(() => enrollDevices({ reg, accounts }, [{ serial: 'SN-1', keyVersion: 2 }], { user: 'someone-else' }), code('BIZ_ACCOUNT_CONFLICT'));
    await rejects(async () => reg.enrollDevice({ serial: 'SN-1', keyVersion: 2, account: 'other', user: u1 }), code('ENROLL_CONFLICT'));
    await rejects(async () => reg.enrollDevice({ serial: 'bad serial!', keyVersion: 1, account: 'a', user: 'alice' }), code('ENROLL_BAD_RECORD'));
    assert.equal((await enrollDevices({ reg, accounts }, [{ serial: 'SN-9', keyVersion: 1 }], { user: 'alice', account: 'bank-42' }))[0]!.user, 'alice');
    await rejects(() => enrollDevices({ reg, accounts }, [{ serial: 'SN-3', keyVersion: 1 }, { serial: 'SN-4', keyVersion: 1 }], { user: 'x' }), code('ENROLL_USAGE'));
    const k = await reg.userNameKey();
    assert.equal(await reg.userNameKey(), k, 'one key per deployment, kept');
    assert.equal(await reg.userNameKey(new Uint8Array(32).fill(1)), k, 'an ifNew key does not replace the kept one');
    assert.ok(USER_RE.test(userNameFor(k, 'S'.repeat(64))));
    assert.is(userNameFor(k, 'SN-1'), u1);
    assert.is.not(userNameFor(new Uint8Array(32), 'SN-1'), u1, 'another deployment, another name');
  });

  test('disable / enable', async () => {
    assert.is(await reg.setDeviceStatus('SN-1', 'disabled'), true);
    assert.is((await reg.getDevice('SN-1'))!.status, 'disabled');
    assert.is(await reg.setDeviceStatus('SN-none', 'disabled'), false);
    await reg.setDeviceStatus('SN-1', 'active');
    assert.is(await reg.getDevice('SN-none'), null);
  });

  test('rotation, re-issue and confirmation are recorded; a re-issue count restarts with a new pending generation', async () => {
    await reg.recordRotation('SN-1', 0, 1, 1000);
    assert.equal(await reg.recordReissue('SN-1', 0, 1, 2000), 1);
    assert.equal(await reg.recordReissue('SN-1', 0, 1, 3000), 2);
    assert.equal(await reg.recordReissue('SN-1', 1, 2, 4000), 1, 'another pending generation: counted from 1');
    await reg.recordConfirmation('SN-1', 2);
    const d = (await reg.getDevice('SN-1'))!;
    assert.equal([d.currentGen, d.pendingGen, d.rotations, d.reissues, d.confirmedGen, d.rotatedAt], [1, 2, 1, 3, 2, 4000]);
    assert.equal(await reg.recordReissue('SN-none', 0, 1), 0);
  });

  test('firmware: added once, revoked stays revoked, unknown refused, bad input refused', async () => {
    const m = 'ab'.repeat(32);
    assert.is(await reg.firmwareAccepted(m), false);
    assert.is(await reg.addFirmware(m, 3, 10), 'created');
    assert.is(await reg.addFirmware(m, 3, 11), 'exists');
    assert.is(await reg.firmwareAccepted(m), true);
    assert.is(await reg.setFirmwareStatus(m, 'revoked'), true);
    assert.is(await reg.addFirmware(m, 3), 'exists');
    assert.is(await reg.firmwareAccepted(m), false, 'enrolling never un-revokes');
    assert.is(await reg.setFirmwareStatus('cd'.repeat(32), 'accepted'), false);
    assert.equal(await reg.listFirmware(), [{ measurement: m, version: 3, status: 'revoked', addedAt: 10 }]);
    await rejects(async () => reg.addFirmware('AB'.repeat(32), 1), code('ENROLL_BAD_RECORD'));
    await exec(reg, `UPDATE firmware SET status = 'maybe' WHERE measurement = '${m}'`);
    await rejects(async () => reg.firmwareAccepted(m), code('STORE_CORRUPT_ROW'));
    assert.match((await reg.check()).join('\n'), /firmware row/);
    await exec(reg, `UPDATE firmware SET status = 'revoked' WHERE measurement = '${m}'`);
  });

  test('a corrupt device row is refused with STORE_CORRUPT_ROW, and the integrity check lists it', async () => {
    const corruptions = [
      "UPDATE devices SET status = 'gone' WHERE serial = 'SN-9'",
      "UPDATE devices SET key_version = 300 WHERE serial = 'SN-9'",
      "UPDATE devices SET biz_user = 'bad user' WHERE serial = 'SN-9'",
      "UPDATE devices SET reissues = -1 WHERE serial = 'SN-9'",
      "UPDATE devices SET current_gen = -2 WHERE serial = 'SN-9'",
      // SQLite's columns take any type; PostgreSQL's refuse this one at the UPDATE.
      ...(b.name === 'sqlite' ? ["UPDATE devices SET current_gen = 'x' WHERE serial = 'SN-9'"] : []),
    ];
    const heal = "UPDATE devices SET status = 'active', key_version = 1, biz_user = 'alice', reissues = 0, current_gen = 0 WHERE serial = 'SN-9'";
    for (const sql of corruptions) {
      await exec(reg, heal);
      assert.ok(await reg.getDevice('SN-9'));
      assert.equal(await reg.check(), []);
      await exec(reg, sql);
      await rejects(async () => reg.getDevice('SN-9'), code('STORE_CORRUPT_ROW'));
      assert.match((await reg.check()).join('\n'), /device row SN-9/, sql);
    }
    await exec(reg, heal);
    // A pending generation not above the current one: a rotation recorded out of order.
    await reg.recordRotation('SN-9', 5, 4);
    assert.equal(await reg.check(), ['device SN-9: pending generation 4 is not above the current 5']);
    await reg.recordRotation('SN-9', 5, 6);
    assert.equal(await reg.check(), []);
  });

  test('the integrity check lists a tables_version trigger gone, off or on the wrong columns (the registration servers\' cached tables would go stale, or drop at every health poll), and nothing once it is back', async () => {
    assert.equal(await reg.check(), []);
    const sqliteUpdate = (cols: string) => `CREATE TRIGGER biz_servers_update_version AFTER UPDATE${cols} ON biz_servers BEGIN UPDATE tables_version SET version = version + 1; END;`;
    const pgBiz = (update: string, truncate = ' OR TRUNCATE') => `DROP TRIGGER biz_servers_version ON biz_servers; CREATE TRIGGER biz_servers_version AFTER INSERT OR ${update} OR DELETE${truncate} ON biz_servers FOR EACH STATEMENT EXECUTE FUNCTION bump_tables_version()`;
    const healBiz = b.name === 'sqlite' ? `DROP TRIGGER biz_servers_update_version; ${sqliteUpdate(' OF name, region, url, admin_url')}` : pgBiz('UPDATE OF name, region, url, admin_url');
    // [what is done to the store, how it is healed, what check() must say]
    const cases: [string, string, RegExp][] = b.name === 'sqlite'
      ? [
        ['DROP TRIGGER regions_delete_version', 'CREATE TRIGGER regions_delete_version AFTER DELETE ON regions BEGIN UPDATE tables_version SET version = version + 1; END;', /^table regions: no tables_version trigger on DELETE:/],
        // A condition: it may not fire.
        ['DROP TRIGGER regions_delete_version; CREATE TRIGGER regions_delete_version AFTER DELETE ON regions WHEN 0 BEGIN UPDATE tables_version SET version = version + 1; END;', 'DROP TRIGGER regions_delete_version; CREATE TRIGGER regions_delete_version AFTER DELETE ON regions BEGIN UPDATE tables_version SET version = version + 1; END;', /^table regions: no tables_version trigger on DELETE:/],
        // A url change would not be seen (found by review).
        [`DROP TRIGGER biz_servers_update_version; ${sqliteUpdate(' OF healthy')}`, healBiz, /^table biz_servers: a tables_version trigger fires on UPDATE of healthy, not of name, region, url, admin_url/],
        // Every health copy would drop the cache (and, on PostgreSQL, deadlocked: decision 141).
        [`DROP TRIGGER biz_servers_update_version; ${sqliteUpdate('')}`, healBiz, /^table biz_servers: a tables_version trigger fires on UPDATE of any column, not of name, region, url, admin_url/],
      ]
      : [
        ['ALTER TABLE regions DISABLE TRIGGER regions_version', 'ALTER TABLE regions ENABLE TRIGGER regions_version', /^table regions: no tables_version trigger on INSERT, UPDATE, DELETE, TRUNCATE:/],
        // Fires only in replica sessions (found by review).
        ['ALTER TABLE regions ENABLE REPLICA TRIGGER regions_version', 'ALTER TABLE regions ENABLE TRIGGER regions_version', /^table regions: no tables_version trigger on INSERT, UPDATE, DELETE, TRUNCATE:/],
        // TRUNCATE left out (found by review).
        [pgBiz('UPDATE OF name, region, url, admin_url', ''), healBiz, /^table biz_servers: no tables_version trigger on TRUNCATE:/],
        [pgBiz('UPDATE OF healthy'), healBiz, /^table biz_servers: a tables_version trigger fires on UPDATE of healthy, not of name, region, url, admin_url/],
        [pgBiz('UPDATE'), healBiz, /^table biz_servers: a tables_version trigger fires on UPDATE of any column, not of name, region, url, admin_url/],
      ];
    for (const [off, on, says] of cases) {
      await exec(reg, off);
      try {
        const problems = await reg.check();
        assert.is(problems.length, 1, `${off}: ${problems.join('\n')}`);
        assert.match(problems[0]!, says, off);
      } finally {
        await exec(reg, on);
      }
      assert.equal(await reg.check(), [], on);
    }
  });

  test('topology sync keeps health, replaces regions', async () => {
    await reg.syncTopology([{ name: 'biz-a', region: 'east', url: 'ws://h/biz-a', adminUrl: 'http://h/admin' }], [{ cidr: '10.0.0.0/8', region: 'east' }]);
    await reg.setServerHealth('biz-a', false, 7);
    await reg.syncTopology([{ name: 'biz-a', region: 'east', url: 'ws://h2/biz-a', adminUrl: 'http://h/admin' }, { name: 'biz-b', region: 'west', url: 'ws://h/biz-b', adminUrl: 'http://h/admin' }], [{ cidr: '10.1.0.0/16', region: 'west' }]);
    const list = await reg.listServers();
    assert.equal(list.map((x) => [x.name, x.healthy, x.load, x.url]), [['biz-a', false, 7, 'ws://h2/biz-a'], ['biz-b', true, 0, 'ws://h/biz-b']]);
    assert.equal(await reg.listRegions(), [{ cidr: '10.1.0.0/16', region: 'west' }]);
    await reg.syncTopology([], []);
    assert.equal(await reg.listServers(), []);
  });

  test('two stores open the same place at once: one migration, both work', async () => {
    const place = b.place('shared');
    const [x, y] = await Promise.all([openRegStore(place), openRegStore(place)]);
    try {
      await x.enrollDevice({ serial: 'SN-X', keyVersion: 1, account: 'a', user: 'ux' });
      assert.is((await y.getDevice('SN-X'))!.user, 'ux');
      assert.equal(await Promise.all([x.userNameKey(), y.userNameKey()]).then(([p, q]) => p.join() === q.join()), true, 'one user-name key for both');
    } finally {
      await x.close();
      await y.close();
    }
  });

  test.run();
}
