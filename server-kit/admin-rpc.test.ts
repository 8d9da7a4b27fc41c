// The admin API between servers: sealed both ways, stale and repeated requests refused,
// requests bound to the server they are for, unauthenticated callers learn nothing.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { AddressInfo } from 'node:net';
import type { IncomingMessage } from 'node:http';
import { createAdminServer, AdminClient, AdminError, adminInProcess, adminRequestKey, ADMIN_MAX_BATCH, ADMIN_MAX_BODY, ADMIN_MAX_SKEW_MS } from './admin-rpc.ts';
import { encode, decode } from '../protocol/cbor.ts';
import { closeServer } from './host.ts';
import { setLogLevel } from './log.ts';
import { ImplementationError } from '../protocol/errors.ts';
import { rejects } from './test-assert.ts';

setLogLevel('error');
const key = new Uint8Array(32).fill(3);
let now = Date.now();
const calls: unknown[] = [];
const server = createAdminServer({
  key, name: 'test', now: () => now,
  ops: {
    echo: (a) => {
      calls.push(a);
      return a;
    },
    boom: () => {
      throw new AdminError('BIZ_SOMETHING', 'refused on purpose');
    },
  },
});
let url = '';
test.before(async () => {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/admin`;
});
test.after(() => closeServer(server));

test('a call round-trips; an op\'s refusal comes back with its code', async () => {
  const c = new AdminClient({ target: 'test', url, key });
  assert.equal(await c.call('echo', ['x', 1]), ['x', 1]);
  await rejects(() => c.call('boom', []), (e: unknown) => e instanceof AdminError && e.code === 'BIZ_SOMETHING');
  await rejects(() => c.call('nope', []), (e: unknown) => e instanceof AdminError && e.code === 'ADMIN_UNKNOWN_OP');
});

test('calls through one client reuse one keep-alive connection', async () => {
  let connections = 0;
  const count = () => connections++;
  server.on('connection', count);
  try {
    const c = new AdminClient({ target: 'test', url, key, http: true });
    for (let i = 0; i < 3; i++) assert.equal(await c.call('echo', [i]), [i]);
    c.close();
  } finally {
    server.off('connection', count);
  }
  assert.is(connections, 1);
});

test('in the same process a call reaches the handler with no connection; once the server closes, it is unreachable', async () => {
  let connections = 0;
  const count = () => connections++;
  const s = createAdminServer({ key, name: 'inproc', ops: { echo: (a) => a } });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  s.on('connection', count);
  const u = `http://127.0.0.1:${(s.address() as AddressInfo).port}/admin`;
  assert.ok(adminInProcess(new URL(u)));
  const c = new AdminClient({ target: 'inproc', url: u, key, timeoutMs: 500 });
  assert.equal(await c.call('echo', ['in process']), ['in process']);
  assert.is(connections, 0);
  // The same sealed request as over HTTP: a wrong key or another target is refused the same way.
  await rejects(() => new AdminClient({ target: 'inproc', url: u, key: new Uint8Array(32).fill(4) }).call('echo', []), (e) => e instanceof AdminError && e.code === 'ADMIN_BAD_AUTH');
  await rejects(() => new AdminClient({ target: 'test', url: u, key }).call('echo', []), (e) => e instanceof AdminError && e.code === 'ADMIN_BAD_AUTH');
  await closeServer(s);
  assert.is(adminInProcess(new URL(u)), undefined);
  await rejects(() => c.call('echo', []), (e) => e instanceof AdminError && e.code === 'ADMIN_UNREACHABLE');
});

