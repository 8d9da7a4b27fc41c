// §6.2 (the registration server's state machine), §5.3 (the sealed channel, on a registration
// session), §8 (replay) and §7 (S0.7: a refusal ends the session).
import { concatBytes } from '@noble/hashes/utils.js';
import { RegMessages } from '../../protocol/registration.ts';
import { LoginMessages } from '../../protocol/login.ts';
import { SecureChannel } from '../../protocol/channel.ts';
import { makeSerialToken, deriveDeviceKey } from '../../protocol/keys.ts';
import { encodeEnvelope, encodeError, decodeEnvelope, parseError, MsgType } from '../../protocol/messages.ts';
import { closeOf, expectRefusal, expectClose, pass, fail, type Case, type CaseContext, type Outcome } from '../suite.ts';
import type { Conn } from '../wire.ts';
import { helloFrame, openRegistration, readyRegistration, register, credRequestBody } from '../flows.ts';

const flip = (b: Uint8Array, at: number): Uint8Array => {
  const c = Uint8Array.from(b);
  c[at]! ^= 0x01;
  return c;
};
const named = (codes: string[]) => `-> ${codes[0]} and close ${closeOf(codes[0]!)}`;
/** A hello of the test device with one field changed (re-encoded from RegMessages.hello's decoding). */
/** The index of the MAC in a hello's body: the last item (the fields, then nC, then the MAC). */
const MAC_AT = (body: Uint8Array[]) => body.length - 1;

function alteredHello(ctx: CaseContext, change: (body: Uint8Array[]) => void, seq = 0): Uint8Array {
  const { frame } = helloFrame(ctx.target.regDest, ctx.target.device);
  const env = decodeEnvelope(frame);
  const body = (env.body as Uint8Array[]).map((x) => Uint8Array.from(x));
  change(body);
  return encodeEnvelope(env.type, seq, env.dest, body);
}

/** After the handshake, one sealed frame made by `make`, then the refusal. */
function afterHandshake(what: string, codes: string[], make: (r: Awaited<ReturnType<typeof readyRegistration>>, ctx: CaseContext) => Uint8Array, section = '§5.3'): Case {
  return {
    section,
    title: `${what} ${named(codes)}`,
    async run(ctx) {
      const r = await readyRegistration(ctx);
      r.c.send(make(r, ctx));
      return expectRefusal(r.c, codes);
    },
  };
}

/** After the server's proof (WAIT_FINISH), one frame made by `make`, then the refusal. */
function inWaitFinish(what: string, codes: string[], make: (r: Awaited<ReturnType<typeof openRegistration>>, ctx: CaseContext) => Uint8Array): Case {
  return {
    section: '§6.2',
    title: `${what} ${named(codes)}`,
    async run(ctx) {
      const r = await openRegistration(ctx);
      r.c.send(make(r, ctx));
      return expectRefusal(r.c, codes);
    },
  };
}

function first(what: string, codes: string[], make: (ctx: CaseContext) => Uint8Array, section = '§6.2'): Case {
  return {
    section,
    title: `${what} ${named(codes)}`,
    async run(ctx) {
      const c = await ctx.connect();
      c.send(make(ctx));
      return expectRefusal(c, codes);
    },
  };
}

/** A sealed frame of `type` under `key` with this seq and dest: what SecureChannel.seal makes, for any key. */
function sealWith(key: Uint8Array, type: number, seq: number, dest: string, inner: Parameters<SecureChannel['seal']>[1]): Uint8Array {
  const ch = new SecureChannel('client', dest, Uint8Array.from(key), new Uint8Array(32), seq, 0);
  return ch.seal(type, inner);
}

