// Login mechanisms of the business server (S0.11; S3.3). The login opening states the person
// mechanism the bank request that follows will prove (S3.2: password, one-time code or
// fingerprint, so the gateway can count attacks per mechanism, S3.4); whatever it states, the
// device proves itself the same way: the MAC under the login key of its business secret. So
// every mechanism the site offers maps to the same key lookup, and one it does not offer is
// refused (BIZ_MECH_UNSUPPORTED) before any lookup. The person's own proof is the bank's to
// check (biz-server/bank.ts), on the sealed channel.
//
// A lookup of an unknown user or generation gives null, which the handshake treats exactly like
// a wrong MAC (it still runs the MAC, under a dummy key), so a prober can tell neither by the
// answer nor by its timing which users or generations exist.
import { MECHANISMS, type Login, type Mechanism } from '../protocol/messages.ts';
import { ImplementationError } from '../protocol/errors.ts';
import type { BizStore, LoginKey } from './store.ts';
import type { Awaitable } from '../server-kit/store-choice.ts';

export interface LoginMechanism {
  /**
   * The key this login's MAC must verify under, or null. Must do the same work for every
   * answer (issue 10: the time a refusal takes must not say which users or generations exist).
   */
  lookup(store: BizStore, login: Login, now: number): Awaitable<LoginKey | null>;
}

/**
 * The device key (machine-generated secret): the stored login key of generation `gen`, which
 * must be the account's current one or its usable pending one (two-phase rotation, S0.14). The
 * store's loginKey does one read and one unwrap whatever it finds.
 */
export const deviceKeyLookup: LoginMechanism = {
  lookup: (store, login, now) => store.loginKey(login.user, login.gen, now),
};
/** The name it had when password was the only mechanism served. */
export const passwordMechanism = deviceKeyLookup;

/**
 * The mechanism table of a site offering `offered` (default all three, as the attack table's
 * initial entry, deploy/config.ts DEFAULT_INITIAL_TABLE). Throws ImplementationError
 * BIZ_BAD_MECHANISMS for an empty offer or an unknown name.
 */
export function mechanismsFor(offered: readonly Mechanism[] = MECHANISMS): Partial<Record<Mechanism, LoginMechanism>> {
  if (offered.length === 0 || !offered.every((m) => (MECHANISMS as readonly string[]).includes(m))) throw new ImplementationError('BIZ_BAD_MECHANISMS', `a site offers some of ${MECHANISMS.join(', ')}`);
  return Object.fromEntries(offered.map((m) => [m, deviceKeyLookup]));
}

export const mechanisms = mechanismsFor();