test('in the same process a call travels without its box: the endpoint takes [ts, op, args] and the request key, refuses a wrong key or target (401), a stale or malformed call, an oversized one (413), and hands the op its own copy', async () => {
  const seen: unknown[] = [];
  const s = createAdminServer({ key, name: 'direct', ops: { keep: (a) => (seen.push(a), 'kept') } });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const u = `http://127.0.0.1:${(s.address() as AddressInfo).port}/admin`;
  try {
    const direct = adminInProcess(new URL(u))!;
    const rk = adminRequestKey(key);
    const arg = new Uint8Array([1, 2, 3]);
    const a = await direct(rk, 'direct', encode([Date.now(), 'keep', [arg]]));
    assert.is(a.status, 200);
    assert.equal(decode(a.body!), [true, 'kept']);
    // A copy decoded from the call's bytes, not the caller's buffer.
    assert.ok((seen[0] as Uint8Array[])[0] !== arg);
    assert.equal((seen[0] as Uint8Array[])[0], arg);
    assert.is((await direct(adminRequestKey(new Uint8Array(32).fill(4)), 'direct', encode([Date.now(), 'keep', []]))).status, 401);
    assert.is((await direct(rk, 'test', encode([Date.now(), 'keep', []]))).status, 401);
    assert.is((await direct(rk, 'direct', new Uint8Array(ADMIN_MAX_BODY + 1))).status, 413);
    const code = async (call: Uint8Array) => (decode((await direct(rk, 'direct', call)).body!) as unknown[])[1];
    assert.is(await code(encode([Date.now() - ADMIN_MAX_SKEW_MS - 1_000, 'keep', []])), 'ADMIN_STALE');
    // A call that does not decode, or not to [ts, op, args]: 400 without detail, as a sealed request that opens to garbage.
    assert.is((await direct(rk, 'direct', Uint8Array.of(0xff))).status, 400);
    assert.is((await direct(rk, 'direct', encode([Date.now(), 'keep']))).status, 400);
    assert.is(seen.length, 1);
  } finally {
    await closeServer(s);
  }
});

test('the same calls get the same answers in process as over HTTP: sizes at the request and answer bounds, malformed arguments, unknown ops, bad batches, a skewed clock, a wrong key, a URL HTTP does not deliver', async () => {
  // n bytes as byte strings of at most 4,000 (the decoder's string bound is 4,096).
  const blob = (n: number) => Array.from({ length: Math.ceil(n / 4_000) }, (_, i) => new Uint8Array(Math.min(4_000, n - 4_000 * i)));
  const s = createAdminServer({ key, name: 'both', ops: { echo: (a) => a, big: (a) => blob((a as number[])[0]!) } });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const u = `http://127.0.0.1:${(s.address() as AddressInfo).port}/admin`;
  const outcome = (p: Promise<unknown>) => p.then((v) => `ok ${JSON.stringify(v).length}`, (e) => (e instanceof AdminError ? e.code : `thrown ${String(e)}`));
  try {
    const cases: [string, (c: AdminClient) => Promise<unknown>][] = [];
    // Requests of every size around the bound (a byte string argument), and answers likewise.
    for (let n = ADMIN_MAX_BODY - 110; n <= ADMIN_MAX_BODY - 20; n++) cases.push([`request ${n}`, (c) => c.call('echo', blob(n))]);
    for (let n = ADMIN_MAX_BODY - 70; n <= ADMIN_MAX_BODY - 20; n++) cases.push([`answer ${n}`, (c) => c.call('big', [n])]);
    cases.push(['65 items', (c) => c.call('echo', Array.from({ length: 65 }, () => 0))]);
    cases.push(['deep', (c) => c.call('echo', [[[[[[[[[[[[[[[[[[[[0]]]]]]]]]]]]]]]]]]]])]);
    cases.push(['unknown op', (c) => c.call('nope', [])]);
    cases.push(['nested batch', (c) => c.call('batch', [['batch', []]] as never)]);
    cases.push(['empty batch', (c) => c.call('batch', [])]);
    const runAll = async (make: (o: { now?: () => number; key?: Uint8Array; url?: string }) => AdminClient) => {
      const got: string[] = [];
      for (const [name, f] of cases) got.push(`${name}: ${await outcome(f(make({})))}`);
      got.push(`skewed: ${await outcome(make({ now: () => Date.now() - 2 * ADMIN_MAX_SKEW_MS }).call('echo', []))}`);
      got.push(`wrong key: ${await outcome(make({ key: new Uint8Array(32).fill(9) }).call('echo', []))}`);
      // URLs HTTP does not deliver to the endpoint: another path, a query, TLS to a plain port.
      for (const url of [u.replace('/admin', '/nope'), `${u}?x=1`, u.replace('http:', 'https:')]) got.push(`${url.slice(7)}: ${await outcome(make({ url }).call('echo', []))}`);
      return got;
    };
    const viaHttp = await runAll((o) => new AdminClient({ target: 'both', url: o.url ?? u, key: o.key ?? key, now: o.now, http: true, timeoutMs: 2_000 }));
    const inProcess = await runAll((o) => new AdminClient({ target: 'both', url: o.url ?? u, key: o.key ?? key, now: o.now, timeoutMs: 2_000 }));
    assert.equal(inProcess, viaHttp);
    // Both bounds were reached: some calls of each kind pass and some are refused.
    for (const kind of ['request', 'answer']) {
      const rows = viaHttp.filter((r) => r.startsWith(kind));
      assert.ok(rows.some((r) => r.includes(': ok')) && rows.some((r) => !r.includes(': ok')), kind);
    }
  } finally {
    await closeServer(s);
  }
});