export const registrationCases: Case[] = [
  {
    section: '§6.2',
    title: 'registration accepted: helloReply, then credReply whose secret opens with the device key, then close 1000',
    async run(ctx) {
      const expected = 'credReply (sealed), wrapped secret opens for this device, gen > currentGen, 1..8 servers, close 1000';
      const r = await register(ctx);
      if (r.kind === 'other') return fail(expected, r.text);
      if (r.kind === 'not-found') return fail(expected, `notFound: ${r.reason} (is the test device enrolled?)`);
      if (r.closeCode !== 1000) return fail(expected, `the server closed ${r.closeCode ?? 'not at all'} after credReply`);
      if (r.cred.gen <= r.cred.currentGen) return fail(expected, `gen ${r.cred.gen} is not above currentGen ${r.cred.currentGen} (§10: a pending generation is above the current one)`);
      return pass(expected);
    },
  },
  {
    section: '§6.2',
    title: 'a genuine token of a serial the server does not know -> notFound (sealed), close 1000',
    needs: 'master-key',
    async run(ctx) {
      const expected = 'handshake completes, then notFound sealed, then close 1000 (S0.9)';
      const m = ctx.target.master!;
      const serial = `conf-unknown-${Date.now().toString(36)}`;
      const r = await register(ctx, { serial, key: deriveDeviceKey(m.key, serial), token: makeSerialToken(m.key, m.version, serial), measurement: ctx.target.device.measurement });
      if (r.kind === 'not-found') return r.closeCode === 1000 ? pass(expected) : fail(expected, `notFound then close ${r.closeCode}`);
      return fail(expected, r.kind === 'cred' ? 'credentials were issued to an unknown serial' : r.text);
    },
  },
  first('a hello whose MAC is altered', ['HS_BAD_CLIENT_PROOF'], (ctx) => alteredHello(ctx, (b) => (b[MAC_AT(b)]![0]! ^= 1))),
  // Before authentication one answer for every hello that does not authenticate (issue 10): a
  // server that tells a forged token or an unknown key version apart lets anyone probe them.
  first('a hello whose serial token is altered', ['HS_BAD_CLIENT_PROOF'], (ctx) => alteredHello(ctx, (b) => (b[0]![b[0]!.length - 1]! ^= 1))),
  first('a hello naming master key version 0', ['HS_BAD_CLIENT_PROOF'], (ctx) => alteredHello(ctx, (b) => (b[0]![0] = 0))),
  {
    section: '§6.2',
    title: 'before authentication one answer: a hello whose token is altered, one naming key version 0 and one whose MAC is altered get the same error frame (code and reason) and close',
    async run(ctx) {
      const expected = 'three identical error frames [code, prevSeq, reason] and close codes: whether a token is genuine or a key version exists is not told (issue 10)';
      const seen: string[] = [];
      for (const change of [(b: Uint8Array[]) => (b[0]![b[0]!.length - 1]! ^= 1), (b: Uint8Array[]) => (b[0]![0] = 0), (b: Uint8Array[]) => (b[MAC_AT(b)]![0]! ^= 1)]) {
        const c = await ctx.connect();
        c.send(alteredHello(ctx, change));
        const r = await c.next();
        if (r.kind !== 'frame') {
          c.close();
          return fail(expected, r.kind === 'close' ? `closed ${r.code} without an error frame` : 'no answer within the timeout');
        }
        const e = parseError(decodeEnvelope(r.bytes).body);
        const close = await c.next();
        c.close();
        seen.push(`${e.code} '${e.reason}' close ${close.kind === 'close' ? close.code : 'none'}`);
      }
      return new Set(seen).size === 1 ? pass(expected) : fail(expected, seen.join(' / '));
    },
  },
  first('a hello with seq 1', ['CHAN_OUT_OF_ORDER'], (ctx) => alteredHello(ctx, () => {}, 1)),
  first('a finish as the first frame', ['MSG_UNEXPECTED'], (ctx) => encodeEnvelope(MsgType.finish, 0, ctx.target.regDest, [new Uint8Array(32)])),
  first('a login at a registration server', ['MSG_UNEXPECTED'], (ctx) => {
    const h = new Uint8Array(32);
    return encodeEnvelope(LoginMessages.login.type, 0, ctx.target.regDest, ['password', 'u-conformance', 1, new Map(), h, h]);
  }),
  // A server-only type from a device: the server's state refuses it; a gateway refuses its direction.
  first('a helloReply sent by the device', ['MSG_UNEXPECTED', 'GW_BAD_DIRECTION'], (ctx) => encodeEnvelope(MsgType.helloReply, 0, ctx.target.regDest, [new Uint8Array(32), new Uint8Array(32)])),
  inWaitFinish('a finish whose MAC is altered', ['HS_BAD_CLIENT_PROOF'], (r) => {
    const { finish } = r.hs.acceptProof(r.reply, r.replyEnv, RegMessages.helloReply.decode(r.replyEnv.body));
    return flip(finish, finish.length - 1);
  }),
  inWaitFinish('a finish with seq 0 (repeated)', ['CHAN_REPLAY'], (r, ctx) => encodeEnvelope(MsgType.finish, 0, ctx.target.regDest, [new Uint8Array(32)])),
  inWaitFinish('a finish with seq 2 (one skipped)', ['CHAN_OUT_OF_ORDER'], (r, ctx) => encodeEnvelope(MsgType.finish, 2, ctx.target.regDest, [new Uint8Array(32)])),
  inWaitFinish('a second hello in WAIT_FINISH', ['HS_UNEXPECTED', 'MSG_UNEXPECTED'], (r) => {
    const env = decodeEnvelope(r.hello);
    return encodeEnvelope(env.type, 1, env.dest, env.body);
  }),
  inWaitFinish('a credRequest before the finish', ['HS_UNEXPECTED', 'MSG_UNEXPECTED'], (r, ctx) => encodeEnvelope(MsgType.credRequest, 1, ctx.target.regDest, new Uint8Array(40))),
  {
    section: '§6.2',
    title: `a credRequest naming another serial than the token's ${named(['MSG_BAD_FIELD'])}`,
    async run(ctx) {
      const r = await readyRegistration(ctx);
      r.c.send(r.channel.seal(MsgType.credRequest, RegMessages.credRequest.encode({ serial: `x${ctx.target.device.serial}`.slice(0, 64), localIp: '192.168.1.20' })));
      return expectRefusal(r.c, ['MSG_BAD_FIELD']);
    },
  },
  {
    section: '§6.2',
    title: 'pwConfirm before credRequest -> pwConfirmAck with the same gen, then credReply',
    async run(ctx) {
      const expected = 'pwConfirmAck [gen] (sealed, same gen), then credReply after the credRequest';
      const r = await readyRegistration(ctx);
      const gen = 7;
      r.c.send(r.channel.seal(MsgType.pwConfirm, RegMessages.pwConfirm.encode({ gen })));
      const a = await r.c.next();
      if (a.kind !== 'frame') return fail(expected, a.kind === 'close' ? `closed ${a.code} ${a.reason}` : 'no answer');
      const ack = RegMessages.pwConfirmAck.decode(r.channel.open(decodeEnvelope(a.bytes)));
      if (ack.gen !== gen) return fail(expected, `pwConfirmAck names gen ${ack.gen}`);
      r.c.send(r.channel.seal(MsgType.credRequest, credRequestBody(ctx.target.device)));
      const b = await r.c.next();
      r.c.close();
      if (b.kind !== 'frame' || decodeEnvelope(b.bytes).type !== MsgType.credReply) return fail(expected, 'no credReply after the confirmation');
      return pass(expected);
    },
  },
  {
    section: '§6',
    title: 'no frame after the hello -> TIMEOUT and close 1001 after the step timeout',
    async run(ctx) {
      const r = await openRegistration(ctx);
      // Nothing may end the session well before the step timeout: the server's timer started
      // when it took the hello, a little before the helloReply reached us, hence 3/4 of it.
      // Bounded: the rest of the step timeout plus the case's own timeout for the answer.
      const until = Date.now() + Math.floor(ctx.target.stepTimeoutMs * 0.75);
      while (Date.now() < until) {
        const x = await r.c.next(until - Date.now());
        if (x.kind !== 'timeout') {
          r.c.close();
          return fail('nothing until the step timeout, then TIMEOUT and close 1001', `${x.kind === 'close' ? `closed ${x.code}` : 'a frame came'} well before the step timeout (${ctx.target.stepTimeoutMs} ms)`);
        }
      }
      return expectRefusal(r.c, ['TIMEOUT']);
    },
  },
];

