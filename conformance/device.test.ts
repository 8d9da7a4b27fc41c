// The --device half against the project's own firmware (`usbphone sim --phone-only`, a phone
// built for the suite's URL, on an ephemeral port): every device case passes through the CLI,
// with its JSON and JUnit outputs. Then the suite is tested by breaking devices on purpose: each
// mutant device (firmware/mutant.ts, run by sim/mutant-phone.ts) must be caught by the named
// case that checks its rule; a mutant that survives is a bug in the suite. And the CLI's usage
// errors of --device.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { hexToBytes } from '@noble/hashes/utils.js';
import { tempDir, onFreePort } from '../deploy/test-util.ts';
import { MasterKeyring, deriveDeviceKey, makeSerialToken } from '../protocol/keys.ts';
import { DEVICE_MUTANTS, type DeviceMutant } from '../firmware/mutant.ts';
import { DEVICE_CASES } from './cases/device.ts';
import { runDeviceCases, type DeviceTarget } from './device.ts';
import { caseName } from './suite.ts';

const root = join(import.meta.dirname, '..');
const bin = join(root, 'bin', 'usbphone.js');
/** Generous: the phone is a Node process started per run, on a machine shared with other work. */
const TIMEOUT_MS = 15_000;

/** Each mutant device and the cases (exact names) that must fail against it. */
const CAUGHT_BY: Record<DeviceMutant, string[]> = {
  'accept-bad-server-proof': ['§6.1 a helloReply whose server proof is wrong -> HS_BAD_SERVER_PROOF and close 1008, no finish, no credRequest'],
  'finish-after-bad-login-ok': ['§6.3 a loginOk whose server proof is wrong -> HS_BAD_SERVER_PROOF and close 1008, no finish'],
  'retire-before-ack': ['§10 loginOk seen but the finish lost (no pwConfirmAck, nothing promoted, the pending expires) -> on its next run, with no registration server, the device logs in with the older generation it kept'],
};

