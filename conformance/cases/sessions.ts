// §2.1 (issue 15): sessions in sequence on one connection, at the server end. A target that
// does not answer `sessions` (a server's direct port, a gateway without §2.1) keeps one session
// per connection: informational, allowed. One that answers must end each session with a
// sessionEnd carrying what the close would have, keep the connection, start every session anew
// (a frame of an ended session is refused by its server in a new session) and refuse a
// sessionEnd for a session that is not open.
import { RegistrationClient, RegMessages } from '../../protocol/registration.ts';
import { LoginClient } from '../../protocol/login.ts';
import { secretWrapKey, unwrapSecret } from '../../protocol/secret-wrap.ts';
import { decodeEnvelope, parseError, peekSessionEnd, sessionEndFrame, sessionsFrame, typeName, MsgType, type SessionEnd } from '../../protocol/messages.ts';
import { closeOf, expectRefusal, fail, pass, type Case, type CaseContext, type Outcome } from '../suite.ts';
import { credRequestBody, drive, endText, firstServer, helloFrame } from '../flows.ts';
import type { Conn } from '../wire.ts';
import { readFileSync } from 'node:fs';
import { encode } from '../../protocol/cbor.ts';
import { hexToBytes } from '@noble/hashes/utils.js';
import { fromJson, type Json } from '../../protocol/cbor-json.ts';

/**
 * The refused sessionEnd vectors of docs/vectors/messages.json (`sessionChecks`, §2.1 rule 4):
 * a device's end other than [1000, ""] (a reason on 1000, another code, a reason on another code,
 * wrong types, missing or extra fields, bytes not deterministic CBOR), each with its stable code.
 */
export function refusedEndVectors(): { name: string; hex: string; value?: Json; fromDevice: string }[] {
  const v = JSON.parse(readFileSync(new URL('../../docs/vectors/messages.json', import.meta.url), 'utf8')) as { sessionChecks: { name: string; hex: string; value?: Json; fromDevice: string }[] };
  return v.sessionChecks.filter((c) => c.name.startsWith('sessionEnd') && c.fromDevice !== 'ok');
}

/**
 * A vector's frame for session 1 at `dest`: its value with that dest, encoded (the vectors say
 * reg-primary); bytes that are not deterministic CBOR as they are (refused before any dest is read).
 */
function endFor(c: { hex: string; value?: Json }, dest: string): Uint8Array {
  if (c.value === undefined) return hexToBytes(c.hex);
  const env = fromJson(c.value) as unknown[];
  return encode([env[0], env[1], 1, dest, env[4]] as never);
}

const NOT_ANSWERED = 'the target did not answer `sessions` (§2.1 is optional: one session per connection, as §2)';

/** The next thing on `c`: a sessionEnd, another frame, a close or nothing. */
async function nextEnd(c: Conn): Promise<{ end: SessionEnd } | { other: string }> {
  const r = await c.next();
  if (r.kind === 'timeout') return { other: 'nothing within the timeout' };
  if (r.kind === 'close') return { other: `close ${r.code}${r.reason ? ` ${r.reason}` : ''}` };
  const e = peekSessionEnd(r.bytes);
  if (e) return { end: e };
  try {
    return { other: typeName(decodeEnvelope(r.bytes).type) };
  } catch {
    return { other: 'a frame that does not decode' };
  }
}

/** A new connection that asked for sessions in sequence. */
async function asking(ctx: CaseContext): Promise<Conn> {
  const c = await ctx.connect();
  c.send(sessionsFrame());
  return c;
}

/** A genuine hello on `c` answered by a helloReply: the connection runs a new session. */
async function helloAnswered(ctx: CaseContext, c: Conn): Promise<string | null> {
  c.send(helloFrame(ctx.target.regDest, ctx.target.device).frame);
  const r = await c.next();
  if (r.kind !== 'frame') return r.kind === 'close' ? `closed ${r.code}` : 'no answer';
  const env = decodeEnvelope(r.bytes);
  return env.type === MsgType.helloReply ? null : `answered with ${typeName(env.type)}`;
}

