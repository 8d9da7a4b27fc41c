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
import { decodeEnvelope, parseError, typeName, MsgType, type CredReply, type Envelope, type Mechanism } from '../protocol/messages.ts';
import { BankMessages, type BankPage, type BankRegistered, type LineIds } from '../protocol/bank-messages.ts';
import type { BankRequest } from '../protocol/bank.ts';
import { withLuhn } from '../protocol/line-ids.ts';
import { randomBytes, randomInt } from 'node:crypto';
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

// ---- the bank step (§6.5, S4) ----

/**
 * A line identity the suite invents for one case (S4.2): a USIM of the test network 001-99
 * with a valid ICCID (Luhn), an IMSI and a number, random so that no two cases (and no two
 * runs) bind the same line. The target's bank must bind it in mode 1, directly by its ICCID
 * (S4.3): no operator knows it (docs/conformance.md).
 */
export function inventedSim(): Extract<LineIds, { idKind: 'sim' }> {
  const d = (n: number) => Array.from({ length: n }, () => String(randomInt(10))).join('');
  return { idKind: 'sim', iccid: withLuhn(`8900199${d(11)}`), imsi: `00199${d(10)}`, msisdn: `+99919${d(8)}` };
}

/** A bank login name for one case: 'conf-' and random letters (BANK_NAME_RE). */
export const inventedName = (): string => `conf-${randomBytes(6).toString('hex')}`;

/** The person's password of the suite's bank accounts: 22 characters, in no common-password list. */
export const BANK_TEST_PASSWORD = 'conformance-Quartz-7419';

/** A business session up to pwConfirmAck (§6.3, §6.5 READY): the channel the bank request goes on. */
export interface BankSession {
  c: Conn;
  channel: SecureChannel;
  server: { name: string; url: string };
}

/**
 * A registration, then a business login with the issued generation, its finish, pwConfirm
 * [gen] and pwConfirmAck: the state in which the device may send one bank request (§6.5).
 * `confirm: false` stops after the finish (the bank request is then out of place). Throws
 * when the target does not get there.
 */
export async function bankSession(ctx: CaseContext, o: { confirm?: boolean } = {}): Promise<BankSession> {
  const r = await register(ctx);
  if (r.kind !== 'cred') throw new Error(`registration: ${r.kind === 'other' ? r.text : 'notFound'}`);
  const server = firstServer(r.cred);
  const l = await openLogin(ctx, server, r.cred);
  const { finish, channel } = l.hs.acceptProof(l.ok, l.okEnv, LoginMessages.loginOk.decode(l.okEnv.body));
  l.c.send(finish);
  if (o.confirm === false) return { c: l.c, channel, server };
  l.c.send(channel.seal(MsgType.pwConfirm, LoginMessages.pwConfirm.encode({ gen: r.cred.gen })));
  const a = await l.c.next();
  if (a.kind !== 'frame') throw new Error(`pwConfirm: ${a.kind === 'close' ? `closed ${a.code} ${a.reason}` : 'no pwConfirmAck'}`);
  const env = decodeEnvelope(a.bytes);
  if (env.type !== MsgType.pwConfirmAck) throw new Error(`pwConfirm answered with ${typeName(env.type)}, not pwConfirmAck`);
  const ack = LoginMessages.pwConfirmAck.decode(channel.open(env));
  if (ack.gen !== r.cred.gen) throw new Error(`pwConfirmAck names gen ${ack.gen}, not ${r.cred.gen}`);
  return { c: l.c, channel, server };
}

/** How the bank answered one request: its sealed answer (opened and parsed), then the close. */
export type BankReply =
  | { kind: 'registered'; registered: BankRegistered; closeCode: number | null; after: number }
  | { kind: 'page'; page: BankPage; closeCode: number | null; after: number }
  | { kind: 'refused'; code: string; reason: string; closeCode: number | null; after: number }
  | { kind: 'other'; text: string };

