// `usbphone enroll`, run as the real command.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../deploy/test-util.ts';
import { SqliteRegStore } from '../reg-server/store.ts';
import { SqliteBizStore } from '../biz-server/store.ts';
import { readKeyFile } from '../server-kit/keyfiles.ts';

const t = tempDir();
test.after(() => t.remove());
const cli = (...args: string[]) => {
  const r = spawnSync(process.execPath, [join(import.meta.dirname, '..', 'bin', 'usbphone.js'), 'enroll', ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
};

test('--help, and bad usage exits 2 with a stable code', () => {
  assert.is(cli('--help').code, 0);
  assert.match(cli('--help').out, /usage: usbphone enroll/);
  const r = cli('--state', t.dir);
  assert.is(r.code, 2);
  assert.match(r.err, /^usbphone enroll: .*\(CLI_BAD_ARGS\)\n$/);
  assert.is(cli('--bogus').code, 2);
});

test('a record, then a batch of JSON lines; re-enrolling is idempotent; --disable', () => {
  const rec = join(t.dir, 'one.json');
  writeFileSync(rec, JSON.stringify({ serial: 'SN-C1', keyVersion: 1, uniqueId: 'ab', imageSha256: '00', regPrimary: 'ws://x/', regBackup: 'ws://y/' }));
  const r1 = cli('--state', t.dir, '--record', rec, '--json');
  assert.is(r1.code, 0, r1.err);
  assert.equal(JSON.parse(r1.out), [{ serial: 'SN-C1', user: 'u-SN-C1', account: 'acct-SN-C1', device: 'created', bizAccount: 'created' }]);
  assert.match(cli('--state', t.dir, '--record', rec).out, /SN-C1: device exists/);
  const batch = join(t.dir, 'batch.jsonl');
  writeFileSync(batch, ['SN-C2', 'SN-C3'].map((s) => JSON.stringify({ serial: s, keyVersion: 1 })).join('\n') + '\n');
  assert.is(cli('--state', t.dir, '--batch', batch).code, 0);
  assert.is(cli('--state', t.dir, '--disable', 'SN-C2').code, 0);
  const reg = new SqliteRegStore(join(t.dir, 'reg.sqlite'));
  const biz = new SqliteBizStore(join(t.dir, 'biz-accounts.sqlite'), readKeyFile(join(t.dir, 'store.key'), 'storage key'));
  try {
    assert.equal(['SN-C1', 'SN-C2', 'SN-C3'].map((s) => reg.getDevice(s)?.status), ['active', 'disabled', 'active']);
    assert.is(biz.getByUser('u-SN-C3')!.account, 'acct-SN-C3');
  } finally {
    reg.close();
    biz.close();
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

test.run();
