// The registration server's cache of the firmware, region and server tables (tables-cache.ts,
// issue 15), on both back ends: its answers equal the store's own through writes by another
// connection and another process; a revoked firmware, a removed server and a corrupt row are
// seen at the very next read; a load that raced a write is not kept. End to end: a registration
// after a revocation by another connection is REG_FIRMWARE_REFUSED, a removed server is not offered.
import { test, suite } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import type { RegStore, BizServerRecord, RegionRecord } from './store.ts';
import { openRegStore, PgRegStore } from './pg-store.ts';
import { TablesCache, withTablesCache } from './tables-cache.ts';
import { chooseServers } from './placement.ts';
import { backends } from '../server-kit/store-backends.ts';
import { rejects, implCode as code } from '../server-kit/test-assert.ts';
import type { StorePlace } from '../server-kit/store-choice.ts';
import { testStack } from '../deploy/test-util.ts';
import { makeDevice, register } from '../server-kit/test-device.ts';

async function exec(reg: RegStore, sql: string): Promise<void> {
  if (reg instanceof PgRegStore) await reg.pool.query(sql);
  else (reg as unknown as { db: { exec(s: string): void } }).db.exec(sql);
}

/** Another process: a child node opens the store at `place` and runs `body` (an async function of `s`, the store). */
function inChild(place: StorePlace, body: string): void {
  const mod = join(import.meta.dirname, 'pg-store.ts');
  const script = `import { openRegStore } from ${JSON.stringify(mod)}; const s = await openRegStore(JSON.parse(process.env.REG_PLACE)); try { await (${body})(s); } finally { await s.close(); }`;
  execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { env: { ...process.env, REG_PLACE: JSON.stringify(place) }, stdio: ['ignore', 'ignore', 'inherit'] });
}

const M = (b: number) => b.toString(16).padStart(2, '0').repeat(32);
const server = (name: string, region: string) => ({ name, region, url: `ws://h/${name}`, adminUrl: 'http://h/admin' });

test('a load that raced a write is not kept: the next read loads again', async () => {
  let version = 1;
  let rows: RegionRecord[] = [{ cidr: '10.0.0.0/8', region: 'old' }];
  let release: () => void = () => {};
  const store = {
    tablesVersion: async () => version,
    listRegions: async () => {
      const snapshot = rows;
      await new Promise<void>((r) => (release = r));
      return snapshot.map((x) => ({ ...x }));
    },
  } as unknown as RegStore;
  const cache = new TablesCache(store);
  const slow = cache.listRegions();
  await new Promise((r) => setImmediate(r));
  // A write lands while the first load is on its way; a second reader sees the new version.
  version = 2;
  rows = [{ cidr: '10.0.0.0/8', region: 'new' }];
  const first = release;
  const fresh = cache.listRegions();
  await new Promise((r) => setImmediate(r));
  // The fresh load finishes first, then the slow one (found by review: in the other order the
  // fresh load overwrote the slow one anyway, and the test passed without the guard).
  release();
  assert.is((await fresh)[0]!.region, 'new');
  first();
  assert.is((await slow)[0]!.region, 'old');
  // Had the old load been kept under version 2 (over the fresh one), this would answer 'old' from memory.
  assert.is((await cache.listRegions())[0]!.region, 'new');
});

test('more measurements asked for than kept: answers stay right', () => {
  const accepted = new Set([M(1), M(2)]);
  let reads = 0;
  const store = { tablesVersion: () => 7, firmwareAccepted: (m: string) => (reads++, accepted.has(m)) } as unknown as RegStore;
  const cache = new TablesCache(store, 4);
  for (let round = 0; round < 3; round++) {
    for (let b = 0; b < 10; b++) assert.is(cache.firmwareAccepted(M(b)), accepted.has(M(b)));
  }
  assert.ok(reads > 10, 'verdicts past the bound are read again');
});

test('a flood of unknown measurements does not evict the accepted ones: the firmware phones run stays answered from memory', () => {
  let reads = 0;
  const store = { tablesVersion: () => 7, firmwareAccepted: (m: string) => (reads++, m === M(1)) } as unknown as RegStore;
  const cache = new TablesCache(store, 4);
  assert.is(cache.firmwareAccepted(M(1)), true);
  for (let b = 100; b < 140; b++) assert.is(cache.firmwareAccepted(M(b)), false);
  const before = reads;
  assert.is(cache.firmwareAccepted(M(1)), true);
  assert.is(reads, before, 'the accepted verdict was not dropped by 40 refusals');
  assert.is(cache.firmwareAccepted(M(100)), false, 'a refusal dropped past the bound is read again, still refused');
  assert.is(reads, before + 1);
});

