// One business login session (S0.11, S0.14), the server side:
//   login   -> loginAck ("received, verifying") -> loginOk (proof) | loginFail + close
//   finish  -> sealed channel
//   pwConfirm [gen] -> pwConfirmAck [gen]; the device then closes.
import { ServerHandshake } from '../protocol/channel.ts';
import { MsgType, parseLogin, loginOpening, parsePwConfirm, type Envelope } from '../protocol/messages.ts';
import { ProtocolError, CloseCode } from '../protocol/errors.ts';
import type { ReplayCache } from '../protocol/replay.ts';
import { ServerSession, type SessionOptions, type SessionTransport } from '../server-kit/session.ts';
import { mechanisms } from './mechanisms.ts';
import type { BizStore } from './store.ts';

export interface BizSessionDeps {
  store: BizStore;
  replay: ReplayCache;
  now?: () => number;
}

type State = 'login' | 'finish' | 'channel' | 'done';

export class BizSession extends ServerSession {
  #state: State = 'login';
  #user = '';

  constructor(t: SessionTransport, opts: SessionOptions, private readonly deps: BizSessionDeps) {
    super(t, opts);
  }

  protected override cleanup(): void {
    super.cleanup();
    this.#state = 'done';
  }

  protected step(frame: Uint8Array, env: Envelope): void {
    switch (this.#state) {
      case 'login':
        if (env.type !== MsgType.login) this.unexpected(env, this.#state);
        return this.#login(frame, env);
      case 'finish':
        this.ch = this.hs!.acceptFinish(frame, env);
        this.#state = 'channel';
        return;
      case 'channel': {
        if (env.type !== MsgType.pwConfirm) this.unexpected(env, this.#state);
        const { gen } = parsePwConfirm(this.ch!.open(env));
        if (!this.deps.store.confirm(this.#user, gen)) {
          throw new ProtocolError('BIZ_CONFIRM_MISMATCH', `generation ${gen} is not the account's current one`);
        }
        this.opts.log.info('password confirmed', { user: this.#user, gen });
        this.opts.metrics?.event('password_confirmed');
        this.send(this.ch!.seal(MsgType.pwConfirmAck, [gen]));
        this.#state = 'done';
        return;
      }
      default:
        this.unexpected(env, this.#state);
    }
  }

  #login(frame: Uint8Array, env: Envelope): void {
    const login = parseLogin(env.body);
    const now = this.deps.now?.() ?? Date.now();
    const mech = mechanisms[login.mech];
    const choice = mech?.lookup(this.deps.store, login, now) ?? null;
    const hs = (this.hs = new ServerHandshake(this.opts.name));
    hs.acceptOpening(frame, env, loginOpening(login), choice?.key ?? null);
    choice?.key.fill(0);
    // S0.11: "received, verifying" before the verdict.
    this.send(hs.clear(MsgType.loginAck, []));
    const refuse = (code: string, reason: string) => {
      this.opts.log.info('login refused', { code, user: login.user, gen: login.gen, mech: login.mech, ip: this.transport.observedIp });
      this.opts.metrics?.event('login_refused', code);
      this.send(hs.clear(MsgType.loginFail, [code, reason]));
      this.end(CloseCode.policy, code);
    };
    if (!mech) return refuse('BIZ_MECH_UNSUPPORTED', `mechanism '${login.mech}' is not offered by this server`);
    if (!hs.verifyOpening() || !choice) return refuse('BIZ_AUTH_FAILED', 'authentication failed');
    // After the MAC: an unauthenticated login cannot fill the cache (docs/protocol.md §8).
    this.deps.replay.assertFresh(login.mac);
    if (choice.account.status !== 'active') return refuse('BIZ_ACCOUNT_DISABLED', 'this account is disabled');
    // S0.14: the first login with the pending generation makes it current. Compare-and-set:
    // if a newer rotation replaced the pending key meanwhile, this login is refused and the
    // device still holds the current secret.
    if (choice.pending && !this.deps.store.promote(login.user, login.gen, now)) return refuse('BIZ_AUTH_FAILED', 'authentication failed');
    this.#user = login.user;
    this.opts.metrics?.event('login_ok');
    if (choice.pending) this.opts.metrics?.event('password_promoted');
    this.opts.log.info('login ok', { user: login.user, gen: login.gen, mech: login.mech, promoted: choice.pending, ip: this.transport.observedIp, via: this.transport.via });
    this.send(hs.proof(MsgType.loginOk));
    this.#state = 'finish';
  }
}
