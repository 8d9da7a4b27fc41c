// The suite against the project's own servers (deploy/test-util.ts testStack on ephemeral
// ports, one test device enrolled): every case passes through the gateway and on the
// registration server's direct device port; the CLI's outputs (JSON, JUnit XML checked by
// xmllint against conformance/fixtures/junit.xsd) and exit codes; docs/conformance.md lists
// exactly the suite's cases.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bytesToHex } from '@noble/hashes/utils.js';
import { testStack, tempDir } from '../deploy/test-util.ts';
import { SCRIPTED_FIRMWARE_HEX } from '../server-kit/test-device.ts';
import { deriveDeviceKey, makeSerialToken } from '../protocol/keys.ts';
import { ALL_CASES, SECTION_TITLES } from './cases.ts';
import { DEVICE_CASES } from './cases/device.ts';
import { caseName } from './suite.ts';
import { listText } from './report.ts';

const root = join(import.meta.dirname, '..');
const SERIAL = 'CONF-0001';
/** The bank's scrypt, lowered for speed (biz-server/bank.test.ts runs OWASP's parameters). */
const FAST_SCRYPT = { ln: 12, r: 8, p: 1 };
/** The stack's step timeout: short, so the TIMEOUT case is cheap. */
const STEP_MS = 1_500;

