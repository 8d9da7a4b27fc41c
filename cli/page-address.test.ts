// Who prints the live page's address (issue 17): `usbphone sim` (make sim) and
// `usbphone serve all` (make serve), as real processes; the address printed answers with
// the page, and its feed has seen the phone log in. `sim --watch` keeps it up until Ctrl-C,
// which then ends the run normally (exit 0, the summary printed). A fleet (`sim --devices N`)
// prints its page before the first phone plugs in (the server process's, or the in-process
// stack's), whose fleet figures count the fleet's logins; with --json on stderr.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const root = join(import.meta.dirname, '..');

/** Resolves with the first stdout line matching `re` (and every line so far). */
function waitLine(p: ChildProcess, re: RegExp, lines: string[]): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: p.stdout! });
    rl.on('line', (l) => {
      lines.push(l);
      const m = re.exec(l);
      if (m) resolve(m);
    });
    p.once('exit', (code) => reject(new Error(`exited ${code} before printing ${re}: ${lines.join('\n')}`)));
  });
}

/** The feed's first messages, read for `ms`. */
async function feedFor(url: string, ms: number): Promise<string> {
  const ac = new AbortController();
  setTimeout(() => ac.abort(), ms);
  let text = '';
  try {
    const res = await fetch(url, { signal: ac.signal });
    for await (const c of res.body as unknown as AsyncIterable<Uint8Array>) text += Buffer.from(c).toString('utf8');
  } catch (e) {
    if ((e as Error).name !== 'AbortError') throw e;
  }
  return text;
}

test('usbphone sim --watch prints the live page, which shows the phone logged in, until Ctrl-C ends the run normally', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-page-sim-'));
  const p = spawn(process.execPath, [join(root, 'bin', 'usbphone.js'), 'sim', '--state', dir, '--port', '0', '--watch', '-q'], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    const lines: string[] = [];
    const page = (await waitLine(p, /^live page: (http:\/\/127\.0\.0\.1:\d+\/) /, lines))[1]!;
    await waitLine(p, /stay up: Ctrl-C stops them$/, lines);
    const html = await fetch(page);
    assert.is(html.status, 200);
    assert.match(await html.text(), /<script type="module" src="\/page.js">/);
    const feed = await feedFor(page + 'feed?phone=127.1.0.1', 500);
    assert.match(feed, /"state":"logged in","lastLogin":\d+,"server":"biz-east","gen":1/);
    assert.match(feed, /"type":"loginOk"/);
    const exited = new Promise<number | null>((r) => p.once('exit', (c) => r(c)));
    p.kill('SIGINT');
    assert.is(await exited, 0);
    assert.ok(lines.some((l) => l.startsWith('LOGGED IN to biz-east')), lines.join('\n'));
  } finally {
    p.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

/** The 'stats' messages of a feed's text. */
const statsOf = (feed: string) => feed.split('\n').filter((l) => l.startsWith('data: ')).map((l) => JSON.parse(l.slice(6)) as { kind: string; loginsPerSec?: number }).filter((m) => m.kind === 'stats');

test('usbphone sim --devices N --watch prints the live page of the server process; its fleet charts counted the logins; Ctrl-C ends the run normally', async () => {
  const p = spawn(process.execPath, [join(root, 'bin', 'usbphone.js'), 'sim', '--devices', '6', '--concurrency', '3', '--watch'], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    const lines: string[] = [];
    const page = (await waitLine(p, /^live page: (http:\/\/127\.0\.0\.1:\d+\/) \(its fleet charts follow the run/, lines))[1]!;
    await waitLine(p, /stay up: Ctrl-C stops them$/, lines);
    assert.ok(lines.some((l) => /^ {2}logins ok {7}6$/.test(l)), `the summary came before the wait: ${lines.join('\n')}`);
    const html = await fetch(page);
    assert.is(html.status, 200);
    // The hub ticks once a second: the fleet's logins are in the figures it keeps for a page that opens later.
    let total = 0;
    for (let i = 0; i < 6 && total < 6; i++) {
      total = statsOf(await feedFor(page + 'feed', 300)).reduce((n, m) => n + (m.loginsPerSec ?? 0), 0);
      if (total < 6) await new Promise((r) => setTimeout(r, 500));
    }
    assert.is(total, 6, 'the fleet charts counted every login');
    const exited = new Promise<number | null>((r) => p.once('exit', (c) => r(c)));
    p.kill('SIGINT');
    assert.is(await exited, 0);
  } finally {
    p.kill('SIGKILL');
  }
});

test('usbphone sim --devices N --servers inline --json: the live page on stderr, stdout the one JSON summary', async () => {
  const p = spawn(process.execPath, [join(root, 'bin', 'usbphone.js'), 'sim', '--devices', '2', '--servers', 'inline', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  p.stdout!.on('data', (c: Buffer) => (out += c));
  p.stderr!.on('data', (c: Buffer) => (err += c));
  const code = await new Promise<number | null>((r) => p.once('exit', (c) => r(c)));
  assert.is(code, 0, err);
  assert.match(err, /^live page: http:\/\/127\.0\.0\.1:\d+\/ \(its fleet charts follow the run/m);
  const summary = JSON.parse(out) as { ok: number; servers: string };
  assert.equal([summary.ok, summary.servers], [2, 'inline']);
});

test('usbphone serve all prints the live page (and --json names it pageUrl)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-page-serve-'));
  for (const json of [false, true]) {
    const p = spawn(process.execPath, [join(root, 'bin', 'usbphone.js'), 'serve', 'all', '--state', dir, '--port', '0', ...(json ? ['--json'] : [])], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      const lines: string[] = [];
      const url = json
        ? (JSON.parse((await waitLine(p, /^\{"event":"listening"/, lines)).input) as { pageUrl: string }).pageUrl
        : (await waitLine(p, /^ {2}live page {4}(http:\/\/127\.0\.0\.1:\d+\/) /, lines))[1]!;
      const res = await fetch(url);
      assert.is(res.status, 200);
      assert.match(await res.text(), /usbphone — live/);
      const exited = new Promise<number | null>((r) => p.once('exit', (c) => r(c)));
      p.kill('SIGTERM');
      assert.is(await exited, 0);
    } finally {
      p.kill('SIGKILL');
    }
  }
  rmSync(dir, { recursive: true, force: true });
});

test.run();
