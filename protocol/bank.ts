// The bank exchange (S4.1-S4.8; docs/protocol.md §6.4): one request and one answer on the
// sealed channel of a completed business login (S4.5), after pwConfirm/pwConfirmAck. Two
// state machines that do no I/O:
//
//   client (main program)                               server (business server = the bank)
//   bankRegister [name, password, ids, ?fpKey] ->        request event; the caller verifies
//   | bankLogin  [name, mech, proof, ids]     ->         (scrypt, TOTP, Ed25519, operator, store)
//   | bankRebind [name, password, ids]        ->         and answers
//                                             <-         bankRegistered | bankPage | bankRefused
//   the flow ends (S4.7): the server closes (1000, or the refusal's close code)
//
// A fingerprint proof covers this session (S3.3, §17): the client makes it only once it holds
// the channel (its exporter, §5.4), and the server checks it over its own end's exporter, which
// the login event carries. A proof the phone cannot make (another finger, no seed, ...) ends the
// flow on the phone with nothing sent (`no-proof`).
//
// The client runs as LoginClient's `then` (protocol/exchange.ts ChannelClient); the server is
// built on the channel LoginServer.takeChannel() hands on, and owns it from then on.
import type { SecureChannel } from './channel.ts';
import type { ChannelClient, ChannelStep } from './exchange.ts';
import { unexpected, type Envelope } from './messages.ts';
import { BankMessages, type BankEnrol, type BankLogin, type BankPage, type BankRegistered } from './bank-messages.ts';
import { ImplementationError, CloseCode, ERRORS, type ErrorCode } from './errors.ts';
import { PERSON_BINDING_LABEL, type PersonProof } from './person.ts';
import type { LineIds } from './bank-messages.ts';

const M = BankMessages;

/** The codes a bankRefused may carry (protocol/errors.ts BANK_*, and the site's person-layer verdicts PERSON_*, S3.3). */
export type BankRefusalCode = Extract<ErrorCode, `BANK_${string}` | 'PERSON_PROOF_FAILED' | 'PERSON_OTP_REPLAYED' | 'PERSON_OTP_SKEW'>;

/** What a phone's prover answers (firmware/person-proof.ts personProof): the proof, or why there is none (a device-local PERSON_* code). */
export type ProverResult = { ok: true; proof: PersonProof } | { ok: false; code: ErrorCode; detail: string };

// ---- client ----

/**
 * What the phone asks the bank. `prove`: a login with a one-time code or a fingerprint, whose
 * proof is made once the channel is up: `prove(binding)` gets the channel binding
 * (exporter(PERSON_BINDING_LABEL), 32 bytes) for a fingerprint, null for a code.
 */
export type BankRequest =
  | ({ kind: 'register' } & BankEnrol)
  | ({ kind: 'rebind' } & BankEnrol)
  | ({ kind: 'login' } & BankLogin)
  /** `password`: the person's, sent with a one-time code (password-verification, S3.3); none with a fingerprint. */
  | { kind: 'prove'; name: string; mech: 'otp' | 'fingerprint'; ids: LineIds; password?: string; prove(binding: Uint8Array | null): ProverResult };

/** How the bank step ended for the phone. */
export type BankOutcome =
  | { kind: 'registered'; registered: BankRegistered }
  | { kind: 'page'; page: BankPage }
  /** The "login not allowed" notice (S4.7) or a refused registration: the code and the bank's reason. */
  | { kind: 'refused'; code: string; reason: string }
  /** The phone could not make the person's proof (device-local PERSON_* code): nothing was sent. */
  | { kind: 'no-proof'; code: string; reason: string };

/** The phone's side: sends its request on the channel, takes the one answer. */
export class BankClient implements ChannelClient<BankOutcome> {
  #ch: SecureChannel | null = null;
  #state: 'start' | 'answer' | 'done' = 'start';

  constructor(private readonly req: BankRequest) {}