function run(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [bin, ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

/** A phone built for ws://127.0.0.1:port/ in `dir` (a first run with nobody listening builds it), and the suite's inputs from its files. */
async function buildPhone(dir: string, port: number) {
  const r = await run(['sim', '--phone-only', '--gateway', `ws://127.0.0.1:${port}/`, '--state', dir, '-q']);
  assert.is(r.status, 1, 'nobody listens yet: the phone cannot log in');
  assert.match(r.stdout, /not enrolled here: the servers must know SN-0000001/);
  const rec = JSON.parse(readFileSync(join(dir, 'phone.enrollment.json'), 'utf8')) as { serial: string; keyVersion: number; firmwareMeasurement: string };
  const m = MasterKeyring.parse(readFileSync(join(dir, 'master.key'), 'utf8')).key(rec.keyVersion);
  return { rec, device: { serial: rec.serial, key: deriveDeviceKey(m, rec.serial), token: makeSerialToken(m, rec.keyVersion, rec.serial), measurement: hexToBytes(rec.firmwareMeasurement) } };
}

test("--device against the project's firmware (sim --phone-only): every device case passes; --json and --junit (valid against the JUnit XSD)", async () => {
  const t = tempDir();
  try {
    const junit = join(t.dir, 'device.xml');
    // The phone's image names the port the suite then listens on: if another process takes it
    // in between (CONFORMANCE_LISTEN_FAILED, EADDRINUSE), a new phone for another port.
    const r = await onFreePort(async (port) => {
      const state = join(t.dir, `phone-${port}`);
      const { rec } = await buildPhone(state, port);
      const r = await run(['conformance', '--device', `"${process.execPath}" "${bin}" sim --phone-only --gateway {url} --state "${state}" -q`, '--listen', `127.0.0.1:${port}`,
        '--master-key', join(state, 'master.key'), '--serial', rec.serial, '--measurement', rec.firmwareMeasurement, '--timeout', String(TIMEOUT_MS), '--json', '--junit', junit]);
      if (/\(CONFORMANCE_LISTEN_FAILED\)/.test(r.stderr)) throw new Error(r.stderr);
      return r;
    });
    const out = JSON.parse(r.stdout) as { cases: { name: string; verdict: string; note?: string; output?: string }[] };
    const bad = out.cases.filter((c) => c.verdict !== 'pass').map((c) => `${c.verdict}: ${c.name}: ${c.note ?? ''}\n${c.output ?? ''}`);
    assert.equal(bad, [], 'cases not passed');
    assert.is(out.cases.length, DEVICE_CASES.length);
    assert.is(r.status, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`${DEVICE_CASES.length} cases: ${DEVICE_CASES.length} pass, 0 fail`));
    // Each case keeps what the device printed.
    assert.ok(out.cases.every((c) => /device run 1 \((exit \d+|killed)\):/.test(c.output ?? '')), 'a case without the device output');
    const x = spawnSync('xmllint', ['--noout', '--schema', join(import.meta.dirname, 'fixtures', 'junit.xsd'), junit], { encoding: 'utf8' });
    assert.is(x.status, 0, `xmllint: ${x.stderr}`);
    assert.is([...readFileSync(junit, 'utf8').matchAll(/<system-err>/g)].length, DEVICE_CASES.length);
  } finally {
    t.remove();
  }
});

test('every device mutant switch has its catching cases, and each named case exists', () => {
  assert.equal(Object.keys(CAUGHT_BY).sort(), [...DEVICE_MUTANTS].sort());
  const names = new Set(DEVICE_CASES.map(caseName));
  for (const n of Object.values(CAUGHT_BY).flat()) assert.ok(names.has(n), `no case named '${n}'`);
});

test("each mutant device is caught by its named case, by the case's own check", async () => {
  const t = tempDir();
  try {
    // Every mutant phone is built for one port the suite listens on in turn: if another process
    // takes it between two listens (EADDRINUSE), all again on another port.
    await onFreePort(async (port) => {
      const base = join(t.dir, `base-${port}`);
      const { device } = await buildPhone(base, port);
      for (const mutant of DEVICE_MUTANTS) {
        // A copy of the built phone: the same keys and measurement, a state of its own.
        const state = join(t.dir, `${mutant}-${port}`);
        cpSync(base, state, { recursive: true });
        const cases = DEVICE_CASES.filter((c) => CAUGHT_BY[mutant].includes(caseName(c)));
        const target = (command: string): DeviceTarget => ({ command, device, host: '127.0.0.1', port, timeoutMs: TIMEOUT_MS });
        const s = await runDeviceCases(cases, target(`"${process.execPath}" --import tsx sim/mutant-phone.ts ${mutant} {url} "${state}"`));
        for (const r of s.results) {
          assert.is(r.verdict, 'fail', `${r.name} did not catch '${mutant}': ${r.verdict} ${r.note ?? ''}\n${r.output ?? ''}`);
          // Caught by its check, not by a case that could not get there.
          assert.is.not(r.expected, '(the case could not reach its check)', `${r.name} against '${mutant}': ${r.note}\n${r.output ?? ''}`);
        }
      }
    });
  } finally {
    t.remove();
  }
});

test('usage: --device with --target, --listen without --device, --reg-dest with --device, a bad --listen: CLI_BAD_ARGS (exit 2); a taken port: CONFORMANCE_LISTEN_FAILED (exit 1)', async () => {
  const dev = ['--serial', 'X1', '--measurement', '00'.repeat(32), '--device-key', '00'.repeat(32), '--serial-token', '00'.repeat(50)];
  const both = await run(['conformance', '--device', 'true', '--target', 'ws://127.0.0.1:9/', ...dev]);
  assert.is(both.status, 2);
  assert.match(both.stderr, /^usbphone conformance: give --target URL \(a server\) or --device CMD \(a device\), not both; .*\(CLI_BAD_ARGS\)\n$/);
  const listen = await run(['conformance', '--target', 'ws://127.0.0.1:9/', '--listen', '127.0.0.1:0', ...dev]);
  assert.is(listen.status, 2);
  assert.match(listen.stderr, /--listen applies to --device only \(CLI_BAD_ARGS\)/);
  const regDest = await run(['conformance', '--device', 'true', '--reg-dest', 'reg-primary', ...dev]);
  assert.is(regDest.status, 2);
  assert.match(regDest.stderr, /--reg-dest applies to --target only .*\(CLI_BAD_ARGS\)/);
  const badListen = await run(['conformance', '--device', 'true', '--listen', 'localhost', ...dev]);
  assert.is(badListen.status, 2);
  assert.match(badListen.stderr, /--listen must be HOST:PORT .*\(CLI_BAD_ARGS\)/);
  const noSerial = await run(['conformance', '--device', 'true']);
  assert.is(noSerial.status, 2);
  assert.match(noSerial.stderr, /--serial is required.*\(CLI_BAD_ARGS\)/);
  const listDevice = await run(['conformance', '--list', '--device', 'true']);
  assert.is(listDevice.status, 2);
  assert.match(listDevice.stderr, /--device does not apply to --list \(CLI_BAD_ARGS\)/);
  const taken = createServer();
  await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
  try {
    const port = (taken.address() as { port: number }).port;
    const busy = await run(['conformance', '--device', 'true', '--listen', `127.0.0.1:${port}`, ...dev]);
    assert.is(busy.status, 1);
    assert.match(busy.stderr, /^usbphone conformance: cannot listen on 127\.0\.0\.1:\d+: .*EADDRINUSE.*\(CONFORMANCE_LISTEN_FAILED\)\n$/);
  } finally {
    taken.close();
  }
});

test('a device command that never connects fails its cases (exit 1), its exit and output in the record', async () => {
  const dev = ['--serial', 'X1', '--measurement', '00'.repeat(32), '--device-key', '00'.repeat(32), '--serial-token', '00'.repeat(50)];
  // Port 0: any free port (nothing needs it in advance); the device is told the one bound.
  const r = await run(['conformance', '--device', 'echo "device at $USBPHONE_CONFORMANCE_URL and {url}"', '--listen', '127.0.0.1:0', ...dev, '--timeout', '1000', '--case', 'notFound']);
  assert.is(r.status, 1, r.stdout + r.stderr);
  assert.match(r.stdout, /FAIL +§6\.1 notFound -> the device ends/);
  assert.match(r.stdout, /got: the device opened no session within 1000 ms/);
  assert.match(r.stdout, /\| device run 1 \(exit 0\):\n +\| device at ws:\/\/127\.0\.0\.1:([1-9]\d*)\/ and ws:\/\/127\.0\.0\.1:\1\//);
  assert.match(r.stdout, / 0 pass, 1 fail/);
});

test.run();