test.run();

for (const b of backends()) {
  const test = suite(`tables cache [${b.name}]`);
  let place: StorePlace;
  let raw: RegStore;
  let other: RegStore;
  let cache: TablesCache;
  let cached: RegStore;
  test.before(async () => {
    place = b.place('reg');
    raw = await b.opening(openRegStore(place));
    other = await openRegStore(place);
    cache = new TablesCache(raw);
    cached = withTablesCache(raw, cache);
  });
  test.after(async () => {
    await raw?.close();
    await other?.close();
    await b.cleanup();
  });

  test('cached answers equal the uncached ones through writes by another connection; unchanged tables are answered from memory', async () => {
    let seed = 15;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    const names = ['biz-a', 'biz-b', 'biz-c'];
    for (let step = 0; step < 60; step++) {
      switch (rnd(5)) {
        case 0: await other.addFirmware(M(rnd(6)), rnd(3)); break;
        case 1: await other.setFirmwareStatus(M(rnd(6)), rnd(2) ? 'accepted' : 'revoked'); break;
        case 2: await other.syncTopology(names.filter(() => rnd(2)).map((n) => server(n, rnd(2) ? 'east' : 'west')), rnd(2) ? [{ cidr: '10.0.0.0/8', region: 'east' }] : [{ cidr: '10.1.0.0/16', region: 'west' }, { cidr: '10.0.0.0/8', region: 'east' }]); break;
        case 3: await other.setServerHealth(names[rnd(3)]!, rnd(2) === 0, rnd(9)); break;
        default: break; // no write: the next reads come from memory
      }
      for (let k = 0; k < 6; k++) assert.is(await cached.firmwareAccepted(M(k)), await raw.firmwareAccepted(M(k)), `step ${step} firmware ${k}`);
      const [regions, servers] = [await cached.listRegions(), await cached.listServers()];
      assert.equal(regions, await raw.listRegions(), `step ${step} regions`);
      assert.equal(servers, await raw.listServers(), `step ${step} servers`);
      assert.equal(chooseServers('10.1.2.3', regions, servers), chooseServers('10.1.2.3', await raw.listRegions(), await raw.listServers()), `step ${step} placement`);
    }
    const before = { ...cache.stats };
    await cached.listServers();
    await cached.listRegions();
    assert.is(await cached.firmwareAccepted(M(1)), await raw.firmwareAccepted(M(1)));
    assert.equal([cache.stats.hits - before.hits, cache.stats.loads - before.loads], [3, 0], 'no write: all three from memory');
    assert.ok(Object.isFrozen(await cached.listServers()), 'the kept list cannot be changed by a caller');
  });

  test('a firmware revoked by another process is refused at the next check, never answered accepted from memory', async () => {
    const m = M(0xa1);
    await other.addFirmware(m, 1);
    assert.is(await cached.firmwareAccepted(m), true);
    assert.is(await cached.firmwareAccepted(m), true);
    inChild(place, `async (s) => { if (!(await s.setFirmwareStatus(${JSON.stringify(m)}, 'revoked'))) throw new Error('not revoked'); }`);
    assert.is(await cached.firmwareAccepted(m), false);
    inChild(place, `async (s) => { await s.setFirmwareStatus(${JSON.stringify(m)}, 'accepted'); }`);
    assert.is(await cached.firmwareAccepted(m), true);
  });

  test("a server removed by another process is not offered at the next placement; a poller's health copy does not move the version (placement takes health from its own process)", async () => {
    await other.syncTopology([server('biz-a', 'east'), server('biz-b', 'east')], [{ cidr: '10.0.0.0/8', region: 'east' }]);
    const names = async () => chooseServers('10.2.3.4', await cached.listRegions(), await cached.listServers()).map((s: BizServerRecord) => s.name);
    assert.equal(await names(), ['biz-a', 'biz-b']);
    inChild(place, `async (s) => { await s.syncTopology([{ name: 'biz-b', region: 'east', url: 'ws://h/biz-b', adminUrl: 'http://h/admin' }], [{ cidr: '10.0.0.0/8', region: 'east' }]); }`);
    assert.equal(await names(), ['biz-b']);
    // Every registration server's poller writes its health copy each interval, for operators: were
    // that a version change, the cache would be dropped every poll (found by review).
    const v = await other.tablesVersion();
    await other.setServerHealth('biz-b', false, 3);
    await other.setServerHealth('biz-b', true, 4);
    assert.is(await other.tablesVersion(), v, 'health copies leave the version');
    await exec(other, "UPDATE biz_servers SET admin_url = 'http://h2/admin' WHERE name = 'biz-b'");
    assert.is(await other.tablesVersion(), v + 1, 'a column placement reads moves it');
    assert.is((await cached.listServers())[0]!.adminUrl, 'http://h2/admin');
  });

  test('a corrupt row is refused with STORE_CORRUPT_ROW at every read, never answered from memory', async () => {
    const m = M(0xa2);
    await other.addFirmware(m, 1);
    assert.is(await cached.firmwareAccepted(m), true);
    await exec(other, `UPDATE firmware SET status = 'maybe' WHERE measurement = '${m}'`);
    await rejects(async () => cached.firmwareAccepted(m), code('STORE_CORRUPT_ROW'));
    await rejects(async () => cached.firmwareAccepted(m), code('STORE_CORRUPT_ROW'));
    await exec(other, `UPDATE firmware SET status = 'revoked' WHERE measurement = '${m}'`);
    assert.is(await cached.firmwareAccepted(m), false);
    assert.ok((await cached.listServers()).length > 0);
    await exec(other, "UPDATE biz_servers SET url = 'ftp://x' WHERE name = 'biz-b'");
    await rejects(async () => cached.listServers(), code('STORE_CORRUPT_ROW'));
    await rejects(async () => cached.listServers(), code('STORE_CORRUPT_ROW'));
    await exec(other, "UPDATE biz_servers SET url = 'ws://h/biz-b' WHERE name = 'biz-b'");
    assert.is((await cached.listServers())[0]!.url, 'ws://h/biz-b');
    // No version row: nothing is answered, from memory or not.
    await exec(other, 'DELETE FROM tables_version');
    await rejects(async () => cached.firmwareAccepted(m), code('STORE_CORRUPT_ROW'));
    await exec(other, 'INSERT INTO tables_version (id, version) VALUES (1, 99)');
    assert.is(await cached.firmwareAccepted(m), false);
  });

  test.run();
}

