// Two defects the structure hid (issue 8), tried over real sockets with the registration
// servers down, so that the phone logs in from its saved copy (S0.13):
// - a server entry the spec allows (a URL without a path: the dest is `server.name`) and one
//   whose address the network layer refuses must not end the plug-in as `crashed`;
// - a business login whose gateway link drops mid-login (GW_UPSTREAM_LOST, close 1013: retry
//   class `later`) is retried after a backoff, not given up as refused.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRelay } from './relay.ts';
import { startWorld, TraceHost, type World } from './world.ts';
import { setLogSink } from '../server-kit/log.ts';
import { decodeEnvelope, MsgType } from '../protocol/messages.ts';
import type { Phone } from '../firmware/phone.ts';
import type { ServerChoice } from '../protocol/messages.ts';

setLogSink(() => {});

/** Plugs phone 0 in once (registered, saved), then rewrites its saved server list. */
async function savedPhoneWith(world: World, servers: ServerChoice[]): Promise<{ phone: Phone; ip: string; host: TraceHost }> {
  const host = new TraceHost();
  const { phone, ip } = await world.phone(0, host);
  const first = await phone.device.plugIn();
  assert.ok(first.ok, JSON.stringify(first));
  const saved = phone.device.storage.loadLogin();
  assert.ok(saved.ok && saved.value);
  const w = phone.device.storage.saveLogin({ ...saved.value!, servers, lastServer: null });
  assert.ok(w.ok);
  await world.stack.stopReg('reg-primary');
  await world.stack.stopReg('reg-backup');
  const again = new TraceHost();
  return { phone: world.replug(phone, again, ip), ip, host: again };
}

test('a saved server URL without a path logs in (dest = server.name); a refused address is a clear failure, then the next server', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-endpoints-'));
  const world = await startWorld({ stateDir: dir, gatewayPort: 0, device: { regRounds: 1, loginRounds: 1 } });
  try {
    const { phone, host } = await savedPhoneWith(world, [
      { name: 'biz-west', url: 'ws://[not-an-address/', region: 'west' },
      { name: 'biz-east', url: world.stack.gatewayUrl.replace(/\/?$/, '/'), region: 'east' },
    ]);
    const o = await phone.device.plugIn();
    assert.ok(o.ok && o.via === 'saved' && o.server === 'biz-east', JSON.stringify(o));
    const bad = host.events.find((e) => e.feature === 'S0.11' && !e.ok);
    assert.ok(bad && /biz-west/.test(bad.step) && /unreachable/.test(bad.detail), JSON.stringify(host.events));
  } finally {
    await world.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * A relay in front of the gateway: on the first login frame it holds back what the server
 * answers and calls `onLogin` (which takes the business server down, so the gateway's link
 * drops with the session open); from then on it relays as is.
 */
async function linkDropRelay(gatewayUrl: string, onLogin: () => Promise<void>) {
  let dropped = false;
  const holding = new Set<number>();
  const answered = new Set<number>();
  const relay = await startRelay(() => gatewayUrl.replace(/\/?$/, '/'), {
    fromDevice: (f, c) => {
      if (!dropped && decodeEnvelope(f).type === MsgType.login) {
        dropped = true;
        holding.add(c.n);
      }
      return true;
    },
    fromUpstream: (f, c) => {
      const type = decodeEnvelope(f).type;
      // The gateway's own answer to a device asking for sessions in sequence (docs/protocol.md
      // §2.1) is not the server's: it passes.
      if (type === MsgType.sessions) return true;
      // The server has the login (its first answer is here): drop the link now. While it drops,
      // the server's answers to that login never reach the phone.
      if (holding.has(c.n) && !answered.has(c.n)) {
        answered.add(c.n);
        void onLogin().then(() => holding.delete(c.n));
      }
      // An error frame or a sessionEnd (the gateway's refusal of the session, docs/protocol.md §2.1) passes.
      return !(holding.has(c.n) && type !== MsgType.error && type !== MsgType.sessionEnd);
    },
  });
  return { url: relay.url, close: relay.close };
}

test('the gateway link drops mid-login (GW_UPSTREAM_LOST): the login is retried after a backoff and succeeds', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-linkdrop-'));
  // Rounds are 600-1200 ms apart: time for the business server and the gateway's link to return.
  const world = await startWorld({ stateDir: dir, gatewayPort: 0, device: { regRounds: 1, loginRounds: 4, backoffBaseMs: 1200, backoffCapMs: 1200 } });
  let relay: Awaited<ReturnType<typeof linkDropRelay>> | null = null;
  try {
    let restarted: Promise<void> | null = null;
    relay = await linkDropRelay(world.stack.gatewayUrl, async () => {
      await world.stack.stopBiz('biz-east');
      restarted = world.stack.startBiz('biz-east');
    });
    const { phone, host } = await savedPhoneWith(world, [{ name: 'biz-east', url: relay.url, region: 'east' }]);
    const o = await phone.device.plugIn();
    assert.ok(restarted, 'the relay dropped the link');
    await restarted;
    const logins = host.events.filter((e) => e.feature === 'S0.11');
    const trace = logins.map((e) => `${e.step}: ${e.detail}`).join('\n');
    assert.ok(o.ok && o.via === 'saved' && o.server === 'biz-east', `${JSON.stringify(o)}\n${trace}`);
    assert.match(logins[0]!.detail, /GW_UPSTREAM_LOST/, trace);
    assert.is(logins[0]!.ok, false);
  } finally {
    await relay?.close();
    await world.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('both registration servers answer REG_NO_BIZ_SERVER: the phone says so, not "no registration server answered"', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-nobiz-'));
  const world = await startWorld({ stateDir: dir, gatewayPort: 0, healthIntervalMs: 3_600_000, device: { regRounds: 1, loginRounds: 1 } });
  try {
    for (const b of world.stack.dests.biz) await world.stack.setBizHealthy(b, false);
    const host = new TraceHost();
    const o = await (await world.phone(0, host)).phone.device.plugIn();
    assert.ok(!o.ok && o.kind === 'no-saved-login', JSON.stringify(o));
    assert.match(o.reason, /no registration server could issue credentials \(REG_NO_BIZ_SERVER\) and no saved login/);
    assert.not.match(o.reason, /no registration server answered/);
  } finally {
    await world.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
