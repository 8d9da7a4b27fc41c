// Who prints the live page's address (issue 17): `usbphone sim` (make sim) and
// `usbphone serve all` (make serve), as real processes; the address printed answers with
// the page, and its feed has seen the phone log in. `sim --watch` keeps it up until Ctrl-C,
// which then ends the run normally (exit 0, the summary printed).
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
