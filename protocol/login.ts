// The business login exchange (S0.11, S0.14; docs/protocol.md §6.3): its message table and its
// two state machines, which do no I/O.
//
//   client (main program)                          server (business server)
//   login [mech, user, gen, ext, nC, mac]   ->      key looked up by the caller
//                                           <-      loginAck []            ("received, verifying")
//                                           <-      loginOk [nS, mac] (proof) | loginFail [code, reason]; close 1008
//   finish [mac]                            ->      sealed channel
//   pwConfirm [gen] (once the secret is saved) ->
//                                           <-      pwConfirmAck [gen]; the device closes
import { passwordLoginKey, type Rng } from './channel.ts';
import type { ClientKeyOps } from './handshake-keys.ts';
import { ClientExchange, ServerExchange, type ChannelClient, type ChannelStep, type ClientEnd, type Step } from './exchange.ts';
import type { SecureChannel } from './channel.ts';
import {
  MsgType, parseLogin, loginOpening, parseLoginAck, parseLoginFail, loginOk, pwConfirm, pwConfirmAck,
  type Envelope, type Login, type LoginFail, type Mechanism, type MessageCodec, type OpeningCodec,
} from './messages.ts';
import { ProtocolError, ImplementationError, CloseCode, type ErrorCode } from './errors.ts';
import type { CborValue } from './cbor.ts';

type LoginFields = Pick<Login, 'mech' | 'user' | 'gen' | 'ext'>;

/** Every message of the exchange: encoder paired with decoder (the proof is ServerHandshake.proof()'s). */
export const LoginMessages = {
  login: { type: MsgType.login, fields: (l) => [l.mech, l.user, l.gen, l.ext], decode: parseLogin, opening: loginOpening } satisfies OpeningCodec<LoginFields, Login>,
  loginAck: { type: MsgType.loginAck, encode: () => [], decode: parseLoginAck } satisfies MessageCodec<void>,
  loginOk,
  loginFail: { type: MsgType.loginFail, encode: (f) => [f.code, f.reason], decode: parseLoginFail } satisfies MessageCodec<LoginFail>,
  pwConfirm,
  pwConfirmAck,
} as const;
const M = LoginMessages;

// ---- client ----

export interface LoginClientOptions<T = never> {
  /** The business server's name (server.name of the credential reply): the dest of every frame. */
  dest: string;
  user: string;
  /** Generation of `secret`. */
  gen: number;
  /**
   * The business secret (32 bytes): the login key is derived from it and the user; or the key
   * holder that keeps the secret and derives and uses the login key inside (the phone's secure
   * element, which answers only for its own user and a generation it holds).
   */
  secret: Uint8Array | ClientKeyOps;
  /**
   * The person mechanism the bank request after the login will prove (S3.2; default
   * 'password'): the MAC is the device's whatever it states; a site that does not offer it
   * refuses after the ack (BIZ_MECH_UNSUPPORTED).
   */
  mech?: Mechanism;
  /** Later fields under integer keys (S4.2), covered by the MAC. */
  ext?: Map<number, CborValue>;
  rng?: Rng;
  /**
   * What runs on the channel once the login is complete (S4.5: the bank exchange,
   * protocol/bank.ts): started after pwConfirmAck (or at once without a confirmation); its
   * outcome ends the login as `then`.
   */
  then?: ChannelClient<T>;
}

/**
 * `failed`: the server's loginFail. `ok`: logged in; `confirmed` when pwConfirmAck came back;
 * `then`: the outcome of the exchange that ran on the channel afterwards (options.then).
 */
export type LoginOutcome<T = never> = { kind: 'ok'; confirmed: boolean; then?: T } | { kind: 'failed'; code: string; reason: string };
/**
 * `acknowledged`: "received, verifying" (S0.11). `logged-in`: the server proved itself and the
 * finish is sent; the caller saves what worked, then calls afterLogin() (S0.12, S0.14).
 */
/** `continued`: the login is complete and options.then started on its channel (its frames are sent). */
export type LoginEvent = 'acknowledged' | 'logged-in' | 'continued';
export type LoginClientStep<T = never> = Step<LoginEvent, LoginOutcome<T> | ClientEnd>;

/** The device's side of a business login: start(), receive() each frame, afterLogin() once logged in. */
export class LoginClient<T = never> extends ClientExchange<LoginEvent, LoginOutcome<T>> {
  #confirmed = false;
  constructor(private readonly o: LoginClientOptions<T>) {
    super(o.dest, o.secret instanceof Uint8Array ? passwordLoginKey(o.secret, o.user) : o.secret, o.rng, 'ack');
  }

  start(): LoginClientStep<T> {
    const o = this.o;
    return this.run(() => ({ send: [this.hs.opening(M.login.type, M.login.fields({ mech: o.mech ?? 'password', user: o.user, gen: o.gen, ext: o.ext ?? new Map() }))] }));
  }

