// S0.7 at the registration server: every malformed or out-of-state message ends the session
// with an error frame [code, prevSeq, reason] and the error's close code; the server keeps
// serving others. Driven through the gateway and straight at the device port.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { testStack } from '../deploy/test-util.ts';
import { makeDevice, register, FrameSocket, type DeviceId } from '../server-kit/test-device.ts';
import { ClientHandshake, type SecureChannel } from '../protocol/channel.ts';
import { MsgType, encodeEnvelope, decodeEnvelope, parseServerProof, parseError } from '../protocol/messages.ts';
import { encode } from '../protocol/cbor.ts';
import { makeSerialToken } from '../protocol/keys.ts';
import type { Stack } from '../deploy/stack.ts';
import { setLogSink, logLevel, type LogLine } from '../server-kit/log.ts';

let stack: Stack;
let dev: DeviceId;
test.before(async () => {
  stack = await testStack({ stepTimeoutMs: 400 });
  await stack.enroll({ serial: 'SN-S07', keyVersion: 1 });
  dev = makeDevice(stack.ring, 'SN-S07');
});
test.after(async () => {
  await stack.stop();
});

type Script = (s: FrameSocket, ctx: { hs: ClientHandshake; ch?: SecureChannel }) => Promise<void>;

async function hello(s: FrameSocket, hs: ClientHandshake, d = dev) {
  s.send(hs.opening(MsgType.hello, [d.token, d.measurement]));
  const r = await s.frame();
  assert.is(r.env.type, MsgType.helloReply);
  return hs.acceptProof(r.frame, r.env, parseServerProof(r.env.body));
}

/** Runs a script, returns the error frame (code, prevSeq, seq) and the close code. */
async function run(url: string, script: Script) {
  const s = await FrameSocket.connect(url);
  const hs = new ClientHandshake('reg-primary', dev.key);
  await script(s, { hs });
  const c = await s.closed();
  const errs = c.frames.map((f) => decodeEnvelope(f)).filter((e) => e.type === MsgType.error);
  const e = errs[0];
  return { code: e ? parseError(e.body).code : null, prevSeq: e ? parseError(e.body).prevSeq : undefined, close: c.code };
}

const cases: [string, Script, string, number][] = [
  ['garbage before the hello', async (s) => s.send(Uint8Array.of(0x9f, 0x01)), 'CBOR_INDEFINITE', 1002],
  ['credRequest before the hello', async (s) => s.send(encodeEnvelope(MsgType.credRequest, 0, 'reg-primary', new Uint8Array(40))), 'MSG_UNEXPECTED', 1002],
  ['hello with a forged MAC', async (s) => {
    const f = decodeEnvelope(new ClientHandshake('reg-primary', new Uint8Array(32).fill(7)).opening(MsgType.hello, [dev.token, dev.measurement]));
    s.send(encodeEnvelope(f.type, f.seq, f.dest, f.body));
  }, 'HS_BAD_CLIENT_PROOF', 1008],
  ['hello with a token of another master key', async (s) => {
    const other = makeSerialToken(new Uint8Array(32).fill(9), 1, 'SN-S07');
    s.send(new ClientHandshake('reg-primary', dev.key).opening(MsgType.hello, [other, dev.measurement]));
  }, 'HS_BAD_CLIENT_PROOF', 1008],
  ['hello naming an unknown master key version', async (s) => {
    const t = makeSerialToken(new Uint8Array(32).fill(9), 7, 'SN-S07');
    s.send(new ClientHandshake('reg-primary', dev.key).opening(MsgType.hello, [t, dev.measurement]));
  }, 'HS_BAD_CLIENT_PROOF', 1008],
  ['hello with seq 1', async (s) => {
    const f = decodeEnvelope(new ClientHandshake('reg-primary', dev.key).opening(MsgType.hello, [dev.token, dev.measurement]));
    s.send(encodeEnvelope(f.type, 1, f.dest, f.body));
  }, 'CHAN_OUT_OF_ORDER', 1008],
  ['a second hello instead of the finish', async (s, { hs }) => {
    await hello(s, hs);
    s.send(new ClientHandshake('reg-primary', dev.key).opening(MsgType.hello, [dev.token, dev.measurement]));
  }, 'CHAN_REPLAY', 1008],
  ['a finish with a wrong MAC', async (s, { hs }) => {
    const { finish } = await hello(s, hs);
    const e = decodeEnvelope(finish);
    s.send(encodeEnvelope(e.type, e.seq, e.dest, [new Uint8Array(32)]));
  }, 'HS_BAD_CLIENT_PROOF', 1008],
  ['a credRequest with an altered tag', async (s, { hs }) => {
    const { finish, channel } = await hello(s, hs);
    s.send(finish);
    const f = channel.seal(MsgType.credRequest, ['SN-S07', '10.0.0.1']);
    f[f.length - 1]! ^= 1;
    s.send(f);
  }, 'CHAN_BAD_TAG', 1008],
  ['a credRequest replayed', async (s, { hs }) => {
    const { finish, channel } = await hello(s, hs);
    s.send(finish);
    const f = channel.seal(MsgType.credRequest, ['SN-S07', '10.0.0.1']);
    s.send(f);
    s.send(f);
  }, 'none', 1000],
  ['a credRequest naming another serial', async (s, { hs }) => {
    const { finish, channel } = await hello(s, hs);
    s.send(finish);
    s.send(channel.seal(MsgType.credRequest, ['SN-OTHER', '10.0.0.1']));
  }, 'MSG_BAD_FIELD', 1002],
  ['a credRequest of the wrong shape', async (s, { hs }) => {
    const { finish, channel } = await hello(s, hs);
    s.send(finish);
    s.send(channel.seal(MsgType.credRequest, ['SN-S07']));
  }, 'MSG_BAD_SHAPE', 1002],
  ['a second pwConfirm', async (s, { hs }) => {
    const { finish, channel } = await hello(s, hs);
    s.send(finish);
    s.send(channel.seal(MsgType.pwConfirm, [1]));
    s.send(channel.seal(MsgType.pwConfirm, [1]));
  }, 'MSG_UNEXPECTED', 1002],
  ['a helloReply from the device', async (s, { hs }) => {
    const { finish } = await hello(s, hs);
    s.send(finish);
    s.send(encodeEnvelope(MsgType.helloReply, 2, 'reg-primary', [new Uint8Array(32), new Uint8Array(32)]));
  }, 'GW_OR_MSG', 0],
  ['silence after the hello (step timeout)', async (s, { hs }) => {
    await hello(s, hs);
  }, 'TIMEOUT', 1001],
];