/** The CLI, asynchronously: the servers run in this process and must keep answering. */
function cli(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [join(root, 'bin', 'usbphone.js'), 'conformance', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

test('every case passes against the real servers through the gateway; --json and --junit (valid against the JUnit XSD)', async () => {
  const stack = await testStack({ stepTimeoutMs: STEP_MS, bankScrypt: FAST_SCRYPT });
  const t = tempDir();
  try {
    await stack.enroll({ serial: SERIAL, keyVersion: stack.ring.current });
    const junit = join(t.dir, 'report.xml');
    const r = await cli(['--target', stack.gatewayUrl, '--master-key', join(stack.stateDir, 'master.key'), '--serial', SERIAL, '--measurement', SCRIPTED_FIRMWARE_HEX, '--policy-key', bytesToHex(stack.factoryPolicy.key!), '--timeout', '2500', '--step-timeout', String(STEP_MS), '--json', '--junit', junit]);
    const out = JSON.parse(r.stdout) as { counts: Record<string, number>; cases: { name: string; verdict: string; note?: string }[] };
    const bad = out.cases.filter((c) => c.verdict !== 'pass').map((c) => `${c.verdict}: ${c.name}: ${c.note ?? ''}`);
    assert.equal(bad, [], 'cases not passed');
    assert.is(out.cases.length, ALL_CASES.length);
    assert.is(r.status, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`${ALL_CASES.length} cases: ${ALL_CASES.length} pass, 0 fail`));
    const x = spawnSync('xmllint', ['--noout', '--schema', join(import.meta.dirname, 'fixtures', 'junit.xsd'), junit], { encoding: 'utf8' });
    assert.is(x.status, 0, `xmllint: ${x.stderr}`);
    const xml = readFileSync(junit, 'utf8');
    assert.is([...xml.matchAll(/<testcase /g)].length, ALL_CASES.length);
    assert.match(xml, /<testsuites name="usbphone conformance" tests="\d+" failures="0"/);
  } finally {
    t.remove();
    await stack.stop();
  }
});

test('on the direct device port with --device-key and --serial-token: §6.2 passes, the master-key case is skipped; a failure is exit 1 and valid JUnit', async () => {
  const stack = await testStack({ stepTimeoutMs: STEP_MS });
  const t = tempDir();
  try {
    await stack.enroll({ serial: SERIAL, keyVersion: stack.ring.current });
    const m = stack.ring.key(stack.ring.current);
    const dev = ['--serial', SERIAL, '--measurement', SCRIPTED_FIRMWARE_HEX, '--device-key', bytesToHex(deriveDeviceKey(m, SERIAL)), '--serial-token', bytesToHex(makeSerialToken(m, stack.ring.current, SERIAL))];
    const r = await cli(['--target', stack.directUrl('reg-primary')!, ...dev, '--timeout', '2500', '--step-timeout', String(STEP_MS), '--case', '§6.2 ']);
    assert.is(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^§6\.2 Registration session, server side$/m);
    assert.match(r.stdout, /^ {2}skipped +§6\.2 a genuine token of a serial the server does not know/m);
    assert.match(r.stdout, / 0 fail, 0 non-strict, 0 informational, 1 skipped/);
    // A device the target does not know fails the accepted path: exit 1, the record printed.
    const other = ['--serial', 'CONF-NOT-ENROLLED', '--measurement', SCRIPTED_FIRMWARE_HEX, '--device-key', bytesToHex(deriveDeviceKey(m, 'CONF-NOT-ENROLLED')), '--serial-token', bytesToHex(makeSerialToken(m, stack.ring.current, 'CONF-NOT-ENROLLED'))];
    const junit = join(t.dir, 'fail.xml');
    const f = await cli(['--target', stack.gatewayUrl, ...other, '--timeout', '2500', '--case', 'registration accepted', '--junit', junit]);
    assert.is(f.status, 1, f.stdout + f.stderr);
    assert.match(f.stdout, /FAIL +§6\.2 registration accepted/);
    assert.match(f.stdout, /notFound: device not registered \(is the test device enrolled\?\)/);
    assert.match(f.stdout, /> hello seq 0 dest reg-primary/);
    assert.is(spawnSync('xmllint', ['--noout', '--schema', join(import.meta.dirname, 'fixtures', 'junit.xsd'), junit]).status, 0);
    assert.match(readFileSync(junit, 'utf8'), /<failure message="notFound: device not registered/);
  } finally {
    t.remove();
    await stack.stop();
  }
});

test('usage: no target, no device, an unknown --case: exit 2 with one line; nobody listening: CONFORMANCE_UNREACHABLE, exit 1', async () => {
  const t = tempDir();
  try {
    const noTarget = await cli(['--serial', 'X', '--measurement', SCRIPTED_FIRMWARE_HEX, '--device-key', '00'.repeat(32), '--serial-token', '00'.repeat(50)]);
    assert.is(noTarget.status, 2);
    assert.match(noTarget.stderr, /^usbphone conformance: --target URL \(a server\) or --device CMD \(a device\) is required; .*\(CLI_BAD_ARGS\)\n$/);
    const noDevice = await cli(['--target', 'ws://127.0.0.1:9/']);
    assert.is(noDevice.status, 2);
    assert.match(noDevice.stderr, /--serial is required.*\(CLI_BAD_ARGS\)/);
    const badKey = await cli(['--target', 'ws://127.0.0.1:9/', '--serial', 'X', '--measurement', SCRIPTED_FIRMWARE_HEX, '--device-key', '00'.repeat(32), '--serial-token', '00'.repeat(50), '--policy-key', 'abc']);
    assert.is(badKey.status, 2);
    assert.match(badKey.stderr, /--policy-key must be 64 hex digits.*\(CLI_BAD_ARGS\)/);
    const noCase = await cli(['--list', '--case', 'no such case anywhere']);
    assert.is(noCase.status, 2);
    assert.match(noCase.stderr, /\(CONFORMANCE_NO_CASE\)\n$/);
    const key = join(t.dir, 'master.key');
    writeFileSync(key, `v1 ${'11'.repeat(32)}\n`);
    const down = await cli(['--target', 'ws://127.0.0.1:9/', '--master-key', key, '--serial', 'X1', '--measurement', SCRIPTED_FIRMWARE_HEX, '--timeout', '1000']);
    assert.is(down.status, 1);
    assert.match(down.stderr, /^usbphone conformance: cannot connect to ws:\/\/127\.0\.0\.1:9\/.*\(CONFORMANCE_UNREACHABLE\)\n$/);
  } finally {
    t.remove();
  }
});

test('every case has a unique name that starts with its section and says what must follow (->)', () => {
  for (const [cases, least] of [[ALL_CASES, 90], [DEVICE_CASES, 11]] as const) {
    const names = cases.map(caseName);
    assert.is(new Set(names).size, names.length, 'duplicate names');
    for (const c of cases) assert.match(caseName(c), /^§\d+(\.\d+)? \S/, caseName(c));
    for (const c of cases) assert.ok(SECTION_TITLES[c.section], `${caseName(c)}: no title for ${c.section}`);
    assert.ok(cases.length >= least, `${cases.length} cases`);
  }
});

test('docs/conformance.md lists exactly the suite\'s cases of both halves, by section, as --list prints them', () => {
  const doc = readFileSync(join(root, 'docs', 'conformance.md'), 'utf8');
  const m = /<!-- cases: begin[^\n]*-->\n([\s\S]*?)<!-- cases: end -->/.exec(doc);
  assert.ok(m, 'docs/conformance.md has no case list between the markers');
  assert.fixture(m![1]!.trim(), listText(ALL_CASES).trim());
  const d = /<!-- device cases: begin[^\n]*-->\n([\s\S]*?)<!-- device cases: end -->/.exec(doc);
  assert.ok(d, 'docs/conformance.md has no device case list between the markers');
  assert.fixture(d![1]!.trim(), listText(DEVICE_CASES).trim());
});

test.run();