  protected onFrame(env: Envelope, frame: Uint8Array): LoginClientStep<T> {
    switch (this.state) {
      case 'ack':
        if (env.type !== M.loginAck.type) this.unexpected(env);
        M.loginAck.decode(env.body);
        this.hs.receiveClear(frame, env);
        this.state = 'result';
        return { send: [], event: 'acknowledged' };
      case 'result': {
        if (env.type === M.loginFail.type) {
          const f = M.loginFail.decode(env.body);
          return { send: [], done: { kind: 'failed', code: f.code, reason: f.reason } };
        }
        if (env.type !== M.loginOk.type) this.unexpected(env);
        const { finish, channel } = this.hs.acceptProof(frame, env, M.loginOk.decode(env.body));
        this.ch = channel;
        this.state = 'logged-in';
        return { send: [finish], event: 'logged-in' };
      }
      case 'confirm': {
        if (env.type !== M.pwConfirmAck.type) this.unexpected(env);
        const { gen } = M.pwConfirmAck.decode(this.ch!.open(env));
        if (gen !== this.o.gen) this.unexpected(env);
        this.#confirmed = true;
        return this.#then();
      }
      case 'then':
        return this.#continued(this.o.then!.receive(env));
      default:
        this.unexpected(env);
    }
  }

  /**
   * After `logged-in`: with `confirm`, the password-change confirmation pwConfirm [gen] (S0.14,
   * sent only once the caller saved the secret); without, the end. Throws ImplementationError
   * EXCHANGE_STATE before `logged-in`.
   */
  afterLogin(confirm: boolean): LoginClientStep<T> {
    return this.run(() => {
      if (this.state !== 'logged-in') throw new ImplementationError('EXCHANGE_STATE', `afterLogin() in state ${this.state}`);
      if (!confirm) return this.#then();
      this.state = 'confirm';
      return { send: [this.ch!.seal(M.pwConfirm.type, M.pwConfirm.encode({ gen: this.o.gen }))] };
    });
  }

