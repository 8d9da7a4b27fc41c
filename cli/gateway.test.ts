// A phone plugged into servers that already run, as a user does it: `usbphone serve all`
// (make serve) in one process, `usbphone sim --gateway URL --state DIR` in another, twice:
// the second boot reuses the phone's image and saved login and gets a new password (S0.14).
// And --port as a base port: every server port moves with it; a failed start leaves nothing.
// A phone's SIM card is told to the running servers' operator on the back end they run on
// (SQLite files or PostgreSQL schemas, as STORE_URL chose), whatever this run's STORE_URL.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { tempDir, isAddrInUse } from '../deploy/test-util.ts';
import { openOperatorStore } from '../operator-server/pg-store.ts';
import { stateFiles } from '../deploy/config.ts';
import { stackSchemaPrefix, stackSchemas, dropStackSchemas } from '../deploy/stack-schemas.ts';
import { testPgUrl } from '../server-kit/pg.ts';
import { readFileSync } from 'node:fs';

const bin = join(import.meta.dirname, '..', 'bin', 'usbphone.js');
const t = tempDir('usbphone-gw-test-');
const procs: ChildProcess[] = [];
test.after(() => {
  for (const p of procs) p.kill('SIGKILL');
  t.remove();
});

function run(...args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return runIn(process.env, ...args);
}

function runIn(env: NodeJS.ProcessEnv, ...args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
    let out = '', err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.once('close', (code) => resolve({ code, out, err }));
  });
}

async function serveAll(...args: string[]): Promise<{ proc: ChildProcess; ev: Record<string, any>; exit: Promise<number | null>; lines: string[] }> {
  return serveAllIn(process.env, ...args);
}

async function serveAllIn(env: NodeJS.ProcessEnv, ...args: string[]): Promise<{ proc: ChildProcess; ev: Record<string, any>; exit: Promise<number | null>; lines: string[] }> {
  const proc = spawn(process.execPath, [bin, 'serve', 'all', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...env, USBPHONE_LOG_LEVEL: 'error' } });
  procs.push(proc);
  const exit = new Promise<number | null>((r) => proc.once('exit', (c) => r(c)));
  let err = '';
  proc.stderr!.on('data', (d) => (err += d));
  const lines: string[] = [];
  return new Promise((resolve, reject) => {
    createInterface({ input: proc.stdout! }).on('line', (l) => {
      lines.push(l);
      if (lines.length === 1) resolve({ proc, ev: JSON.parse(l), exit, lines });
    });
    void exit.then((c) => reject(new Error(`serve exited ${c}: ${err}`)));
  });
}

