// §6.4 (the business server's state machine), §8 (a replayed login) and §10 (rotation): the
// credentials come from registrations the suite performs itself (the wrapped secret opened with
// the device key), and the business server is the first one the credential reply names.
import { LoginMessages } from '../../protocol/login.ts';
import { decodeEnvelope, encodeEnvelope, MsgType } from '../../protocol/messages.ts';
import { closeOf, expectRefusal, pass, fail, type Case, type CaseContext, type Outcome } from '../suite.ts';
import { register, login, firstServer, twoGenerations, openLogin, loginFrame, type Cred, type LoginCred } from '../flows.ts';

const named = (codes: string[]) => `-> ${codes[0]} and close ${closeOf(codes[0]!)}`;

async function registered(ctx: CaseContext): Promise<Cred> {
  const r = await register(ctx);
  if (r.kind !== 'cred') throw new Error(`registration: ${r.kind === 'other' ? r.text : 'notFound'}`);
  return r.cred;
}

/** A login with `cred` (changed by `change`), answered by loginAck, then refused with `codes`. */
function refusedLogin(what: string, codes: string[], change: (c: Cred) => LoginCred): Case {
  return {
    section: '§6.4',
    title: `${what} -> loginAck, then loginFail ${codes[0]} and close ${closeOf(codes[0]!)}`,
    async run(ctx) {
      const cred = await registered(ctx);
      const server = firstServer(cred);
      const l = change(cred);
      const c = await ctx.connect(server.url);
      c.send(loginFrame(server.name, l).frame);
      return expectRefusal(c, codes, [MsgType.loginAck]);
    },
  };
}

const wrongSecret = (c: Cred): LoginCred => ({ ...c, secret: c.secret.map((b) => b ^ 0xff) });

export const loginCases: Case[] = [
  {
    section: '§6.4',
    title: 'login accepted: loginAck (seq 0, []), then loginOk (seq 1), finish, pwConfirm -> pwConfirmAck with the same gen',
    async run(ctx) {
      const expected = 'loginAck before the verdict, loginOk proving the key, pwConfirmAck [gen]';
      const cred = await registered(ctx);
      const l = await login(ctx, firstServer(cred), cred, { confirm: true });
      if (l.kind === 'ok') return l.confirmed ? pass(expected) : fail(expected, 'no pwConfirmAck');
      return fail(expected, l.kind === 'failed' ? `loginFail ${l.code}` : l.text);
    },
  },
  refusedLogin('a login with the wrong secret', ['BIZ_AUTH_FAILED'], wrongSecret),
  refusedLogin('a login naming a generation the server does not have', ['BIZ_AUTH_FAILED'], (c) => ({ ...c, gen: c.gen + 1000 })),
  refusedLogin('a login of an unknown user', ['BIZ_AUTH_FAILED'], (c) => ({ ...c, user: 'u-conformance-nobody' })),
  {
    section: '§6.4',
    title: "a login stating mechanism 'otp' -> loginOk when the site offers it (the device key proves the device; the person's proof follows in the bank step), else loginAck, loginFail BIZ_MECH_UNSUPPORTED and close 1008",
    async run(ctx) {
      const expected = "loginOk (the site offers 'otp', S3.3) or loginFail BIZ_MECH_UNSUPPORTED, close 1008 (it does not)";
      const cred = await registered(ctx);
      const l = await login(ctx, firstServer(cred), cred, { mech: 'otp' });
      if (l.kind === 'ok') return pass(expected);
      if (l.kind === 'failed' && l.code === 'BIZ_MECH_UNSUPPORTED') return l.closeCode === closeOf('BIZ_MECH_UNSUPPORTED') ? pass(expected) : fail(expected, `close ${l.closeCode}, not ${closeOf('BIZ_MECH_UNSUPPORTED')}`);
      return fail(expected, l.kind === 'failed' ? `loginFail ${l.code}` : l.text);
    },
  },
  {
    section: '§6.4',
    title: 'an unknown user and a wrong secret get the same loginFail (code and reason)',
    async run(ctx) {
      const expected = 'identical loginFail bodies: unknown identity and wrong key are indistinguishable (§5.2)';
      const cred = await registered(ctx);
      const server = firstServer(cred);
      const a = await login(ctx, server, wrongSecret(cred));
      const b = await login(ctx, server, { ...cred, user: 'u-conformance-nobody' });
      if (a.kind !== 'failed' || b.kind !== 'failed') return fail(expected, 'one of the two logins was not answered with loginFail');
      if (a.code !== b.code || a.reason !== b.reason) return fail(expected, `'${a.code}: ${a.reason}' against '${b.code}: ${b.reason}'`);
      return pass(expected);
    },
  },
  {
    section: '§6.4',
    title: `a finish whose MAC is altered ${named(['HS_BAD_CLIENT_PROOF'])}`,
    async run(ctx) {
      const cred = await registered(ctx);
      const o = await openLogin(ctx, firstServer(cred), cred);
      const { finish } = o.hs.acceptProof(o.ok, o.okEnv, LoginMessages.loginOk.decode(o.okEnv.body));
      finish[finish.length - 1]! ^= 1;
      o.c.send(finish);
      return expectRefusal(o.c, ['HS_BAD_CLIENT_PROOF']);
    },
  },
  {
    section: '§6.4',
    title: `a login whose ext map is changed after the MAC -> loginAck, then loginFail BIZ_AUTH_FAILED and close 1008`,
    async run(ctx) {
      const cred = await registered(ctx);
      const server = firstServer(cred);
      const env = decodeEnvelope(loginFrame(server.name, cred).frame);
      const body = [...(env.body as unknown[])];
      body[3] = new Map([[1, 'added on the path']]);
      const c = await ctx.connect(server.url);
      c.send(encodeEnvelope(env.type, env.seq, env.dest, body as never));
      return expectRefusal(c, ['BIZ_AUTH_FAILED'], [MsgType.loginAck]);
    },
  },
  {
    section: '§6.4',
    title: `pwConfirm of a generation that is not the current one ${named(['BIZ_CONFIRM_MISMATCH'])}`,
    async run(ctx) {
      const cred = await registered(ctx);
      const o = await openLogin(ctx, firstServer(cred), cred);
      const { finish, channel } = o.hs.acceptProof(o.ok, o.okEnv, LoginMessages.loginOk.decode(o.okEnv.body));
      o.c.send(finish);
      o.c.send(channel.seal(MsgType.pwConfirm, LoginMessages.pwConfirm.encode({ gen: cred.gen + 1000 })));
      return expectRefusal(o.c, ['BIZ_CONFIRM_MISMATCH']);
    },
  },
  {
    section: '§8',
    title: `a login replayed on a new connection -> loginAck, then HS_REPLAY and close ${closeOf('HS_REPLAY')}`,
    async run(ctx) {
      const cred = await registered(ctx);
      const server = firstServer(cred);
      const o = await openLogin(ctx, server, cred);
      o.c.close();
      const c = await ctx.connect(server.url);
      c.send(o.login, 'the same bytes again');
      return expectRefusal(c, ['HS_REPLAY'], [MsgType.loginAck]);
    },
  },
  {
    section: '§6.4',
    title: 'a login opening verified but never finished promotes nothing: the current generation still logs in',
    async run(ctx): Promise<Outcome> {
      const expected = 'after loginOk for the pending generation and no finish, a login with the current one is accepted; the pending one still works';
      const g = await twoGenerations(ctx);
      const o = await openLogin(ctx, g.server, g.fresh);
      o.c.close();
      const old = await login(ctx, g.server, g.old);
      if (old.kind !== 'ok') return fail(expected, `the current generation ${g.old.gen} was refused (${old.kind === 'failed' ? old.code : old.text}): the pending ${g.fresh.gen} was promoted at the opening`);
      const fresh = await login(ctx, g.server, g.fresh, { confirm: true });
      return fresh.kind === 'ok' ? pass(expected) : fail(expected, `the pending generation ${g.fresh.gen} no longer logs in`);
    },
  },
];

