// The usual mistakes, as a new user makes them, one row each: the exit code, the code, one
// line on stderr that names what is wrong (no stack trace), and nothing left behind (no file
// in the working directory or the state directory that was not there, no temporary state).
// Each row runs in a fresh working directory with a TMPDIR of its own.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync, readdirSync, statSync, existsSync } from 'node:fs';
import { join, relative } from 'node:path';
import { tempDir } from '../deploy/test-util.ts';
import { exitOf } from './codes.ts';

const bin = join(import.meta.dirname, '..', 'bin', 'usbphone.js');
const t = tempDir('usbphone-mistakes-');
test.after(() => t.remove());

/** Every path under dir (files and directories), relative, sorted. */
function tree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const n of readdirSync(d)) {
      const p = join(d, n);
      out.push(relative(dir, p));
      if (statSync(p).isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out.sort();
}

function usbphone(cwd: string, args: string[], tmp = join(cwd, '.tmp')): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [bin, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TMPDIR: tmp, USBPHONE_LOG_LEVEL: 'error' } });
    let out = '', err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.once('close', (code) => resolve({ code, out, err }));
  });
}

// A real image, fuses and master key to inspect (built once).
const fixtures = join(t.dir, 'fixtures');
mkdirSync(fixtures);
const built = spawnSync(process.execPath, [bin, 'image', '--serial', 'SN-FIX', '--state', fixtures, '--out', join(fixtures, 'fix.img')], { encoding: 'utf8' });
if (built.status !== 0) throw new Error(built.stderr);
const IMG = join(fixtures, 'fix.img');

interface Row {
  why: string;
  args: string[];
  code: string;
  line: RegExp;
  /** Prepares the working directory (relative paths in args are resolved against it). */
  setup?: (cwd: string) => void;
}

const text = (p: string, s: string) => writeFileSync(p, s);
const sqliteJunk = (cwd: string, name: string) => {
  mkdirSync(join(cwd, 's'), { recursive: true });
  text(join(cwd, 's', name), 'this is not a database, just text that is long enough\n'.repeat(4));
};

