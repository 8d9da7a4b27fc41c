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

test('S3.11: the table the policy server signed reaches the phone at registration; a newer one replaces it at the next boot; the same one again is kept as it is', async () => {
  const dir = makeTempDir('attack-table');
  const world = await startWorld({ stateDir: dir, gatewayPort: 0, policyPeriodMs: PERIOD_MS, tablePollMs: 100 });
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
    // The version the phone accepted (on a loaded machine a period may end during the boot:
    // the policy server may be one version further by now).
    const accepted = host.events.find((e) => e.feature === 'S3.11' && e.ok && /^table v\d+ /.test(e.detail));
    assert.ok(accepted, host.events.map((e) => `${e.feature} ${e.detail}`).join('\n'));
    const v1 = Number(/^table v(\d+) /.exec(accepted!.detail)![1]);
    assert.ok(v1 >= 1 && v1 <= world.stack.policy.latest().table.version, 'a table the policy server signed');
    assert.is(heldVersion(), v1);

    // The same table again (no new period yet): the one it holds, kept as it is, not a failure;
    // or, if a period ended meanwhile, the newer one accepted. Never a refusal.
    const againHost = new TraceHost();
    const again = await world.replug(phone, againHost, '127.1.0.1').device.plugIn();
    assert.ok(again.ok);
    const s311 = againHost.events.filter((e) => e.feature === 'S3.11');
    assert.ok(s311.length > 0 && s311.every((e) => e.ok) && s311.some((e) => /^(the table it holds, unchanged|table v\d+ )/.test(e.detail)), s311.map((e) => `${e.ok} ${e.detail}`).join('\n'));

    // The next period: a newer table, polled by the registration servers, reaches the phone.
    const deadline = Date.now() + 10_000;
    while (world.stack.policy.latest().table.version === v1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const v2 = world.stack.policy.latest().table.version;
    assert.ok(v2 > v1, 'a new period, a new version');
    await new Promise((r) => setTimeout(r, 300)); // more than tablePollMs: the reg servers have it
    const third = world.replug(phone, new TraceHost(), '127.1.0.1');
    assert.ok((await third.device.plugIn()).ok);
    const r = third.device.storage.loadLogin();
    const held = r.ok && r.value?.table ? verifyTable(r.value.table, key, Date.now(), null) : null;
    assert.ok(held?.ok && held.table.version >= v2, `held v${held?.ok ? held.table.version : '?'}, expected >= v${v2}`);
  } finally {
    await world.stop();
    removeTempDir(dir);
  }
});

test('S3.11 push: each new table the policy server signs is pushed by the gateway to the devices connected at that moment, outside their sessions', async () => {
  const dir = makeTempDir('attack-table-push');
  const world = await startWorld({ stateDir: dir, gatewayPort: 0, policyPeriodMs: PERIOD_MS, tablePollMs: 100 });
  // Read before connecting: any push this device gets is of a later version.
  const v0 = world.stack.policy.latest().table.version;
  const ws = new WebSocket(world.stack.gatewayUrl);
  try {
    const frames: Uint8Array[] = [];
    ws.on('message', (d: Buffer) => frames.push(new Uint8Array(d)));
    await new Promise((r, j) => (ws.once('open', r), ws.once('error', j)));
    const deadline = Date.now() + 10_000;
    let pushed: Uint8Array | null = null;
    while (!pushed && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      pushed = frames.map(peekTablePush).find((t) => t !== null) ?? null;
    }
    assert.ok(pushed, 'a push arrived within two periods');
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