export const channelCases: Case[] = [
  afterHandshake('a credRequest whose tag is altered', ['CHAN_BAD_TAG'], (r, ctx) => {
    const f = r.channel.seal(MsgType.credRequest, credRequestBody(ctx.target.device));
    return flip(f, f.length - 1);
  }),
  afterHandshake('a credRequest sealed with the server-to-device key', ['CHAN_BAD_TAG'], (r, ctx) => sealWith(r.s2c, MsgType.credRequest, 2, ctx.target.regDest, credRequestBody(ctx.target.device))),
  // Through a gateway the dest pins the connection (GW_DEST_CHANGED); at the server, CHAN_WRONG_DEST.
  afterHandshake('a credRequest sealed for another dest', ['CHAN_WRONG_DEST', 'GW_DEST_CHANGED'], (r, ctx) => sealWith(r.c2s, MsgType.credRequest, 2, 'another-server', credRequestBody(ctx.target.device))),
  afterHandshake('a sealed body shorter than a tag', ['CHAN_BAD_TAG', 'GW_BAD_BODY'], (r, ctx) => encodeEnvelope(MsgType.credRequest, 2, ctx.target.regDest, new Uint8Array(15))),
  afterHandshake('a clear hello after the handshake', ['CHAN_NOT_SEALED', 'MSG_UNEXPECTED'], (r) => {
    const env = decodeEnvelope(r.hello);
    return encodeEnvelope(env.type, 2, env.dest, env.body);
  }),
  afterHandshake('a credRequest with seq 3 (one skipped)', ['CHAN_OUT_OF_ORDER'], (r, ctx) => sealWith(r.c2s, MsgType.credRequest, 3, ctx.target.regDest, credRequestBody(ctx.target.device)), '§8'),
  afterHandshake("a credRequest reusing the finish's seq 1", ['CHAN_REPLAY'], (r, ctx) => sealWith(r.c2s, MsgType.credRequest, 1, ctx.target.regDest, credRequestBody(ctx.target.device)), '§8'),
  {
    section: '§8',
    title: `a credRequest reusing the seq of an accepted pwConfirm ${named(['CHAN_REPLAY'])}`,
    async run(ctx) {
      const r = await readyRegistration(ctx);
      r.c.send(r.channel.seal(MsgType.pwConfirm, RegMessages.pwConfirm.encode({ gen: 7 })));
      const a = await r.c.next();
      if (a.kind !== 'frame') return fail('pwConfirmAck, then the refusal', 'no pwConfirmAck');
      r.c.send(sealWith(r.c2s, MsgType.credRequest, 2, ctx.target.regDest, credRequestBody(ctx.target.device)));
      return expectRefusal(r.c, ['CHAN_REPLAY']);
    },
  },
  {
    section: '§8',
    title: 'the same pwConfirm frame twice -> the second refused (CHAN_REPLAY or MSG_UNEXPECTED) and close',
    async run(ctx) {
      const r = await readyRegistration(ctx);
      const f = r.channel.seal(MsgType.pwConfirm, RegMessages.pwConfirm.encode({ gen: 7 }));
      r.c.send(f);
      const a = await r.c.next();
      if (a.kind !== 'frame') return fail('pwConfirmAck, then the refusal', 'no pwConfirmAck');
      r.c.send(f);
      return expectRefusal(r.c, ['CHAN_REPLAY', 'MSG_UNEXPECTED']);
    },
  },
  {
    section: '§8',
    title: `a hello replayed on a new connection ${named(['HS_REPLAY'])}`,
    async run(ctx) {
      const r = await openRegistration(ctx);
      r.c.close();
      const c = await ctx.connect();
      c.send(r.hello, 'the same bytes again');
      return expectRefusal(c, ['HS_REPLAY']);
    },
  },
];