test('calls made in one turn go in one request (batch), each with its own result or refusal; a batch of batches or of too many calls is refused, nothing in it run', async () => {
  let requests = 0;
  const count = () => requests++;
  server.on('request', count);
  try {
    const c = new AdminClient({ target: 'test', url, key, http: true, batch: true });
    const n = calls.length;
    const got = await Promise.allSettled([c.call('echo', [1]), c.call('echo', [2]), c.call('boom', []), c.call('nope', [])]);
    assert.is(requests, 1);
    assert.equal(got.slice(0, 2), [{ status: 'fulfilled', value: [1] }, { status: 'fulfilled', value: [2] }]);
    assert.ok(got[2]!.status === 'rejected' && got[2].reason instanceof AdminError && got[2].reason.code === 'BIZ_SOMETHING');
    assert.ok(got[3]!.status === 'rejected' && got[3].reason instanceof AdminError && got[3].reason.code === 'ADMIN_UNKNOWN_OP');
    assert.is(calls.length, n + 2);
    // A call alone is a plain request; more than ADMIN_MAX_BATCH in a turn make several batches.
    assert.equal(await c.call('echo', ['alone']), ['alone']);
    requests = 0;
    const many = await Promise.all(Array.from({ length: ADMIN_MAX_BATCH + 1 }, (_, i) => c.call('echo', [i])));
    assert.equal(many, Array.from({ length: ADMIN_MAX_BATCH + 1 }, (_, i) => [i]));
    assert.is(requests, 2);
    // Hand-made batches from a key holder: nested, too long, or not [op, args] calls.
    const plain = new AdminClient({ target: 'test', url, key });
    const m = calls.length;
    for (const bad of [[['batch', []]], Array.from({ length: ADMIN_MAX_BATCH + 1 }, () => ['echo', []]), [], [['echo']], 'x']) {
      await rejects(() => plain.call('batch', bad as never), (e) => e instanceof AdminError && e.code === 'ADMIN_BAD_REQUEST');
    }
    assert.is(calls.length, m);
  } finally {
    server.off('request', count);
  }
});

test('an endpoint that knows no batches gets the calls one by one', async () => {
  const old = createAdminServer({ key, name: 'old', batches: false, ops: { echo: (a) => a } });
  await new Promise<void>((r) => old.listen(0, '127.0.0.1', () => r()));
  let requests = 0;
  old.on('request', () => requests++);
  try {
    const c = new AdminClient({ target: 'old', url: `http://127.0.0.1:${(old.address() as AddressInfo).port}/admin`, key, http: true, batch: true });
    assert.equal(await Promise.all([c.call('echo', [1]), c.call('echo', [2])]), [[1], [2]]);
    assert.is(requests, 3); // the refused batch, then each call
    requests = 0;
    assert.equal(await Promise.all([c.call('echo', [3]), c.call('echo', [4])]), [[3], [4]]);
    assert.is(requests, 2); // no more batches to it
  } finally {
    await closeServer(old);
  }
});

test('a wrong key is refused with 401 and no detail', async () => {
  await rejects(() => new AdminClient({ target: 'test', url, key: new Uint8Array(32).fill(4) }).call('echo', []), (e: unknown) => e instanceof AdminError && e.code === 'ADMIN_BAD_AUTH');
});