  /** The login is complete: the end, or options.then started on the channel. */
  #then(): LoginClientStep<T> {
    if (!this.o.then) return { send: [], done: { kind: 'ok', confirmed: this.#confirmed } };
    this.state = 'then';
    const s = this.#continued(this.o.then.start(this.ch!));
    return s.done ? s : { ...s, event: 'continued' };
  }

  #continued(s: ChannelStep<T>): LoginClientStep<T> {
    return s.done === undefined ? { send: s.send } : { send: s.send, done: { kind: 'ok', confirmed: this.#confirmed, then: s.done } };
  }
}

// ---- server ----

/** The key a login's MAC must verify under, as the caller's mechanism table and store give it. */
export type LoginLookup =
  /** The mechanism is not offered by this server. */
  | { kind: 'unsupported' }
  /** No such user, or no usable key of that generation: refused exactly like a wrong MAC. */
  | { kind: 'unknown' }
  /** `pending`: the login uses the pending generation, to promote once verified (S0.14). */
  | { kind: 'found'; key: Uint8Array; active: boolean; pending: boolean };

/** What the business server machine asks its caller for, synchronously (stores). */
export interface LoginServerDeps {
  /**
   * The key for this login (wiped by the machine after use). Must do the same work whatever it
   * answers for a supported mechanism (an unknown user or generation costs what a live one does).
   */
  lookup(login: Login): LoginLookup;
  /** Refuses a MAC seen before (HS_REPLAY); called only once the MAC verified (docs/protocol.md §8). */
  assertFresh(mac: Uint8Array): void;
  /** S0.14 compare-and-set, at the client's finish: the pending generation `gen` becomes current; false when it is no longer pending. */
  promote(user: string, gen: number): boolean;
  /** pwConfirm: true when `gen` is the account's current generation (and it is recorded). */
  confirm(user: string, gen: number): boolean;
}

export type LoginServerEvent =
  /** The opening verified: loginOk is sent; the login completes with the client's finish. */
  | { kind: 'verified'; login: Login }
  /** The client's finish verified: logged in; `promoted` when that made the pending generation current. */
  | { kind: 'logged-in'; login: Login; promoted: boolean }
  | { kind: 'confirmed'; user: string; gen: number };
/** A refusal answered with loginFail (then close 1008): the caller logs it and closes. */
export type LoginServerDone = { kind: 'refused'; code: ErrorCode; reason: string; login: Login; closeCode: CloseCode };
/**
 * `refuse`: send `send` (the loginAck already owed, S0.11), then refuse with this error as for
 * a thrown one (error frame, close): a replayed login is found only after the ack.
 */
export type LoginServerStep = Step<LoginServerEvent, LoginServerDone> & { refuse?: ProtocolError };

type ServerState = 'login' | 'finish' | 'channel';

/**
 * The business server's side. receive() takes each decoded frame; a refused login is an
 * outcome (loginAck then loginFail, S0.11), any other refusal a thrown ProtocolError (the
 * caller sends the error frame and closes, S0.7), or `refuse` once the ack is owed.
 */
export class LoginServer extends ServerExchange<ServerState> {
  #user = '';
  /** The login whose finish is awaited, and whether it used the pending generation. */
  #pendingLogin: { login: Login; pending: boolean } | null = null;
  #confirmed = false;

  constructor(
    dest: string,
    private readonly deps: LoginServerDeps,
    rng?: Rng,
  ) {
    super(dest, 'login', rng);
  }

  receive(frame: Uint8Array, env: Envelope): LoginServerStep {
    switch (this.state) {
      case 'login':
        if (env.type !== M.login.type) this.unexpected(env);
        return this.#login(frame, env);
      case 'finish': {
        this.ch = this.hs.acceptFinish(frame, env);
        this.state = 'channel';
        // S0.14 (issue 9): a pending generation becomes current only on a completed login: the
        // client's finish proves it is live now. A login captured and delivered late by someone
        // on the path verifies its opening but cannot be finished, so it promotes nothing.
        // Compare-and-set: the pending may have expired meanwhile; the device then keeps both
        // generations (it retires the older only on pwConfirmAck) and nothing is lost.
        const { login, pending } = this.#pendingLogin!;
        if (pending && !this.deps.promote(login.user, login.gen)) throw new ProtocolError('BIZ_AUTH_FAILED', 'authentication failed');
        return { send: [], event: { kind: 'logged-in', login, promoted: pending } };
      }
      case 'channel': {
        if (env.type !== M.pwConfirm.type) this.unexpected(env);
        const { gen } = M.pwConfirm.decode(this.ch!.open(env));
        if (!this.deps.confirm(this.#user, gen)) throw new ProtocolError('BIZ_CONFIRM_MISMATCH', `generation ${gen} is not the account's current one`);
        this.state = 'done';
        this.#confirmed = true;
        return { send: [this.ch!.seal(M.pwConfirmAck.type, M.pwConfirmAck.encode({ gen }))], event: { kind: 'confirmed', user: this.#user, gen } };
      }
      default:
        this.unexpected(env);
    }
  }

  /**
   * After the `confirmed` event: the sealed channel, handed on to the exchange that runs on it
   * next (S4.5: the bank, protocol/bank.ts), which then owns it and wipes it. Once only;
   * ImplementationError EXCHANGE_STATE before the confirmation or a second time.
   */
  takeChannel(): SecureChannel {
    if (!this.#confirmed || !this.ch) throw new ImplementationError('EXCHANGE_STATE', 'takeChannel() before pwConfirm, or twice');
    const ch = this.ch;
    this.ch = null;
    return ch;
  }

  #login(frame: Uint8Array, env: Envelope): LoginServerStep {
    const hs = this.hs;
    const login = M.login.decode(env.body);
    // Issue 10: the lookup and the MAC run in full whatever the lookup finds (a dummy key for
    // an unknown user or generation), and the verdict comes only after both, so a refusal's
    // timing does not say which users or generations exist. Only an unsupported mechanism,
    // which is public, is refused without a lookup.
    const found = this.deps.lookup(login);
    const key = found.kind === 'found' ? found.key : null;
    hs.acceptOpening(frame, env, M.login.opening(login), key);
    key?.fill(0);
    // S0.11: "received, verifying" before the verdict.
    const send = [hs.clear(M.loginAck.type, M.loginAck.encode())];
    const refuse = (code: ErrorCode, reason: string): LoginServerStep => {
      send.push(hs.clear(M.loginFail.type, M.loginFail.encode({ code, reason })));
      this.abort();
      return { send, done: { kind: 'refused', code, reason, login, closeCode: CloseCode.policy } };
    };
    if (found.kind === 'unsupported') return refuse('BIZ_MECH_UNSUPPORTED', `mechanism '${login.mech}' is not offered by this server`);
    if (!hs.verifyOpening() || found.kind !== 'found') return refuse('BIZ_AUTH_FAILED', 'authentication failed');
    // After the MAC: an unauthenticated login cannot fill the cache (docs/protocol.md §8).
    try {
      this.deps.assertFresh(login.mac);
    } catch (e) {
      if (e instanceof ProtocolError) return { send, refuse: e };
      throw e;
    }
    if (!found.active) return refuse('BIZ_ACCOUNT_DISABLED', 'this account is disabled');
    this.#user = login.user;
    this.#pendingLogin = { login, pending: found.pending };
    this.state = 'finish';
    send.push(hs.proof(M.loginOk.type));
    return { send, event: { kind: 'verified', login } };
  }
}