export const sessionCases: Case[] = [
  {
    section: '§2',
    title: 'sessions in sequence (§2.1): a registration, then the business login on the same connection, each ended by sessionEnd (the server\'s with its close code 1000, then the device\'s), and the connection kept for a third session',
    async run(ctx): Promise<Outcome> {
      const expected = '`sessions` answered; credReply then sessionEnd [1, regDest, 1000, ""]; the login on the same connection; after the device\'s sessionEnd [2] a new hello is answered on it';
      const c = await asking(ctx);
      const dev = ctx.target.device;
      const reg = new RegistrationClient({ dest: ctx.target.regDest, deviceKey: dev.key, serialToken: dev.token, measurement: dev.measurement, serial: dev.serial, localIp: '192.168.1.20' });
      const r = await drive(c, reg);
      if (r.kind !== 'cred') return fail(expected, `registration: ${'kind' in r ? endText(r as { kind: string }) : 'not completed'}`);
      const e1 = await nextEnd(c);
      if (!c.sessions) return { verdict: 'informational', expected, note: `${NOT_ANSWERED}; after credReply: ${'end' in e1 ? 'a sessionEnd' : e1.other}` };
      if (!('end' in e1)) return fail(expected, `after credReply: ${e1.other}, not sessionEnd`);
      // A normal end carries no reason (rule 3): a device gives up a connection whose crossing end has one.
      if (e1.end.n !== 1 || e1.end.dest !== ctx.target.regDest || e1.end.code !== 1000 || e1.end.reason !== '') return fail(expected, `sessionEnd [${e1.end.n}, ${e1.end.dest}, ${e1.end.code}, ${JSON.stringify(e1.end.reason)}]`);
      const wk = secretWrapKey(dev.key);
      const secret = unwrapSecret(wk, r.cred.user, r.cred.gen, r.cred.wrapped);
      wk.fill(0);
      if (!secret) return fail(expected, 'the credReply\'s wrapped secret does not open with the device key');
      const server = firstServer(r.cred);
      const m = new LoginClient({ dest: server.name, user: r.cred.user, gen: r.cred.gen, secret });
      const l = await drive(c, m, (e) => (e === 'logged-in' ? m.afterLogin(true) : undefined));
      if (l.kind !== 'ok') return fail(expected, `the login on the same connection: ${endText(l as { kind: string })}`);
      c.send(sessionEndFrame(2, server.name, 1000, ''));
      const third = await helloAnswered(ctx, c);
      if (third) return fail(expected, `after the device's sessionEnd [2] a new hello was ${third}`);
      return pass(expected, `registration at ${ctx.target.regDest}, login at ${server.name}, a third session opened: one connection`);
    },
  },
  {
    section: '§2',
    title: 'a frame of the ended registration session sent again on its connection (§2.1 rule 6) -> its server refuses it in a new session (error frame, then sessionEnd with the refusal\'s close code); the connection is kept',
    async run(ctx): Promise<Outcome> {
      const expected = 'an error frame, then sessionEnd [2, regDest, the code\'s close code]; then a new hello is answered on the connection';
      const c = await asking(ctx);
      const dev = ctx.target.device;
      const { hs, frame } = helloFrame(ctx.target.regDest, dev);
      c.send(frame);
      const reply = await c.next();
      if (reply.kind !== 'frame') return fail(expected, 'no helloReply to a genuine hello');
      const env = decodeEnvelope(reply.bytes);
      const { finish, channel } = hs.acceptProof(reply.bytes, env, RegMessages.helloReply.decode(env.body));
      c.send(finish);
      const credRequest = channel.seal(MsgType.credRequest, credRequestBody(dev));
      c.send(credRequest);
      const cred = await c.next();
      if (cred.kind !== 'frame' || decodeEnvelope(cred.bytes).type !== MsgType.credReply) return fail(expected, 'no credReply to a genuine registration');
      channel.close();
      const e1 = await nextEnd(c);
      if (!c.sessions) return { verdict: 'informational', expected, note: NOT_ANSWERED };
      if (!('end' in e1)) return fail(expected, `after credReply: ${e1.other}, not sessionEnd`);
      // The old session's sealed credRequest, as it was: the next session's first frame.
      c.send(credRequest, 'the ended session\'s credRequest, sent again');
      const r = await c.next();
      if (r.kind !== 'frame') return fail(expected, r.kind === 'close' ? `the connection was closed ${r.code} (an upstream refusal ends the session only)` : 'no answer');
      const err = decodeEnvelope(r.bytes);
      if (err.type !== MsgType.error) return fail(expected, `the replayed frame was answered with ${typeName(err.type)}: the server acted on a frame of an ended session`);
      const code = parseError(err.body).code;
      const e2 = await nextEnd(c);
      if (!('end' in e2)) return fail(expected, `after the error frame ${code}: ${e2.other}, not sessionEnd`);
      if (e2.end.n !== 2 || e2.end.code !== closeOf(code)) return fail(expected, `sessionEnd [${e2.end.n}, ${e2.end.dest}, ${e2.end.code}] after ${code} (close ${closeOf(code)})`);
      const next = await helloAnswered(ctx, c);
      if (next) return fail(expected, `after the refusal a new hello was ${next}`);
      return pass(expected, `refused with ${code}`);
    },
  },
  {
    section: '§2',
    title: 'a device\'s sessionEnd for its open session other than [1000, ""] (each refused sessionEnd of docs/vectors/messages.json: a reason on 1000, another code, wrong types, extra fields) -> its code (MSG_BAD_FIELD, MSG_BAD_SHAPE, CBOR_*) and close',
    async run(ctx): Promise<Outcome> {
      const vectors = refusedEndVectors();
      const expected = `each of ${vectors.length} refused sessionEnd vectors, sent for the open session 1 on its own connection, refused with its code and closed (§2.1 rule 4)`;
      let nonStrict: string | null = null;
      for (const v of vectors) {
        const c = await asking(ctx);
        const opened = await helloAnswered(ctx, c);
        if (opened) return fail(expected, `${v.name}: the hello that opens session 1 was ${opened}`);
        if (!c.sessions) return (c.close(), { verdict: 'informational', expected, note: NOT_ANSWERED });
        c.send(endFor(v, ctx.target.regDest), `vector "${v.name}"`);
        const o = await expectRefusal(c, [v.fromDevice]);
        if (o.verdict === 'fail') return { ...o, expected, note: `${v.name}: ${o.note ?? 'not refused'}` };
        if (o.verdict === 'non-strict') nonStrict ??= `${v.name}: ${o.note ?? ''}`;
      }
      return nonStrict ? { verdict: 'non-strict', expected, note: nonStrict } : pass(expected, `${vectors.length} vectors refused`);
    },
  },
  {
    section: '§2',
    title: 'a sessionEnd for a session that is not open -> MSG_UNEXPECTED and close',
    async run(ctx) {
      const c = await asking(ctx);
      c.send(sessionEndFrame(1, ctx.target.regDest, 1000, ''));
      return expectRefusal(c, ['MSG_UNEXPECTED']);
    },
  },
];
