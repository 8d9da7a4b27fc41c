// `usbphone sim` as a user runs it: a real process, its output and exit code. Its stack's stores
// follow STORE_URL (SQLite files, or the state directory's PostgreSQL schemas under test-pg).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { mkdtempSync, rmSync, existsSync, readFileSync, readdirSync, writeFileSync, statSync } from 'node:fs';
import { openOperatorStore } from '../operator-server/pg-store.ts';
import { storeChoiceFrom, type StorePlace } from '../server-kit/store-choice.ts';
import { stackSchemaPrefix, stackSchemas, dropStackSchemas, schemaRows } from '../deploy/stack-schemas.ts';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const run = (...args: string[]) => spawnSync(process.execPath, ['bin/usbphone.js', 'sim', ...args], { encoding: 'utf8', timeout: 120_000 });
/** The CLI with the bank password in its environment (how a person gives it: never in argv). */
const withPassword = (password: string, ...args: string[]) => spawnSync(process.execPath, ['bin/usbphone.js', 'sim', ...args], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, USBPHONE_BANK_PASSWORD: password } });
const BANK_PASSWORD = 'amber-heron-58-quarry';
const choice = storeChoiceFrom(undefined);
/** The operator's store of a state directory's stack: its SQLite file, or its PostgreSQL schema. */
const operatorPlace = (dir: string): StorePlace =>
  choice.kind === 'sqlite' ? { kind: 'sqlite', file: join(dir, 'operator.sqlite') } : { ...choice, schema: stackSchemas(stackSchemaPrefix(dir)).operator };
/** Removes a state directory, and its stack's schemas on PostgreSQL. */
const removeState = async (dir: string) => {
  if (choice.kind === 'postgres' && existsSync(join(dir, 'pg-schema'))) await dropStackSchemas(choice.url, stackSchemaPrefix(dir));
  rmSync(dir, { recursive: true, force: true });
};

test('one phone, twice: first boot, then a second boot that changes the password', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-clisim-'));
  try {
    const a = run('--state', dir, '--port', '0');
    assert.is(a.status, 0, a.stdout + a.stderr);
    assert.match(a.stdout, /S0\.5 +hello -> reg-primary/);
    assert.match(a.stdout, /LOGGED IN to biz-east with password generation 1/);
    assert.match(a.stdout, /saved login \(record sealed by the secure element; secrets in its slot\): user u-[0-9a-f]{20}, password generation\(s\) 1/);
    assert.ok(existsSync(join(dir, 'phone.img')) && existsSync(join(dir, choice.kind === 'sqlite' ? 'reg.sqlite' : 'pg-schema')));
    // With port 0 the endpoints change each run, so the image is rebuilt: a first boot again
    // for the phone, but the servers remember the account and move to the next generation.
    const b = run('--state', dir, '--port', '0', '-q');
    assert.is(b.status, 0, b.stdout + b.stderr);
    assert.match(b.stdout, /LOGGED IN/);
    assert.not.match(b.stdout, /S0\.5/, '-q prints no trace');
  } finally {
    await removeState(dir);
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

test('--profile atm and --profile mobile (S0.15): a bank card in an ATM, then a mobile phone, each logs in; the card number shows masked', async () => {
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
    await removeState(dir);
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
    await removeState(dir);
  }
});

test('--sim-card, --bank, --swap-sim: a person opens an account bound to the SIM, logs in, the line moves to a new card (told to the operator), the bank refuses it until a rebind; the password is in no output or file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-clisim-bank-'));
  const pwFile = join(mkdtempSync(join(tmpdir(), 'usbphone-clisim-pw-')), 'pw');
  writeFileSync(pwFile, `${BANK_PASSWORD}\n`, { mode: 0o600 });
  const outputs: string[] = [];
  const step = (r: ReturnType<typeof run>, status: number) => {
    outputs.push(r.stdout, r.stderr);
    assert.is(r.status, status, r.stdout + r.stderr);
    return r.stdout;
  };
  try {
    const a = step(withPassword(BANK_PASSWORD, '--state', dir, '--port', '0', '-q', '--sim-card', '3', '--bank', 'register', '--bank-name', 'alice.test'), 0);
    assert.match(a, /SIM: USIM card 8900101…\d{4}, line \+99901\d{8}/);
    assert.match(a, /operator: the operator's line \+99901\d{8} is on this card/);
    assert.match(a, /bank: account \*+\d{4} opened, bound to this SIM and this phone \(mode 1\)/);
    const first = JSON.parse(readFileSync(join(dir, 'phone.sim.json'), 'utf8')) as { iccid: string; imsi: string; msisdn: string };
    // The card stays in the phone: no SIM option, the same card.
    const b = step(withPassword(BANK_PASSWORD, '--state', dir, '--port', '0', '-q', '--bank', 'login', '--bank-name', 'alice.test'), 0);
    assert.match(b, new RegExp(`SIM: USIM card ${first.iccid.slice(0, 7)}…${first.iccid.slice(-4)}`));
    assert.match(b, /bank: logged in: account page of \*+\d{4} \(mode 1, 1 last login\(s\) listed\)/);
    // A new card for the same line: the operator moves the line, the phone gets the card, and
    // the bank (mode 1, by the ICCID) no longer finds the binding: exit 1 with the notice.
    const c = step(withPassword(BANK_PASSWORD, '--state', dir, '--port', '0', '-q', '--swap-sim', '--bank', 'login', '--bank-name', 'alice.test'), 1);
    const second = JSON.parse(readFileSync(join(dir, 'phone.sim.json'), 'utf8')) as { iccid: string; imsi: string; msisdn: string };
    assert.is(second.msisdn, first.msisdn);
    assert.is.not(second.iccid, first.iccid);
    assert.ok(second.iccid.startsWith(first.iccid.slice(0, 8)) && second.imsi.startsWith(first.imsi.slice(0, 5)), 'same issuer and network');
    assert.match(c, new RegExp(`operator: the operator moved line \\${first.msisdn} from card ${first.iccid.slice(0, 7)}…${first.iccid.slice(-4)} to card ${second.iccid.slice(0, 7)}…${second.iccid.slice(-4)}`));
    assert.match(c, /bank: login not allowed: BANK_NOT_BOUND.*; if this phone's SIM was swapped, move the binding to the new card from this phone: usbphone sim --bank rebind --bank-name NAME/);
    const op = await openOperatorStore(operatorPlace(dir));
    try {
      const sub = (await op.byPhoneNumber(first.msisdn))!;
      assert.is(sub.card.iccid, second.iccid);
      assert.is((await op.cardByIccid(first.iccid))!.status, 'replaced');
    } finally {
      await op.close();
    }
    // The owner re-binds from the phone (the password from a file this time), then logs in.
    const d = step(run('--state', dir, '--port', '0', '-q', '--bank', 'rebind', '--bank-name', 'alice.test', '--bank-password-file', pwFile), 0);
    assert.match(d, /bank: account \*+\d{4} bound to this SIM now \(re-bound\)/);
    // The old card with the line's number: the operator has the line on the new card.
    const e = step(run('--state', dir, '--port', '0', '-q', '--iccid', first.iccid, '--imsi', first.imsi, '--msisdn', first.msisdn), 1);
    assert.match(outputs.at(-1)!, /^usbphone sim: the operator will not pair \+99901\d{8} with card .*that line is on card .*\(SIM_LINE_CONFLICT\)\n$/);
    assert.not.match(e, /LOGGED IN/);
    // The password: in no output, and in no file of the state directory (the bank keeps a scrypt verifier).
    for (const o of outputs) assert.not.ok(o.includes(BANK_PASSWORD), 'the password in the output');
    for (const f of readdirSync(dir)) {
      const p = join(dir, f);
      if (statSync(p).isFile()) assert.not.ok(readFileSync(p).includes(Buffer.from(BANK_PASSWORD)), `the password in ${f}`);
    }
    // On PostgreSQL, nor in any row of the stack's schemas.
    if (choice.kind === 'postgres') {
      for (const schema of Object.values(stackSchemas(stackSchemaPrefix(dir)))) {
        const rows = JSON.stringify(await schemaRows(choice.url, schema), (_k, v: unknown) => (v instanceof Uint8Array ? Buffer.from(v).toString('latin1') : v));
        assert.not.ok(rows.includes(BANK_PASSWORD), `the password in schema ${schema}`);
      }
    }
  } finally {
    await removeState(dir);
    rmSync(join(pwFile, '..'), { recursive: true, force: true });
  }
});

