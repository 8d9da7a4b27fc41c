// S3.11 end to end over real sockets: the policy server signs a table every period, the
// registration servers poll it and hand it on in every credential reply, the phone keeps the
// newest one (verified against the key the factory wrote into its signed UPMON.CFG) in its
// chip-sealed saved record, never going back to an older one.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startWorld, TraceHost } from './world.ts';
import { makeTempDir, removeTempDir } from './lifetime.ts';
import { verifyTable } from '../protocol/attack-table.ts';
import { peekTablePush } from '../protocol/messages.ts';
import { WebSocket } from 'ws';

const PERIOD_MS = 1_000;
// Tables live far longer than the default 3 periods here: on a loaded machine one boot can take
// longer than 3 s, and these tests are about versions reaching the phone, not about expiry
// (TABLE_EXPIRED has its own tests in protocol/attack-table.test.ts).
const LIFETIME_MS = 120_000;
// Bounds for waiting on a condition (a new period, a poll, a push): generous, as CI's 2 cores are
// often loaded; each wait ends as soon as its condition holds.
const WAIT_MS = 30_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('S3.11: the table the policy server signed reaches the phone at registration; a newer one replaces it at the next boot; the same one again is kept as it is', async () => {
  const dir = makeTempDir('attack-table');
  const world = await startWorld({ stateDir: dir, gatewayPort: 0, policyPeriodMs: PERIOD_MS, policyTableLifetimeMs: LIFETIME_MS, tablePollMs: 100 });
  try {
    const key = world.stack.factoryPolicy.key!;
    const host = new TraceHost();
    const { phone } = await world.phone(0, host);
    const heldVersion = () => {
      const r = phone.device.storage.loadLogin();
      assert.ok(r.ok && r.value?.table, 'a table is held');
      const v = verifyTable(r.ok ? r.value!.table! : new Uint8Array(), key, Date.now(), null);
      assert.ok(v.ok, 'the held table verifies under the factory key');
      return v.ok ? v.table.version : -1;
    };
    const first = await phone.device.plugIn();
    assert.ok(first.ok, JSON.stringify(first));
    // The version the phone accepted last (on a loaded machine a period may end during the boot:
    // the phone may accept one table at registration and a newer one later in the same boot, and
    // the policy server may be one version further by now).
    const accepted = host.events.filter((e) => e.feature === 'S3.11' && e.ok && /^table v\d+ /.test(e.detail)).at(-1);
    assert.ok(accepted, host.events.map((e) => `${e.feature} ${e.detail}`).join('\n'));
    const v1 = Number(/^table v(\d+) /.exec(accepted!.detail)![1]);
    assert.ok(v1 >= 1 && v1 <= world.stack.policy.latest().table.version, 'a table the policy server signed');
    // The newest table it accepted is the one in flash (a later save of the login must not put
    // back an older one: the trace says which step wrote what).
    assert.is(heldVersion(), v1, host.events.map((e) => `${e.t} ${e.feature} ${e.ok} ${e.step}: ${e.detail}`).join('\n'));

    // The same table again (no new period yet): the one it holds, kept as it is, not a failure;
    // or, if a period ended meanwhile, the newer one accepted. Never a refusal but one: on a
    // loaded machine the gateway's push of a new table can come before the registration reply
    // of a server whose poll is late, and that older table is refused as stale (no rollback).
    const againHost = new TraceHost();
    const again = await world.replug(phone, againHost, '127.1.0.1').device.plugIn();
    assert.ok(again.ok);
    const s311 = againHost.events.filter((e) => e.feature === 'S3.11');
    assert.ok(s311.length > 0 && s311.every((e) => e.ok || /^refused \(TABLE_STALE: /.test(e.detail)) && s311.some((e) => /^(the table it holds, unchanged|table v\d+ )/.test(e.detail)), s311.map((e) => `${e.ok} ${e.detail}`).join('\n'));

    // The next period: a newer table, polled by the registration servers, reaches the phone.
    const deadline = Date.now() + WAIT_MS;
    while (world.stack.policy.latest().table.version <= v1 && Date.now() < deadline) await sleep(50);
    const v2 = world.stack.policy.latest().table.version;
    assert.ok(v2 > v1, 'a new period, a new version');
    // The registration servers poll every 100 ms, but under load a poll can come late: boot again
    // until the phone holds v2 or newer (each boot must succeed), rather than after a fixed sleep.
    let held: ReturnType<typeof verifyTable> | null = null;
    let boots = 0;
    const pollDeadline = Date.now() + WAIT_MS;
    do {
      if (boots > 0) await sleep(100);
      const next = world.replug(phone, new TraceHost(), '127.1.0.1');
      assert.ok((await next.device.plugIn()).ok);
      boots++;
      const r = next.device.storage.loadLogin();
      held = r.ok && r.value?.table ? verifyTable(r.value.table, key, Date.now(), null) : null;
      assert.ok(held?.ok, 'the held table verifies under the factory key');
    } while (!(held?.ok && held.table.version >= v2) && Date.now() < pollDeadline);
    assert.ok(held?.ok && held.table.version >= v2, `held v${held?.ok ? held.table.version : '?'} after ${boots} boots, expected >= v${v2}`);
  } finally {
    await world.stop();
    removeTempDir(dir);
  }
});

test('S3.11 push: each new table the policy server signs is pushed by the gateway to the devices connected at that moment, outside their sessions', async () => {
  const dir = makeTempDir('attack-table-push');
  const world = await startWorld({ stateDir: dir, gatewayPort: 0, policyPeriodMs: PERIOD_MS, policyTableLifetimeMs: LIFETIME_MS, tablePollMs: 100 });
  // Read before connecting: any push this device gets is of a later version.
  const v0 = world.stack.policy.latest().table.version;
  const ws = new WebSocket(world.stack.gatewayUrl);
  try {
    const frames: Uint8Array[] = [];
    ws.on('message', (d: Buffer) => frames.push(new Uint8Array(d)));
    await new Promise((r, j) => (ws.once('open', r), ws.once('error', j)));
    const deadline = Date.now() + WAIT_MS;
    let pushed: Uint8Array | null = null;
    while (!pushed && Date.now() < deadline) {
      await sleep(50);
      pushed = frames.map(peekTablePush).find((t) => t !== null) ?? null;
    }
    assert.ok(pushed, 'a push arrived (a new period came)');
    const v = verifyTable(pushed!, world.stack.factoryPolicy.key!, Date.now(), v0);
    assert.ok(v.ok, 'signed by the policy key and newer than the table of the moment it connected');
    assert.is(ws.readyState, WebSocket.OPEN, 'the connection is not disturbed');
  } finally {
    ws.close();
    await world.stop();
    removeTempDir(dir);
  }
});

test.run();
