// The serial never crosses in clear (issue 9; S0.1, S0.8 send it only encrypted): a phone
// boots twice (a registration, a login, a password change) against the embedded stack, and
// every WebSocket payload any party sends — phone to gateway, gateway to servers over the
// links, and back — is captured before the WebSocket layer masks it, then searched for the
// serial in any encoding: UTF-8, UTF-16, hex, base64 (every alignment). Until issue 9 the
// default business user name was 'u-' + serial, so the serial travelled in every login.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { startWorld, TraceHost } from './world.ts';
import { setLogSink } from '../server-kit/log.ts';
import { encodings } from './needles.ts';

setLogSink(() => {});

test('no WebSocket payload of a full run (two boots, a password change) holds the serial in any encoding', async () => {
  const sent: Buffer[] = [];
  const original = WebSocket.prototype.send;
  WebSocket.prototype.send = function (this: WebSocket, data: unknown, ...rest: unknown[]) {
    if (data instanceof Uint8Array) sent.push(Buffer.from(data));
    else if (typeof data === 'string') sent.push(Buffer.from(data, 'utf8'));
    else if (Array.isArray(data)) sent.push(Buffer.concat(data as Buffer[]));
    return (original as (...a: unknown[]) => void).call(this, data, ...rest);
  } as typeof original;
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-capture-'));
  const world = await startWorld({ stateDir: dir, gatewayPort: 0 });
  try {
    const host = new TraceHost();
    let { phone, ip, serial } = await world.phone(0, host);
    assert.ok((await phone.device.plugIn()).ok);
    phone = world.replug(phone, host, ip);
    const second = await phone.device.plugIn();
    assert.ok(second.ok && second.gen === 2, JSON.stringify(second));
    assert.ok(sent.length > 20, `${sent.length} payloads captured`);
    const user = world.stack.regStore.getDevice(serial)!.user;
    assert.not.ok(user.includes(serial), 'the user name is not the serial');
    const all = Buffer.concat(sent).toString('latin1');
    assert.ok(all.includes(Buffer.from(user).toString('latin1')), 'the capture sees the login frames (the user name is in clear there)');
    for (const e of encodings(serial)) assert.not.ok(all.includes(e.needle), `the serial ${serial} as ${e.what} in a WebSocket payload`);
    // The search itself works: the same needles find the serial where it is planted.
    for (const e of encodings(serial)) {
      const planted = e.what.startsWith('base64') ? Buffer.concat([Buffer.alloc(Number(/offset (\d)/.exec(e.what)![1])), Buffer.from(serial)]).toString('base64') : e.needle;
      assert.ok(planted.includes(e.needle), `needle ${e.what}`);
    }
  } finally {
    WebSocket.prototype.send = original;
    await world.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
