// The accepted paths, driven by the project's own I/O-free client machines
// (protocol/registration.ts RegistrationClient, protocol/login.ts LoginClient), and the raw
// handshake the hostile cases start from (protocol/channel.ts ClientHandshake, frames built
// from the message tables: RegMessages.hello, LoginMessages.login), so a change of a message's
// fields flows through here.
import { sha256 } from '@noble/hashes/sha2.js';
import { RegistrationClient, RegMessages } from '../protocol/registration.ts';
import { LoginClient, LoginMessages } from '../protocol/login.ts';
import { ClientHandshake, SecureChannel, passwordLoginKey } from '../protocol/channel.ts';
import { secretWrapKey, unwrapSecret } from '../protocol/secret-wrap.ts';
import { kdf } from '../protocol/keys.ts';
import { HS_LABEL } from '../protocol/handshake-keys.ts';
import { decodeEnvelope, MsgType, type CredReply, type Envelope, type Mechanism } from '../protocol/messages.ts';
import type { ClientEnd, ClientExchange, Step } from '../protocol/exchange.ts';
import type { CborValue } from '../protocol/cbor.ts';
import type { Conn } from './wire.ts';
import type { CaseContext, DeviceCreds } from './suite.ts';

/** How a machine-driven exchange ended: its own outcome, or the peer's error, our refusal, a close, a timeout. */
export type Ended<Out> = Out | ClientEnd | { kind: 'closed'; code: number; reason: string } | { kind: 'timeout' };

/** Runs a client machine over `c` until it ends; `onEvent` may answer an event with a step. */
export async function drive<Ev, Out>(c: Conn, m: ClientExchange<Ev, Out>, onEvent: (e: Ev) => Step<Ev, Out | ClientEnd> | undefined = () => undefined): Promise<Ended<Out>> {
  let step = m.start();
  for (;;) {
    for (const f of step.send) c.send(f);
    const next = step.event === undefined ? undefined : onEvent(step.event);
    if (next) {
      step = next;
      continue;
    }
    if (step.done) return step.done;
    const r = await c.next();
    if (r.kind !== 'frame') {
      m.abort();
      return r.kind === 'close' ? { kind: 'closed', code: r.code, reason: r.reason } : { kind: 'timeout' };
    }
    step = m.receive(r.bytes);
  }
}

export const endText = (e: { kind: string; code?: string | number; reason?: string }): string => `${e.kind}${e.code !== undefined ? ` ${e.code}` : ''}${e.reason ? ` (${e.reason})` : ''}`;

/** A credential reply with the secret unwrapped with the device key, as the chip would (protocol/secret-wrap.ts). */
export type Cred = CredReply & { secret: Uint8Array };

export type RegResult =
  | { kind: 'cred'; cred: Cred; closeCode: number | null }
  | { kind: 'not-found'; reason: string; closeCode: number | null }
  | { kind: 'other'; text: string };

/** A whole registration (§6.1) with RegistrationClient; `serial` overrides the credRequest's serial. */
export async function register(ctx: CaseContext, dev: DeviceCreds = ctx.target.device, o: { serial?: string } = {}): Promise<RegResult> {
  const c = await ctx.connect();
  try {
    const m = new RegistrationClient({ dest: ctx.target.regDest, deviceKey: dev.key, serialToken: dev.token, measurement: dev.measurement, serial: o.serial ?? dev.serial, localIp: '192.168.1.20' });
    const r = await drive(c, m);
    if (r.kind === 'cred' || r.kind === 'not-found') {
      // §6.2 DONE: the server closes 1000 right after the reply.
      const close = await c.next();
      const closeCode = close.kind === 'close' ? close.code : null;
      if (r.kind === 'not-found') return { kind: 'not-found', reason: r.reason, closeCode };
      const wk = secretWrapKey(dev.key);
      const secret = unwrapSecret(wk, r.cred.user, r.cred.gen, r.cred.wrapped);
      wk.fill(0);
      if (!secret) return { kind: 'other', text: 'credReply: the wrapped secret does not open with the device key (§10)' };
      return { kind: 'cred', cred: { ...r.cred, secret }, closeCode };
    }
    return { kind: 'other', text: endText(r) };
  } finally {
    c.close();
  }
}

