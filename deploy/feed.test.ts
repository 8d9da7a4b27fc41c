// The live page's feed (issue 17): every message checked against its schema before it is
// sent, a hostile table for that schema, the page's routes, and the rule that matters most:
// the feed of a whole run (two boots, a registration, two logins, a password change), read
// over HTTP as a browser reads it, holds no secret and not the serial in any encoding; the
// same for a full mode-2 bank run (S4.4, S4.6), whose operator calls the feed draws in the
// phone's diagram without the card's identifiers, the number, the password or the account.
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { startWorld, TraceHost, fusesOf } from '../sim/world.ts';
import { setLogSink } from '../server-kit/log.ts';
import { heldSecrets } from '../sim/held-secrets.ts';
import { deriveDeviceKey, makeSerialToken, MasterKeyring } from '../protocol/keys.ts';
import { passwordLoginKey, ServerHandshake } from '../protocol/channel.ts';
import { linkKeyFor } from '../server-kit/link.ts';
import { MsgType } from '../protocol/messages.ts';
import type { AttackTable } from '../protocol/attack-table.ts';
import { FeedHub, maskIds, type HealthSnapshot } from './feed-hub.ts';
import { feedValidator, FEED_VERSION, type FeedMessage } from './feed-schema.ts';
import { pageRoutes } from './page-server.ts';
import { SimSlot } from '../firmware/hal/sim-card.ts';
import { storyCard, storyNumber, person, STORY_PASSWORD } from '../sim/bank-scenarios.ts';
import type { OperatorCallEvent } from '../biz-server/bank.ts';

setLogSink(() => {});


/** Reads a server-sent event stream into `into` until aborted. */
function readFeed(url: string, into: string[]): { stop: () => void; done: Promise<void> } {
  const ac = new AbortController();
  const done = (async () => {
    try {
      const res = await fetch(url, { signal: ac.signal });
      const dec = new TextDecoder();
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) into.push(dec.decode(chunk, { stream: true }));
    } catch (e) {
      if ((e as Error).name !== 'AbortError') throw e;
    }
  })();
  return { stop: () => ac.abort(), done };
}

const messagesOf = (raw: string[]): FeedMessage[] =>
  raw.join('').split('\n').filter((l) => l.startsWith('data: ')).map((l) => JSON.parse(l.slice(6)) as FeedMessage);

/**
 * Waits until the messages the feeds have delivered so far (whole lines only: a stream may stop
 * mid-line) satisfy `ok`, at most `timeoutMs`: on a loaded machine the last of a run's messages
 * can take longer than any fixed pause to reach the page. The assertions after it say what is missing.
 */
