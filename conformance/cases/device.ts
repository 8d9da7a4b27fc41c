// The --device cases (issue 13): the device's side of docs/protocol.md, each case one device
// command run (or a few) against the servers the suite plays (conformance/device.ts). A case
// plays every exchange genuinely except the one frame its rule is about, then judges what the
// device did with it: refused it (§7: error frame, close, nothing else) or acted on it.
import { concatBytes } from '@noble/hashes/utils.js';
import { passwordLoginKey } from '../../protocol/channel.ts';
import { decodeEnvelope, encodeEnvelope, encodeError, peekSessionEnd, sessionsFrame, typeName, MsgType, type Envelope } from '../../protocol/messages.ts';
import { closeOf, fail, pass, type Outcome } from '../suite.ts';
import { DESTS, expectDeviceRefusal, playLogin, playRegistration, playedText, type DeviceCase, type DeviceCaseContext, type DeviceRun, type Session } from '../device.ts';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The device's next session, which must open with `type` (for `dest`); else the case cannot reach its check (thrown). */
async function session(ctx: DeviceCaseContext, type: number, dest?: string): Promise<Session> {
  const s = await ctx.nextSession();
  if (!s) throw new Error(`the device opened no session within ${ctx.target.timeoutMs} ms (it should connect to ${ctx.url}${DESTS.regPrimary} first)`);
  if (!s.env || s.env.type !== type || (dest !== undefined && s.dest !== dest)) {
    throw new Error(`expected a ${typeName(type)}${dest ? ` for ${dest}` : ''}; the device opened a session with ${s.env ? `${typeName(s.env.type)} for ${s.dest}` : 'a frame that does not decode'}`);
  }
  return s;
}

/** Starts the device and plays a genuine registration: a new pending generation issued. */
async function registered(ctx: DeviceCaseContext): Promise<{ run: DeviceRun; gen: number }> {
  const run = ctx.startDevice();
  const p = await playRegistration(ctx, await session(ctx, MsgType.hello, DESTS.regPrimary));
  if (p.kind !== 'done' || p.gen === undefined) throw new Error(`the registration did not complete: ${playedText(p)}`);
  return { run, gen: p.gen };
}

/** Waits (bounded) for a device run to end by itself; one that does not is stopped. */
async function ended(ctx: DeviceCaseContext, run: DeviceRun): Promise<boolean> {
  const done = await Promise.race([run.exited.then(() => true), sleep(ctx.target.timeoutMs).then(() => false)]);
  if (!done) await run.stop();
  return done;
}

/** The last byte of a proof frame flipped: it is the last byte of its MAC (§4.2: [nonce, mac] ends the frame). */
const flipLast = (f: Uint8Array): Uint8Array => {
  const c = Uint8Array.from(f);
  c[c.length - 1]! ^= 0x01;
  return c;
};

/** The frame with another seq, everything else as it was. */
const withSeq = (f: Uint8Array, seq: number): Uint8Array => {
  const e = decodeEnvelope(f);
  return encodeEnvelope(e.type, seq, e.dest, e.body);
};

