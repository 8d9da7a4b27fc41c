// The serial never crosses in clear (issue 9; S0.1, S0.8 send it only encrypted): a phone
// boots twice (a registration, a login, a password change) against the embedded stack, and
// every WebSocket payload any party sends — phone to gateway, gateway to servers over the
// links, and back — is captured before the WebSocket layer masks it, then searched for the
// serial in any encoding: UTF-8, UTF-16, hex, base64 (every alignment). Until issue 9 the
// default business user name was 'u-' + serial, so the serial travelled in every login.
// The person layer (S3.3): a bank registration and logins with a one-time code and with the
// finger, captured the same way, with every log line and trace line and every file of the state
// directory: the TOTP seed and the enrolled fingerprint template are in none, in any encoding
// (the seed travels only wrapped for the chip and rests only sealed under the storage key; the
// template never leaves the chip, the sensor's readings travel sealed for it).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { startWorld, TraceHost } from './world.ts';
import { schemaText } from '../deploy/stack-schemas.ts';
import { setLogSink, addLogListener } from '../server-kit/log.ts';
import { encodings, byteEncodings, captureWebSocketSends, filesUnder } from './needles.ts';
import { memoryNvm } from '../firmware/secure/nvm.ts';
import { SimSlot } from '../firmware/hal/sim-card.ts';
import { person, storyCard } from './bank-scenarios.ts';

setLogSink(() => {});

test('no WebSocket payload of a full run (two boots, a password change) holds the serial in any encoding', async () => {
  const { sent, restore } = captureWebSocketSends(WebSocket);
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
    const user = (await world.stack.regStore.getDevice(serial))!.user;
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
    restore();
    await world.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the person layer captured: a bank registration, a login with the one-time code and one with the finger: the TOTP seed and the fingerprint template are in no WebSocket payload, log line, trace line or state file, in any encoding', async () => {
  const logs: string[] = [];
  const stopLogs = addLogListener((l) => void logs.push(JSON.stringify(l)));
  const { sent, restore } = captureWebSocketSends(WebSocket);
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-capture-person-'));
  const world = await startWorld({ stateDir: dir, gatewayPort: 0, bankScrypt: { ln: 12, r: 8, p: 1 } });
  try {
    const host = new TraceHost();
    const nvm = memoryNvm();
    const slot = new SimSlot(storyCard(51));
    let { phone, ip } = await world.phone(0, host, { sim: slot, person: person('register', 'uma'), nvm });
    const reg = await phone.device.plugIn();
    assert.ok(reg.ok && reg.bank?.kind === 'registered' && reg.bank.otp && reg.bank.fingerprint, JSON.stringify(reg));
    const server = reg.ok ? reg.server : '';
    for (const mech of ['otp', 'fingerprint'] as const) {
      phone = world.replug(phone, host, ip, { sim: slot, person: person('login', 'uma', undefined, [mech]) });
      const o = await phone.device.plugIn();
      assert.ok(o.ok && o.bank?.kind === 'page' && o.bank.mech === mech, JSON.stringify(o));
    }
    const bank = world.stack.biz(server)!.bank!.store;
    const seed = (await bank.person((await bank.accountByName('uma'))!.accountNo, server))!.otp!.seed;
    const template = nvm.readObject('fp.template');
    assert.ok(seed.length === 20 && template && template.length === 128, 'the seed at the bank and the template in the chip');
    assert.ok(sent.length > 20, `${sent.length} payloads captured`);
    await world.stack.stop();
    const files = filesUnder(dir);
    // The stores: the SQLite file among the files, or on PostgreSQL (STORE_URL, make test-pg) every row of the stack's schemas.
    const st = world.stack.store;
    const pgRows: [string, string][] = [];
    if (st.choice.kind === 'postgres' && st.schemas) {
      for (const s of Object.values(st.schemas)) pgRows.push([`PostgreSQL schema ${s}`, await schemaText(st.choice.url, s)]);
      assert.ok(pgRows.some(([, t]) => t.includes('bank_person')), 'the bank rows were read');
    } else assert.ok(files.some((f) => f.endsWith('biz-accounts.sqlite')));
    const places: [string, string][] = [
      ...pgRows,
      ['a WebSocket payload', Buffer.concat(sent).toString('latin1')],
      ['a log line', logs.join('\n')],
      ['the trace', host.events.map((e) => `${e.step} ${e.detail}`).join('\n')],
      ...files.map((f): [string, string] => [f, readFileSync(f).toString('latin1')]),
    ];
    for (const [what, secret] of [['the TOTP seed', seed], ['the fingerprint template', template!]] as const) {
      for (const e of byteEncodings(secret)) for (const [where, text] of places) assert.not.ok(text.includes(e.needle), `${what} as ${e.what} in ${where}`);
    }
    // The search finds what is planted.
    for (const e of byteEncodings(seed)) assert.ok(Buffer.concat([Buffer.from('x'), Buffer.from(e.what.startsWith('base64') ? Buffer.concat([Buffer.alloc(Number(/offset (\d)/.exec(e.what)![1])), Buffer.from(seed)]).toString('base64') : e.needle, 'latin1')]).toString('latin1').includes(e.needle));
  } finally {
    stopLogs();
    restore();
    await world.stop().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