for (const via of ['gateway', 'direct'] as const) {
  test(`S0.7 (${via}): each malformed or out-of-state message -> error frame + session ended; others still served`, async () => {
    const url = via === 'gateway' ? stack.urlFor('reg-primary') : stack.directUrl('reg-primary')!;
    for (const [name, script, code, close] of cases) {
      const r = await run(url, script);
      // The gateway validates the envelope itself and refuses with the same CBOR/MSG codes.
      if (code === 'GW_OR_MSG') {
        // The gateway refuses a server-only type itself; the server refuses it as unexpected.
        assert.equal({ code: r.code, close: r.close }, via === 'gateway' ? { code: 'GW_BAD_DIRECTION', close: 1008 } : { code: 'MSG_UNEXPECTED', close: 1002 }, name);
        continue;
      }
      if (code === 'none') {
        // The reply went out before the replayed frame was read: the session ended normally
        // and the replay was never acted on.
        assert.is(r.close, close, name);
        continue;
      }
      assert.equal({ code: r.code, close: r.close }, { code, close }, `${name} via ${via}`);
    }
    assert.is((await register(url, 'reg-primary', dev)).kind, 'cred');
  });
}

test('the error frame names the offending frame\'s seq (prevSeq) and carries the server\'s next seq', async () => {
  const s = await FrameSocket.connect(stack.directUrl('reg-primary')!);
  const hs = new ClientHandshake('reg-primary', dev.key);
  const { finish } = await hello(s, hs);
  const e = decodeEnvelope(finish);
  s.send(encodeEnvelope(e.type, e.seq, e.dest, [new Uint8Array(32)]));
  const c = await s.closed();
  const err = decodeEnvelope(c.frames[0]!);
  assert.is(err.type, MsgType.error);
  assert.is(err.seq, 1);
  assert.is(err.dest, 'reg-primary');
  assert.is(parseError(err.body).prevSeq, 1);
});

test('pwConfirm before the credential request: acknowledged and recorded (docs/protocol.md §6.2)', async () => {
  const s = await FrameSocket.connect(stack.urlFor('reg-primary'));
  const hs = new ClientHandshake('reg-primary', dev.key);
  const { finish, channel } = await hello(s, hs);
  s.send(finish);
  s.send(channel.seal(MsgType.pwConfirm, [7]));
  const ack = await s.frame();
  assert.is(ack.env.type, MsgType.pwConfirmAck);
  assert.equal(channel.open(ack.env), [7]);
  s.send(channel.seal(MsgType.credRequest, ['SN-S07', '10.0.0.1']));
  assert.is((await s.frame()).env.type, MsgType.credReply);
  assert.is((await stack.regStore.getDevice('SN-S07'))!.confirmedGen, 7);
  s.close();
});