  start(ch: SecureChannel): ChannelStep<BankOutcome> {
    if (this.#state !== 'start') throw new ImplementationError('EXCHANGE_STATE', `BankClient.start() in state ${this.#state}`);
    this.#ch = ch;
    this.#state = 'answer';
    const r = this.req;
    if (r.kind === 'prove') {
      const binding = r.mech === 'fingerprint' ? ch.exporter(PERSON_BINDING_LABEL) : null;
      const p = r.prove(binding);
      binding?.fill(0);
      if (!p.ok) {
        this.#state = 'done';
        return { send: [], done: { kind: 'no-proof', code: p.code, reason: p.detail } };
      }
      if (p.proof.mech === 'otp' && !r.password) throw new ImplementationError('EXCHANGE_STATE', 'a one-time code login needs the person\'s password too');
      const l: BankLogin = p.proof.mech === 'otp' ? { name: r.name, mech: 'otp', proof: p.proof.code, password: new TextEncoder().encode(r.password), ids: r.ids } : { name: r.name, mech: 'fingerprint', proof: p.proof.signature, ids: r.ids };
      if (l.mech !== r.mech) throw new ImplementationError('EXCHANGE_STATE', `the prover made a ${l.mech} proof for a ${r.mech} login`);
      return { send: [ch.seal(M.bankLogin.type, M.bankLogin.encode(l))] };
    }
    const frame = r.kind === 'login' ? ch.seal(M.bankLogin.type, M.bankLogin.encode(r)) : r.kind === 'register' ? ch.seal(M.bankRegister.type, M.bankRegister.encode(r)) : ch.seal(M.bankRebind.type, M.bankRebind.encode(r));
    // The proof is sealed in the frame now: nothing keeps a copy (a password string cannot be wiped).
    if (r.kind === 'login' && r.proof instanceof Uint8Array) r.proof.fill(0);
    return { send: [frame] };
  }

  receive(env: Envelope): ChannelStep<BankOutcome> {
    if (this.#state !== 'answer') throw unexpected(env.type, this.#state);
    const ch = this.#ch!;
    const want = this.req.kind === 'login' || this.req.kind === 'prove' ? M.bankPage.type : M.bankRegistered.type;
    if (env.type !== want && env.type !== M.bankRefused.type) throw unexpected(env.type, this.#state);
    const inner = ch.open(env);
    this.#state = 'done';
    if (env.type === M.bankRefused.type) {
      const r = M.bankRefused.decode(inner);
      return { send: [], done: { kind: 'refused', code: r.code, reason: r.reason } };
    }
    if (env.type === M.bankPage.type) return { send: [], done: { kind: 'page', page: M.bankPage.decode(inner) } };
    return { send: [], done: { kind: 'registered', registered: M.bankRegistered.decode(inner) } };
  }
}

// ---- server ----

/**
 * The request the server machine hands its caller, who does the slow work and calls answer().
 * A fingerprint login carries this end's channel binding (exporter(PERSON_BINDING_LABEL), §5.4):
 * what the signature must cover; null for the other mechanisms.
 */
export type BankServerEvent =
  | { kind: 'register'; req: BankEnrol }
  | { kind: 'rebind'; req: BankEnrol }
  | { kind: 'login'; req: BankLogin; binding: Uint8Array | null };

/** The caller's verdict on the request. */
export type BankAnswer =
  | { kind: 'registered'; registered: BankRegistered }
  | { kind: 'page'; page: BankPage }
  | { kind: 'refused'; code: BankRefusalCode; reason: string };

/** The flow ends after the answer (S4.7): close with `closeCode`. */
export interface BankServerDone {
  kind: 'registered' | 'page' | 'refused';
  code?: BankRefusalCode;
  closeCode: CloseCode;
}
export interface BankServerStep {
  send: Uint8Array[];
  event?: BankServerEvent;
  done?: BankServerDone;
}

/**
 * The bank's side, on the channel of a confirmed business login. receive() takes the one
 * request and returns it as an event (throws ProtocolError for anything else, like every
 * machine); answer() seals the verdict and ends the flow. It owns the channel: abort() wipes it.
 */
export class BankServer {
  #state: 'request' | 'verifying' | 'done' = 'request';
  #kind: BankServerEvent['kind'] | null = null;

  constructor(private readonly ch: SecureChannel) {}

  get state(): string {
    return this.#state;
  }

  get nextSendSeq(): number {
    return this.ch.nextSendSeq;
  }

  receive(env: Envelope): BankServerStep {
    if (this.#state !== 'request') throw unexpected(env.type, this.#state);
    let event: BankServerEvent;
    if (env.type === M.bankRegister.type) event = { kind: 'register', req: M.bankRegister.decode(this.ch.open(env)) };
    else if (env.type === M.bankRebind.type) event = { kind: 'rebind', req: M.bankRebind.decode(this.ch.open(env)) };
    else if (env.type === M.bankLogin.type) {
      const req = M.bankLogin.decode(this.ch.open(env));
      event = { kind: 'login', req, binding: req.mech === 'fingerprint' ? this.ch.exporter(PERSON_BINDING_LABEL) : null };
    }
    else throw unexpected(env.type, this.#state);
    this.#kind = event.kind;
    this.#state = 'verifying';
    return { send: [], event };
  }

  /** Seals the verdict on the request receive() returned; ImplementationError EXCHANGE_STATE otherwise or for an answer of the wrong kind. */
  answer(a: BankAnswer): BankServerStep {
    if (this.#state !== 'verifying') throw new ImplementationError('EXCHANGE_STATE', `answer() in state ${this.#state}`);
    const fits = a.kind === 'refused' || (a.kind === 'page') === (this.#kind === 'login');
    if (!fits) throw new ImplementationError('EXCHANGE_STATE', `a ${a.kind} answer to a ${this.#kind} request`);
    let frame: Uint8Array;
    let done: BankServerDone;
    if (a.kind === 'refused') {
      frame = this.ch.seal(M.bankRefused.type, M.bankRefused.encode({ code: a.code, reason: a.reason }));
      done = { kind: 'refused', code: a.code, closeCode: ERRORS[a.code].close };
    } else if (a.kind === 'page') {
      frame = this.ch.seal(M.bankPage.type, M.bankPage.encode(a.page));
      done = { kind: 'page', closeCode: CloseCode.normal };
    } else {
      frame = this.ch.seal(M.bankRegistered.type, M.bankRegistered.encode(a.registered));
      done = { kind: 'registered', closeCode: CloseCode.normal };
    }
    this.abort();
    return { send: [frame], done };
  }

  /** Ends the flow and wipes the channel's keys. Idempotent. */
  abort(): void {
    this.#state = 'done';
    this.ch.close();
  }
}