/** `ctx` with every connection it opens also kept in `conns` (a case that searches what came back). */
function keeping(ctx: CaseContext, conns: Conn[]): CaseContext {
  return {
    ...ctx,
    async connect(url?: string) {
      const c = await ctx.connect(url);
      conns.push(c);
      return c;
    },
  };
}

export const securityCases: Case[] = [
  {
    section: '§12',
    title: "a registration, then a refused credRequest: no frame the server sends and no close reason holds the device's serial in clear",
    async run(ctx) {
      const expected = `the serial '${ctx.target.device.serial}' in no received frame (clear or sealed, as bytes) and in no close reason (§5.1: the serial never crosses in clear)`;
      const conns: Conn[] = [];
      const k = keeping(ctx, conns);
      const r = await register(k);
      if (r.kind !== 'cred') return fail(expected, `registration: ${r.kind === 'other' ? r.text : 'notFound'}`);
      const o = await readyRegistration(k);
      o.c.send(o.channel.seal(MsgType.credRequest, RegMessages.credRequest.encode({ serial: `x${ctx.target.device.serial}`.slice(0, 64), localIp: '192.168.1.20' })));
      await expectRefusal(o.c, ['MSG_BAD_FIELD']);
      const serial = new TextEncoder().encode(ctx.target.device.serial);
      const holds = (b: Uint8Array) => Buffer.from(b).indexOf(Buffer.from(serial)) >= 0;
      for (const c of conns) {
        const f = c.frames.findIndex(holds);
        if (f >= 0) return fail(expected, `received frame ${f + 1} of a session holds the serial`);
        const cl = c.closedWith;
        if (cl && cl.reason.includes(ctx.target.device.serial)) return fail(expected, `close ${cl.code} '${cl.reason}' names the serial`);
      }
      return pass(expected, `${conns.length} sessions, ${conns.reduce((n, c) => n + c.frames.length, 0)} frames searched`);
    },
  },
];

