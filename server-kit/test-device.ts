// A scripted device for the server tests and benchmarks: speaks the S0 flow (registration
// and business login) over a real WebSocket, and can misbehave on request (drop a reply,
// vanish mid-step). It is not the firmware (firmware/ is); it keeps exactly what a real device
// keeps: the secrets of `gen` and `currentGen` from the last credential reply it received.
import { WebSocket } from 'ws';
import { ClientHandshake, passwordLoginKey } from '../protocol/channel.ts';
import { decodeEnvelope, parseServerProof, parseCredReply, parseNotFound, parseError, parseLoginFail, MsgType, type CredReply, type Envelope } from '../protocol/messages.ts';
import { makeSerialToken, deriveDeviceKey, type MasterKeyring } from '../protocol/keys.ts';
import { toBytes } from './link.ts';

export interface DeviceId { serial: string; token: Uint8Array; key: Uint8Array }

export function makeDevice(ring: MasterKeyring, serial: string, version = ring.current): DeviceId {
  const master = ring.key(version);
  return { serial, token: makeSerialToken(master, version, serial), key: deriveDeviceKey(master, serial) };
}

type Item = { frame: Uint8Array } | { closed: number; reason: string };

/** A WebSocket whose incoming frames and close are read in order with next(). */
export class FrameSocket {
  readonly ws: WebSocket;
  #queue: Item[] = [];
  #waiters: ((i: Item) => void)[] = [];
  #closed: Item | null = null;

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.binaryType = 'nodebuffer';
    ws.on('message', (d) => this.#push({ frame: Uint8Array.from(toBytes(d)) }));
    ws.on('close', (code, reason) => {
      this.#closed = { closed: code, reason: reason.toString() };
      this.#push(this.#closed);
    });
    ws.on('error', () => {});
  }

  static connect(url: string, opts: { localAddress?: string; headers?: Record<string, string> } = {}): Promise<FrameSocket> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { localAddress: opts.localAddress, headers: opts.headers, perMessageDeflate: false });
      const s = new FrameSocket(ws);
      ws.once('open', () => resolve(s));
      ws.once('error', reject);
    });
  }

  #push(i: Item): void {
    const w = this.#waiters.shift();
    if (w) w(i);
    else this.#queue.push(i);
  }

  /** The next frame, or the close (repeated once closed). */
  next(timeoutMs = 5_000): Promise<Item> {
    const i = this.#queue.shift();
    if (i) return Promise.resolve(i);
    if (this.#closed) return Promise.resolve(this.#closed);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no frame within ${timeoutMs} ms`)), timeoutMs);
      this.#waiters.push((x) => {
        clearTimeout(t);
        resolve(x);
      });
    });
  }

  /** The next frame, decoded; throws when the socket closed instead. */
  async frame(timeoutMs?: number): Promise<{ frame: Uint8Array; env: Envelope }> {
    const i = await this.next(timeoutMs);
    if (!('frame' in i)) throw new Error(`closed ${i.closed} ${i.reason}`);
    return { frame: i.frame, env: decodeEnvelope(i.frame) };
  }

  /** Waits for the close; returns its code and reason. */
  async closed(timeoutMs = 5_000): Promise<{ code: number; reason: string; frames: Uint8Array[] }> {
    const frames: Uint8Array[] = [];
    for (;;) {
      const i = await this.next(timeoutMs);
      if ('closed' in i) return { code: i.closed, reason: i.reason, frames };
      frames.push(i.frame);
    }
  }

  send(frame: Uint8Array): void {
    this.ws.send(frame);
  }
  close(): void {
    this.ws.close();
  }
  terminate(): void {
    this.ws.terminate();
  }
}

export type RegOutcome =
  | { kind: 'cred'; reply: CredReply }
  | { kind: 'notFound'; reason: string }
  | { kind: 'error'; code: string; closeCode: number }
  | { kind: 'dropped' };

export interface RegisterOptions {
  localIp?: string;
  localAddress?: string;
  /** Close the connection right after sending the credential request (the reply is lost). */
  dropReply?: boolean;
  timeoutMs?: number;
}

function errorOutcome(env: Envelope): { kind: 'error'; code: string; closeCode: number } {
  return { kind: 'error', code: env.type === MsgType.error ? parseError(env.body).code : `unexpected-${env.type}`, closeCode: 0 };
}