const ROWS: Row[] = [
  { why: 'a negative fleet size', args: ['sim', '--devices', '-5'], code: 'CLI_BAD_ARGS', line: /--devices must be a whole number 1\.\.1000000, not '-5'/ },
  { why: 'a negative seed', args: ['sim', '--scenario', 'first-boot', '--seed', '-1'], code: 'CLI_BAD_ARGS', line: /--seed must be a whole number 0\.\.\d+, not '-1'/ },
  { why: 'an empty seed', args: ['sim', '--scenario', 'first-boot', '--seed', ''], code: 'CLI_BAD_ARGS', line: /--seed needs a value, not an empty string/ },
  { why: 'an empty port', args: ['sim', '--port', ''], code: 'CLI_BAD_ARGS', line: /--port needs a value/ },
  { why: 'a port out of range', args: ['serve', 'all', '--port', '70000'], code: 'CLI_BAD_ARGS', line: /--port must be a whole number 0\.\.65485, not '70000'/ },
  { why: 'a value-less option', args: ['sim', '--devices'], code: 'CLI_BAD_ARGS', line: /--devices needs a value/ },
  { why: 'an unknown option', args: ['sim', '--what'], code: 'CLI_BAD_ARGS', line: /unknown option '--what'/ },
  { why: '--seed on the single phone', args: ['sim', '--seed', '3'], code: 'CLI_BAD_ARGS', line: /--seed does not apply to the single phone/ },
  { why: '--json on the single phone', args: ['sim', '--json'], code: 'CLI_BAD_ARGS', line: /--json does not apply to the single phone/ },
  { why: '--devices with --scenario', args: ['sim', '--scenario', 'first-boot', '--devices', '3'], code: 'CLI_BAD_ARGS', line: /--devices does not apply to --scenario/ },
  { why: '--devices with --deterministic', args: ['sim', '--deterministic', '--devices', '3'], code: 'CLI_BAD_ARGS', line: /--devices does not apply to --deterministic/ },
  { why: '--port with --gateway', args: ['sim', '--gateway', 'ws://127.0.0.1:1/', '--port', '7500'], code: 'CLI_BAD_ARGS', line: /--port does not apply to the single phone with --gateway/ },
  { why: '--gateway that is not a ws URL', args: ['sim', '--gateway', 'http://x/'], code: 'CLI_BAD_ARGS', line: /--gateway must be .*ws:\/\/host:port\// },
  { why: 'an unknown scenario', args: ['sim', '--scenario', 'nope'], code: 'CLI_UNKNOWN_SCENARIO', line: /unknown scenario 'nope'/ },
  { why: 'an unknown scenario, deterministic', args: ['sim', '--deterministic', '--scenario', 'nope'], code: 'CLI_UNKNOWN_SCENARIO', line: /unknown scenario 'nope'/ },
  { why: 'a story the simulated HAL does not run', args: ['sim', '--deterministic', '--scenario', 'primary-down'], code: 'CLI_BAD_ARGS', line: /--deterministic runs first-boot or both-down-uses-saved/ },
  { why: '--state a file (sim)', args: ['sim', '--state', 'afile'], code: 'CLI_STATE_NOT_DIR', line: /--state afile is not a directory/, setup: (d) => text(join(d, 'afile'), 'x') },
  { why: '--state a file (serve)', args: ['serve', 'all', '--state', 'afile'], code: 'CLI_STATE_NOT_DIR', line: /--state afile is not a directory/, setup: (d) => text(join(d, 'afile'), 'x') },
  { why: '--state a file (enroll)', args: ['enroll', '--state', 'afile', '--disable', 'SN-1'], code: 'CLI_STATE_NOT_DIR', line: /--state afile is not a directory/, setup: (d) => text(join(d, 'afile'), 'x') },
  { why: '--state a file (image)', args: ['image', '--serial', 'S1', '--out', 'x.img', '--state', 'afile'], code: 'CLI_STATE_NOT_DIR', line: /--state afile is not a directory/, setup: (d) => text(join(d, 'afile'), 'x') },
  { why: 'enroll into a state directory that does not exist', args: ['enroll', '--state', 'typo-dir', '--record', 'r.json'], code: 'CLI_NO_STATE', line: /state directory typo-dir does not exist: .*--create/, setup: (d) => text(join(d, 'r.json'), '{"serial":"SN-1","keyVersion":1}') },
  { why: 'sim --gateway with a state directory that does not exist', args: ['sim', '--gateway', 'ws://127.0.0.1:1/', '--state', 'nowhere'], code: 'CLI_NO_STATE', line: /state directory nowhere does not exist/ },
  { why: 'an enrollment record that is not JSON', args: ['enroll', '--state', '.', '--record', 'r.json'], code: 'ENROLL_BAD_RECORD', line: /^usbphone enroll: r\.json: /, setup: (d) => text(join(d, 'r.json'), '{oops') },
  { why: 'an enrollment record that does not exist', args: ['enroll', '--state', '.', '--record', 'missing.json'], code: 'CLI_FILE', line: /missing\.json: ENOENT/ },
  { why: 'a damaged reg.sqlite (sim)', args: ['sim', '--state', 's', '--port', '0'], code: 'CLI_CORRUPT_FILE', line: /s\/reg\.sqlite is not a SQLite database.*make clean/, setup: (d) => sqliteJunk(d, 'reg.sqlite') },
  { why: 'a damaged reg.sqlite (serve)', args: ['serve', 'all', '--state', 's', '--port', '0'], code: 'CLI_CORRUPT_FILE', line: /s\/reg\.sqlite is not a SQLite database/, setup: (d) => sqliteJunk(d, 'reg.sqlite') },
  { why: 'a damaged biz-accounts.sqlite (enroll)', args: ['enroll', '--state', 's', '--disable', 'SN-1'], code: 'CLI_CORRUPT_FILE', line: /s\/biz-accounts\.sqlite is not a SQLite database/, setup: (d) => sqliteJunk(d, 'biz-accounts.sqlite') },
  {
    why: 'a damaged phone.enrollment.json',
    args: ['sim', '--state', 's', '--port', '0'],
    code: 'CLI_CORRUPT_FILE',
    line: /s\/phone\.enrollment\.json is not JSON .*make clean/,
    setup: (d) => {
      mkdirSync(join(d, 's'));
      text(join(d, 's', 'phone.img'), 'x');
      text(join(d, 's', 'phone.enrollment.json'), '{"serial": "SN-0000001",');
    },
  },
  {
    why: 'a damaged phone.img',
    args: ['sim', '--state', 's', '--port', '0'],
    code: 'CLI_CORRUPT_FILE',
    line: /s\/phone\.img is not a flash image .*make clean/,
    setup: (d) => {
      mkdirSync(join(d, 's'));
      text(join(d, 's', 'phone.img'), 'not an image'.repeat(1000));
      text(join(d, 's', 'phone.enrollment.json'), '{"serial": "SN-0000001"}');
    },
  },
  { why: 'inspect a text file', args: ['inspect', 'notes.txt'], code: 'LAYOUT_BAD_MAGIC', line: /notes\.txt: not a flash image/, setup: (d) => text(join(d, 'notes.txt'), 'hello\n'.repeat(100_000)) },
  { why: 'inspect an unrelated binary', args: ['inspect', 'blob.bin'], code: 'LAYOUT_BAD_MAGIC', line: /blob\.bin: not a flash image/, setup: (d) => text(join(d, 'blob.bin'), Buffer.alloc(8 << 20, 0x5a).toString('latin1')) },
  { why: 'inspect a directory', args: ['inspect', '.'], code: 'CLI_FILE', line: /\. is a directory, not a flash image/ },
  { why: 'inspect with a bad fuses file', args: ['inspect', IMG, '--fuses', 'bad.fuses'], code: 'FUSES_BAD_FILE', line: /fuses file bad\.fuses: /, setup: (d) => text(join(d, 'bad.fuses'), 'nonsense') },
  { why: 'inspect with a fuses path that is a directory', args: ['inspect', IMG, '--fuses', '.'], code: 'CLI_FILE', line: /fuses file \. is a directory/ },
  { why: 'image --out a directory', args: ['image', '--serial', 'S1', '--out', '.', '--state', 's'], code: 'CLI_BAD_ARGS', line: /--out \. is a directory/ },
  { why: 'image --out in a directory that does not exist', args: ['image', '--serial', 'S1', '--out', 'no/such/x.img', '--state', 's'], code: 'CLI_BAD_ARGS', line: /directory no\/such does not exist/ },
  { why: 'image with a bad serial', args: ['image', '--serial', 'x y', '--out', 'x.img', '--state', 's'], code: 'KEY_BAD_SERIAL', line: /serial must be/ },
  { why: 'image with a bad master key file', args: ['image', '--serial', 'S1', '--out', 'x.img', '--master-key', 'm.key', '--state', 's'], code: 'KEY_BAD_MASTER', line: /m\.key: master key file/, setup: (d) => text(join(d, 'm.key'), 'not a key') },
  { why: 'image that cannot be written', args: ['image', '--serial', 'S1', '--out', '/proc/usbphone-test.img', '--state', 's'], code: 'IMAGE_WRITE_FAILED', line: /cannot write: .*nothing written/ },
  { why: "serve a role with options of 'all'", args: ['serve', 'gateway', '--state', 'x', '--config', 'y'], code: 'CLI_BAD_ARGS', line: /--state does not apply to 'serve gateway'/ },
  { why: 'serve all with --config', args: ['serve', 'all', '--config', 'y'], code: 'CLI_BAD_ARGS', line: /--config does not apply to 'serve all'/ },
  { why: 'an unknown command', args: ['frobnicate'], code: 'CLI_UNKNOWN_COMMAND', line: /unknown command 'frobnicate'/ },
  { why: 'certs without a file', args: ['certs'], code: 'CLI_BAD_ARGS', line: /name the role files/ },
  { why: 'certs of a pair not named <name>.pem + <name>-key.pem', args: ['certs', 'gw.json'], code: 'CFG_INVALID', line: /gw\.json: tls: to be made here, the pair is/, setup: (d) => text(join(d, 'gw.json'), '{"host": "10.0.0.1", "tls": {"cert": "gw.crt", "key": "gw.key"}}') },
  { why: 'certs of a pair named ca (would overwrite the CA)', args: ['certs', 'gw.json'], code: 'TLS_BAD_NAME', line: /gw\.json: tls: server name 'ca' would be the deployment CA/, setup: (d) => text(join(d, 'gw.json'), '{"host": "10.0.0.1", "tls": {"cert": "tls/ca.pem", "key": "tls/ca-key.pem"}}') },
  { why: 'certs of a pair named <x>-key (would overwrite x\'s key)', args: ['certs', 'gw.json'], code: 'TLS_BAD_NAME', line: /gw\.json: tls: server name 'gw-key' ends in -key/, setup: (d) => text(join(d, 'gw.json'), '{"host": "10.0.0.1", "tls": {"cert": "tls/gw-key.pem", "key": "tls/gw-key-key.pem"}}') },
  { why: 'certs for a host that is no DNS name', args: ['certs', 'gw.json'], code: 'TLS_BAD_NAME', line: /gw\.json: tls: host 'bad host!' is neither/, setup: (d) => text(join(d, 'gw.json'), '{"host": "bad host!", "tls": {"cert": "tls/gw.pem", "key": "tls/gw-key.pem"}}') },
  { why: 'certs over a pair of your own PKI', args: ['certs', 'gw.json'], code: 'TLS_FOREIGN_CERT', line: /gw\.json: .*tls\/gw\.pem exists but .*ca\.pem does not/, setup: (d) => { text(join(d, 'gw.json'), '{"host": "10.0.0.1", "tls": {"cert": "tls/gw.pem", "key": "tls/gw-key.pem"}}'); mkdirSync(join(d, 'tls')); text(join(d, 'tls', 'gw.pem'), 'mine'); text(join(d, 'tls', 'gw-key.pem'), 'mine'); } },
  { why: 'certs with a garbage ca.pem', args: ['certs', 'gw.json'], code: 'TLS_BAD_PEM', line: /tls\/ca\.pem is not a PEM certificate/, setup: (d) => { text(join(d, 'gw.json'), '{"host": "10.0.0.1", "tls": {"cert": "tls/gw.pem", "key": "tls/gw-key.pem"}}'); mkdirSync(join(d, 'tls')); text(join(d, 'tls', 'ca.pem'), 'garbage'); writeFileSync(join(d, 'tls', 'ca-key.pem'), 'garbage', { mode: 0o600 }); } },
  { why: 'certs with a CA key others can read', args: ['certs', 'gw.json'], code: 'TLS_KEY_MODE', line: /tls\/ca-key\.pem is readable by others \(mode 0644\)/, setup: (d) => { text(join(d, 'gw.json'), '{"host": "10.0.0.1", "tls": {"cert": "tls/gw.pem", "key": "tls/gw-key.pem"}}'); mkdirSync(join(d, 'tls')); text(join(d, 'tls', 'ca.pem'), 'garbage'); writeFileSync(join(d, 'tls', 'ca-key.pem'), 'garbage', { mode: 0o644 }); } },
  { why: 'certs for a file that trusts another CA', args: ['certs', 'gw.json'], code: 'CFG_INVALID', line: /upstreams\[0\]\.linkCa is .*other-ca\.pem, not the deployment CA/, setup: (d) => text(join(d, 'gw.json'), '{"host": "10.0.0.1", "tls": {"cert": "tls/gw.pem", "key": "tls/gw-key.pem"}, "upstreams": [{"name": "reg-primary", "linkCa": "other-ca.pem"}]}') },
];

test('each mistake: its exit code and code, one line that says what is wrong, nothing left behind', async () => {
  const failures: string[] = [];
  const queue = ROWS.map((r, i) => ({ r, i }));
  const worker = async () => {
    for (let x = queue.shift(); x; x = queue.shift()) {
      const { r, i } = x;
      const cwd = join(t.dir, `row-${i}`);
      mkdirSync(join(cwd, '.tmp'), { recursive: true });
      r.setup?.(cwd);
      const before = tree(cwd);
      const res = await usbphone(cwd, r.args);
      const after = tree(cwd).filter((p) => !/^\.tmp\/tsx-/.test(p) && p !== '.tmp/tsx-0');
      const problems: string[] = [];
      if (res.code !== exitOf(r.code)) problems.push(`exit ${res.code}, expected ${exitOf(r.code)}`);
      if (!res.err.endsWith(` (${r.code})\n`)) problems.push(`code: ${JSON.stringify(res.err)}`);
      if (res.err.split('\n').length !== 2) problems.push(`not one line: ${JSON.stringify(res.err)}`);
      if (!r.line.test(res.err)) problems.push(`line ${JSON.stringify(res.err)} does not match ${r.line}`);
      if (!res.err.startsWith(`usbphone ${r.args[0] === 'frobnicate' ? '' : r.args[0] + ':'}`.trimEnd())) problems.push('not prefixed with the command');
      // Nothing left: for a state directory created by a failed start, and for everything else.
      const left = after.filter((p) => !before.includes(p) && !(r.args[0] === 'sim' && r.code === 'CLI_CORRUPT_FILE' && /^s\//.test(p)));
      if (left.length) problems.push(`left behind: ${left.join(', ')}`);
      if (problems.length) failures.push(`${r.why} (usbphone ${r.args.join(' ')}):\n    ${problems.join('\n    ')}`);
    }
  };
  await Promise.all([worker(), worker(), worker()]);
  assert.ok(failures.length === 0, '\n' + failures.join('\n'));
});

test('image run from a working tree writes its key material into the state directory only', async () => {
  const cwd = join(t.dir, 'image-cwd');
  mkdirSync(join(cwd, '.tmp'), { recursive: true });
  const r = await usbphone(cwd, ['image', '--serial', 'SN-1', '--out', 'phone.img']);
  assert.is(r.code, 0, r.err);
  assert.equal(readdirSync(cwd).filter((n) => n !== '.tmp').sort(), ['phone.img', 'state']);
  assert.equal(readdirSync(join(cwd, 'state')).sort(), ['master.key', 'phone.fuses', 'vendor.key']);
  for (const k of ['master.key', 'vendor.key']) assert.is(statSync(join(cwd, 'state', k)).mode & 0o777, 0o600, k);
});

test('image --out into the state directory it creates (found by review: refused as a missing directory)', async () => {
  const cwd = join(t.dir, 'image-new-state');
  mkdirSync(join(cwd, '.tmp'), { recursive: true });
  const r = await usbphone(cwd, ['image', '--serial', 'SN-1', '--state', 's2', '--out', 's2/factory.img']);
  assert.is(r.code, 0, r.err);
  assert.equal(readdirSync(join(cwd, 's2')).sort(), ['factory.fuses', 'factory.img', 'master.key', 'vendor.key']);
  // Any other missing directory is still refused, and nothing is written.
  const bad = await usbphone(cwd, ['image', '--serial', 'SN-1', '--state', 's3', '--out', 'nodir/factory.img']);
  assert.is(bad.code, 2);
  assert.not.ok(existsSync(join(cwd, 's3')));
});

test('enroll --create makes the state directory it is asked to', async () => {
  const cwd = join(t.dir, 'enroll-create');
  mkdirSync(join(cwd, '.tmp'), { recursive: true });
  text(join(cwd, 'r.json'), '{"serial":"SN-1","keyVersion":1}');
  const r = await usbphone(cwd, ['enroll', '--state', 'new-state', '--create', '--record', 'r.json', '--json']);
  assert.is(r.code, 0, r.err);
  const user1 = (JSON.parse(r.out) as { user: string }[])[0]!.user;
  assert.ok(existsSync(join(cwd, 'new-state', 'reg.sqlite')));
  // The same user name for another serial: a conflict, with the code the help promises.
  text(join(cwd, 'r2.json'), '{"serial":"SN-2","keyVersion":1}');
  const c = await usbphone(cwd, ['enroll', '--state', 'new-state', '--record', 'r2.json', '--user', user1]);
  assert.is(c.code, 1);
  assert.match(c.err, /^usbphone enroll: .* \(ENROLL_CONFLICT\)\n$/);
});

test.run();