test('the SIM and bank options through the CLI: a bad value, two choices, no SIM for the bank, a password in argv, an unreadable password file: exit 2 with the code, before any server starts (the full table: sim/single-sim.test.ts)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-clisim-badsim-'));
  try {
    const cases: [string[], RegExp, string, string?][] = [
      [['--iccid', '8944200000000000011', '--imsi', '234200000000001'], /--iccid must be an ICCID: 89 then 17 or 18 digits, the last a Luhn check digit/, 'CLI_BAD_ARGS'],
      [['--sim-card', '2', '--swap-sim'], /give one of --sim-card, --swap-sim: each chooses the phone's SIM/, 'CLI_BAD_ARGS'],
      [['--sim-card', '2', '--profile', 'atm'], /--sim-card does not apply to --profile atm: a bank card in an ATM has no SIM slot/, 'CLI_BAD_ARGS'],
      [['--sim-card', '2', '--bank', 'login', '--bank-name', 'alice', '--bank-password', BANK_PASSWORD], /--bank-password is not an option: a command line is visible to other users/, 'CLI_BAD_ARGS'],
      [['--sim-card', '2', '--bank', 'login', '--bank-name', 'alice'], /--bank needs the person's password: set USBPHONE_BANK_PASSWORD or give --bank-password-file FILE \(never on the command line/, 'CLI_BAD_ARGS'],
      [['--bank', 'login', '--bank-name', 'alice'], /the bank step needs the phone's SIM .*a USB phone has none until one is chosen/, 'CLI_BAD_ARGS', BANK_PASSWORD],
      [['--sim-card', '2', '--bank', 'login', '--bank-name', 'alice', '--bank-password-file', join(dir, 'no-such-file')], /--bank-password-file .*no-such-file: ENOENT/, 'CLI_FILE'],
    ];
    for (const [args, msg, code, password] of cases) {
      const r = password === undefined ? run('--state', dir, ...args) : withPassword(password, '--state', dir, ...args);
      assert.is(r.status, 2, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, msg, args.join(' '));
      assert.match(r.stderr, new RegExp(`^usbphone sim: .* \\(${code}\\)\\n$`), args.join(' '));
      assert.not.ok(r.stderr.includes(BANK_PASSWORD), 'no password in an error');
      assert.not.ok(existsSync(join(dir, 'phone.img')), `${args.join(' ')}: nothing was built`);
    }
    writeFileSync(join(dir, 'phone.sim.json'), '{"iccid": "12"}');
    const corrupt = run('--state', dir, '--swap-sim');
    assert.is(corrupt.status, 2);
    assert.match(corrupt.stderr, /phone\.sim\.json is not a SIM card .*\(CLI_CORRUPT_FILE\)\n$/);
  } finally {
    await removeState(dir);
  }
});

test.run();
