// The replay caches across the instances of one server (issue 16), on the real Redis: two
// registration servers of one name (reg-primary, same store and keys) refuse a hello replayed
// from one to the other (HS_REPLAY, close 1008, no helloReply); two business servers (biz-east)
// a login (loginAck, then HS_REPLAY, no loginOk); a business server's admin API an admin request
// replayed from its twin (ADMIN_REPLAY). Without Redis the twin answers (the attack works: the
// test can fail). Redis hung: the twin answers within the timeout (fail open: its own cache
// still refuses a replay to itself).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createServer, request as httpRequest, type Server } from 'node:http';
import { testStack } from './test-util.ts';
import { stateFiles } from './config.ts';
import type { Stack } from './stack.ts';
import { startRegServer, type RegServer } from '../reg-server/server.ts';
import { startBizServer, type BizServer } from '../biz-server/server.ts';
import { linkKeyFor } from '../server-kit/link.ts';
import { readKeyFile } from '../server-kit/keyfiles.ts';
import { AdminClient } from '../server-kit/admin-rpc.ts';
import { makeDevice, FrameSocket, type DeviceId } from '../server-kit/test-device.ts';
import { blackholeRedis, dropNamespace, testShared } from '../server-kit/redis-faults.ts';
import { setLogSink, type LogLine } from '../server-kit/log.ts';
import type { SharedStateConfig } from '../server-kit/redis.ts';
import { ClientHandshake, passwordLoginKey } from '../protocol/channel.ts';
import { MsgType, decodeEnvelope, parseError } from '../protocol/messages.ts';

let stack: Stack;
let dev: DeviceId;
const namespaces: string[] = [];
const shared = (over: Partial<SharedStateConfig> = {}) => {
  const c = testShared(over);
  namespaces.push(c.namespace);
  return c;
};

test.before(async () => {
  stack = await testStack();
  await stack.enroll({ serial: 'SN-R16', keyVersion: 1 });
  dev = makeDevice(stack.ring, 'SN-R16');
});
test.after(async () => {
  await stack.stop();
  for (const n of namespaces) await dropNamespace(n);
});

const files = () => stateFiles(stack.stateDir);
/** The stack's store of `role`: its SQLite file (dbFile), or its PostgreSQL schema when the stack is on PG (STORE_URL). */
const storeOf = (role: 'reg' | 'biz') => {
  const c = stack.store.choice;
  return c.kind === 'postgres' ? { store: { kind: 'postgres' as const, url: c.url, schema: stack.store.schemas![role] } } : {};
};

/** One more instance of reg-primary on the stack's store and keys, with `redis` (or none). */
function regTwin(redis: SharedStateConfig | undefined): Promise<RegServer> {
  const f = files();
  return startRegServer({
    name: 'reg-primary', host: '127.0.0.1', devicePort: 0, linkPort: 0, dbFile: f.regDb, ...storeOf('reg'), ring: stack.ring,
    linkKey: linkKeyFor(readKeyFile(f.linkKey, 'link key'), 'reg-primary'), adminKey: readKeyFile(f.adminKey, 'admin key'),
    bizServers: [], regions: [], healthIntervalMs: 60_000, ...(redis ? { redis } : {}),
  });
}
/** One more instance of biz-east on the stack's accounts file and keys. */
function bizTwin(redis: SharedStateConfig | undefined): Promise<BizServer> {
  const f = files();
  return startBizServer({
    name: 'biz-east', region: 'east', host: '127.0.0.1', devicePort: 0, linkPort: 0, adminPort: 0, dbFile: f.bizDb, ...storeOf('biz'),
    storageKey: readKeyFile(f.storeKey, 'storage key'), linkKey: linkKeyFor(readKeyFile(f.linkKey, 'link key'), 'biz-east'),
    adminKey: readKeyFile(f.adminKey, 'admin key'), ...(redis ? { redis } : {}),
  });
}
const direct = (port: number | null) => `ws://127.0.0.1:${port}/`;

/** Sends `opening` on a fresh connection; returns the first answer's type (and the refusal's code and close code). */
async function send(url: string, opening: Uint8Array): Promise<{ types: number[]; code: string | null; close: number | null; ms: number }> {
  const t0 = performance.now();
  const s = await FrameSocket.connect(url);
  s.send(opening);
  const first = await s.next();
  const ms = performance.now() - t0;
  if (!('frame' in first)) return { types: [], code: null, close: first.closed, ms };
  const env = decodeEnvelope(first.frame);
  if (env.type !== MsgType.error) {
    s.terminate();
    return { types: [env.type], code: null, close: null, ms };
  }
  const c = await s.closed();
  return { types: [env.type, ...c.frames.map((f) => decodeEnvelope(f).type)], code: parseError(env.body).code, close: c.code, ms };
}

