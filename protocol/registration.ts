// The registration exchange (S0.5, S0.7-S0.9, S0.14; docs/protocol.md §6.2): its message table
// and its two state machines, which do no I/O.
//
//   client (UPMon)                                  server (registration server)
//   hello [token, measurement, nC, mac]     ->      key looked up by the caller; MAC checked;
//                                                   the measurement must be firmware it accepts
//                                           <-      helloReply [nS, mac]   (the server's proof)
//   finish [mac], credRequest [serial, ip]  ->      sealed channel; the caller issues credentials
//                                           <-      credReply [...] | notFound [reason]; close 1000
// A device may send pwConfirm [gen] (sealed) once before credRequest; the server acknowledges.
import type { Rng } from './channel.ts';
import type { ClientKeyOps } from './handshake-keys.ts';
import { secretWrapKey, wrapSecret } from './secret-wrap.ts';
import { systemRng } from './channel.ts';
import { ClientExchange, ServerExchange, type ClientEnd, type Step } from './exchange.ts';
import {
  MsgType, parseHello, helloOpening, parseCredRequest, parseCredReply, credReplyBody, parseNotFound,
  helloReply, pwConfirm, pwConfirmAck, type CredReply, type CredRequest, type Envelope, type Hello, type MessageCodec, type OpeningCodec,
} from './messages.ts';
import { ProtocolError, ImplementationError, CloseCode } from './errors.ts';

/** Every message of the exchange: encoder paired with decoder (the proof is ServerHandshake.proof()'s). */
export const RegMessages = {
  hello: { type: MsgType.hello, fields: (h: { token: Uint8Array; measurement: Uint8Array }) => [h.token, h.measurement], decode: parseHello, opening: helloOpening } satisfies OpeningCodec<{ token: Uint8Array; measurement: Uint8Array }, Hello>,
  helloReply,
  credRequest: { type: MsgType.credRequest, encode: (r) => [r.serial, r.localIp], decode: parseCredRequest } satisfies MessageCodec<CredRequest>,
  credReply: { type: MsgType.credReply, encode: credReplyBody, decode: parseCredReply } satisfies MessageCodec<CredReply>,
  notFound: { type: MsgType.notFound, encode: (n) => [n.reason], decode: parseNotFound } satisfies MessageCodec<{ reason: string }>,
  pwConfirm,
  pwConfirmAck,
} as const;
const M = RegMessages;

// ---- client ----

export interface RegistrationClientOptions {
  /** The registration server's name: the dest of every frame. */
  dest: string;
  /**
   * The device key (32 bytes; copied, wiped at the end), or the key holder that keeps it and
   * computes the handshake inside (the phone's secure element: firmware/secure/).
   */
  deviceKey: Uint8Array | ClientKeyOps;
  /** The opaque serial token the server opens with its master key (docs/protocol.md §5.1). */
  serialToken: Uint8Array;
  /** The firmware measurement the chip attests (32 bytes; firmware/secure/ GET DATA boot measurement). */
  measurement: Uint8Array;
  serial: string;
  /** The address the device reports as its own (S0.8). */
  localIp: string;
  rng?: Rng;
}

/** What the device learns: its credentials, or that it is not registered (S0.9). */
export type RegistrationOutcome = { kind: 'cred'; cred: CredReply } | { kind: 'not-found'; reason: string };
/** `authenticated`: the server proved it holds the device key; finish and credRequest are sent. */
export type RegistrationEvent = 'authenticated';
export type RegistrationClientStep = Step<RegistrationEvent, RegistrationOutcome | ClientEnd>;

/** The device's side of a registration: start(), then receive() each server frame. */
export class RegistrationClient extends ClientExchange<RegistrationEvent, RegistrationOutcome> {
  constructor(private readonly o: RegistrationClientOptions) {
    super(o.dest, o.deviceKey, o.rng, 'hello');
  }

  start(): RegistrationClientStep {
    return this.run(() => ({ send: [this.hs.opening(M.hello.type, M.hello.fields({ token: this.o.serialToken, measurement: this.o.measurement }))] }));
  }

  protected onFrame(env: Envelope, frame: Uint8Array): RegistrationClientStep {
    if (this.state === 'hello') {
      if (env.type !== M.helloReply.type) this.unexpected(env);
      // The proof is checked before anything secret is sent.
      const { finish, channel } = this.hs.acceptProof(frame, env, M.helloReply.decode(env.body));
      this.ch = channel;
      this.state = 'cred';
      return { send: [finish, channel.seal(M.credRequest.type, M.credRequest.encode({ serial: this.o.serial, localIp: this.o.localIp }))], event: 'authenticated' };
    }
    if (env.type === M.credReply.type) return { send: [], done: { kind: 'cred', cred: M.credReply.decode(this.ch!.open(env)) } };
    if (env.type === M.notFound.type) return { send: [], done: { kind: 'not-found', reason: M.notFound.decode(this.ch!.open(env)).reason } };
    this.unexpected(env);
  }
}

// ---- server ----

/** What the registration server machine asks its caller for, synchronously (stores, keys). */
export interface RegistrationServerDeps {
  /**
   * The serial a hello's token names and that device's key (32 bytes; the machine wipes it),
   * or null for a token that names no device. Must do the same work either way
   * (keys.ts identifyToken): the machine then refuses it exactly like a wrong MAC, after the
   * same MAC work (HS_BAD_CLIENT_PROOF), so a client cannot tell a genuine token or a held
   * master key version from the answer or its timing; the caller logs why.
   */
  deviceKey(token: Uint8Array): { serial: string; key: Uint8Array } | null;
  /** Refuses a MAC seen before (HS_REPLAY); called only once the MAC verified (docs/protocol.md §8). */
  assertFresh(mac: Uint8Array): void;
  /**
   * Refuses firmware the server does not accept (REG_FIRMWARE_REFUSED); called only once the
   * MAC verified, so the measurement is the one the device's chip attested.
   */
  acceptFirmware(serial: string, measurement: Uint8Array): void;
  /** The device says it uses generation `gen` (S0.14): record it. */
  recordConfirmation(serial: string, gen: number): void;
}