const deviceRegistrationCases: DeviceCase[] = [
  {
    section: '§6.1',
    title: 'registration and business login accepted: finish and credRequest after a genuine helloReply, then a login with the issued generation, its finish and pwConfirm [gen]',
    async run(ctx) {
      const expected = 'hello; finish and credRequest; then login (the issued user and generation), finish, pwConfirm [gen]; the device closes after pwConfirmAck';
      const { gen } = await registered(ctx);
      const p = await playLogin(ctx, await session(ctx, MsgType.login, DESTS.biz));
      if (p.kind !== 'done') return fail(expected, `the login did not complete: ${playedText(p)}`);
      if (p.gen !== gen) return fail(expected, `logged in with generation ${p.gen}, not the issued ${gen} (§10 rule 2: newest first)`);
      if (p.confirmed !== gen) return fail(expected, `no pwConfirm [${gen}] after the login (§6.3 WAIT_RESULT)`);
      return pass(expected);
    },
  },
  {
    section: '§6.1',
    title: 'a helloReply whose server proof is wrong -> HS_BAD_SERVER_PROOF and close 1008, no finish, no credRequest',
    async run(ctx) {
      ctx.startDevice();
      const s = await session(ctx, MsgType.hello, DESTS.regPrimary);
      const p = await playRegistration(ctx, s, { helloReply: flipLast, stopAfterReply: true });
      if (p.kind !== 'sent') throw new Error(playedText(p));
      return expectDeviceRefusal(s, 'HS_BAD_SERVER_PROOF');
    },
  },
  {
    section: '§6.1',
    title: 'a helloReply replayed from an earlier session -> HS_BAD_SERVER_PROOF and close 1008, no finish',
    async run(ctx) {
      // Run 1: a genuine helloReply, kept; notFound ends that run quickly (S0.9).
      const run1 = ctx.startDevice();
      let recorded: Uint8Array | null = null;
      const p1 = await playRegistration(ctx, await session(ctx, MsgType.hello, DESTS.regPrimary), { helloReply: (f) => (recorded = f), answer: 'not-found' });
      if (p1.kind !== 'done') throw new Error(`run 1: ${playedText(p1)}`);
      await ended(ctx, run1);
      // Run 2: the same bytes answer a new hello (a new nC: the proof no longer verifies).
      ctx.startDevice();
      const s = await session(ctx, MsgType.hello, DESTS.regPrimary);
      const p = await playRegistration(ctx, s, { helloReply: () => recorded!, stopAfterReply: true });
      if (p.kind !== 'sent') throw new Error(`run 2: ${playedText(p)}`);
      return expectDeviceRefusal(s, 'HS_BAD_SERVER_PROOF');
    },
  },
  {
    section: '§6.1',
    title: "an error frame GW_UPSTREAM_UNAVAILABLE (retry 'other-server') answering the hello at the primary -> the device opens a session with the backup",
    async run(ctx) {
      const expected = `a new session whose hello is for ${DESTS.regBackup} (S0.6)`;
      ctx.startDevice();
      const s = await session(ctx, MsgType.hello, DESTS.regPrimary);
      s.c.send(encodeError(0, s.dest, 'GW_UPSTREAM_UNAVAILABLE', 0, 'the primary registration server is unavailable'));
      s.c.close(closeOf('GW_UPSTREAM_UNAVAILABLE'));
      const n = await ctx.nextSession();
      if (!n) return fail(expected, `no new session within ${ctx.target.timeoutMs} ms`);
      if (n.env?.type === MsgType.hello && n.dest === DESTS.regBackup) return pass(expected);
      return fail(expected, `the next session opened with ${n.env ? `${typeName(n.env.type)} for ${n.dest}` : 'a frame that does not decode'}`);
    },
  },
  {
    section: '§6.1',
    title: 'notFound -> the device ends (S0.9): no login, no other session',
    async run(ctx) {
      const expected = 'no other session after notFound: the main program is not started (S0.9)';
      const run = ctx.startDevice();
      const p = await playRegistration(ctx, await session(ctx, MsgType.hello, DESTS.regPrimary), { answer: 'not-found' });
      if (p.kind !== 'done') throw new Error(playedText(p));
      const exited = await ended(ctx, run);
      const n = await ctx.nextSession(100);
      if (n) return fail(expected, `after notFound the device opened a session with ${n.env ? `${typeName(n.env.type)} for ${n.dest}` : 'a frame that does not decode'}`);
      return pass(expected, exited ? undefined : `the device did not exit; it opened no session within ${ctx.target.timeoutMs} ms`);
    },
  },
];

