// `usbphone serve`, run as the real command: the embedded default in one process, and the
// roles as separate processes from JSON configuration files. The stores follow STORE_URL
// (SQLite, or PostgreSQL under scripts/test-pg.mjs): `serve all` through the stack, the roles'
// files by naming the chosen back end's place in their "store" key.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { tempDir, onFreePort } from '../deploy/test-util.ts';
import { makeDevice, register, DeviceWallet, SCRIPTED_FIRMWARE_HEX } from '../server-kit/test-device.ts';
import { MasterKeyring } from '../protocol/keys.ts';
import { openRegStore } from '../reg-server/pg-store.ts';
import { openBizStores } from '../biz-server/pg-store.ts';
import { chosenBackend } from '../server-kit/store-backends.ts';
import type { StorePlace } from '../server-kit/store-choice.ts';
import { enrollDevices, accountsInStore } from '../deploy/enroll.ts';
import { ensureStateKeys } from '../deploy/config.ts';
import { readKeyFile } from '../server-kit/keyfiles.ts';

const bin = join(import.meta.dirname, '..', 'bin', 'usbphone.js');
const t = tempDir();
const B = chosenBackend();
const procs: ChildProcess[] = [];
test.after(async () => {
  for (const p of procs) p.kill('SIGKILL');
  await Promise.all(procs.map((p) => (p.exitCode === null && p.signalCode === null ? new Promise((r) => p.once('exit', r)) : null)));
  await B.cleanup();
  t.remove();
});

function serve(...args: string[]): Promise<{ proc: ChildProcess; ev: Record<string, unknown>; exit: Promise<number | null> }> {
  const proc = spawn(process.execPath, [bin, 'serve', ...args, '--json'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, USBPHONE_LOG_LEVEL: 'error' } });
  procs.push(proc);
  const exit = new Promise<number | null>((r) => proc.once('exit', (c) => r(c)));
  let err = '';
  proc.stderr!.on('data', (d) => (err += d));
  return new Promise((resolve, reject) => {
    createInterface({ input: proc.stdout! }).once('line', (l) => resolve({ proc, ev: JSON.parse(l), exit }));
    void exit.then((c) => reject(new Error(`serve exited ${c}: ${err}`)));
  });
}

test('usage errors exit 2 with a stable code', () => {
  const run = (...a: string[]) => spawnSync(process.execPath, [bin, 'serve', ...a], { encoding: 'utf8' });
  assert.is(run('--help').status, 0);
  for (const a of [[], ['nope'], ['gateway'], ['all', '--port', 'x']]) {
    const r = run(...a);
    assert.is(r.status, 2, a.join(' '));
    assert.match(r.stderr, /\(CLI_BAD_ARGS\)\n$/);
  }
  const bad = join(t.dir, 'bad.json');
  writeFileSync(bad, '{"port": 1}');
  const r = run('gateway', '--config', bad);
  assert.is(r.status, 2);
  assert.match(r.stderr, /\(CFG_(INVALID|NO_KEY)\)\n$/);
  // Every role reads a file; an unknown key is named, exit 2.
  writeFileSync(bad, '{"colour": "red"}');
  for (const role of ['policy', 'operator']) {
    const x = run(role, '--config', bad);
    assert.is(x.status, 2, role);
    assert.match(x.stderr, /unknown key 'colour'.*\(CFG_INVALID\)\n$/);
  }
});

test('serve all: the embedded default, a device registers and logs in, SIGTERM stops it (exit 0)', async () => {
  const state = join(t.dir, 'all');
  const { proc, ev, exit } = await serve('all', '--state', state, '--port', '0');
  const url = ev.gatewayUrl as string;
  // /healthz is on the gateway's operator port, not the device port.
  const op = (ev.ports as Record<string, number>)['gateway-operator'];
  const h = (await (await fetch(`http://127.0.0.1:${op}/healthz`)).json()) as { upstreams: Record<string, string> };
  assert.equal(h.upstreams, { 'biz-east': 'up', 'biz-west': 'up', 'reg-primary': 'up', 'reg-backup': 'up' });
  const enroll = spawnSync(process.execPath, [bin, 'enroll', '--state', state, '--batch', '-'], { input: JSON.stringify({ serial: 'SN-SRV', keyVersion: 1, firmwareMeasurement: SCRIPTED_FIRMWARE_HEX }), encoding: 'utf8' });
  assert.is(enroll.status, 0, enroll.stderr);
  const ring = MasterKeyring.parse(readFileSync(join(state, 'master.key'), 'utf8'));
  const r = await register(url, 'reg-backup', makeDevice(ring, 'SN-SRV'), { localAddress: '127.2.0.3' });
  assert.ok(r.kind === 'cred');
  if (r.kind !== 'cred') return;
  const w = new DeviceWallet();
  w.take(r.reply);
  assert.is(r.reply.servers[0]!.url, url + 'biz-west');
  assert.is(await w.login(r.reply.servers[0]!.url, 'biz-west'), 1);
  proc.kill('SIGTERM');
  assert.is(await exit, 0);
});