/** The registration flow (S0.5, S0.8, S0.9) against `url` with dest `dest`. */
export async function register(url: string, dest: string, dev: DeviceId, o: RegisterOptions = {}): Promise<RegOutcome> {
  const s = await FrameSocket.connect(url, { localAddress: o.localAddress });
  try {
    const hs = new ClientHandshake(dest, dev.key);
    s.send(hs.opening(MsgType.hello, [dev.token]));
    const r1 = await s.next(o.timeoutMs);
    if ('closed' in r1) return { kind: 'error', code: r1.reason || 'closed', closeCode: r1.closed };
    const e1 = decodeEnvelope(r1.frame);
    if (e1.type !== MsgType.helloReply) return { ...errorOutcome(e1), closeCode: (await s.closed()).code };
    const { finish, channel } = hs.acceptProof(r1.frame, e1, parseServerProof(e1.body));
    s.send(finish);
    s.send(channel.seal(MsgType.credRequest, [dev.serial, o.localIp ?? '192.168.1.20']));
    if (o.dropReply) {
      s.terminate();
      return { kind: 'dropped' };
    }
    const r2 = await s.frame(o.timeoutMs);
    if (r2.env.type === MsgType.credReply) return { kind: 'cred', reply: parseCredReply(channel.open(r2.env)) };
    if (r2.env.type === MsgType.notFound) return { kind: 'notFound', reason: parseNotFound(channel.open(r2.env)).reason };
    return { ...errorOutcome(r2.env), closeCode: (await s.closed()).code };
  } finally {
    s.close();
  }
}

export type LoginOutcome =
  | { kind: 'ok'; confirmed: boolean }
  | { kind: 'fail'; code: string }
  | { kind: 'error'; code: string; closeCode: number }
  | { kind: 'dropped' };

export interface LoginOptions {
  localAddress?: string;
  /** Send pwConfirm [gen] after the login and wait for its ack. */
  confirm?: boolean;
  /** Vanish right after sending the login (loginOk lost). */
  dropReply?: boolean;
  mech?: string;
  ext?: Map<number, never>;
  timeoutMs?: number;
}

/** Business login (S0.11) with the password mechanism. */
export async function bizLogin(url: string, dest: string, cred: { user: string; gen: number; secret: Uint8Array }, o: LoginOptions = {}): Promise<LoginOutcome> {
  const s = await FrameSocket.connect(url, { localAddress: o.localAddress });
  try {
    const hs = new ClientHandshake(dest, passwordLoginKey(cred.secret, cred.user));
    s.send(hs.opening(MsgType.login, [o.mech ?? 'password', cred.user, cred.gen, o.ext ?? new Map()]));
    const a = await s.frame(o.timeoutMs);
    if (a.env.type !== MsgType.loginAck) return { ...errorOutcome(a.env), closeCode: (await s.closed()).code };
    hs.receiveClear(a.frame, a.env);
    if (o.dropReply) {
      s.terminate();
      return { kind: 'dropped' };
    }
    const r = await s.frame(o.timeoutMs);
    if (r.env.type === MsgType.loginFail) return { kind: 'fail', code: parseLoginFail(r.env.body).code };
    if (r.env.type !== MsgType.loginOk) return { ...errorOutcome(r.env), closeCode: (await s.closed()).code };
    const { finish, channel } = hs.acceptProof(r.frame, r.env, parseServerProof(r.env.body, 'loginOk'));
    s.send(finish);
    if (!o.confirm) return { kind: 'ok', confirmed: false };
    s.send(channel.seal(MsgType.pwConfirm, [cred.gen]));
    const c = await s.frame(o.timeoutMs);
    if (c.env.type !== MsgType.pwConfirmAck) return { ...errorOutcome(c.env), closeCode: (await s.closed()).code };
    const inner = channel.open(c.env) as number[];
    return { kind: 'ok', confirmed: inner[0] === cred.gen };
  } finally {
    s.close();
  }
}

/**
 * What a real device keeps between boots (S0.12-S0.14): the secrets of `gen` and
 * `currentGen` from the last credential reply it received, and its user.
 */
export class DeviceWallet {
  user = '';
  secrets = new Map<number, Uint8Array>();
  servers: CredReply['servers'] = [];

  take(r: CredReply): void {
    const keep = new Map<number, Uint8Array>();
    keep.set(r.gen, Uint8Array.from(r.secret));
    const cur = this.secrets.get(r.currentGen);
    if (cur) keep.set(r.currentGen, cur);
    this.user = r.user;
    this.secrets = keep;
    this.servers = r.servers;
  }

  /** Generations to try, newest first. */
  gens(): number[] {
    return [...this.secrets.keys()].sort((a, b) => b - a);
  }

  /** Logs in with the newest generation that works; returns it, or null. */
  async login(url: string, dest: string, o: LoginOptions = {}): Promise<number | null> {
    for (const gen of this.gens()) {
      const r = await bizLogin(url, dest, { user: this.user, gen, secret: this.secrets.get(gen)! }, o);
      if (r.kind === 'ok') return gen;
    }
    return null;
  }
}