const e2e = suite('tables cache: registrations');
e2e('a firmware revoked and a server removed by another connection: the next registration is REG_FIRMWARE_REFUSED, then the server is not offered', async () => {
  const stack = await testStack();
  try {
    await stack.enroll({ serial: 'SN-TC1', keyVersion: 1 });
    const url = stack.urlFor('reg-primary');
    const dev = makeDevice(stack.ring, 'SN-TC1', 1, new Uint8Array(32).fill(0x0d));
    const hex = Buffer.from(dev.measurement).toString('hex');
    await stack.regStore.addFirmware(hex, 3);
    const first = await register(url, 'reg-primary', dev);
    assert.is(first.kind, 'cred');
    const offered = first.kind === 'cred' ? first.reply.servers.map((s) => s.name) : [];
    assert.ok(offered.length >= 2, `the test stack offers several business servers: ${offered}`);
    assert.is((await register(url, 'reg-primary', dev)).kind, 'cred', 'served again from memory');
    await stack.regStore.setFirmwareStatus(hex, 'revoked');
    assert.equal(await register(url, 'reg-primary', dev), { kind: 'error', code: 'REG_FIRMWARE_REFUSED', closeCode: 1008 });
    await stack.regStore.setFirmwareStatus(hex, 'accepted');
    const servers = await stack.regStore.listServers();
    const regions = await stack.regStore.listRegions();
    const gone = offered[0]!;
    await stack.regStore.syncTopology(servers.filter((s) => s.name !== gone), regions);
    const next = await register(url, 'reg-primary', dev);
    assert.is(next.kind, 'cred');
    assert.equal(next.kind === 'cred' ? next.reply.servers.map((s) => s.name) : null, offered.filter((n) => n !== gone));
  } finally {
    await stack.stop();
  }
});
e2e.run();
