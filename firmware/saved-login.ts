// The login the phone keeps in its hidden zone (S0.10, S0.12-S0.14), as a CBOR record the
// power-cut-safe record store seals with a fuse-derived key.
//
// It holds up to two secrets, each with its generation at the business server: the one the
// business server holds as current, and the newest one the registration server issued
// (pending until the phone logs in with it). The phone saves a secret before it ever uses
// it, and drops the older one only after a login with the newer succeeded, so whatever the
// power, the network or a server does in between, one of the two still logs in.
import { encode, decode, type CborValue } from '../protocol/cbor.ts';
import { array, bytes, text, uint, parseServerEntry, serverEntryBody, SECRET_BYTES, USER_RE, DEST_RE, type CredReply, type ServerChoice } from '../protocol/messages.ts';
import { ProtocolError } from '../protocol/errors.ts';

export interface Secret {
  gen: number;
  secret: Uint8Array;
}

export interface SavedLogin {
  user: string;
  /** Newest generation first. */
  secrets: Secret[];
  servers: ServerChoice[];
  /** The server the last successful login used (S0.12: its address and port). */
  lastServer: string | null;
}

const RECORD_VERSION = 1;

export function encodeSavedLogin(s: SavedLogin): Uint8Array {
  return encode([
    RECORD_VERSION,
    s.user,
    s.secrets.map((x) => [x.gen, x.secret]),
    s.servers.map(serverEntryBody),
    s.lastServer,
  ]);
}

/** Decodes a saved record; throws ProtocolError (a SAVED_, MSG_ or CBOR_ code) if it is not one. */
export function decodeSavedLogin(b: Uint8Array): SavedLogin {
  const a = array(decode(b), 'savedLogin', 5);
  if (a[0] !== RECORD_VERSION) throw new ProtocolError('SAVED_VERSION', `saved login version ${String(a[0])}`);
  const secrets = array(a[2], 'savedLogin.secrets', 1, 2).map((e, i) => {
    const x = array(e, `secrets[${i}]`, 2);
    return { gen: uint(x[0], 'gen'), secret: bytes(x[1], 'secret', SECRET_BYTES) };
  });
  const servers = array(a[3], 'savedLogin.servers', 1, 8).map((e, i) => parseServerEntry(e, `savedLogin.servers[${i}]`));
  const last = a[4] === null ? null : text(a[4] as CborValue, 'lastServer', 32, DEST_RE);
  return { user: text(a[1], 'user', 64, USER_RE), secrets, servers, lastServer: last };
}

/**
 * What to save when a credential reply arrives (S0.10): the new secret, plus the secret of
 * the generation the business server still holds as current, if we have it.
 */
export function mergeCredReply(prev: SavedLogin | null, cred: CredReply): SavedLogin {
  const secrets: Secret[] = [{ gen: cred.gen, secret: cred.secret }];
  const keep = prev && prev.user === cred.user ? prev.secrets.find((s) => s.gen === cred.currentGen && s.gen !== cred.gen) : undefined;
  if (keep) secrets.push(keep);
  return { user: cred.user, secrets, servers: cred.servers, lastServer: prev?.lastServer ?? null };
}

/** After a successful login with `used` on `server` (S0.12, S0.14): keep only that secret. */
export function afterLogin(s: SavedLogin, used: Secret, server: string): SavedLogin {
  return { ...s, secrets: [used], lastServer: server };
}

/** Servers in the order to try: the last one that worked first (S0.13), then the rest. */
export function serverOrder(s: SavedLogin): ServerChoice[] {
  const last = s.servers.find((x) => x.name === s.lastServer);
  return last ? [last, ...s.servers.filter((x) => x !== last)] : s.servers;
}
