// Login mechanisms of the business server (S0.11; S3.3 adds fingerprint and one-time code).
// A mechanism maps a login opening to the key its MAC must verify under. Unknown user or
// generation gives null, which the handshake treats exactly like a wrong MAC, so a prober
// cannot tell which users exist. New mechanisms (and the device-identity check of S4 on
// `login.ext`) plug in as rows of this table.
import type { Login, Mechanism } from '../protocol/messages.ts';
import { pendingUsable, type Account, type BizStore } from './store.ts';

export interface KeyChoice {
  account: Account;
  key: Uint8Array;
  /** The login uses the pending generation: promote it once verified. */
  pending: boolean;
}

export interface LoginMechanism {
  lookup(store: BizStore, login: Login, now: number): KeyChoice | null;
}

/**
 * Password (machine-generated secret): the stored login key of generation `gen`, which must
 * be the account's current one or its usable pending one (two-phase rotation, S0.14).
 */
export const passwordMechanism: LoginMechanism = {
  lookup(store, login, now) {
    const a = store.getByUser(login.user);
    if (!a) return null;
    if (login.gen === a.currentGen && a.currentKey) return { account: a, key: a.currentKey, pending: false };
    if (login.gen === a.pendingGen && a.pendingKey && pendingUsable(a, now)) return { account: a, key: a.pendingKey, pending: true };
    return null;
  },
};

export const mechanisms: Partial<Record<Mechanism, LoginMechanism>> = {
  password: passwordMechanism,
};