test('a replayed request is refused (ADMIN_REPLAY), a stale one too (ADMIN_STALE)', async () => {
  // Capture one sealed request as the server receives it (a second listener on the request).
  let captured: Uint8Array | null = null;
  const record = (req: IncomingMessage) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => (captured = new Uint8Array(Buffer.concat(chunks))));
  };
  server.prependListener('request', record);
  try {
    await new AdminClient({ target: 'test', url, key, http: true }).call('echo', ['once']);
  } finally {
    server.off('request', record);
  }
  const n = calls.length;
  const replay = await fetch(url, { method: 'POST', body: captured! });
  assert.is(replay.status, 200); // authenticated, so it gets a (sealed) refusal
  assert.is(calls.length, n);
  now += 10 * 60_000;
  await rejects(() => new AdminClient({ target: 'test', url, key }).call('echo', []), (e: unknown) => e instanceof AdminError && e.code === 'ADMIN_STALE');
  now = Date.now();
});

test('a request captured on its way to biz-east is refused by biz-west (ADMIN_BAD_AUTH), not executed', async () => {
  // Two business servers with the one shared admin key, each with its own replay cache.
  const executed: string[] = [];
  const mk = (name: string) => createAdminServer({ key, name, ops: { installPending: (a) => (executed.push(name), a) } });
  const east = mk('biz-east'), west = mk('biz-west');
  const urls: string[] = [];
  for (const s of [east, west]) {
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
    urls.push(`http://127.0.0.1:${(s.address() as AddressInfo).port}/admin`);
  }
  let captured: Uint8Array | null = null;
  east.prependListener('request', (req: IncomingMessage) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => (captured = new Uint8Array(Buffer.concat(chunks))));
  });
  try {
    assert.equal(await new AdminClient({ target: 'biz-east', url: urls[0]!, key }).call('installPending', ['u-1']), ['u-1']);
    assert.equal(executed, ['biz-east']);
    const replayed = await fetch(urls[1]!, { method: 'POST', body: captured! });
    assert.is(replayed.status, 401);
    assert.is((await replayed.arrayBuffer()).byteLength, 0);
    assert.equal(executed, ['biz-east'], 'biz-west executed a request made for biz-east');
    // A client that names the wrong target is refused the same way.
    await rejects(() => new AdminClient({ target: 'biz-east', url: urls[1]!, key }).call('installPending', ['u-2']), (e: unknown) => e instanceof AdminError && e.code === 'ADMIN_BAD_AUTH');
    assert.equal(executed, ['biz-east']);
  } finally {
    await Promise.all([closeServer(east), closeServer(west)]);
  }
});

test('a target that is not a server name is refused at construction (ADMIN_BAD_TARGET)', () => {
  for (const target of ['', 'biz east', 'biz|east', 'x'.repeat(65), undefined as unknown as string]) {
    assert.throws(() => new AdminClient({ target, url, key }), (e: unknown) => e instanceof ImplementationError && e.code === 'ADMIN_BAD_TARGET');
    assert.throws(() => createAdminServer({ key, name: target, ops: {} }), (e: unknown) => e instanceof ImplementationError && e.code === 'ADMIN_BAD_TARGET');
  }
});

test('garbage and oversized bodies are refused', async () => {
  assert.is((await fetch(url, { method: 'POST', body: new Uint8Array(10) })).status, 401);
  assert.is((await fetch(url, { method: 'POST', body: new Uint8Array(64 * 1024) }).catch(() => ({ status: 413 }))).status, 413);
  assert.is((await fetch(url.replace('/admin', '/other'), { method: 'POST', body: new Uint8Array(10) })).status, 404);
});

test('an unreachable endpoint is ADMIN_UNREACHABLE', async () => {
  await rejects(() => new AdminClient({ target: 'test', url: 'http://127.0.0.1:1/admin', key, timeoutMs: 1_000 }).call('echo', []), (e: unknown) => e instanceof AdminError && e.code === 'ADMIN_UNREACHABLE');
});

test.run();
