// TEST ONLY (issue 13): the switches of the conformance suite's mutant servers. Each breaks one
// rule of docs/protocol.md in the project's own servers so that conformance/mutants.test.ts can
// show a named conformance case catches it. Set only through StackOptions.mutant /
// RegConfig.mutant / BizConfig.mutant by that test; no configuration file, environment
// variable or CLI option reaches them, and unset (always, in production) they change nothing.
import { Decoder } from 'cbor-x';
import { ReplayCache } from '../protocol/replay.ts';
import { decodeEnvelope, MsgType, type Envelope } from '../protocol/messages.ts';
import type { CborValue } from '../protocol/cbor.ts';
import type { SecureChannel } from '../protocol/channel.ts';
import type { BankAnswer } from '../protocol/bank.ts';
import type { BankLogin } from '../protocol/bank-messages.ts';

export type Mutant =
  /** §8: the replay cache forgets everything (reg-server/server.ts, biz-server/server.ts). */
  | 'skip-replay-cache'
  /** §8: a frame whose seq is not above the last one is silently dropped instead of refused (server-kit/session.ts). */
  | 'ignore-old-seq'
  /** §7 (S0.7): the error frame is sent but the connection is left open (server-kit/session.ts). */
  | 'no-close-after-refusal'
  /** §6.4: a pending generation is promoted at the verified opening, not at the finish (biz-server/session.ts). */
  | 'promote-at-opening'
  /** §4.1, §15: an envelope of version 0 is read as version 1 (server-kit/session.ts). */
  | 'accept-version-0'
  /** §7: a device's error frame is answered (with MSG_UNEXPECTED) instead of ending the session in silence (server-kit/session.ts). */
  | 'answer-device-error'
  /** §3: a frame that is not in the deterministic profile (non-shortest heads, keys out of order) is read anyway (server-kit/session.ts). */
  | 'lenient-cbor'
  /** §5.2: the server's proof (the MAC of helloReply and loginOk) is wrong: its last byte flipped (server-kit/session.ts). */
  | 'wrong-server-proof'
  /** §7 (S0.7): after an error frame the session goes on: the frames that follow are handled (server-kit/session.ts). */
  | 'accept-after-error'
  /** §12, issue 10: a refused hello's error frame says why (the log-only fields): a forged token and a wrong MAC are told apart before authentication (server-kit/session.ts). */
  | 'explain-bad-hello'
  /** §10: the old password stays valid after a promotion: two generations log in forever (biz-server/server.ts wraps the store). */
  | 'keep-old-password'
  /** §12, §13: the serial crosses in clear: the close reason after credReply names it (reg-server/session.ts). */
  | 'leak-serial'
  /** §16 (S3.11): the table handed on in credReply is altered (its last byte flipped): no longer the policy server's signature (reg-server/session.ts). */
  | 'altered-table'
  /** §6.5: a bank request is taken after the finish, before pwConfirm/pwConfirmAck (biz-server/session.ts, one line). */
  | 'bank-before-confirm'
  /** §6.5 step 3: a wrong password and an unknown login name get different notices (biz-server/server.ts wraps the bank). */
  | 'bank-name-oracle'
  /** §6.5, S4.7: the flow does not end after the bank's answer: the channel stays open (biz-server/session.ts, one line). */
  | 'bank-no-close';

export const MUTANTS: readonly Mutant[] = [
  'skip-replay-cache', 'ignore-old-seq', 'no-close-after-refusal', 'promote-at-opening', 'accept-version-0', 'answer-device-error', 'lenient-cbor',
  'wrong-server-proof', 'accept-after-error', 'explain-bad-hello', 'keep-old-password', 'leak-serial', 'altered-table', 'bank-before-confirm', 'bank-name-oracle', 'bank-no-close',
];

/**
 * 'lenient-cbor': an envelope read with a general CBOR decoder, as a server without the strict
 * profile would; null when even that cannot read it.
 */
export function lenientEnvelope(frame: Uint8Array): Envelope | null {
  try {
    const v = lenient.decode(frame) as unknown;
    if (!Array.isArray(v) || v.length !== 5 || typeof v[1] !== 'number' || typeof v[2] !== 'number' || typeof v[3] !== 'string') return null;
    return { version: v[0] as number, type: v[1], seq: v[2], dest: v[3], body: v[4] as CborValue };
  } catch {
    return null;
  }
}
const lenient = new Decoder({ useRecords: false, mapsAsObjects: false } as ConstructorParameters<typeof Decoder>[0]);

