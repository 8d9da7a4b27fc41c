// The bank's stories (S4, sim/bank-scenarios.ts) over real sockets, each in a fresh state
// directory; then one full run (register, login, the account page in a browser) captured:
// every WebSocket payload, every log line and every file of the state directory searched for
// the person's password in any encoding, and for its verifier outside the verifier column.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import Database from 'better-sqlite3';
import { schemaRows } from '../deploy/stack-schemas.ts';
import { runStory, STORIES } from './scenarios.ts';
import { BANK_STORIES, STORY_PASSWORD, storyCard, person } from './bank-scenarios.ts';
import { startWorld, TraceHost } from './world.ts';
import { encodings, captureWebSocketSends, filesUnder } from './needles.ts';
import { setLogSink, addLogListener } from '../server-kit/log.ts';
import { SimSlot } from '../firmware/hal/sim-card.ts';

setLogSink(() => {});
/** Lower scrypt cost for the stories' speed; biz-server/bank.test.ts runs OWASP's real parameters. */
const FAST = { bankScrypt: { ln: 12, r: 8, p: 1 } };

for (const name of Object.keys(BANK_STORIES)) {
  test(`scenario ${name}`, async () => {
    assert.ok(STORIES[name], 'listed with the other stories (usbphone sim --scenario)');
    const lines: string[] = [];
    const r = await runStory(name, { print: (l) => lines.push(l), world: FAST });
    assert.ok(r.ok, `${name}: ${r.verdict}\n${lines.join('\n')}\n${r.trace.map((e) => `${e.feature} ${e.step} ${e.detail} ${e.ok}`).join('\n')}`);
    assert.not.ok(r.trace.some((e) => e.detail.includes(STORY_PASSWORD)), 'the password is in no trace line');
  });
}

test('the stories can fail: a login with the clone\'s password wrong is not a device mismatch, so the story does not pass', async () => {
  const story = BANK_STORIES['bank-cloned-identifiers']!;
  const orig = story.run;
  // The same story where the two phones are one and the same device: no mismatch to find.
  story.run = async (c) => {
    const slot = new SimSlot(storyCard(8));
    const { phone, ip } = await c.world.phone(0, c.host, { sim: slot, person: person('register') });
    const a = await phone.device.plugIn();
    const b = await c.world.replug(phone, c.host, ip, { sim: slot, person: person('login') }).device.plugIn();
    return { ok: a.ok && b.ok && b.bank?.kind === 'refused' && b.bank.code === 'BANK_DEVICE_MISMATCH', verdict: 'same device', outcomes: [a, b] };
  };
  try {
    assert.is((await runStory('bank-cloned-identifiers', { world: FAST })).ok, false);
  } finally {
    story.run = orig;
  }
});

test('a full bank run captured: the password is in no WebSocket payload, log line or file; the verifier only in its column; the account page opens in a browser for its token only', async () => {
  const logs: string[] = [];
  const stopLogs = addLogListener((l) => void logs.push(JSON.stringify(l)));
  const { sent, restore } = captureWebSocketSends(WebSocket);
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-bank-capture-'));
  const world = await startWorld({ stateDir: dir, gatewayPort: 0, ...FAST });
  try {
    const host = new TraceHost();
    const slot = new SimSlot(storyCard(30, '+447700930030'));
    const { phone, ip } = await world.phone(0, host, { sim: slot, person: person('register') });
    const a = await phone.device.plugIn();
    assert.ok(a.ok && a.bank?.kind === 'registered', JSON.stringify(a));
    const b = await world.replug(phone, host, ip, { sim: slot, person: person('login') }).device.plugIn();
    assert.ok(b.ok && b.bank?.kind === 'page', JSON.stringify(b));
    const page = (b.ok && b.bank?.kind === 'page' ? b.bank : null)!;

    // The account page, as a browser fetches it.
    const base = world.stack.biz(b.ok ? b.server : '')!.bank!.pageUrl;
    const res = await fetch(base + Buffer.from(page.token).toString('base64url'));
    const html = await res.text();
    assert.is(res.status, 200);
    assert.ok(html.includes(page.account), 'the masked account number');
    assert.match(html, storyCard(30).iccid);
    assert.match(html, '+447700930030');
    assert.is((await fetch(base + Buffer.alloc(32, 1).toString('base64url'))).status, 404, 'a forged token');

    assert.ok(sent.length > 20, `${sent.length} payloads captured`);
    const wire = Buffer.concat(sent).toString('latin1');
    const logText = logs.join('\n');
    const trace = host.events.map((e) => e.detail).join('\n');
    for (const e of encodings(STORY_PASSWORD)) {
      assert.not.ok(wire.includes(e.needle), `the password as ${e.what} in a WebSocket payload`);
      assert.not.ok(logText.includes(e.needle), `the password as ${e.what} in a log line`);
      assert.not.ok(trace.includes(e.needle), `the password as ${e.what} in the trace`);
    }
    // The verifier: its hash and salt, outside the verifier column (its row in the SQLite file,
    // or in the stack's PostgreSQL schema when the run is on PG: STORE_URL, make test-pg).
    const onPg = world.stack.store.choice.kind === 'postgres' ? world.stack.store : null;
    let verifier: string;
    if (onPg?.choice.kind === 'postgres' && onPg.schemas) {
      verifier = (await schemaRows(onPg.choice.url, onPg.schemas.biz)).bank_accounts![0]!.verifier as string;
    } else {
      const db = new Database(join(dir, 'biz-accounts.sqlite'), { readonly: true });
      verifier = (db.prepare('SELECT verifier FROM bank_accounts').get() as { verifier: string }).verifier;
      db.close();
    }
    const [, , , salt, hash] = verifier.split('$');
    assert.match(verifier, /^\$scrypt\$ln=12,r=8,p=1\$/);
    for (const part of [hash!, salt!]) {
      assert.not.ok(wire.includes(part) || wire.includes(Buffer.from(part, 'base64').toString('latin1')), 'verifier part on the wire');
      assert.not.ok(logText.includes(part), 'verifier part in a log line');
    }
    // Every file of the state directory: the password in no encoding; the verifier only in the database.
    await world.stack.stop();
    const files = filesUnder(dir);
    if (!onPg) assert.ok(files.some((f) => f.endsWith('biz-accounts.sqlite')));
    for (const f of files) {
      const text = readFileSync(f).toString('latin1');
      for (const e of encodings(STORY_PASSWORD)) assert.not.ok(text.includes(e.needle), `the password as ${e.what} in ${f}`);
      if (!/biz-accounts\.sqlite/.test(f)) assert.not.ok(text.includes(hash!), `the verifier in ${f}`);
    }
  } finally {
    stopLogs();
    restore();
    await world.stop().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
