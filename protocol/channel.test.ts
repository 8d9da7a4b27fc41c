import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Handshake, SecureChannel, type Rng } from './channel.ts';
import { decodeEnvelope, parseHello, parseServerProof, MsgType, type Envelope } from './messages.ts';
import { ProtocolError } from './errors.ts';
import { makeSerialToken, deriveDeviceKey } from './keys.ts';

const master = new Uint8Array(32).fill(1);
const serial = 'SN-0000001';
const token = makeSerialToken(master, 1, serial);
const devKey = deriveDeviceKey(master, serial);
function seededRng(seed: number): Rng {
  let x = seed;
  return (n) => Uint8Array.from({ length: n }, () => ((x = (x * 1103515245 + 12345) >>> 0), x >>> 24));
}

interface Run { client: Handshake; server: Handshake; hello: Uint8Array; reply?: Uint8Array; finish?: Uint8Array; c?: SecureChannel; s?: SecureChannel }

function handshake(clientKey = devKey, serverKey = devKey, tamper?: (stage: string, f: Uint8Array) => Uint8Array): Run {
  const t = tamper ?? ((_s, f) => f);
  const client = new Handshake('client', 'reg-primary', clientKey, seededRng(1));
  const server = new Handshake('server', 'reg-primary', null, seededRng(2));
  const hello = t('hello', client.opening(MsgType.hello, [token]));
  const run: Run = { client, server, hello };
  const env = decodeEnvelope(hello);
  const h = parseHello(env.body);
  server.acceptOpening(hello, env, [h.token], h.nonce, h.mac, serverKey);
  if (!server.verifyOpening()) throw new ProtocolError('HS_BAD_CLIENT_PROOF', 'bad opening');
  run.reply = t('reply', server.proof(MsgType.helloReply));
  const renv = decodeEnvelope(run.reply);
  const { finish, channel } = client.acceptProof(run.reply, renv, parseServerProof(renv.body));
  run.finish = t('finish', finish);
  run.c = channel;
  run.s = server.acceptFinish(run.finish, decodeEnvelope(run.finish));
  return run;
}

const isCode = (code: string) => (e: unknown) => e instanceof ProtocolError && e.code === code;

test('full handshake, then sealed frames both ways', () => {
  const r = handshake();
  const f1 = r.c!.seal(MsgType.credRequest, [serial, '127.1.0.5']);
  assert.equal(r.s!.open(decodeEnvelope(f1)), [serial, '127.1.0.5']);
  const f2 = r.s!.seal(MsgType.credReply, ['x']);
  assert.equal(r.c!.open(decodeEnvelope(f2)), ['x']);
});

test('wrong device key: server refuses the opening', () => {
  assert.throws(() => handshake(new Uint8Array(32).fill(9), devKey), isCode('HS_BAD_CLIENT_PROOF'));
});

test('wrong server key: client refuses the proof', () => {
  const client = new Handshake('client', 'reg-primary', devKey);
  const server = new Handshake('server', 'reg-primary', null);
  const hello = client.opening(MsgType.hello, [token]);
  const env = decodeEnvelope(hello);
  const h = parseHello(env.body);
  // A server that does not hold the key cannot even pass verifyOpening; force a proof by
  // giving it another key and a forged opening check: it must still be refused by the client.
  server.acceptOpening(hello, env, [h.token], h.nonce, h.mac, new Uint8Array(32).fill(3));
  assert.is(server.verifyOpening(), false);
  const rogue = new Handshake('client', 'reg-primary', new Uint8Array(32).fill(3));
  const rogueServer = new Handshake('server', 'reg-primary', null);
  const fakeHello = rogue.opening(MsgType.hello, [token]);
  const fenv = decodeEnvelope(fakeHello);
  const fh = parseHello(fenv.body);
  rogueServer.acceptOpening(fakeHello, fenv, [fh.token], fh.nonce, fh.mac, new Uint8Array(32).fill(3));
  const reply = rogueServer.proof(MsgType.helloReply);
  const renv = decodeEnvelope(reply);
  assert.throws(() => client.acceptProof(reply, renv, parseServerProof(renv.body)), isCode('HS_BAD_SERVER_PROOF'));
});

test('a flipped bit in any byte of any handshake message is refused', () => {
  let tried = 0;
  for (const stage of ['hello', 'reply', 'finish']) {
    const len = (handshake() as unknown as Record<string, Uint8Array>)[stage]!.length;
    for (let i = 0; i < len; i++) {
      tried++;
      assert.throws(
        () => handshake(devKey, devKey, (s, f) => {
          if (s !== stage) return f;
          const g = Uint8Array.from(f);
          g[i]! ^= 0x01;
          return g;
        }),
        (e: unknown) => e instanceof ProtocolError,
        `${stage} byte ${i}`,
      );
    }
  }
  assert.ok(tried > 150);
});

test('replayed or reordered sealed frames and frames for the other direction are refused', () => {
  const r = handshake();
  const a = r.c!.seal(MsgType.credRequest, [1]);
  const b = r.c!.seal(MsgType.credRequest, [2]);
  r.s!.open(decodeEnvelope(a));
  assert.throws(() => r.s!.open(decodeEnvelope(a)), isCode('CHAN_REPLAY'));
  assert.ok(r.s!.closed);

  const r2 = handshake();
  const a2 = r2.c!.seal(MsgType.credRequest, [1]);
  const b2 = r2.c!.seal(MsgType.credRequest, [2]);
  assert.throws(() => r2.s!.open(decodeEnvelope(b2)), isCode('CHAN_OUT_OF_ORDER'));
  void a2; void b;

  const r3 = handshake();
  // Client seals at seq 2; reflect it back to the client, which expects the server's seq 1.
  const own = r3.s!.seal(MsgType.credReply, [0]); // server seq 1
  r3.c!.open(decodeEnvelope(own));
  const mine = r3.c!.seal(MsgType.credRequest, [1]); // client seq 2
  const env: Envelope = decodeEnvelope(mine);
  // Force the seq check to pass so the tag check is what refuses it.
  r3.s!.seal(MsgType.credReply, [0]); // server seq 2 (client now expects 2)
  assert.throws(() => r3.c!.open(env), isCode('CHAN_BAD_TAG'));
});

test.run();