test('serve biz / reg / gateway as separate processes from config files', async () => {
  const dir = join(t.dir, 'roles');
  const f = ensureStateKeys(dir);
  // SQLite: the files ensureStateKeys names; PostgreSQL: a fresh schema each, named in the files.
  const place = (file: string): StorePlace => (B.name === 'sqlite' ? { kind: 'sqlite', file } : B.place());
  const regPlace = place(f.regDb);
  const bizPlace = place(f.bizDb);
  const storeKey = (p: StorePlace) => (p.kind === 'postgres' ? { store: p } : {});
  const reg = await B.opening(openRegStore(regPlace));
  const { store: biz } = await B.opening(openBizStores(bizPlace, readKeyFile(f.storeKey, 'storage key')));
  await enrollDevices({ reg, accounts: accountsInStore(biz) }, [{ serial: 'SN-ROLE', keyVersion: 1, firmwareMeasurement: SCRIPTED_FIRMWARE_HEX }]);
  await reg.close();
  await biz.close();
  const write = (name: string, v: unknown) => {
    writeFileSync(join(dir, name), JSON.stringify(v));
    return join(dir, name);
  };
  const b = await serve('biz', '--config', write('biz.json', { name: 'biz-east', region: 'east', linkPort: 0, adminPort: 0, dbFile: 'biz-accounts.sqlite', ...storeKey(bizPlace), storeKeyFile: 'store.key', linkKeyFile: 'link.key', adminKeyFile: 'admin.key' }));
  // The registration server's file names the gateway's URL, so its port is chosen before either
  // starts: if another process takes it meanwhile, both start again on another port.
  const { r, g } = await onFreePort(async (gwPort) => {
    const r = await serve('reg', '--config', write('reg.json', {
      name: 'reg-primary', linkPort: 0, dbFile: 'reg.sqlite', ...storeKey(regPlace), masterKeyEnv: 'NOT_SET_HERE', masterKeyFile: 'master.key', linkKeyFile: 'link.key', adminKeyFile: 'admin.key',
      bizServers: [{ name: 'biz-east', region: 'east', url: `ws://127.0.0.1:${gwPort}/biz-east`, adminUrl: `http://127.0.0.1:${b.ev.adminPort}/admin` }],
      regions: [{ cidr: '127.1.0.0/16', region: 'east' }],
    }));
    try {
      const g = await serve('gateway', '--config', write('gw.json', {
        port: gwPort, linkKeyFile: 'link.key',
        upstreams: [{ name: 'reg-primary', linkUrl: `ws://127.0.0.1:${r.ev.linkPort}/` }, { name: 'biz-east', linkUrl: `ws://127.0.0.1:${b.ev.linkPort}/` }],
      }));
      return { r, g };
    } catch (e) {
      r.proc.kill('SIGTERM'); // the registration server of this try
      await r.exit;
      throw e;
    }
  });
  const ring = MasterKeyring.parse(readFileSync(f.masterKey, 'utf8'));
  let res;
  for (let i = 0; i < 100; i++) {
    res = await register(g.ev.url as string, 'reg-primary', makeDevice(ring, 'SN-ROLE'));
    if (res.kind !== 'error') break;
    await new Promise((x) => setTimeout(x, 50)); // the gateway's links come up
  }
  assert.ok(res!.kind === 'cred');
  if (res!.kind !== 'cred') return;
  const w = new DeviceWallet();
  w.take(res!.reply);
  assert.is(await w.login(res!.reply.servers[0]!.url, 'biz-east'), 1);
  for (const p of [g, r, b]) {
    p.proc.kill('SIGTERM');
    assert.is(await p.exit, 0);
  }
});

test.run();