/** Reads the bank's answer on `s` and what follows it until the close (`after`: frames after the answer). */
export async function bankReply(s: BankSession): Promise<BankReply> {
  const r = await s.c.next();
  if (r.kind === 'timeout') return { kind: 'other', text: 'no answer within the timeout' };
  if (r.kind === 'close') return { kind: 'other', text: `closed ${r.code} ${r.reason} without an answer` };
  let env: Envelope;
  try {
    env = decodeEnvelope(r.bytes);
  } catch (e) {
    return { kind: 'other', text: `a frame that does not decode: ${(e as Error).message}` };
  }
  if (env.type === MsgType.error) return { kind: 'other', text: `error frame ${parseError(env.body).code}` };
  const M = BankMessages;
  let answer: { kind: 'registered'; registered: BankRegistered } | { kind: 'page'; page: BankPage } | { kind: 'refused'; code: string; reason: string };
  try {
    if (env.type === M.bankRegistered.type) answer = { kind: 'registered', registered: M.bankRegistered.decode(s.channel.open(env)) };
    else if (env.type === M.bankPage.type) answer = { kind: 'page', page: M.bankPage.decode(s.channel.open(env)) };
    else if (env.type === M.bankRefused.type) answer = { kind: 'refused', ...M.bankRefused.decode(s.channel.open(env)) };
    else return { kind: 'other', text: `answered with ${typeName(env.type)}` };
  } catch (e) {
    return { kind: 'other', text: `${typeName(env.type)} does not open or parse: ${(e as Error).message}` };
  }
  let after = 0;
  for (;;) {
    const n = await s.c.next();
    if (n.kind === 'frame') {
      after++;
      continue;
    }
    return { ...answer, closeCode: n.kind === 'close' ? n.code : null, after };
  }
}

export const replyText = (r: BankReply): string =>
  r.kind === 'other' ? r.text : r.kind === 'refused' ? `bankRefused ${r.code} (${r.reason})` : r.kind === 'page' ? 'bankPage' : 'bankRegistered';

/** One whole bank request on its own business session: bankSession, the request sealed, the answer. */
export async function bankRequest(ctx: CaseContext, req: SuiteBankRequest): Promise<BankReply> {
  const s = await bankSession(ctx);
  try {
    s.c.send(sealBankRequest(s.channel, req));
    return await bankReply(s);
  } finally {
    s.c.close();
  }
}

/** The sealed frame of a bank request, as BankClient sends it. */
/** A bank request the suite sends as it is (its proof already made: no chip-side prover). */
export type SuiteBankRequest = Exclude<BankRequest, { kind: 'prove' }>;

export function sealBankRequest(ch: SecureChannel, req: SuiteBankRequest): Uint8Array {
  const M = BankMessages;
  if (req.kind === 'login') return ch.seal(M.bankLogin.type, M.bankLogin.encode(req));
  if (req.kind === 'register') return ch.seal(M.bankRegister.type, M.bankRegister.encode(req));
  return ch.seal(M.bankRebind.type, M.bankRebind.encode(req));
}

/** A bank account the suite opened for one case: its name, line and full account number. */
export interface SuiteAccount { name: string; ids: LineIds; account: string }

/** Registers a new account on an invented line; throws when the bank does not open it. */
export async function openAccount(ctx: CaseContext): Promise<SuiteAccount> {
  const name = inventedName();
  const ids = inventedSim();
  const r = await bankRequest(ctx, { kind: 'register', name, password: BANK_TEST_PASSWORD, ids });
  if (r.kind !== 'registered') throw new Error(`bankRegister of an invented line: ${replyText(r)}${r.kind === 'refused' && (r.code === 'BANK_CARD_INVALID' || r.code === 'BANK_OPERATOR_UNAVAILABLE') ? ' (the suite needs a bank that binds a line in mode 1, docs/conformance.md)' : ''}`);
  return { name, ids, account: r.registered.account };
}

/** The password as a bankLogin proof (UTF-8). */
export const proofOf = (password: string): Uint8Array => new TextEncoder().encode(password);
