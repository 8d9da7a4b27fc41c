// One business login session (S0.11, S0.14), the server side: the adapter around
// protocol/login.ts's LoginServer. The machine runs the exchange (docs/protocol.md §6.3); this
// file keeps what needs the server: the mechanism table and the account store (key lookup,
// promotion, confirmation), the replay cache, logs and metrics. After pwConfirm, when the
// server is a bank (S4), the channel goes on to protocol/bank.ts's BankServer and the request
// to biz-server/bank.ts.
import { LoginServer, LoginMessages, type LoginLookup } from '../protocol/login.ts';
import { ProtocolError, ImplementationError } from '../protocol/errors.ts';
import { StoreWrites } from '../server-kit/store-writes.ts';
import { BankServer, type BankAnswer } from '../protocol/bank.ts';
import type { Bank } from './bank.ts';
import type { Envelope } from '../protocol/messages.ts';
import type { ReplayCache } from '../protocol/replay.ts';
import { OpeningCheck, type SharedReplay } from '../server-kit/shared-replay.ts';
import { ServerSession, type SessionOptions, type SessionTransport } from '../server-kit/session.ts';
import { mechanismsFor, type LoginMechanism } from './mechanisms.ts';
import { isBankRequest, channelBeforeConfirm } from '../server-kit/mutant.ts';
import type { BizStore, LoginKey } from './store.ts';
import type { Login, Mechanism } from '../protocol/messages.ts';

export interface BizServerSessionDeps {
  store: BizStore;
  replay: ReplayCache;
  /** The replay cache shared by the instances of this server (Redis, issue 16); none: this process's only. */
  sharedReplay?: SharedReplay;
  now?: () => number;
  /** The bank (S4): when set, one bank request may follow pwConfirm on the same channel. */
  bank?: Bank;
  /** The site's mechanism table (mechanisms.ts mechanismsFor); default all three mechanisms. */
  mechanisms?: Partial<Record<Mechanism, LoginMechanism>>;
}

const ALL = mechanismsFor();

export class BizServerSession extends ServerSession {
  protected readonly exchange: LoginServer;
  /** The clock reading of this login: the lookup and the promotion judge expiry at one instant. */
  #now = 0;
  /** TEST ONLY ('promote-at-opening' mutant): the generation was promoted at the opening already. */
  #promotedEarly = false;
  /** The bank machine, once the login handed its channel on. */
  #bank: BankServer | null = null;
  /** The completed login: its user, generation and the person mechanism its opening stated. */
  #login: { user: string; gen: number; mech: Mechanism } | null = null;
  /**
   * The lookup of the login frame being handled, made before the frame goes to the machine
   * (whose lookup is synchronous; on PostgreSQL the store answers with a promise).
   */
  #lookup: { login: Login; found: LoginLookup } | null = null;
  /** Store writes (promotion, confirmation) of one receive(), awaited before its reply is sent. */
  readonly #writes = new StoreWrites();
  readonly #opening: OpeningCheck;