/** A replay cache that never refuses ('skip-replay-cache'). */
export class ForgetfulReplayCache extends ReplayCache {
  override assertFresh(): void {}
}

/** The replay cache of a server: the real one unless the mutant says otherwise. */
export const replayCacheFor = (mutant: Mutant | undefined): ReplayCache => (mutant === 'skip-replay-cache' ? new ForgetfulReplayCache() : new ReplayCache());

/** 'accept-version-0': a frame [0, ...] read as [1, ...] (0x85 0x00 -> 0x85 0x01); any other frame as is. */
export function acceptVersion0(frame: Uint8Array): Uint8Array {
  if (frame[0] !== 0x85 || frame[1] !== 0x00) return frame;
  const f = Uint8Array.from(frame);
  f[1] = 0x01;
  return f;
}

/** 'wrong-server-proof': a helloReply or loginOk with the last byte of its MAC flipped (the body ends with the MAC); any other frame as is. */
export function wrongProof(frame: Uint8Array): Uint8Array {
  const type = decodeEnvelope(frame).type;
  if (type !== MsgType.helloReply && type !== MsgType.loginOk) return frame;
  const f = Uint8Array.from(frame);
  f[f.length - 1]! ^= 0x01;
  return f;
}

/** 'explain-bad-hello': the peer's reason with the fields meant only for the log line appended. */
export const explainedReason = (reason: string, logOnly: Record<string, unknown>): string => (Object.keys(logOnly).length ? `${reason} (${Object.values(logOnly).join(', ')})` : reason);

/** 'altered-table': the signed table with its last byte (of the signature) flipped. */
export function alteredTable(table: Uint8Array): Uint8Array {
  const t = Uint8Array.from(table);
  t[t.length - 1]! ^= 0x01;
  return t;
}

/** What 'keep-old-password' needs of the business store (biz-server/store.ts BizStore). */
interface GenerationStore {
  getByUser(user: string): { currentGen: number } | null;
  loginKey(user: string, gen: number, now: number): { key: Uint8Array; pending: boolean; active: boolean } | null;
  promote(user: string, gen: number, now?: number): boolean;
}

/**
 * 'keep-old-password': the store as the sessions see it, remembering the login key of every
 * generation a promotion replaced and answering a login with it as if it were still current.
 */
export function keepOldPasswords<S extends GenerationStore>(store: S): S {
  const retired = new Map<string, Uint8Array>();
  return new Proxy(store, {
    get(t, p) {
      if (p === 'promote') {
        return (user: string, gen: number, now = Date.now()) => {
          const cur = t.getByUser(user)?.currentGen ?? 0;
          const old = cur > 0 ? t.loginKey(user, cur, now) : null;
          const ok = t.promote(user, gen, now);
          if (ok && old) retired.set(`${user}/${cur}`, old.key);
          else old?.key.fill(0);
          return ok;
        };
      }
      if (p === 'loginKey') {
        return (user: string, gen: number, now: number) => {
          const k = t.loginKey(user, gen, now);
          const old = retired.get(`${user}/${gen}`);
          return k ?? (old ? { key: Uint8Array.from(old), pending: false, active: true } : null);
        };
      }
      const v = Reflect.get(t, p, t) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
    },
  });
}

/** 'bank-before-confirm': whether a frame type is a bank request (bankRegister, bankLogin, bankRebind). */
export const isBankRequest = (type: number): boolean => type === MsgType.bankRegister || type === MsgType.bankLogin || type === MsgType.bankRebind;

/** 'bank-before-confirm': the login machine's channel, taken before the confirmation its takeChannel() waits for. */
export const channelBeforeConfirm = (exchange: object): SecureChannel => (exchange as { ch: SecureChannel }).ch;

/**
 * 'bank-name-oracle': the bank's login, with a refusal for an unknown login name told apart
 * from a wrong password (its reason says so).
 */
export function nameOracle<B extends { login(who: never, req: BankLogin, ...rest: never[]): Promise<BankAnswer> }>(bank: B, knownName: (name: string) => boolean | Promise<boolean>): B {
  const login = bank.login.bind(bank) as unknown as (...a: unknown[]) => Promise<BankAnswer>;
  (bank as unknown as { login: (...a: unknown[]) => Promise<BankAnswer> }).login = async (...a: unknown[]) => {
    const r = await login(...a);
    const req = a[1] as BankLogin;
    return r.kind === 'refused' && r.code === 'BANK_BAD_CREDENTIALS' && !(await knownName(req.name)) ? { ...r, reason: 'no account has this login name' } : r;
  };
  return bank;
}