test('before authentication one answer: a forged token, an unknown key version, random bytes and a genuine token with a wrong MAC get the same error frame and close; only the log says which', async () => {
  const lines: LogLine[] = [];
  const level = logLevel();
  const prev = setLogSink((l) => lines.push(l), 'info');
  const hellos: [string, Uint8Array, Uint8Array][] = [
    ['KEY_BAD_TOKEN', makeSerialToken(new Uint8Array(32).fill(9), 1, 'SN-S07'), dev.key],
    ['KEY_UNKNOWN_VERSION', makeSerialToken(new Uint8Array(32).fill(9), 7, 'SN-S07'), dev.key],
    ['KEY_BAD_TOKEN', Uint8Array.from({ length: dev.token.length }, (_, i) => (i * 37 + 1) & 0xff), dev.key],
    ['HS_BAD_CLIENT_PROOF', dev.token, new Uint8Array(32).fill(7)],
  ];
  try {
    const answers: { frames: string[]; close: number; reason: string }[] = [];
    for (const [, token, key] of hellos) {
      const s = await FrameSocket.connect(stack.directUrl('reg-primary')!);
      s.send(new ClientHandshake('reg-primary', key).opening(MsgType.hello, [token, dev.measurement]));
      const c = await s.closed();
      answers.push({ frames: c.frames.map((f) => Buffer.from(f).toString('hex')), close: c.code, reason: c.reason });
    }
    assert.is(parseError(decodeEnvelope(Buffer.from(answers[0]!.frames[0]!, 'hex')).body).code, 'HS_BAD_CLIENT_PROOF');
    assert.is(answers[0]!.close, 1008);
    for (const a of answers.slice(1)) assert.equal(a, answers[0], 'byte-identical error frame, same close code and reason');
    const refused = lines.filter((l) => l.msg === 'session refused' && l.code === 'HS_BAD_CLIENT_PROOF');
    assert.equal(refused.map((l) => l.why), hellos.map(([why]) => why));
  } finally {
    setLogSink(prev, level);
  }
  assert.is((await register(stack.directUrl('reg-primary')!, 'reg-primary', dev)).kind, 'cred');
});

test('a replayed hello is refused at once (HS_REPLAY)', async () => {
  const hs = new ClientHandshake('reg-primary', dev.key);
  const h = hs.opening(MsgType.hello, [dev.token, dev.measurement]);
  const s1 = await FrameSocket.connect(stack.directUrl('reg-primary')!);
  s1.send(h);
  assert.is((await s1.frame()).env.type, MsgType.helloReply);
  s1.close();
  const s2 = await FrameSocket.connect(stack.directUrl('reg-primary')!);
  s2.send(h);
  const c = await s2.closed();
  assert.is(parseError(decodeEnvelope(c.frames[0]!).body).code, 'HS_REPLAY');
  assert.is(c.code, 1008);
  void encode;
});

test('attestation over real sockets: a scripted device attesting firmware the store does not accept is refused (REG_FIRMWARE_REFUSED, close 1008); a revoked one too; the accepted one registers', async () => {
  const url = stack.urlFor('reg-primary');
  const unknown = makeDevice(stack.ring, 'SN-S07', 1, new Uint8Array(32).fill(0x0b));
  const r = await register(url, 'reg-primary', unknown);
  assert.equal(r, { kind: 'error', code: 'REG_FIRMWARE_REFUSED', closeCode: 1008 });
  const ok = await register(url, 'reg-primary', dev);
  assert.is(ok.kind, 'cred');
  // Revoked firmware: the factory's record stays, the server refuses it from now on.
  const revoked = makeDevice(stack.ring, 'SN-S07', 1, new Uint8Array(32).fill(0x0c));
  const hex = Buffer.from(revoked.measurement).toString('hex');
  assert.is((await stack.regStore.addFirmware(hex, 2)), 'created');
  assert.is((await register(url, 'reg-primary', revoked)).kind, 'cred');
  assert.ok((await stack.regStore.setFirmwareStatus(hex, 'revoked')));
  assert.equal(await register(url, 'reg-primary', revoked), { kind: 'error', code: 'REG_FIRMWARE_REFUSED', closeCode: 1008 });
  // Enrolling a device with that firmware again does not un-revoke it.
  assert.is((await stack.regStore.addFirmware(hex, 2)), 'exists');
  assert.is((await stack.regStore.firmwareAccepted(hex)), false);
});

test.run();