const deviceLoginCases: DeviceCase[] = [
  {
    section: '§6.3',
    title: 'a loginOk whose server proof is wrong -> HS_BAD_SERVER_PROOF and close 1008, no finish',
    async run(ctx) {
      await registered(ctx);
      const s = await session(ctx, MsgType.login, DESTS.biz);
      const p = await playLogin(ctx, s, { loginOk: flipLast, stopAfterOk: true });
      if (p.kind !== 'sent') throw new Error(`the login: ${playedText(p)}`);
      return expectDeviceRefusal(s, 'HS_BAD_SERVER_PROOF');
    },
  },
];

const deviceCborCases: DeviceCase[] = [
  {
    section: '§3',
    title: 'a helloReply whose version is in a non-shortest head (18 01) -> CBOR_NOT_DETERMINISTIC and close 1002, no finish',
    async run(ctx) {
      ctx.startDevice();
      const s = await session(ctx, MsgType.hello, DESTS.regPrimary);
      const nonShortest = (f: Uint8Array) => (f[0] === 0x85 && f[1] === 0x01 ? concatBytes(Uint8Array.of(0x85, 0x18, 0x01), f.subarray(2)) : f);
      const p = await playRegistration(ctx, s, { helloReply: nonShortest, stopAfterReply: true });
      if (p.kind !== 'sent') throw new Error(playedText(p));
      return expectDeviceRefusal(s, 'CBOR_NOT_DETERMINISTIC');
    },
  },
];

const deviceRefusalCases: DeviceCase[] = [
  {
    section: '§7',
    title: "a genuine helloReply right behind the server's error frame -> the device ends the session without answering (no finish), close 1000",
    async run(ctx): Promise<Outcome> {
      const expected = 'no frame from the device after the error frame; its close 1000 (§7: a party that receives an error frame ends the session at once, without answering)';
      ctx.startDevice();
      const s = await session(ctx, MsgType.hello, DESTS.regPrimary);
      const p = await playRegistration(ctx, s, {
        helloReply: (f) => {
          s.c.send(encodeError(0, s.dest, 'SRV_BUSY', 0, 'busy'));
          return f;
        },
        stopAfterReply: true,
      });
      if (p.kind !== 'sent') throw new Error(playedText(p));
      const r = await s.c.next();
      if (r.kind === 'timeout') return fail(expected, 'the device neither ended the session nor sent anything within the timeout');
      if (r.kind === 'frame') {
        let what = `${r.bytes.length} bytes that do not decode`;
        try {
          what = typeName(decodeEnvelope(r.bytes).type);
        } catch {
          // described by its size
        }
        return fail(expected, `the device sent ${what} after the server's error frame`);
      }
      return r.code === 1000 ? pass(expected) : { verdict: 'non-strict', expected, note: `closed ${r.code}, not 1000` };
    },
  },
];

const deviceReplayCases: DeviceCase[] = [
  {
    section: '§8',
    title: "a loginOk repeating the loginAck's seq 0 -> CHAN_REPLAY and close 1008, no finish",
    async run(ctx) {
      await registered(ctx);
      const s = await session(ctx, MsgType.login, DESTS.biz);
      const p = await playLogin(ctx, s, { loginOk: (f) => withSeq(f, 0), stopAfterOk: true });
      if (p.kind !== 'sent') throw new Error(`the login: ${playedText(p)}`);
      return expectDeviceRefusal(s, 'CHAN_REPLAY');
    },
  },
];

