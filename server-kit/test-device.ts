// A scripted device for the server tests and benchmarks: drives the protocol's own client
// machines (protocol/registration.ts, protocol/login.ts) over a real WebSocket, and can
// misbehave on request (drop a reply, vanish mid-step). It is not the firmware (firmware/ is); it keeps exactly what a real device
// keeps: the secrets of `gen` and `currentGen` from the last credential reply it received.
import { WebSocket } from 'ws';
import { RegistrationClient } from '../protocol/registration.ts';
import { secretWrapKey, unwrapSecret } from '../protocol/secret-wrap.ts';
import { LoginClient } from '../protocol/login.ts';
import type { ClientEnd, ClientExchange, Step } from '../protocol/exchange.ts';
import { decodeEnvelope, peekTablePush, type CredReply, type Envelope, type Mechanism } from '../protocol/messages.ts';
import { makeSerialToken, deriveDeviceKey, type MasterKeyring } from '../protocol/keys.ts';
import { toBytes } from './link.ts';
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex } from '@noble/hashes/utils.js';

/** The scripted device's firmware measurement (it has no chip to measure): a fixed value a test stack accepts. */
export const SCRIPTED_FIRMWARE = sha256(new TextEncoder().encode('usbphone/v1 scripted test device'));
export const SCRIPTED_FIRMWARE_HEX = bytesToHex(SCRIPTED_FIRMWARE);

export interface DeviceId { serial: string; token: Uint8Array; key: Uint8Array; measurement: Uint8Array }

export function makeDevice(ring: MasterKeyring, serial: string, version = ring.current, measurement = SCRIPTED_FIRMWARE): DeviceId {
  const master = ring.key(version);
  return { serial, token: makeSerialToken(master, version, serial), key: deriveDeviceKey(master, serial), measurement };
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

/** A credential reply as the scripted device keeps it: the wire reply and the secret it unwrapped with its device key. */
export type DeviceCred = CredReply & { secret: Uint8Array };

export type RegOutcome =
  | { kind: 'cred'; reply: DeviceCred }
  | { kind: 'notFound'; reason: string }
  /** The server's error frame (or a close with no frame: its reason as the code) and its close code. */
  | { kind: 'error'; code: string; closeCode: number }
  /** The device refused a server frame (S0.7) and sent its error frame. */
  | { kind: 'invalid'; code: string }
  | { kind: 'dropped' };

export interface RegisterOptions {
  localIp?: string;
  localAddress?: string;
  /** Close the connection right after sending the credential request (the reply is lost). */
  dropReply?: boolean;
  timeoutMs?: number;
}

type Driven<Out> = Out | ClientEnd | { kind: 'closed'; code: number; reason: string } | { kind: 'dropped' };

/**
 * Runs a protocol client machine over the socket until it ends: sends what it returns, hands
 * it each frame; `onEvent` may answer the machine with a step, or vanish ('drop').
 */
async function drive<Ev, Out>(s: FrameSocket, m: ClientExchange<Ev, Out>, onEvent: (e: Ev) => Step<Ev, Out | ClientEnd> | 'drop' | undefined, timeoutMs?: number): Promise<Driven<Out>> {
  let step = m.start();
  for (;;) {
    for (const f of step.send) s.send(f);
    const next = step.event === undefined ? undefined : onEvent(step.event);
    if (next === 'drop') {
      m.abort();
      s.terminate();
      return { kind: 'dropped' };
    }
    if (next) {
      step = next;
      continue;
    }
    if (step.done) return step.done;
    let i = await s.next(timeoutMs);
    // A gateway's tablePush is outside every session (docs/protocol.md §16): not the machine's
    // (a policy period ending mid-login pushed one and failed the login as MSG_UNEXPECTED).
    while ('frame' in i && peekTablePush(i.frame)) i = await s.next(timeoutMs);
    if ('closed' in i) {
      m.abort();
      return { kind: 'closed', code: i.closed, reason: i.reason };
    }
    step = m.receive(i.frame);
  }
}

/** The outcomes every exchange shares: the server's error frame or close, our refusal, a drop. */
async function common(s: FrameSocket, r: ClientEnd | { kind: 'closed'; code: number; reason: string } | { kind: 'dropped' }) {
  switch (r.kind) {
    case 'peer-error':
      return { kind: 'error' as const, code: r.code, closeCode: (await s.closed()).code };
    case 'closed':
      return { kind: 'error' as const, code: r.reason || 'closed', closeCode: r.code };
    case 'invalid':
      return { kind: 'invalid' as const, code: r.code };
    case 'dropped':
      return r;
  }
}

/** The registration flow (S0.5, S0.8, S0.9) against `url` with dest `dest`: the protocol's RegistrationClient. */
export async function register(url: string, dest: string, dev: DeviceId, o: RegisterOptions = {}): Promise<RegOutcome> {
  const s = await FrameSocket.connect(url, { localAddress: o.localAddress });
  try {
    const m = new RegistrationClient({ dest, deviceKey: dev.key, serialToken: dev.token, measurement: dev.measurement, serial: dev.serial, localIp: o.localIp ?? '192.168.1.20' });
    const r = await drive(s, m, () => (o.dropReply ? 'drop' : undefined), o.timeoutMs);
    if (r.kind === 'cred') {
      // A real phone imports the wrapped secret into its chip; the scripted device holds its key itself.
      const wk = secretWrapKey(dev.key);
      const secret = unwrapSecret(wk, r.cred.user, r.cred.gen, r.cred.wrapped);
      wk.fill(0);
      if (!secret) throw new Error('credReply: the wrapped secret does not open for this device');
      return { kind: 'cred', reply: { ...r.cred, secret } };
    }
    if (r.kind === 'not-found') return { kind: 'notFound', reason: r.reason };
    return await common(s, r);
  } finally {
    s.close();
  }
}

export type LoginOutcome =
  | { kind: 'ok'; confirmed: boolean }
  | { kind: 'fail'; code: string }
  | { kind: 'error'; code: string; closeCode: number }
  | { kind: 'invalid'; code: string }
  | { kind: 'dropped' };

export interface LoginOptions {
  localAddress?: string;
  /** Send pwConfirm [gen] after the login and wait for its ack. */
  confirm?: boolean;
  /** Vanish right after the "received, verifying" ack (loginOk lost). */
  dropReply?: boolean;
  mech?: Mechanism;
  ext?: Map<number, never>;
  timeoutMs?: number;
}

/** Business login (S0.11) with the password mechanism: the protocol's LoginClient. */
export async function bizLogin(url: string, dest: string, cred: { user: string; gen: number; secret: Uint8Array }, o: LoginOptions = {}): Promise<LoginOutcome> {
  const s = await FrameSocket.connect(url, { localAddress: o.localAddress });
  try {
    const m = new LoginClient({ dest, user: cred.user, gen: cred.gen, secret: cred.secret, mech: o.mech, ext: o.ext });
    const r = await drive(s, m, (e) => (e === 'acknowledged' ? (o.dropReply ? 'drop' : undefined) : m.afterLogin(!!o.confirm)), o.timeoutMs);
    if (r.kind === 'ok') return r;
    if (r.kind === 'failed') return { kind: 'fail', code: r.code };
    return await common(s, r);
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

  take(r: DeviceCred): void {
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