export type LoginResult =
  | { kind: 'ok'; confirmed: boolean }
  | { kind: 'failed'; code: string; reason: string; closeCode: number | null }
  | { kind: 'other'; text: string };

export interface LoginCred { user: string; gen: number; secret: Uint8Array }

/** A business login (§6.3) with LoginClient at the first server of the reply; `confirm` sends pwConfirm. */
export async function login(ctx: CaseContext, server: { name: string; url: string }, cred: LoginCred, o: { confirm?: boolean; mech?: Mechanism } = {}): Promise<LoginResult> {
  const c = await ctx.connect(server.url);
  try {
    const m = new LoginClient({ dest: server.name, user: cred.user, gen: cred.gen, secret: cred.secret, mech: o.mech });
    const r = await drive(c, m, (e) => (e === 'logged-in' ? m.afterLogin(!!o.confirm) : undefined));
    if (r.kind === 'ok') return r;
    if (r.kind === 'failed') {
      const close = await c.next();
      return { kind: 'failed', code: r.code, reason: r.reason, closeCode: close.kind === 'close' ? close.code : null };
    }
    return { kind: 'other', text: endText(r) };
  } finally {
    c.close();
  }
}

/** Where a business login goes: the first server the credential reply names (S0.8). */
export const firstServer = (cred: CredReply) => cred.servers[0]!;

/**
 * A device with a current generation and a pending one (§10): registers, logs in with the
 * issued generation (promoting it at the finish) and confirms, then registers again.
 * Throws when the target does not get there (the case then fails with the reason).
 */
export async function twoGenerations(ctx: CaseContext): Promise<{ old: LoginCred; fresh: LoginCred; server: { name: string; url: string }; second: Cred }> {
  const r1 = await register(ctx);
  if (r1.kind !== 'cred') throw new Error(`registration: ${r1.kind === 'other' ? r1.text : 'notFound'}`);
  const server = firstServer(r1.cred);
  const l = await login(ctx, server, r1.cred, { confirm: true });
  if (l.kind !== 'ok') throw new Error(`login with the issued generation ${r1.cred.gen}: ${l.kind === 'failed' ? l.code : l.kind === 'other' ? l.text : ''}`);
  const r2 = await register(ctx);
  if (r2.kind !== 'cred') throw new Error(`second registration: ${r2.kind === 'other' ? r2.text : 'notFound'}`);
  if (r2.cred.currentGen !== r1.cred.gen || r2.cred.gen <= r1.cred.gen) throw new Error(`second registration: gen ${r2.cred.gen}, currentGen ${r2.cred.currentGen}, after a login with ${r1.cred.gen}`);
  return { old: r1.cred, fresh: r2.cred, server, second: r2.cred };
}

// ---- raw handshakes for the hostile cases ----

/** SHA-256 over frames, each preceded by its 4-byte big-endian length (docs/protocol.md §5.2 transcript T). */
function transcriptHash(frames: Uint8Array[]): Uint8Array {
  const h = sha256.create();
  for (const f of frames) {
    const len = new Uint8Array(4);
    new DataView(len.buffer).setUint32(0, f.length);
    h.update(len).update(f);
  }
  return h.digest();
}

/** The hello frame of a fresh handshake (RegMessages.hello), and the handshake that made it. */
export function helloFrame(dest: string, dev: DeviceCreds): { hs: ClientHandshake; frame: Uint8Array } {
  const hs = new ClientHandshake(dest, dev.key);
  return { hs, frame: hs.opening(RegMessages.hello.type, RegMessages.hello.fields({ token: dev.token, measurement: dev.measurement })) };
}