  constructor(t: SessionTransport, opts: SessionOptions, private readonly deps: BizServerSessionDeps) {
    super(t, opts);
    const opening = (this.#opening = new OpeningCheck(deps.replay, deps.sharedReplay));
    this.exchange = new LoginServer(opts.name, {
      lookup: (login) => {
        const l = this.#lookup;
        this.#lookup = null;
        // step() looked up this very login; anything else is our bug, never a pass.
        if (!l || l.login.user !== login.user || l.login.gen !== login.gen || l.login.mech !== login.mech) throw new ImplementationError('EXCHANGE_STATE', 'login lookup not loaded for this frame');
        return l.found;
      },
      assertFresh: opening.assertFresh,
      promote: (user, gen) => this.#promotedEarly || this.#writes.verdict(deps.store.promote(user, gen, this.#now), () => new ProtocolError('BIZ_AUTH_FAILED', 'authentication failed')),
      confirm: (user, gen) => this.#writes.verdict(deps.store.confirm(user, gen), () => new ProtocolError('BIZ_CONFIRM_MISMATCH', `generation ${gen} is not the account's current one`)),
    });
  }

  protected override nextSendSeq(): number {
    return this.#bank?.nextSendSeq ?? this.exchange.nextSendSeq;
  }

  protected override cleanup(): void {
    this.#bank?.abort();
    super.cleanup();
  }

  protected async step(frame: Uint8Array, env: Envelope): Promise<void> {
    if (this.opts.mutant === 'bank-before-confirm' && !this.#bank && this.deps.bank && this.#login && isBankRequest(env.type)) this.#bank = new BankServer(channelBeforeConfirm(this.exchange));
    if (this.#bank) return this.#bankStep(env);
    if (env.type === LoginMessages.login.type && this.#login === null) {
      const loading = this.#loadLookup(env);
      if (loading) await loading;
    }
    let s;
    try {
      s = this.exchange.receive(frame, env);
    } finally {
      this.#wipeLookup();
      // The store answered (or the session fails) before the device hears anything.
      const flushing = this.#writes.flush();
      if (flushing) await flushing;
    }
    // loginAck goes at once (S0.11), as with a replay this process saw; loginOk waits until
    // every instance's cache said the login is new.
    const shared = this.#opening.settle();
    if (shared) {
      try {
        await shared;
      } catch (e) {
        this.send(s.send.slice(0, 1));
        throw e;
      }
    }
    const e = s.event;
    // The mutant promotes before the device hears loginOk, as a server that committed the
    // promotion at the opening would: on an asynchronous store (PostgreSQL) promoting after the
    // send let the next login race the commit, and the conformance case missed the mutant.
    if (!s.refuse && e?.kind === 'verified' && this.opts.mutant === 'promote-at-opening') this.#promotedEarly = await this.deps.store.promote(e.login.user, e.login.gen, this.#now);
    this.send(s.send);
    if (s.refuse) throw s.refuse;
    const ip = this.transport.observedIp;
    if (e?.kind === 'logged-in') {
      const l = e.login;
      this.#login = { user: l.user, gen: l.gen, mech: l.mech };
      this.opts.metrics?.event('login_ok');
      if (e.promoted) this.opts.metrics?.event('password_promoted');
      this.opts.log.info('login ok', { user: l.user, gen: l.gen, mech: l.mech, promoted: e.promoted, ip, via: this.transport.via });
    } else if (e?.kind === 'confirmed') {
      const a = await this.deps.store.generations(e.user);
      if (a && a.pendingGen !== null && a.pendingGen > e.gen) {
        // The device confirms the generation it fell back to while a newer one waits: the newer
        // one failed for it. Once is a lost frame; again and again, someone on its path makes
        // every login with the new password fail to keep the old one current (issue 9).
        this.opts.log.warn('rotation fallback', { user: e.user, gen: e.gen, pendingGen: a.pendingGen });
        this.opts.metrics?.event('rotation_fallback');
      } else {
        this.opts.log.info('password confirmed', { user: e.user, gen: e.gen });
        this.opts.metrics?.event('password_confirmed');
      }
      // S4.5: the bank request, if any, comes next on this channel.
      if (this.deps.bank) this.#bank = new BankServer(this.exchange.takeChannel());
    }
    if (s.done) {
      const { code, login: l } = s.done;
      this.opts.log.info('login refused', { code, user: l.user, gen: l.gen, mech: l.mech, ip });
      this.opts.metrics?.event('login_refused', code);
      this.end(s.done.closeCode, code);
    }
  }

  /**
   * The key lookup of a login frame, before the machine sees it: one store read per well-formed
   * login whatever it finds (issue 10), none for a mechanism the site does not offer (public).
   * A malformed frame is left to the machine to refuse. Synchronous (undefined) when the store is.
   */
  #loadLookup(env: Envelope): Promise<void> | undefined {
    let login: Login;
    try {
      login = LoginMessages.login.decode(env.body);
    } catch {
      return undefined;
    }
    this.#now = this.deps.now?.() ?? Date.now();
    const mech = (this.deps.mechanisms ?? ALL)[login.mech];
    if (!mech) {
      this.#lookup = { login, found: { kind: 'unsupported' } };
      return;
    }
    const keep = (c: LoginKey | null) => {
      this.#lookup = { login, found: c ? { kind: 'found', key: c.key, active: c.active, pending: c.pending } : { kind: 'unknown' } };
    };
    const c = mech.lookup(this.deps.store, login, this.#now);
    if (c instanceof Promise) return c.then(keep);
    keep(c);
    return undefined;
  }

  /** A looked-up key the machine did not take (it wipes the one it takes). */
  #wipeLookup(): void {
    if (this.#lookup?.found.kind === 'found') this.#lookup.found.key.fill(0);
    this.#lookup = null;
  }

  /** The one bank request: the machine hands it over, the bank decides (async), the machine seals the answer and the flow ends (S4.7). */
  async #bankStep(env: Envelope): Promise<void> {
    const m = this.#bank!;
    const r = m.receive(env);
    const ev = r.event!;
    const bank = this.deps.bank!;
    const l = this.#login!;
    const store = this.deps.store;
    // K_login of this session's generation, looked up again when the bank needs it (the
    // handshake wiped its copy): the one the phone's chip provisions the person layer under.
    const caller = { deviceUser: l.user, mech: l.mech, ip: this.transport.observedIp, loginKey: async () => (await store.loginKey(l.user, l.gen, this.deps.now?.() ?? Date.now()))?.key ?? null };
    let a: BankAnswer;
    if (ev.kind === 'register') a = await bank.register(caller, ev.req);
    else if (ev.kind === 'rebind') a = await bank.rebind(caller, ev.req);
    else a = await bank.login(caller, ev.req, ev.binding);
    if (this.ended) return;
    const s = m.answer(a);
    this.send(s.send);
    this.opts.metrics?.event(`bank_${ev.kind}`, s.done!.code ?? 'ok');
    if (this.opts.mutant !== 'bank-no-close') this.end(s.done!.closeCode, s.done!.code ?? 'bank done');
  }
}