const deviceRotationCases: DeviceCase[] = [
  {
    section: '§10',
    title: 'loginOk seen but the finish lost (no pwConfirmAck, nothing promoted, the pending expires) -> on its next run, with no registration server, the device logs in with the older generation it kept',
    async run(ctx): Promise<Outcome> {
      const expected = 'run 3: a completed login with the generation of run 1 (rule 3: nothing retired without pwConfirmAck)';
      // Run 1: generation g1 issued, logged in and confirmed: the account's current.
      const a = await registered(ctx);
      const l1 = await playLogin(ctx, await session(ctx, MsgType.login, DESTS.biz));
      if (l1.kind !== 'done' || l1.gen !== a.gen) throw new Error(`run 1: the login with the issued generation ${a.gen} did not complete (${playedText(l1)})`);
      await ended(ctx, a.run);
      // Run 2: g2 issued (currentGen g1); the device sees loginOk for g2, its finish is lost.
      const b = await registered(ctx);
      const l2 = await playLogin(ctx, await session(ctx, MsgType.login, DESTS.biz), { dropFinish: true });
      if (l2.kind !== 'finish-dropped' || l2.gen !== b.gen) throw new Error(`run 2: no finish of a login with the new generation ${b.gen} (${playedText(l2)})`);
      await ended(ctx, b.run);
      ctx.account.expirePending();
      // Run 3: the registration servers are busy; the business server knows only g1 now.
      const run = ctx.startDevice();
      const tried: string[] = [];
      for (;;) {
        const s = await ctx.nextSession(ctx.target.timeoutMs, run.exited);
        if (!s) break;
        if (s.env?.type === MsgType.hello) {
          s.c.send(encodeError(0, s.dest, 'SRV_BUSY', 0, 'busy'));
          s.c.close(closeOf('SRV_BUSY'));
          tried.push(`hello ${s.dest}: SRV_BUSY`);
          continue;
        }
        if (s.env?.type === MsgType.login) {
          const p = await playLogin(ctx, s);
          const gen = (s.env.body as unknown[])[2];
          tried.push(`login gen ${String(gen)}: ${playedText(p)}`);
          if (p.kind === 'done') return pass(expected, `run 3: ${tried.join('; ')}`);
          continue;
        }
        s.c.close(1002);
        tried.push(`a session opened with ${s.env ? typeName(s.env.type) : 'an undecodable frame'}`);
      }
      return fail(expected, `run 3 ended without a login: locked out (${tried.join('; ') || 'no session'})`);
    },
  },
];

/** Every byte string the device must never send in clear, with its name. */
function secrets(ctx: DeviceCaseContext): [string, Uint8Array][] {
  const a = ctx.account;
  return [
    ...a.issued.flatMap((s, i): [string, Uint8Array][] => [[`business secret #${i + 1}`, s], [`its login key #${i + 1}`, passwordLoginKey(s, a.user)]]),
    ['device key', ctx.target.device.key],
    ['serial', new TextEncoder().encode(ctx.target.device.serial)],
  ];
}

const deviceSecretCases: DeviceCase[] = [
  {
    section: '§12',
    title: 'a registration and a login: no frame the device sends holds its business secret, login key, device key or serial in clear, nor does its output',
    async run(ctx) {
      const expected = 'none of them in any frame the device sent, nor (in hex) in what it printed';
      const a = await registered(ctx);
      const p = await playLogin(ctx, await session(ctx, MsgType.login, DESTS.biz));
      if (p.kind !== 'done') throw new Error(`the login did not complete: ${playedText(p)}`);
      await ended(ctx, a.run);
      const frames = ctx.deviceFrames().map((f) => Buffer.from(f));
      const out = ctx.output().toLowerCase();
      for (const [name, bytes] of secrets(ctx)) {
        const i = frames.findIndex((f) => f.indexOf(Buffer.from(bytes)) >= 0);
        if (i >= 0) return fail(expected, `the ${name} is in frame ${i + 1} of ${frames.length} the device sent`);
        if (name !== 'serial' && out.includes(Buffer.from(bytes).toString('hex'))) return fail(expected, `the ${name} is in the device's output, in hex`);
      }
      return pass(expected, `${frames.length} frames searched`);
    },
  },
];