async function feedHas(raws: string[][], ok: (msgs: FeedMessage[]) => boolean, timeoutMs = 20_000): Promise<void> {
  const whole = () => raws.flatMap((raw) => {
    const text = raw.join('');
    return messagesOf([text.slice(0, text.lastIndexOf('\n') + 1)]);
  });
  const end = Date.now() + timeoutMs;
  while (!ok(whole()) && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
}

const fakeHealth = (): HealthSnapshot => ({ servers: [{ name: 'gateway', role: 'gateway', running: true, linkUp: null, sessions: 0 }], load: { rssMiB: 1, heapMiB: 1, cpuPercent: 0, eventLoopP99Ms: 1, connections: 0 } });

test('the feed of a full run (two boots, a password change), read over HTTP, holds no secret and not the serial', async () => {
  // Every session's traffic keys, as the servers derive them (the phone's are the same).
  const sessionKeys: Uint8Array[] = [];
  const side = Object.getPrototypeOf(ServerHandshake.prototype) as { trafficKeys(th2: Uint8Array): [Uint8Array, Uint8Array] };
  const original = side.trafficKeys;
  side.trafficKeys = function (this: unknown, th2: Uint8Array) {
    const keys = original.call(this, th2);
    sessionKeys.push(Uint8Array.from(keys[0]), Uint8Array.from(keys[1]));
    return keys;
  };
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-feed-'));
  const world = await startWorld({ stateDir: dir, gatewayPort: 0 });
  const all: string[] = [];
  const watched: string[] = [];
  const feeds = [readFeed(world.stack.pageUrl + 'feed', all)];
  try {
    const hub = world.stack.feed;
    let ip = '';
    // The phone's own steps go to the feed too, as `usbphone sim` sends them.
    const host = new TraceHost((e) => hub.phoneStep(ip, e));
    const made = await world.phone(0, host);
    ip = made.ip;
    const { serial } = made;
    let phone = made.phone;
    const fuses = fusesOf(world.seed, 0);
    assert.ok((await phone.device.plugIn()).ok);
    const first = heldSecrets(phone, fuses);
    // A page that opens now, watching this phone: it gets the first boot's trace replayed.
    feeds.push(readFeed(world.stack.pageUrl + `feed?phone=${ip}`, watched));
    await new Promise((r) => setTimeout(r, 100));
    phone = world.replug(phone, host, ip);
    const second = await phone.device.plugIn();
    assert.ok(second.ok && second.gen === 2, JSON.stringify(second));
    const secrets: [string, Uint8Array][] = [...first, ...heldSecrets(phone, fuses)].map((s, i) => [`business secret ${i}`, s]);
    assert.is(secrets.length, 2);
    const user = (await world.stack.regStore.getDevice(serial))!.user;
    for (const [what, s] of [...secrets]) secrets.push([`login key of ${what}`, passwordLoginKey(s, user)]);
    const f = (n: string) => readFileSync(join(dir, n), 'utf8');
    const ring = MasterKeyring.parse(f('master.key'));
    const root = hexToBytes(f('link.key').trim());
    secrets.push(
      ['device key', deriveDeviceKey(ring.key(ring.current), serial)],
      ['serial token', makeSerialToken(ring.key(ring.current), ring.current, serial)],
      ['master key', ring.key(ring.current)],
      ['link root key', root],
      ['admin key', hexToBytes(f('admin.key').trim())],
      ['store key', hexToBytes(f('store.key').trim())],
      ...['reg-primary', 'reg-backup', 'biz-east', 'biz-west'].map((n) => [`link key ${n}`, linkKeyFor(root, n)] as [string, Uint8Array]),
      ...sessionKeys.map((k, i) => [`session key ${i}`, k] as [string, Uint8Array]),
    );
    assert.ok(sessionKeys.length >= 8, `${sessionKeys.length} session keys captured`);
    hub.tick();
    await feedHas([all, watched], (msgs) =>
      msgs.some((m) => m.kind === 'server' && m.event === 'login ok' && m.gen === 2) &&
      msgs.some((m) => m.kind === 'trace' && (m.item as { type?: string }).type === 'pwConfirmAck'));
    for (const fd of feeds) fd.stop();
    await Promise.all(feeds.map((fd) => fd.done));

    const text = all.join('') + watched.join('');
    const msgs = [...messagesOf(all), ...messagesOf(watched)];
    // The search is not vacuous: the feed saw the logins, the user and the phone's steps.
    assert.ok(msgs.some((m) => m.kind === 'trace' && (m.item as { type?: string }).type === 'loginOk'), 'a loginOk in the trace');
    assert.ok(msgs.some((m) => m.kind === 'trace' && (m.item as { type?: string }).type === 'pwConfirmAck'), 'the password change in the trace');
    assert.ok(msgs.some((m) => m.kind === 'trace' && (m.item as { kind: string }).kind === 'step'), 'the phone steps in the trace');
    assert.ok(msgs.some((m) => m.kind === 'server' && m.event === 'login ok' && m.gen === 2), 'the second login, generation 2');
    assert.ok(text.includes(user), 'the user name (public) is in the feed');
    // Every message that reached a page validates.
    const v = feedValidator();
    for (const m of msgs) assert.ok(v(m), `${JSON.stringify(m)} breaks the schema: ${JSON.stringify(v.errors)}`);
    assert.is(hub.refused, 0, `the hub refused ${hub.refused} message(s): ${hub.lastRefusal}`);

    const lower = text.toLowerCase();
    for (const [what, s] of secrets) {
      const hex = bytesToHex(s);
      const b64 = Buffer.from(s).toString('base64');
      for (const needle of [hex.slice(0, 16), hex.slice(-16), b64.slice(0, 16), Buffer.from(s).toString('base64url').slice(0, 16)]) {
        assert.not.ok(lower.includes(needle.toLowerCase()), `${what} (${needle.slice(0, 6)}...) in the feed`);
      }
    }
    const u8 = Buffer.from(serial);
    for (const needle of [serial, u8.toString('hex'), u8.toString('base64').slice(0, 8), serial.replace(/^SN-/, '')]) {
      assert.not.ok(lower.includes(needle.toLowerCase()), `the serial (${needle}) in the feed`);
    }
  } finally {
    side.trafficKeys = original;
    for (const fd of feeds) fd.stop();
    await world.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the schema refuses what must never be sent: unlisted fields, key-like text, bad codes', () => {
  const v = feedValidator();
  const ok = (m: object) => assert.ok(v(m), `${JSON.stringify(m)}: ${JSON.stringify(v.errors)}`);
  const bad = (m: object, why: string) => assert.not.ok(v(m), `${why}: ${JSON.stringify(m)}`);
  const step = (detail: string) => ({ kind: 'trace', t: 1, phone: '127.1.0.1', item: { t: 1, kind: 'step', feature: 'S0.5', step: 'hello', detail, ok: true } });
  const frame = { t: 1, kind: 'frame', from: 'phone', to: 'registration', type: 'hello', dest: 'reg-primary', feature: 'S0.5', refused: false };
  ok({ kind: 'hello', t: 1, version: FEED_VERSION, watching: null, servers: ['gateway'] });
  ok(step('user u-0123456789abcdef0123, gen 1'));
  ok({ kind: 'trace', t: 1, phone: '127.1.0.1', item: frame });
  ok({ kind: 'server', t: 1, server: 'biz-east', event: 'login refused', code: 'LOGIN_BAD_MAC', user: 'u-0123456789abcdef0123', gen: 2 });
  bad({ kind: 'hello', t: 1, version: FEED_VERSION + 1, watching: null, servers: [] }, 'another version');
  bad(step('key ' + 'ab'.repeat(16)), '32 hex digits');
  bad(step('token ' + Buffer.alloc(30, 7).toString('base64') + 'xyzA'), '40 base64 characters');
  bad(step('line\nbreak'), 'a control character');
  bad(step('x'.repeat(161)), 'too long');
  bad({ ...step('ok'), serial: 'SN-1' }, 'an unlisted field (top)');
  bad({ kind: 'trace', t: 1, phone: '127.1.0.1', item: { ...frame, body: 'x' } }, 'an unlisted field (item)');
  bad({ kind: 'trace', t: 1, phone: 'SN-0000001', item: frame }, 'a phone that is not an address');
  bad({ kind: 'server', t: 1, server: 'biz-east', event: 'login ok', user: 'SN-0000001' }, 'a user that is not a derived name');
  bad({ kind: 'server', t: 1, server: 'biz-east', event: 'login ok', code: 'not a code' }, 'a code out of the code alphabet');
  bad({ kind: 'server', t: 1, server: 'biz-east', event: 'something else' }, 'an unknown event');
  bad({ kind: 'secrets', t: 1 }, 'an unknown kind');
  bad({ kind: 'stats', t: 1, loginsPerSec: -1, refusalsPerSec: 0, p50Ms: null, p99Ms: null }, 'a negative rate');
});

test('the hub checks each message before it is sent: a refused one is counted and reaches no subscriber, also a step kept for a page that watches later; log lines are projected', () => {
  const hub = new FeedHub({ servers: ['gateway'], health: fakeHealth, tickMs: 60_000 });
  try {
    const got: FeedMessage[] = [];
    hub.frame({ conn: 1, ip: '127.1.0.7', dir: 'up', type: MsgType.hello, dest: 'reg-primary' });
    const unsubscribe = hub.subscribe((m) => got.push(m), { phone: '127.1.0.7' })!;
    assert.equal(got.map((m) => m.kind), ['hello', 'phones', 'trace']);
    assert.is(got[0]!.watching, '127.1.0.7');
    got.length = 0;
    hub.phoneStep('127.1.0.7', { t: 1, feature: 'S0.4', step: 'read identity', detail: 'key ' + 'cd'.repeat(32), ok: true });
    assert.is(got.length, 0, 'a key-like detail is not sent');
    assert.is(hub.refused, 1);
    assert.match(hub.lastRefusal!, /^trace: /);
    // A log line's serial, IP of an unknown phone and other fields are not carried.
    hub.log({ t: 'x', level: 'info', svc: 'reg-primary', msg: 'credentials issued', serial: 'SN-0000042', user: 'u-0123456789abcdef0123', gen: 3, ip: '127.1.0.7', region: 'east' });
    hub.log({ t: 'x', level: 'info', svc: 'gateway/biz-east', msg: 'link up', url: 'ws://127.0.0.1:1/' });
    hub.log({ t: 'x', level: 'info', svc: 'biz-east', msg: 'account created', user: 'u-0123456789abcdef0123' });
    const server = got.filter((m) => m.kind === 'server');
    assert.equal(server.map((m) => ({ ...m, t: 0 })), [
      { kind: 'server', t: 0, server: 'reg-primary', event: 'credentials issued', user: 'u-0123456789abcdef0123', gen: 3, phone: '127.1.0.7' },
      { kind: 'server', t: 0, server: 'biz-east', event: 'link up' },
    ]);
    // An error frame's code from a peer is carried only when it is a code.
    hub.frame({ conn: 1, ip: '127.1.0.7', dir: 'down', type: MsgType.error, dest: 'reg-primary', code: 'see ' + 'ab'.repeat(20) });
    const last = got.at(-1)!;
    assert.equal((last.item as { code: string; refused: boolean }).code, 'unreadable');
    assert.ok((last.item as { refused: boolean }).refused);
    hub.flushPhones();
    const phones = got.filter((m) => m.kind === 'phones').at(-1)!;
    assert.equal((phones.phones as { state: string; lastCode: string }[])[0]!.state, 'refused');
    // A phone no page watches: its steps are kept unchecked (issue 15: most are never sent) and
    // checked when a page starts watching it: the key-like one is refused then, never sent.
    hub.frame({ conn: 2, ip: '127.1.0.8', dir: 'up', type: MsgType.hello, dest: 'reg-primary' });
    hub.phoneStep('127.1.0.8', { t: 2, feature: 'S0.4', step: 'read identity', detail: 'key ' + 'ef'.repeat(32), ok: true });
    assert.is(hub.refused, 1, 'not checked while nobody watches');
    const late: FeedMessage[] = [];
    const stopLate = hub.subscribe((m) => late.push(m), { phone: '127.1.0.8' })!;
    assert.equal(late.map((m) => m.kind), ['hello', 'phones', 'trace'], 'the hello frame, not the refused step');
    assert.is(hub.refused, 2);
    assert.ok(!JSON.stringify(late).includes('ef'.repeat(32)));
    // Counted once: a second page watching the same phone, and a second bad step with two pages watching.
    const later: FeedMessage[] = [];
    const stopLater = hub.subscribe((m) => later.push(m), { phone: '127.1.0.8' })!;
    assert.equal(later.map((m) => m.kind), ['hello', 'phones', 'trace']);
    hub.phoneStep('127.1.0.8', { t: 3, feature: 'S0.4', step: 'read identity', detail: 'key ' + '9a'.repeat(32), ok: true });
    assert.is(hub.refused, 3, 'one refusal per bad step, not per page');
    assert.is(late.length + later.length, 6);
    stopLater();
    stopLate();
    unsubscribe();
    hub.close();
    assert.is(hub.subscribe(() => {}), null, 'a closed hub takes no subscriber');
  } finally {
    hub.stop();
  }
});

test('S3: the hub publishes each table with its period\'s attacks, then the logins made under it by the mechanism their opening stated (only logins the site accepted); a new page gets the history', () => {
  const hub = new FeedHub({ servers: ['gateway'], health: fakeHealth, tickMs: 60_000 });
  try {
    const got: FeedMessage[] = [];
    hub.subscribe((m) => got.push(m));
    const table = (version: number, ratePpm: number): AttackTable => ({
      version, issuedAt: 1_000, expiresAt: 4_000,
      sites: [{ site: 'biz-east', level: ratePpm ? 2 : 1, floor: 'password', degreePpm: 300_000, mechs: [{ mech: 'password', ratePpm }, { mech: 'otp', ratePpm: 0 }, { mech: 'fingerprint', ratePpm: 0 }] }],
    });
    hub.table({ table: table(1, 0), periodId: 10, attacks: new Map() });
    // An honest login (opening, then loginOk on the same connection) and a bot's guess (refused).
    hub.frame({ conn: 5, ip: '127.1.0.1', dir: 'up', type: MsgType.login, dest: 'biz-east', mech: 'password' });
    hub.frame({ conn: 5, ip: '127.1.0.1', dir: 'down', type: MsgType.loginOk, dest: 'biz-east' });
    hub.frame({ conn: 6, ip: '127.66.0.1', dir: 'up', type: MsgType.login, dest: 'biz-east', mech: 'password' });
    hub.frame({ conn: 6, ip: '127.66.0.1', dir: 'down', type: MsgType.loginFail, dest: 'biz-east' });
    hub.frame({ conn: 7, ip: '127.1.0.2', dir: 'up', type: MsgType.login, dest: 'biz-east', mech: 'otp' });
    hub.frame({ conn: 7, ip: '127.1.0.2', dir: 'down', type: MsgType.loginOk, dest: 'biz-east' });
    hub.table({ table: table(2, 1_000_000), periodId: 11, attacks: new Map([['biz-east', { total: 4, password: 4, otp: 0, fingerprint: 0 }]]) });
    const s3: FeedMessage[] = got.filter((m) => m.kind === 'table' || m.kind === 'choices').map((m) => ({ ...m, t: 0 }));
    assert.equal(s3.map((m) => [m.kind, m.version]), [['table', 1], ['choices', 1], ['table', 2]]);
    assert.equal(s3[1]!.sites, [{ site: 'biz-east', logins: { password: 1, otp: 1, fingerprint: 0 } }]);
    assert.equal((s3[2]!.sites as { attacks: unknown }[])[0]!.attacks, { total: 4, password: 4, otp: 0, fingerprint: 0 });
    assert.is(hub.refused, 0);
    const later: FeedMessage[] = [];
    hub.subscribe((m) => later.push(m));
    assert.equal(later.filter((m) => m.kind === 'table' || m.kind === 'choices').map((m) => m.version), [1, 1, 2], 'a page that opens later gets the history');
  } finally {
    hub.stop();
  }
});

test('S3: the schema refuses a table message that carries anything but names, rates and counts', () => {
  const v = feedValidator();
  const site = { site: 'biz-east', level: 2, floor: 'password', degreePpm: 1, mechs: [{ mech: 'password', ratePpm: 1_000_000 }], attacks: { total: 1, password: 1, otp: 0, fingerprint: 0 } };
  const ok = { kind: 'table', t: 1, version: 2, periodId: 3, issuedAt: 1, expiresAt: 2, sites: [site] };
  assert.ok(v(ok), JSON.stringify(v.errors));
  const bad = (m: unknown, why: string) => assert.not.ok(v(m), why);
  bad({ ...ok, signed: 'ab' }, 'the signed bytes');
  bad({ ...ok, sites: [{ ...site, key: 'x' }] }, 'an unlisted site field');
  bad({ ...ok, sites: [{ ...site, site: 'ab'.repeat(20) }] }, 'a site that is not a name');
  bad({ ...ok, sites: [{ ...site, mechs: [{ mech: 'pin', ratePpm: 1 }] }] }, 'an unknown mechanism');
  bad({ ...ok, sites: [{ ...site, mechs: [{ mech: 'password', ratePpm: 1_000_001 }] }] }, 'a rate above 1');
  bad({ ...ok, sites: [{ ...site, attacks: { ...site.attacks, ip: '127.66.0.1' } }] }, 'an attacker address');
  bad({ kind: 'choices', t: 1, version: 1, sites: [{ site: 'biz-east', logins: { password: -1, otp: 0, fingerprint: 0 } }] }, 'a negative count');
  bad({ kind: 'choices', t: 1, version: 1, sites: [{ site: 'biz-east', logins: { password: 1, otp: 0, fingerprint: 0 }, user: 'u-0123456789abcdef0123' }] }, 'a user');
});

test('the page routes: its files with a strict content policy, uPlot from node_modules, the feed, 503 once the feed is stopped', async () => {
  const hub = new FeedHub({ servers: ['gateway'], health: fakeHealth, tickMs: 60_000 });
  const page = pageRoutes(hub);
  const server = createServer((req, res) => {
    if (!page.routes(req, res)) res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    for (const [path, type] of [['/', 'text/html'], ['/page.js', 'text/javascript'], ['/page.css', 'text/css'], ['/vendor/uplot/uPlot.esm.js', 'text/javascript'], ['/vendor/uplot/uPlot.min.css', 'text/css']]) {
      const r = await fetch(base + path!);
      assert.is(r.status, 200, path);
      assert.ok(r.headers.get('content-type')!.startsWith(type!), path);
      assert.match(r.headers.get('content-security-policy')!, /script-src 'self'/);
      assert.ok((await r.text()).length > 100);
    }
    assert.is((await fetch(base + '/../package.json')).status, 404);
    assert.is((await fetch(base + '/page.js', { method: 'POST' })).status, 405);
    const raw: string[] = [];
    const fd = readFeed(base + '/feed', raw);
    for (let i = 0; i < 1_000 && page.feeds() === 0; i++) await new Promise((r) => setTimeout(r, 10)); // bounded 10 s, ends when open
    assert.is(page.feeds(), 1);
    hub.close();
    await fd.done;
    assert.is(page.feeds(), 0, 'stopping the hub ends the open feeds');
    assert.equal(messagesOf(raw).map((m) => m.kind), ['hello', 'phones']);
    assert.is((await fetch(base + '/feed')).status, 503);
    hub.open();
    const again = await fetch(base + '/feed');
    assert.is(again.status, 200);
    await again.body?.cancel();
  } finally {
    hub.stop();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
});

type Item = { kind: string; from?: string; to?: string; op?: string; type?: string; feature?: string; answer?: string; code?: string; refused?: boolean };
const itemsOf = (msgs: FeedMessage[], phone: string): Item[] => msgs.filter((m) => m.kind === 'trace' && m.phone === phone).map((m) => m.item as Item);

test("issue 17: the hub draws a bank's operator calls and the attack table in the diagram of the phone they were for; hostile values are projected or dropped", () => {
  const hub = new FeedHub({ servers: ['gateway'], health: fakeHealth, tickMs: 60_000 });
  try {
    const got: FeedMessage[] = [];
    const A = '127.1.0.7';
    const B = '127.2.0.9';
    const userB = 'u-bbbbbbbbbbbbbbbbbbbb';
    for (const ip of [A, B]) hub.frame({ conn: 1, ip, dir: 'up', type: MsgType.hello, dest: 'reg-primary' });
    hub.subscribe((m) => got.push(m), { phone: A });
    hub.subscribe((m) => got.push(m), { phone: B });
    got.length = 0;
    // The registration server's line names the table that rode along (or was held back).
    hub.log({ t: 'x', level: 'info', svc: 'reg-primary', msg: 'credentials issued', serial: 'SN-0000042', user: 'u-aaaaaaaaaaaaaaaaaaaa', gen: 1, ip: A, table: 3 });
    hub.log({ t: 'x', level: 'info', svc: 'reg-primary', msg: 'credentials issued', user: userB, gen: 1, ip: B, tableWithheld: 4 });
    hub.log({ t: 'x', level: 'info', svc: 'reg-primary', msg: 'credentials issued', user: userB, gen: 1, ip: B, table: 'v' + 'ab'.repeat(20) });
    // A pushed table: from the policy, through the gateway, to the phone.
    hub.frame({ conn: 1, ip: A, dir: 'down', type: MsgType.tablePush, dest: 'biz-east', byGateway: true });
    // The bank's calls: A by its session's address, B by its device user (no address given).
    const call = (e: Partial<OperatorCallEvent>) => hub.operatorCall({ phase: 'answer', op: 'check-validity', feature: 'S4.6', deviceUser: 'u-aaaaaaaaaaaaaaaaaaaa', ...e } as OperatorCallEvent);
    call({ phase: 'ask', ip: A });
    call({ ip: A, answer: 'valid', ms: 3.25 });
    call({ phase: 'ask', op: 'retrieve-phone-number', feature: 'S4.4', ip: A });
    call({ op: 'retrieve-phone-number', feature: 'S4.4', ip: A, answer: 'number', tail: '0042' });
    call({ op: 'retrieve-date', feature: 'S4.4', deviceUser: userB, answer: 'changed after binding' });
    call({ deviceUser: userB, answer: 'invalid', code: 'CARD_SUSPENDED' });
    // Hostile: a whole number as the tail, a code that is not one, an unknown operation, an
    // unknown verdict, a phone nobody knows.
    call({ op: 'retrieve-phone-number', feature: 'S4.4', ip: A, answer: 'number', tail: '447700900042' });
    call({ ip: A, answer: 'failed', code: 'see ' + 'ab'.repeat(20) });
    call({ ip: A, op: 'delete-everything' as never });
    call({ ip: A, answer: 'something else' as never });
    call({ ip: '127.9.9.9', deviceUser: 'u-cccccccccccccccccccc', answer: 'valid' });
    assert.is(hub.refused, 0, `the hub refused: ${hub.lastRefusal}`);
    const a = itemsOf(got, A).map(({ t, ...i }: Item & { t?: number }) => i);
    assert.equal(a, [
      { kind: 'call', from: 'policy', to: 'registration', op: 'table v3', feature: 'S3.11', refused: false },
      { kind: 'frame', from: 'policy', to: 'phone', type: 'tablePush', dest: 'biz-east', feature: 'S3.11', refused: false },
      { kind: 'call', op: 'check-validity', feature: 'S4.6', from: 'business', to: 'operator', refused: false },
      { kind: 'call', op: 'check-validity', feature: 'S4.6', from: 'operator', to: 'business', answer: 'valid', refused: false, ms: 3.3 },
      { kind: 'call', op: 'retrieve-phone-number', feature: 'S4.4', from: 'business', to: 'operator', refused: false },
      { kind: 'call', op: 'retrieve-phone-number', feature: 'S4.4', from: 'operator', to: 'business', answer: 'number \u20260042', refused: false },
      { kind: 'call', op: 'retrieve-phone-number', feature: 'S4.4', from: 'operator', to: 'business', answer: 'number', refused: false },
      { kind: 'call', op: 'check-validity', feature: 'S4.6', from: 'operator', to: 'business', answer: 'failed', refused: true, code: 'unreadable' },
      { kind: 'call', op: 'check-validity', feature: 'S4.6', from: 'operator', to: 'business', answer: 'failed', refused: true },
    ]);
    const b = itemsOf(got, B).map(({ t, ...i }: Item & { t?: number }) => i);
    assert.equal(b, [
      { kind: 'call', from: 'policy', to: 'registration', op: 'table v4', feature: 'S3.11', refused: true, answer: 'too large - not sent' },
      { kind: 'call', op: 'retrieve-date', feature: 'S4.4', from: 'operator', to: 'business', answer: 'changed after binding', refused: true },
      { kind: 'call', op: 'check-validity', feature: 'S4.6', from: 'operator', to: 'business', answer: 'invalid', refused: true, code: 'CARD_SUSPENDED' },
    ]);
    assert.not.ok(JSON.stringify(got).includes('447700900042'), 'no whole number in the feed');
    assert.not.ok(JSON.stringify(got).includes('127.9.9.9'), 'a call of no known phone is dropped');
  } finally {
    hub.stop();
  }
});

test('issue 17: the schema refuses a call between servers that carries an identifier, an unlisted field or a lifeline that is not one', () => {
  const v = feedValidator();
  const call = { t: 1, kind: 'call', from: 'operator', to: 'business', op: 'retrieve-phone-number', feature: 'S4.4', answer: 'number \u20260042', refused: false };
  const wrap = (item: object) => ({ kind: 'trace', t: 1, phone: '127.1.0.1', item });
  assert.ok(v(wrap(call)), JSON.stringify(v.errors));
  assert.ok(v(wrap({ ...call, from: 'policy', to: 'registration', op: 'table v12', feature: 'S3.11' })), JSON.stringify(v.errors));
  const bad = (item: object, why: string) => assert.not.ok(v(wrap(item)), why);
  bad({ ...call, answer: 'number 447700900042' }, 'a whole number');
  bad({ ...call, answer: 'card 89442000000000000057' }, 'an ICCID');
  bad({ ...call, answer: 'imsi 234200000000005' }, 'an IMSI');
  bad({ ...call, answer: 'number +44 7700 900042' }, 'a number with its plus and spaces (the alphabet has no +)');
  bad({ ...call, answer: 'x'.repeat(41) }, 'too long');
  bad({ ...call, op: 'Retrieve' }, 'an operation out of the alphabet');
  bad({ ...call, op: 'retrieve/' + 'a'.repeat(30) }, 'a long operation');
  bad({ ...call, iccid: '8944' }, 'an unlisted field');
  bad({ ...call, from: 'bank' }, 'a lifeline that is not one');
  bad({ ...call, code: 'not a code' }, 'a code out of the code alphabet');
  bad({ ...call, refused: 'no' }, 'refused not a boolean');
  // A phone's step: a number standing alone is refused, the hub masks it first; a hex name's digits are not a number.
  const step = (detail: string) => wrap({ t: 1, kind: 'step', feature: 'S4.2', step: 'read SIM card', detail, ok: true });
  assert.not.ok(v(step('USIM ICCID 89442000000000000073, IMSI 234200000000007')), 'an ICCID in a step');
  assert.not.ok(v(step('number +447700900007')), 'a number in a step');
  assert.ok(v(step(maskIds('USIM ICCID 89442000000000000073, IMSI 234200000000007, number +44 7700 900007'))), JSON.stringify(v.errors));
  assert.is(maskIds('ICCID 89442000000000000073, IMSI 234200000000007, number +44 7700-900007, gen 12, 2026'), 'ICCID \u20260073, IMSI \u20260007, number \u20260007, gen 12, 2026');
  assert.is(maskIds('user u-0123456789abcdef0123'), 'user u-0123456789abcdef0123');
  assert.ok(v(step('user u-0123456789abcdef0123, gen 1')), JSON.stringify(v.errors));
});

test('issue 17: the feed of a full mode-2 bank run (register, login, a suspended card) draws the operator calls in red where refused, and holds no identifier, number, password or account', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-feed-bank-'));
  const world = await startWorld({ stateDir: dir, gatewayPort: 0, bankMode: 2, bankScrypt: { ln: 12, r: 8, p: 1 } });
  const raw: string[] = [];
  let fd: ReturnType<typeof readFeed> | null = null;
  try {
    const card = storyCard(7);
    const number = storyNumber(7);
    await world.stack.operator()!.store.createSubscription(number, card, Date.now() - 86_400_000);
    const slot = new SimSlot(card);
    const hub = world.stack.feed;
    let ip = '';
    const host = new TraceHost((e) => hub.phoneStep(ip, e));
    const made = await world.phone(0, host, { sim: slot, person: person('register') });
    ip = made.ip;
    // A page watching this phone from its first frame on (the hub takes a phone it has seen).
    const plugged = made.phone.device.plugIn();
    for (let i = 0; i < 500 && !raw.join('').includes(`"watching":"${ip}"`); i++) {
      raw.length = 0;
      fd?.stop();
      await fd?.done;
      fd = readFeed(world.stack.pageUrl + `feed?phone=${ip}`, raw);
      for (let j = 0; j < 50 && !raw.join('').includes('"kind":"hello"'); j++) await new Promise((r) => setTimeout(r, 5));
    }
    assert.match(raw.join(''), `"watching":"${ip}"`);
    const reg = await plugged;
    assert.ok(reg.ok && reg.bank?.kind === 'registered' && reg.bank.mode === 2, JSON.stringify(reg));
    const login = await world.replug(made.phone, host, ip, { sim: slot, person: person('login') }).device.plugIn();
    assert.ok(login.ok && login.bank?.kind === 'page', JSON.stringify(login));
    await world.stack.operator()!.store.setCardStatus(card.iccid, 'suspended');
    const refused = await world.replug(made.phone, host, ip, { sim: slot, person: person('login') }).device.plugIn();
    assert.ok(refused.ok && refused.bank?.kind === 'refused' && refused.bank.code === 'BANK_CARD_INVALID', JSON.stringify(refused));
    await feedHas([raw], (msgs) => {
      const items = itemsOf(msgs, ip);
      return items.some((i) => i.kind === 'frame' && i.type === 'bankRefused') && items.filter((i) => i.kind === 'call' && i.from === 'business' && i.op === 'check-validity').length >= 3;
    });
    fd!.stop();
    await fd!.done;

    const text = raw.join('');
    const msgs = messagesOf(raw);
    const v = feedValidator();
    for (const m of msgs) assert.ok(v(m), `${JSON.stringify(m)} breaks the schema: ${JSON.stringify(v.errors)}`);
    assert.is(hub.refused, 0, `the hub refused ${hub.lastRefusal}`);
    const items = itemsOf(msgs, ip);
    const calls = items.filter((i) => i.kind === 'call' && i.from === 'business').map((i) => i.op);
    // Registration: validity + lookup + the SIM-change date kept with the binding; login: the same; the refused login: validity + lookup.
    assert.equal(calls.filter((o) => o === 'check-validity').length, 3, JSON.stringify(calls));
    assert.equal(calls.filter((o) => o === 'retrieve-phone-number').length, 3, JSON.stringify(calls));
    assert.equal(calls.filter((o) => o === 'retrieve-date').length, 2, JSON.stringify(calls));
    const answers = items.filter((i) => i.kind === 'call' && i.from === 'operator');
    assert.ok(answers.some((i) => i.answer === `number \u2026${number.slice(-4)}` && !i.refused), JSON.stringify(answers));
    assert.ok(answers.some((i) => i.op === 'retrieve-date' && i.answer === 'none since binding' && !i.refused), JSON.stringify(answers));
    assert.ok(answers.some((i) => i.op === 'check-validity' && i.answer === 'invalid' && i.code === 'CARD_SUSPENDED' && i.refused), 'the suspended card, red');
    assert.ok(items.some((i) => i.kind === 'frame' && i.type === 'bankRefused' && i.feature === 'S4.7' && i.refused), 'the "login not allowed" notice, red');
    assert.ok(items.some((i) => i.kind === 'frame' && i.type === 'bankLogin' && i.feature === 'S4.2'), 'the bank login, S4.2');
    assert.ok(items.some((i) => i.kind === 'call' && i.from === 'policy' && i.to === 'registration' && /^table v\d+$/.test(i.op!)), 'the table that rode along');
    // The calls come between the bank request and its answer.
    const seq = items.map((i) => i.type ?? i.op);
    assert.ok(seq.indexOf('bankLogin') < seq.lastIndexOf('retrieve-date') && seq.lastIndexOf('retrieve-date') < seq.indexOf('bankPage'), seq.join(' '));

    const account = (reg.ok && reg.bank?.kind === 'registered' && reg.bank.account) || '';
    assert.ok(account.length >= 14);
    const token = login.ok && login.bank?.kind === 'page' ? Buffer.from(login.bank.token).toString('hex') : '';
    const lower = text.toLowerCase();
    for (const [what, needle] of [
      ['the ICCID', card.iccid], ['the ICCID without its check digit', card.iccid.slice(0, -1)], ['the ICCID\'s last 8 digits', card.iccid.slice(-8)],
      ['the IMSI', card.imsi], ['the IMSI\'s last 8 digits', card.imsi.slice(-8)],
      ['the number', number], ['the number\'s digits', number.slice(1)], ['the number\'s last 8 digits', number.slice(-8)],
      ['the password', STORY_PASSWORD], ['the password (base64)', Buffer.from(STORY_PASSWORD).toString('base64').slice(0, 16)],
      ['the account number', account], ['the account number\'s last 8 digits', account.slice(-8)],
      ['the page token', token.slice(0, 16)], ['the serial', made.serial],
    ] as [string, string][]) {
      assert.ok(needle.length >= 8, what);
      const at = lower.indexOf(needle.toLowerCase());
      assert.not.ok(at >= 0, `${what} in the feed: ${text.slice(Math.max(0, at - 300), at + 100)}`);
    }
  } finally {
    fd?.stop();
    await world.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
