// The rotation under an on-path attacker (issue 9), over real sockets: a relay between the
// phone and the gateway withholds the phone's login with the new generation, so the phone
// falls back to the older one; the relay then delivers the withheld login to the business
// server itself. Before issue 9 the server promoted the new generation on that MAC-valid but
// stale opening, while the phone had kept only the older secret: with no registration server
// answering, it could no longer log in from its saved copy (S0.13). Now the late login verifies
// but cannot be finished, promotes nothing, and the phone still holds both generations.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { startRelay } from './relay.ts';
import { startWorld, TraceHost } from './world.ts';
import { setLogSink, type LogLine } from '../server-kit/log.ts';
import { decodeEnvelope, MsgType, parseLogin } from '../protocol/messages.ts';

setLogSink(() => {});

/** Relays phone <-> gateway; withholds (and keeps) the first login that names generation `gen`. */
async function withholdingRelay(gateway: () => string, gen: number, every = false) {
  const withheld: { dest: string; frame: Buffer }[] = [];
  const relay = await startRelay(gateway, {
    fromDevice: (f, c) => {
      const env = decodeEnvelope(f);
      if (!((every || !withheld.length) && env.type === MsgType.login && parseLogin(env.body).gen === gen)) return true;
      // Captured and never delivered: the phone sees its connection drop.
      withheld.push({ dest: c.path, frame: Buffer.from(f) });
      c.end('terminate');
      return false;
    },
  });
  return {
    url: relay.url,
    withheld,
    /** Delivers a withheld login to the gateway itself; returns the types of what came back. */
    async deliver(w: { dest: string; frame: Buffer }): Promise<number[]> {
      const ws = new WebSocket(gateway() + w.dest, { perMessageDeflate: false });
      const types: number[] = [];
      await new Promise<void>((resolve) => {
        ws.on('open', () => ws.send(w.frame));
        ws.on('message', (d: Buffer) => {
          types.push(decodeEnvelope(Uint8Array.from(d)).type);
          // loginAck then loginOk: the relay cannot compute the finish; it gives up.
          if (types.length === 2) ws.close();
        });
        ws.on('close', () => resolve());
        ws.on('error', () => resolve());
      });
      return types;
    },
    close: relay.close,
  };
}

test('a withheld login with the new generation, delivered late, promotes nothing; the phone logs in from its saved copy afterwards', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-withhold-'));
  let gatewayUrl = '';
  const relay = await withholdingRelay(() => gatewayUrl, 2);
  const world = await startWorld({ stateDir: dir, gatewayPort: 0, advertisedUrl: relay.url, device: { regRounds: 1, loginRounds: 2, backoffBaseMs: 20, backoffCapMs: 40 } });
  gatewayUrl = world.stack.gatewayUrl.replace(/\/?$/, '/');
  try {
    const host = new TraceHost();
    let { phone, ip, serial } = await world.phone(0, host);
    const first = await phone.device.plugIn();
    assert.ok(first.ok && first.gen === 1, JSON.stringify(first));
    // Second boot: gen 2 is issued; its login is withheld; the phone falls back to gen 1.
    phone = world.replug(phone, host, ip);
    const second = await phone.device.plugIn();
    assert.ok(second.ok && second.gen === 1, JSON.stringify(second));
    assert.is(relay.withheld.length, 1, 'the relay withheld the login with gen 2');
    const user = (await world.stack.regStore.getDevice(serial))!.user;
    // The withheld login reaches the business server late: its opening verifies (loginOk)...
    assert.equal(await relay.deliver(relay.withheld[0]!), [MsgType.loginAck, MsgType.loginOk]);
    // ...but without a finish nothing is promoted.
    await new Promise((r) => setTimeout(r, 100));
    const acct = (await world.stack.bizStore.getByUser(user))!;
    assert.equal([acct.currentGen, acct.pendingGen], [1, 2], 'gen 1 stays current, gen 2 pending');
    // Third boot, no registration server answering: the saved copy (both generations) logs in.
    await world.stack.stopReg('reg-primary');
    await world.stack.stopReg('reg-backup');
    phone = world.replug(phone, host, ip);
    const third = await phone.device.plugIn();
    assert.ok(third.ok && third.via === 'saved' && third.gen === 2, JSON.stringify(third));
  } finally {
    await relay.close();
    await world.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('every login with the new generation made to fail: the phone keeps the old one working, reports each fallback, and the registration server raises the re-issue alarm', async () => {
  const lines: LogLine[] = [];
  setLogSink((l) => void lines.push(l), 'info');
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-forcefail-'));
  let gatewayUrl = '';
  const relay = await withholdingRelay(() => gatewayUrl, 2, true);
  const world = await startWorld({ stateDir: dir, gatewayPort: 0, advertisedUrl: relay.url, device: { regRounds: 1, loginRounds: 1 } });
  gatewayUrl = world.stack.gatewayUrl.replace(/\/?$/, '/');
  try {
    const host = new TraceHost();
    let { phone, ip, serial } = await world.phone(0, host);
    assert.ok((await phone.device.plugIn()).ok);
    for (let boot = 0; boot < 6; boot++) {
      phone = world.replug(phone, host, ip);
      const o = await phone.device.plugIn();
      // The same pending gen 2 is re-issued each time; its login never arrives; gen 1 works.
      assert.ok(o.ok && o.gen === 1, `boot ${boot}: ${JSON.stringify(o)}`);
    }
    const user = (await world.stack.regStore.getDevice(serial))!.user;
    const acct = (await world.stack.bizStore.getByUser(user))!;
    assert.equal([acct.currentGen, acct.pendingGen], [1, 2], 'nothing lost: gen 1 current, gen 2 still pending');
    assert.is(lines.filter((l) => l.msg === 'rotation fallback' && l.user === user).length, 6, 'each fallback reported to the business server');
    const alarms = lines.filter((l) => l.msg === 'pending secret re-issued without a login' && l.serial === serial);
    assert.ok(alarms.length >= 1 && alarms[0]!.level === 'warn', JSON.stringify(alarms));
    assert.is((await world.stack.regStore.getDevice(serial))!.reissues, 5, 'issued once, then re-issued five times');
  } finally {
    setLogSink(() => {});
    await relay.close();
    await world.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