export const rotationCases: Case[] = [
  {
    section: '§10',
    title: 'a second registration before any login re-issues the unused pending secret (same gen, same secret)',
    async run(ctx) {
      const expected = 'the same gen, currentGen and secret in both credReplies';
      const a = await registered(ctx);
      const b = await registered(ctx);
      if (a.gen !== b.gen || a.currentGen !== b.currentGen) return fail(expected, `gen ${a.gen}/${a.currentGen} then ${b.gen}/${b.currentGen}`);
      if (Buffer.compare(Buffer.from(a.secret), Buffer.from(b.secret)) !== 0) return fail(expected, 'the secret changed: an unused pending secret was replaced (a lost reply could lock the device out)');
      return pass(expected);
    },
  },
  {
    section: '§10',
    title: 'while a new generation is pending the old secret still logs in',
    async run(ctx) {
      const expected = 'loginOk with the current generation after a new one was issued';
      const g = await twoGenerations(ctx);
      const l = await login(ctx, g.server, g.old);
      return l.kind === 'ok' ? pass(expected) : fail(expected, l.kind === 'failed' ? `loginFail ${l.code}` : l.text);
    },
  },
  {
    section: '§10',
    title: 'after a login with the new generation and its confirmation the old secret is refused (BIZ_AUTH_FAILED)',
    async run(ctx) {
      const expected = 'the new generation logs in and is confirmed; then the old one gets loginFail BIZ_AUTH_FAILED';
      const g = await twoGenerations(ctx);
      const n = await login(ctx, g.server, g.fresh, { confirm: true });
      if (n.kind !== 'ok' || !n.confirmed) return fail(expected, `the new generation ${g.fresh.gen}: ${n.kind === 'ok' ? 'no pwConfirmAck' : n.kind === 'failed' ? n.code : n.text}`);
      const o = await login(ctx, g.server, g.old);
      if (o.kind === 'failed') return o.code === 'BIZ_AUTH_FAILED' && o.closeCode === 1008 ? pass(expected) : fail(expected, `loginFail ${o.code}, close ${o.closeCode}`);
      return fail(expected, o.kind === 'ok' ? `the old generation ${g.old.gen} still logs in: two passwords valid` : o.text);
    },
  },
  {
    section: '§10',
    title: 'after a promotion the next registration names the promoted generation as currentGen and a new one above it',
    async run(ctx) {
      const expected = 'credReply.currentGen = the generation used, credReply.gen > it';
      // twoGenerations checks exactly this of its second registration, and throws otherwise.
      await twoGenerations(ctx);
      return pass(expected);
    },
  },
];