test('sim --gateway: a phone logs into running servers, then a second boot rotates its password; an image rebuilt meanwhile is said', async () => {
  const state = join(t.dir, 'serve');
  const s = await serveAll('--state', state, '--port', '0', '--json');
  assert.is(s.ev.event, 'listening');
  const url = s.ev.gatewayUrl as string;

  const a = await run('sim', '--gateway', url, '--state', state);
  assert.is(a.code, 0, a.out + a.err);
  assert.match(a.out, /servers: the running stack at ws:/);
  assert.match(a.out, /factory image built/);
  assert.match(a.out, /S0\.5 +hello -> reg-primary/);
  assert.match(a.out, /LOGGED IN to biz-east with password generation 1 \(via registration\)/);
  for (const f of ['phone.img', 'phone.fuses', 'phone.enrollment.json']) assert.ok(existsSync(join(state, f)), f);

  const b = await run('sim', '--gateway', url.slice(0, -1), '--state', state); // the final '/' is optional
  assert.is(b.code, 0, b.out + b.err);
  assert.match(b.out, /factory image reused: .*what the phone saved last time is still there/);
  assert.match(b.out, /LOGGED IN to biz-east with password generation 2 \(via registration\)/);
  // The password change is shown after the login it belongs to.
  const lines = b.out.split('\n');
  const confirmed = lines.findIndex((l) => /S0\.11 +login <- biz-east +confirmed/.test(l));
  const change = lines.findIndex((l) => /S0\.14 +password change/.test(l));
  assert.ok(confirmed >= 0 && change > confirmed, b.out);
  assert.not.match(b.out, / ok {2}ok/);

  // `usbphone image` rewriting the phone's image: the next run says so and starts over.
  const img = await run('image', '--serial', 'SN-0000001', '--state', state, '--out', join(state, 'phone.img'), '--fuses', join(state, 'phone.fuses'), '--reg-primary', url + 'reg-primary', '--reg-backup', url + 'reg-backup');
  assert.is(img.code, 0, img.err);
  const c = await run('sim', '--gateway', url, '--state', state, '-q');
  assert.is(c.code, 0, c.out + c.err);
  assert.match(c.out, /changed since the last run .*first boot again/);
  assert.match(c.out, /LOGGED IN/);

  // A fleet against the same running servers.
  const f = await run('sim', '--devices', '6', '--concurrency', '3', '--gateway', url, '--state', state, '--json');
  assert.is(f.code, 0, f.out + f.err);
  const summary = JSON.parse(f.out.trim().split('\n').pop()!);
  assert.equal([summary.ok, summary.failed, summary.servers], [6, 0, 'attached']);

  s.proc.kill('SIGTERM');
  assert.is(await s.exit, 0);
  assert.equal(JSON.parse(s.lines.at(-1)!), { event: 'stopped', role: 'all', signal: 'SIGTERM' });

  // Nothing answers any more: one line, what to do.
  const d = await run('sim', '--gateway', url, '--state', state);
  assert.is(d.code, 1);
  assert.match(d.err, /^usbphone sim: no gateway answers at .*make serve.* \(SIM_NO_GATEWAY\)\n$/);
  // A state directory that is not the servers': refused before anything is written.
  const other = join(t.dir, 'not-servers');
  mkdirSync(other);
  const e = await run('sim', '--gateway', url, '--state', other);
  assert.is(e.code, 2);
  assert.match(e.err, /has no master\.key.*\(CLI_NO_STATE\)\n$/);
  assert.equal(readdirSync(other), []);
});

