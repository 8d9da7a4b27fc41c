// Login mechanisms of the business server (S0.11; S3.3 adds fingerprint and one-time code).
// A mechanism maps a login opening to the key its MAC must verify under. Unknown user or
// generation gives null, which the handshake treats exactly like a wrong MAC (it still runs
// the MAC, under a dummy key), so a prober can tell neither by the answer nor by its timing
// which users or generations exist. New mechanisms (and the device-identity check of S4 on
// `login.ext`) plug in as rows of this table.
import type { Login, Mechanism } from '../protocol/messages.ts';
import type { BizStore, LoginKey } from './store.ts';

export interface LoginMechanism {
  /**
   * The key this login's MAC must verify under, or null. Must do the same work for every
   * answer (issue 10: the time a refusal takes must not say which users or generations exist).
   */
  lookup(store: BizStore, login: Login, now: number): LoginKey | null;
}

/**
 * Password (machine-generated secret): the stored login key of generation `gen`, which must
 * be the account's current one or its usable pending one (two-phase rotation, S0.14). The
 * store's loginKey does one read and one unwrap whatever it finds.
 */
export const passwordMechanism: LoginMechanism = {
  lookup: (store, login, now) => store.loginKey(login.user, login.gen, now),
};

export const mechanisms: Partial<Record<Mechanism, LoginMechanism>> = {
  password: passwordMechanism,
};