/** The credentials the caller issues: the reply with the secret in clear; the machine wraps it for the chip. */
export type IssuedCredentials = Omit<CredReply, 'wrapped'> & { secret: Uint8Array };
/** What the caller answers, after its own lookups (device record, placement, rotation). */
export type Credentials = { kind: 'cred'; reply: IssuedCredentials } | { kind: 'not-found'; reason: string };
/** The credential request, authenticated: the caller finds the credentials and calls answer(). */
export interface CredentialsNeed { serial: string; request: CredRequest }
export type RegistrationServerEvent = { kind: 'confirmed'; serial: string; gen: number };
export type RegistrationServerDone = { kind: 'issued' | 'not-found'; closeCode: CloseCode };
export type RegistrationServerStep = Step<RegistrationServerEvent, RegistrationServerDone> & { need?: CredentialsNeed };

type ServerState = 'hello' | 'finish' | 'cred' | 'busy';

/**
 * The registration server's side. receive() takes each decoded frame and throws ProtocolError
 * to refuse it (the caller sends the error frame and closes, S0.7). A credential request
 * returns `need`: the caller's answer may take time (the rotation awaits the business
 * server's admin API), and a caller whose device went away meanwhile simply never answers.
 */
export class RegistrationServer extends ServerExchange<ServerState> {
  #serial = '';
  #confirmed = false;
  /** The device's secret-wrap key, from its key at the hello until the reply is sealed (wiped then). */
  #wrapKey: Uint8Array | null = null;

  constructor(
    dest: string,
    private readonly deps: RegistrationServerDeps,
    private readonly rng: Rng = systemRng,
  ) {
    super(dest, 'hello', rng);
  }

  override abort(): void {
    super.abort();
    this.#wrapKey?.fill(0);
    this.#wrapKey = null;
  }

  get serial(): string {
    return this.#serial;
  }

  receive(frame: Uint8Array, env: Envelope): RegistrationServerStep {
    switch (this.state) {
      case 'hello':
        if (env.type !== M.hello.type) this.unexpected(env);
        return this.#hello(frame, env);
      case 'finish':
        this.ch = this.hs.acceptFinish(frame, env);
        this.state = 'cred';
        return { send: [] };
      case 'cred': {
        const ch = this.ch!;
        if (env.type === M.pwConfirm.type && !this.#confirmed) {
          const { gen } = M.pwConfirm.decode(ch.open(env));
          this.#confirmed = true;
          this.deps.recordConfirmation(this.#serial, gen);
          return { send: [ch.seal(M.pwConfirmAck.type, M.pwConfirmAck.encode({ gen }))], event: { kind: 'confirmed', serial: this.#serial, gen } };
        }
        if (env.type !== M.credRequest.type) this.unexpected(env);
        const request = M.credRequest.decode(ch.open(env));
        if (request.serial !== this.#serial) throw new ProtocolError('MSG_BAD_FIELD', 'credRequest.serial differs from the serial of the hello');
        this.state = 'busy';
        return { send: [], need: { serial: this.#serial, request } };
      }
      default:
        this.unexpected(env);
    }
  }

  #hello(frame: Uint8Array, env: Envelope): RegistrationServerStep {
    const h = M.hello.decode(env.body);
    const id = this.deps.deviceKey(h.token);
    try {
      // A token that names no device: the MAC still runs (under a dummy key) and the refusal
      // is the wrong MAC's, one code before authentication (issue 10).
      this.hs.acceptOpening(frame, env, M.hello.opening(h), id?.key ?? null);
      this.hs.requireVerifiedOpening();
      this.#wrapKey = secretWrapKey(id!.key);
    } finally {
      id?.key.fill(0);
    }
    const serial = id!.serial;
    // After the MAC: an unauthenticated hello cannot fill the cache (docs/protocol.md §8).
    this.deps.assertFresh(h.mac);
    // Remote attestation (issue 9): the MAC vouches for the measurement; unknown firmware stops here.
    this.deps.acceptFirmware(serial, h.measurement);
    this.#serial = serial;
    this.state = 'finish';
    return { send: [this.hs.proof(M.helloReply.type)] };
  }

  /**
   * The caller's answer to `need`: the sealed reply, then the end (close 1000). A credReply's
   * secret is wiped once sealed. Throws ImplementationError EXCHANGE_STATE when nothing was asked.
   */
  answer(c: Credentials): RegistrationServerStep {
    if (this.state !== 'busy') throw new ImplementationError('EXCHANGE_STATE', `answer() in state ${this.state}`);
    this.state = 'done';
    const ch = this.ch!;
    if (c.kind === 'not-found') {
      // S0.9: "not found", sealed for this (genuine) device; then the session ends normally.
      return { send: [ch.seal(M.notFound.type, M.notFound.encode({ reason: c.reason }))], done: { kind: 'not-found', closeCode: CloseCode.normal } };
    }
    // The secret crosses the host only wrapped for the chip (protocol/secret-wrap.ts).
    const { secret, ...rest } = c.reply;
    const wrapped = wrapSecret(this.#wrapKey!, rest.user, rest.gen, secret, this.rng);
    secret.fill(0);
    this.#wrapKey!.fill(0);
    this.#wrapKey = null;
    const frame = ch.seal(M.credReply.type, M.credReply.encode({ ...rest, wrapped }));
    return { send: [frame], done: { kind: 'issued', closeCode: CloseCode.normal } };
  }
}