test('a hello answered by one reg-primary, replayed to its twin: HS_REPLAY with Redis (no helloReply), answered without', async () => {
  for (const withRedis of [true, false]) {
    const cfg = withRedis ? shared() : undefined;
    const a = await regTwin(cfg);
    const b = await regTwin(cfg);
    try {
      const h = new ClientHandshake('reg-primary', dev.key).opening(MsgType.hello, [dev.token, dev.measurement]);
      const first = await send(direct(a.devicePort), h);
      assert.equal(first.types, [MsgType.helloReply], 'the first instance answers');
      const replay = await send(direct(b.devicePort), h);
      if (withRedis) {
        assert.equal(replay.types, [MsgType.error], 'no helloReply left the twin');
        assert.is(replay.code, 'HS_REPLAY');
        assert.is(replay.close, 1008);
      } else {
        assert.equal(replay.types, [MsgType.helloReply], 'without Redis the twin answers the replay');
      }
      assert.is((await send(direct(a.devicePort), h)).code, 'HS_REPLAY', 'the first instance refuses it itself');
    } finally {
      await a.close();
      await b.close();
    }
  }
});

test('a login answered by one biz-east, replayed to its twin: loginAck then HS_REPLAY (no loginOk)', async () => {
  const user = (await stack.regStore.getDevice('SN-R16'))!.user;
  const secret = new Uint8Array(32).fill(0x16);
  await stack.bizStore.installPending(user, passwordLoginKey(secret, user), new Uint8Array(72), Date.now() + 86_400_000, new Uint8Array(16).fill(0x16));
  const cfg = shared();
  const a = await bizTwin(cfg);
  const b = await bizTwin(cfg);
  try {
    const login = new ClientHandshake('biz-east', passwordLoginKey(secret, user)).opening(MsgType.login, ['password', user, 1, new Map()]);
    const s = await FrameSocket.connect(direct(a.devicePort));
    s.send(login);
    assert.is((await s.frame()).env.type, MsgType.loginAck);
    assert.is((await s.frame()).env.type, MsgType.loginOk, 'the first instance verified it');
    s.terminate();
    const s2 = await FrameSocket.connect(direct(b.devicePort));
    s2.send(login);
    const c = await s2.closed();
    assert.equal(c.frames.map((f) => decodeEnvelope(f).type), [MsgType.loginAck, MsgType.error]);
    assert.is(parseError(decodeEnvelope(c.frames[1]!).body).code, 'HS_REPLAY');
    assert.is(c.code, 1008);
  } finally {
    await a.close();
    await b.close();
  }
});

test('an admin request run by one biz-east, replayed to its twin: ADMIN_REPLAY with Redis, run again without', async () => {
  for (const withRedis of [true, false]) {
    const cfg = withRedis ? shared() : undefined;
    const a = await bizTwin(cfg);
    const b = await bizTwin(cfg);
    // A recorder in front of a: what a caller sent, to replay at b.
    const bodies: Buffer[] = [];
    const rec: Server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        bodies.push(body);
        const up = httpRequest({ host: '127.0.0.1', port: a.adminPort, path: '/admin', method: 'POST', headers: { 'content-length': body.length } }, (r) => {
          res.writeHead(r.statusCode!, r.headers);
          r.pipe(res);
        });
        up.end(body);
      });
    });
    await new Promise<void>((r) => rec.listen(0, '127.0.0.1', () => r()));
    const lines: LogLine[] = [];
    const prev = setLogSink((l) => void lines.push(l), 'info');
    const client = new AdminClient({ target: 'biz-east', url: `http://127.0.0.1:${(rec.address() as { port: number }).port}/admin`, key: readKeyFile(files().adminKey, 'admin key'), timeoutMs: 3_000 });
    try {
      const st = await client.call('status', []);
      assert.is((st as unknown[])[0], true, 'the first instance ran it: [healthy, sessions, region]');
      assert.is(bodies.length, 1);
      const r = await fetch(`http://127.0.0.1:${b.adminPort}/admin`, { method: 'POST', body: bodies[0] });
      assert.is(r.status, 200);
      await r.arrayBuffer();
      const refused = lines.some((l) => l.msg === 'admin request refused' && l.code === 'ADMIN_REPLAY');
      assert.is(refused, withRedis, withRedis ? 'the twin refused it as a replay' : 'without Redis the twin runs the replay');
    } finally {
      setLogSink(prev, 'error');
      client.close();
      rec.close();
      await a.close();
      await b.close();
    }
  }
});

test('Redis hung (accepts, never answers): the twin answers within its timeout (fail open); each instance still refuses a replay to itself', async () => {
  const hole = await blackholeRedis();
  const cfg = shared({ url: hole.url, timeoutMs: 200 });
  const a = await regTwin(cfg);
  const b = await regTwin(cfg);
  try {
    const h = new ClientHandshake('reg-primary', dev.key).opening(MsgType.hello, [dev.token, dev.measurement]);
    const first = await send(direct(a.devicePort), h);
    assert.equal(first.types, [MsgType.helloReply]);
    assert.ok(first.ms < 1_000, `answered in ${first.ms.toFixed(0)} ms`);
    const other = await send(direct(b.devicePort), h);
    assert.equal(other.types, [MsgType.helloReply], 'fail open: the twin cannot know');
    const metrics = await (await fetch(`http://127.0.0.1:${b.linkPort}/metrics`)).text();
    assert.match(metrics, /usbphone_server_events_total\{event="shared_replay_fallback",code="",server="reg-primary"\} [1-9]/);
    assert.is((await send(direct(a.devicePort), h)).code, 'HS_REPLAY', 'its own cache still refuses');
  } finally {
    await a.close();
    await b.close();
    await hole.close();
  }
});

test.run();
