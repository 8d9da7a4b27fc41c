// The held-connections driver on its own: nothing listening, every connection fails and is
// counted as failed (none open, none counted as pushed), with the reason; its processes end on close.
// And what is held (issue 15, docs/protocol.md §2.1): a phone logs in on one WebSocket for
// both sessions and holds it after the login, so the next table push reaches it; unplugging
// closes it; a held connection the gateway's idle sweep closed is not reused: the next login
// connects again.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { holdConnections } from './held.ts';
import { ImplementationError } from '../protocol/errors.ts';
import { startWorld, TraceHost } from './world.ts';
import { makeTempDir, removeTempDir } from './lifetime.ts';
import type { Gateway } from '../gateway/gateway.ts';
import { closedPort } from '../deploy/test-util.ts';

const accepted = async (gw: Gateway) => (await gw.metrics.accepted.get()).values.reduce((n, v) => n + v.value, 0);
const until = async (ok: () => boolean, ms: number) => {
  const end = Date.now() + ms;
  while (!ok() && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  return ok();
};

test('a phone logs in on one WebSocket for both sessions, holds it after the login, gets the next table push on it; unplugged, it closes', async () => {
  const dir = makeTempDir('held-phone');
  const world = await startWorld({ stateDir: dir, gatewayPort: 0, policyPeriodMs: 1_000, tablePollMs: 100 });
  try {
    const gw = world.stack.gateway;
    const host = new TraceHost();
    const { phone } = await world.phone(0, host);
    const a0 = await accepted(gw);
    const out = await phone.device.plugIn();
    assert.ok(out.ok, JSON.stringify(out));
    assert.is(await accepted(gw) - a0, 1, 'registration and business login on one connection');
    assert.is(gw.connections(), 1, 'held after the login');
    const after = host.events.length;
    const pushed = await until(() => host.events.slice(after).some((e) => e.feature === 'S3.11' && e.ok && /from the gateway accepted/.test(e.detail)), 10_000);
    assert.ok(pushed, `a push after the login reached the phone: ${host.events.slice(after).map((e) => `${e.feature} ${e.detail}`).join('; ')}`);
    phone.device.unplug();
    assert.ok(await until(() => gw.connections() === 0, 3_000), 'unplugged: the connection is closed');
  } finally {
    await world.stop();
    removeTempDir(dir);
  }
});

test("a held connection the gateway's idle sweep closed is not reused: the next login connects again and succeeds", async () => {
  const dir = makeTempDir('held-idle');
  const world = await startWorld({ stateDir: dir, gatewayPort: 0, gatewayLimits: { idleTimeoutMs: 400 } });
  try {
    const gw = world.stack.gateway;
    const { phone } = await world.phone(0, new TraceHost());
    assert.ok((await phone.device.plugIn()).ok);
    assert.is(gw.connections(), 1);
    assert.ok(await until(() => gw.connections() === 0, 5_000), 'the idle sweep closed the held connection');
    const a0 = await accepted(gw);
    const again = await world.replug(phone, new TraceHost(), '127.1.0.1').device.plugIn();
    assert.ok(again.ok, JSON.stringify(again));
    assert.is(await accepted(gw) - a0, 1, 'one new connection for the new login');
  } finally {
    await world.stop();
    removeTempDir(dir);
  }
});

test('no gateway at the address: 60 connections over 2 processes all fail, with the reason; close ends the processes', async () => {
  const h = await holdConnections({ url: `ws://127.0.0.1:${await closedPort()}/`, count: 60, perProcess: 30, perIp: 10 });
  try {
    assert.is(h.processes, 2);
    assert.is(h.opened, 0);
    assert.is(h.failed, 60);
    assert.match(h.errors.join(' '), /ECONNREFUSED/);
    const c = await h.counts();
    assert.equal({ open: c.open, withPush: c.withPush, pushes: c.pushes, failed: c.failed }, { open: 0, withPush: 0, pushes: 0, failed: 60 });
  } finally {
    await h.close();
  }
});

test('a count that is not positive is refused (SIM_HOLD)', async () => {
  try {
    await holdConnections({ url: 'ws://127.0.0.1:9/', count: 0 });
    assert.unreachable('held');
  } catch (e) {
    assert.instance(e, ImplementationError);
    assert.is((e as ImplementationError).code, 'SIM_HOLD');
  }
});

test.run();