/** The login frame of a fresh handshake (LoginMessages.login). */
export function loginFrame(dest: string, cred: LoginCred, o: { mech?: Mechanism; ext?: Map<number, CborValue> } = {}): { hs: ClientHandshake; frame: Uint8Array } {
  const hs = new ClientHandshake(dest, passwordLoginKey(cred.secret, cred.user));
  return { hs, frame: hs.opening(LoginMessages.login.type, LoginMessages.login.fields({ mech: o.mech ?? 'password', user: cred.user, gen: cred.gen, ext: o.ext ?? new Map() })) };
}

/** A registration session up to the server's proof: the hello sent, helloReply received and checked. */
export interface OpenReg {
  c: Conn;
  hs: ClientHandshake;
  hello: Uint8Array;
  reply: Uint8Array;
  replyEnv: Envelope;
}

export async function openRegistration(ctx: CaseContext): Promise<OpenReg> {
  const c = await ctx.connect();
  const { hs, frame } = helloFrame(ctx.target.regDest, ctx.target.device);
  c.send(frame);
  const r = await c.next();
  if (r.kind !== 'frame') {
    c.close();
    throw new Error(`no helloReply to a genuine hello (${r.kind === 'close' ? `close ${r.code} ${r.reason}` : 'timeout'})`);
  }
  const env = decodeEnvelope(r.bytes);
  if (env.type !== MsgType.helloReply) {
    c.close();
    throw new Error(`a genuine hello was answered with type ${env.type}`);
  }
  return { c, hs, hello: frame, reply: r.bytes, replyEnv: env };
}

/**
 * A registration session with the handshake done (finish sent): the client's channel, and the
 * traffic keys themselves (derived here from K_dev and the transcript, §5.2) so a case can
 * seal for the wrong direction or another dest.
 */
export async function readyRegistration(ctx: CaseContext): Promise<OpenReg & { channel: SecureChannel; c2s: Uint8Array; s2c: Uint8Array }> {
  const o = await openRegistration(ctx);
  const { finish, channel } = o.hs.acceptProof(o.reply, o.replyEnv, RegMessages.helloReply.decode(o.replyEnv.body));
  o.c.send(finish);
  const th2 = transcriptHash([o.hello, o.reply]);
  const k = ctx.target.device.key;
  return { ...o, channel, c2s: kdf(k, th2, HS_LABEL.c2s), s2c: kdf(k, th2, HS_LABEL.s2c) };
}

/** The credRequest of the test device, as RegMessages encodes it. */
export const credRequestBody = (dev: DeviceCreds) => RegMessages.credRequest.encode({ serial: dev.serial, localIp: '192.168.1.20' });

/** A business session up to loginOk: login sent, loginAck and loginOk received and checked. */
export async function openLogin(ctx: CaseContext, server: { name: string; url: string }, cred: LoginCred): Promise<{ c: Conn; hs: ClientHandshake; login: Uint8Array; ok: Uint8Array; okEnv: Envelope }> {
  const c = await ctx.connect(server.url);
  const { hs, frame } = loginFrame(server.name, cred);
  c.send(frame);
  const frames: { bytes: Uint8Array; env: Envelope }[] = [];
  for (let i = 0; i < 2; i++) {
    const r = await c.next();
    if (r.kind !== 'frame') {
      c.close();
      throw new Error(`login: ${r.kind === 'close' ? `closed ${r.code} ${r.reason}` : 'timeout'} after ${frames.length} frames`);
    }
    frames.push({ bytes: r.bytes, env: decodeEnvelope(r.bytes) });
  }
  const [ack, ok] = frames as [{ bytes: Uint8Array; env: Envelope }, { bytes: Uint8Array; env: Envelope }];
  if (ack.env.type !== MsgType.loginAck || ok.env.type !== MsgType.loginOk) {
    c.close();
    throw new Error(`login answered with types ${ack.env.type}, ${ok.env.type}, not loginAck, loginOk`);
  }
  hs.receiveClear(ack.bytes, ack.env);
  return { c, hs, login: frame, ok: ok.bytes, okEnv: ok.env };
}
