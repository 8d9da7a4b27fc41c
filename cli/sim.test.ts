// `usbphone sim` as a user runs it: a real process, its output and exit code.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const run = (...args: string[]) => spawnSync(process.execPath, ['bin/usbphone.js', 'sim', ...args], { encoding: 'utf8', timeout: 120_000 });

test('one phone, twice: first boot, then a second boot that changes the password', () => {
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-clisim-'));
  try {
    const a = run('--state', dir, '--port', '0');
    assert.is(a.status, 0, a.stdout + a.stderr);
    assert.match(a.stdout, /S0\.5 +hello -> reg-primary/);
    assert.match(a.stdout, /LOGGED IN to biz-east with password generation 1/);
    assert.match(a.stdout, /saved login \(record sealed by the secure element; secrets in its slot\): user u-[0-9a-f]{20}, password generation\(s\) 1/);
    assert.ok(existsSync(join(dir, 'phone.img')) && existsSync(join(dir, 'reg.sqlite')));
    // With port 0 the endpoints change each run, so the image is rebuilt: a first boot again
    // for the phone, but the servers remember the account and move to the next generation.
    const b = run('--state', dir, '--port', '0', '-q');
    assert.is(b.status, 0, b.stdout + b.stderr);
    assert.match(b.stdout, /LOGGED IN/);
    assert.not.match(b.stdout, /S0\.5/, '-q prints no trace');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a scenario passes with exit 0 and prints its verdict', () => {
  const r = run('--scenario', 'unknown-device');
  assert.is(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /PASS unknown-device: notice shown: This phone is not registered/);
});

test('a small fleet prints its summary as JSON', () => {
  const r = run('--devices', '12', '--concurrency', '4', '--json');
  assert.is(r.status, 0, r.stderr);
  const s = JSON.parse(r.stdout.trim().split('\n').pop()!);
  for (const k of ['ok', 'failed', 'failedByReason', 'loginsPerSecond', 'p50Ms', 'p99Ms', 'peakRssBytes']) assert.ok(k in s, k);
  assert.is(s.ok, 12);
  assert.is(s.failed, 0);
});

test('--profile atm and --profile mobile (S0.15): a bank card in an ATM, then a mobile phone, each logs in; the card number shows masked', () => {
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-clisim-profile-'));
  try {
    const a = run('--state', dir, '--port', '0', '--profile', 'atm');
    assert.is(a.status, 0, a.stdout + a.stderr);
    assert.match(a.stdout, /card \*{12}\d{4} inserted into the ATM on 127\.1\.0\.1/);
    assert.match(a.stdout, /S0\.15 +launch +.*the atm profile's launcher starts UPMON\.EXE \(no AutoRun\)/);
    assert.match(a.stdout, /LOGGED IN to biz-east/);
    assert.not.match(a.stdout, /\d{16}/, 'no card number in full');
    const m = run('--state', dir, '--port', '0', '--profile', 'mobile');
    assert.is(m.status, 0, m.stdout + m.stderr);
    assert.match(m.stdout, /power-on: mobile phone SN-0000001/);
    assert.match(m.stdout, /S0\.15 +launch/);
    assert.not.match(m.stdout, /autorun/);
    assert.not.match(m.stdout, /\d{16}/, 'no card number in full (the image was the card\'s)');
    assert.match(m.stdout, /LOGGED IN to biz-east/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--profile: a value that names no profile, or a use it does not apply to, is exit 2 CLI_BAD_ARGS', () => {
  for (const [args, msg] of [
    [['--profile', 'pda'], /--profile must be usb, mobile, atm, not 'pda'/],
    [['--profile', 'USB'], /--profile must be usb, mobile, atm, not 'USB'/],
    [['--profile', '__proto__'], /--profile must be usb, mobile, atm/],
    [['--profile'], /--profile needs a value/],
    [['--profile', 'mobile', '--scenario', 'first-boot'], /--profile does not apply to --scenario/],
    [['--profile', 'atm', '--devices', '3'], /--profile does not apply to a fleet/],
  ] as const) {
    const r = run(...args);
    assert.is(r.status, 2, args.join(' '));
    assert.match(r.stderr, msg);
    assert.match(r.stderr, /^usbphone sim: .* \(CLI_BAD_ARGS\)\n$/);
  }
});

test('bad usage: exit 2 with a one-line error and its code', () => {
  for (const args of [['--devices', 'many'], ['--scenario', 'nope'], ['--loss', '2', '--deterministic'], ['--what'], ['--phone-only'], ['--phone-only', '--gateway', 'ws://127.0.0.1:9/', '--watch'], ['--phone-only', '--scenario', 'first-boot']]) {
    const r = run(...args);
    assert.is(r.status, 2, args.join(' '));
    assert.match(r.stderr, /^usbphone sim: .* \(CLI_[A-Z_]+\)\n$/);
  }
});

test('ports taken: exit 1 with a one-line SIM_PORT_IN_USE, no stack trace', async () => {
  const blocker = createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
  const port = (blocker.address() as AddressInfo).port;
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-clisim-busy-'));
  try {
    const r = spawnSync(process.execPath, ['bin/usbphone.js', 'sim', '--state', dir, '--port', String(port)], { encoding: 'utf8', timeout: 60_000 });
    assert.is(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /\(SIM_PORT_IN_USE\)\n$/);
    assert.not.match(r.stderr, /at .*\.ts:\d+/, 'no stack trace');
  } finally {
    blocker.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