test("sim --gateway --sim-card, then --swap-sim: the running servers' operator is told of the card, and of the line's move, in their own store, on SQLite and on PostgreSQL", async () => {
  const { STORE_URL: _drop, ...sqliteEnv } = process.env;
  for (const [kind, env] of [['sqlite', sqliteEnv], ['postgres', { ...sqliteEnv, STORE_URL: testPgUrl() }]] as const) {
    const state = join(t.dir, `operator-${kind}`);
    const s = await serveAllIn(env, '--state', state, '--port', '0', '--json');
    try {
      const url = s.ev.gatewayUrl as string;
      const a = await runIn(env, 'sim', '--gateway', url, '--state', state, '-q', '--sim-card', '2');
      assert.is(a.code, 0, `${kind}: ${a.out}${a.err}`);
      assert.match(a.out, /operator: the operator's line \+99901\d{8} is on this card/, kind);
      const first = JSON.parse(readFileSync(join(state, 'phone.sim.json'), 'utf8')) as { iccid: string; msisdn: string };
      const b = await runIn(env, 'sim', '--gateway', url, '--state', state, '-q', '--swap-sim');
      assert.is(b.code, 0, `${kind}: ${b.out}${b.err}`);
      assert.match(b.out, new RegExp(`operator: the operator moved line \\${first.msisdn} from card`), kind);
      const second = JSON.parse(readFileSync(join(state, 'phone.sim.json'), 'utf8')) as { iccid: string; msisdn: string };
      // The servers' own operator store has the line on the new card (the file or the schema they run on).
      const op = await openOperatorStore(kind === 'sqlite' ? { kind, file: stateFiles(state).operatorDb } : { kind, url: env.STORE_URL!, schema: stackSchemas(stackSchemaPrefix(state)).operator });
      try {
        assert.is((await op.byPhoneNumber(first.msisdn))?.card.iccid, second.iccid, kind);
        assert.is((await op.cardByIccid(first.iccid))?.status, 'replaced', kind);
      } finally {
        await op.close();
      }
      if (kind === 'postgres') assert.not.ok(existsSync(join(state, 'operator.sqlite')), 'no SQLite operator store made beside the schemas');
    } finally {
      s.proc.kill('SIGTERM');
      await s.exit;
      if (kind === 'postgres' && existsSync(join(state, 'pg-schema'))) await dropStackSchemas(env.STORE_URL!, stackSchemaPrefix(state));
    }
  }
});

// Every port `serve all --port BASE` takes, as offsets from BASE (the ports the test expects below).
const PORT_OFFSETS = [0, 1, 10, 11, 20, 21, 30, 31, 32, 40, 41, 42, 45, 50];
async function portsFree(base: number): Promise<boolean> {
  for (const off of PORT_OFFSETS) {
    const ok = await new Promise<boolean>((r) => {
      const s = createServer();
      s.once('error', () => r(false));
      s.listen(base + off, '127.0.0.1', () => s.close(() => r(true)));
    });
    if (!ok) return false;
  }
  return true;
}

test('serve all --port BASE moves every port; a second one on the same base fails and leaves no file behind', async () => {
  // A range free a moment ago; another process may take one of its ports before serve all
  // listens (EADDRINUSE: it then exits 1, removing its state directory): another range then.
  let base = 0;
  let s: Awaited<ReturnType<typeof serveAll>> | null = null;
  for (let i = 0; i < 20 && !s; i++) {
    const b = 20_000 + 100 * Math.floor(Math.random() * 300);
    if (!(await portsFree(b))) continue;
    try {
      s = await serveAll('--state', join(t.dir, 'base'), '--port', String(b), '--json');
      base = b;
    } catch (e) {
      if (!isAddrInUse(e)) throw e;
    }
  }
  assert.ok(s, 'a free range of ports');
  if (!s) return;
  assert.is(s.ev.gatewayUrl, `ws://127.0.0.1:${base}/`);
  assert.equal(s.ev.ports, {
    'biz-east': { device: base + 30, link: base + 31, admin: base + 32 },
    'biz-west': { device: base + 40, link: base + 41, admin: base + 42 },
    gateway: base,
    'gateway-operator': base + 1,
    operator: base + 50,
    policy: base + 45,
    'reg-primary': { device: base + 10, link: base + 11 },
    'reg-backup': { device: base + 20, link: base + 21 },
  });
  const again = join(t.dir, 'again');
  const r = await run('serve', 'all', '--state', again, '--port', String(base));
  assert.is(r.code, 1, r.err);
  assert.match(r.err, /^usbphone serve: .*EADDRINUSE.*--port.*\(SERVE_LISTEN_FAILED\)\n$/);
  assert.not.ok(existsSync(again), 'the state directory it created is removed');
  // In an existing directory, only what it created goes.
  mkdirSync(again);
  const r2 = await run('serve', 'all', '--state', again, '--port', String(base));
  assert.is(r2.code, 1);
  assert.equal(readdirSync(again), []);
  s.proc.kill('SIGINT');
  assert.is(await s.exit, 0);
});

test('serve all without --json: a human line when ready (the addresses) and when stopped', async () => {
  const proc = spawn(process.execPath, [bin, 'serve', 'all', '--state', join(t.dir, 'human'), '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, USBPHONE_LOG_LEVEL: 'error' } });
  procs.push(proc);
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  while (!/stop with Ctrl-C/.test(out)) await new Promise((r) => setTimeout(r, 50));
  assert.match(out, /^servers ready: gateway ws:\/\/127\.0\.0\.1:\d+\/ \(state directory /);
  assert.match(out, /reg-primary +devices \d+, link \d+/);
  assert.match(out, /health +http:\/\/127\.0\.0\.1:\d+\/healthz/);
  assert.match(out, /usbphone sim --gateway ws:/);
  assert.not.match(out, /^\{/m);
  proc.kill('SIGHUP');
  const code = await new Promise((r) => proc.once('exit', r));
  assert.is(code, 0);
  assert.match(out, /stopped \(SIGHUP\)\n$/);
});

test.run();