/** §2.1: sessions in sequence on one connection, the suite playing a gateway that answers `sessions`. */
const deviceSequenceCases: DeviceCase[] = [
  {
    section: '§2',
    title: "a gateway that answers `sessions` (§2.1): the device runs the business login on its registration's connection after the gateway's sessionEnd, ends it with its own sessionEnd [1000] for session 2, and keeps the connection open until it is unplugged",
    async run(ctx) {
      const expected = 'sessions asked on the first connection; after sessionEnd 1 the login for biz-conf on the same connection (no new one); after pwConfirmAck a sessionEnd for session 2 (biz-conf, 1000), no close';
      const run = ctx.startDevice();
      const s = await session(ctx, MsgType.hello, DESTS.regPrimary);
      if (!s.c.sessions) return { verdict: 'informational', expected, note: 'the device did not ask for sessions in sequence (§2.1 is optional): it connects per session' };
      s.c.send(sessionsFrame(), 'the gateway answers (§2.1)');
      const reg = await playRegistration(ctx, s, { endAs: { session: 1 } });
      if (reg.kind !== 'done' || reg.gen === undefined) throw new Error(`the registration did not complete: ${playedText(reg)}`);
      // The device's own end of session 1 may cross ours (§2.1 rule 4): skipped.
      let first: Uint8Array | null = null;
      for (let i = 0; i < 3 && !first; i++) {
        const r = await s.c.next();
        if (r.kind !== 'frame') return fail(expected, `after the registration's sessionEnd the connection ${r.kind === 'close' ? `was closed ${r.code}` : 'stayed silent'}: no login on it`);
        const e = peekSessionEnd(r.bytes);
        if (e && e.n === 1) continue;
        first = r.bytes;
      }
      if (!first) return fail(expected, 'no login frame on the registration\'s connection');
      let env: Envelope | null = null;
      try {
        env = decodeEnvelope(first);
      } catch {
        return fail(expected, 'the next frame on the connection does not decode');
      }
      if (env.type !== MsgType.login || env.dest !== DESTS.biz) return fail(expected, `the next frame on the connection is ${typeName(env.type)} for ${env.dest}, not a login for ${DESTS.biz}`);
      const p = await playLogin(ctx, { c: s.c, first, env, dest: env.dest });
      if (p.kind !== 'done') return fail(expected, `the login did not complete: ${playedText(p)}`);
      if (p.gen !== reg.gen || p.confirmed !== reg.gen) return fail(expected, `logged in with generation ${p.gen}, confirmed ${p.confirmed ?? 'none'}; the issued one is ${reg.gen}`);
      const end = p.end ?? { kind: 'none' };
      if (end.kind !== 'sessionEnd') return fail(expected, end.kind === 'close' ? `the device closed ${end.code} instead of ending session 2 with sessionEnd` : 'the device neither ended session 2 nor closed');
      if (end.n !== 2 || end.dest !== DESTS.biz || end.code !== 1000) return fail(expected, `sessionEnd for session ${end.n} (${end.dest}) with ${end.code}, not session 2 (${DESTS.biz}) with 1000`);
      const other = await ctx.nextSession(200);
      if (other) return fail(expected, `the device opened another connection (${other.dest}) for a session it could run on the first one`);
      // Held until the device is unplugged: a device command that ends after its login (the
      // project's single-phone run) closes it as it exits, not before.
      const after = await s.c.next(300);
      if (after.kind === 'close') {
        const exited = await Promise.race([run.exited.then(() => true), sleep(1_000).then(() => false)]);
        if (!exited) return fail(expected, `the device closed (${after.code}) the connection after its last session while still running: it holds it for the table pushes (§2.1, §16)`);
        return pass(expected, `held until the device run ended (close ${after.code} as it exited)`);
      }
      return pass(expected);
    },
  },
];

export const DEVICE_CASES: readonly DeviceCase[] = [
  ...deviceSequenceCases,
  ...deviceCborCases,
  ...deviceRegistrationCases,
  ...deviceLoginCases,
  ...deviceRefusalCases,
  ...deviceReplayCases,
  ...deviceRotationCases,
  ...deviceSecretCases,
];