export const refusalCases: Case[] = [
  {
    section: '§7',
    title: 'an error frame from the device in WAIT_FINISH -> the server ends the session without answering',
    async run(ctx) {
      const r = await openRegistration(ctx);
      r.c.send(encodeError(1, ctx.target.regDest, 'CONFORMANCE_TEST', null, 'the device gives up'));
      return expectClose(r.c, 1000, 'no frame in answer');
    },
  },
  {
    section: '§7',
    title: 'a valid hello right behind a refused frame -> one error frame, close, and no helloReply',
    async run(ctx) {
      const c = await ctx.connect();
      const { frame } = helloFrame(ctx.target.regDest, ctx.target.device);
      c.send(concatBytes(frame, Uint8Array.of(0)), 'trailing byte');
      c.send(frame, 'a valid hello, right after');
      return expectRefusal(c, ['CBOR_TRAILING_BYTES']);
    },
  },
  {
    section: '§7',
    title: 'a refused session leaves the device able to register on a new one',
    async run(ctx): Promise<Outcome> {
      const expected = 'a refusal, then a full registration on a new connection';
      const c = await ctx.connect();
      c.send(alteredHello(ctx, (b) => (b[MAC_AT(b)]![0]! ^= 1)));
      const o = await expectRefusal(c, ['HS_BAD_CLIENT_PROOF']);
      if (o.verdict !== 'pass') return fail(expected, `the refusal: ${o.note ?? o.verdict}`);
      const r = await register(ctx);
      return r.kind === 'cred' ? pass(expected) : fail(expected, r.kind === 'other' ? r.text : 'notFound');
    },
  },
];
