// The login the phone keeps (S0.10, S0.12-S0.14), in two parts:
// - the business secrets, in the chip's business slot (firmware/secure/): up to two
//   generations, imported wrapped from the credential reply, never readable; and
// - the saved-login record, sealed by the chip in the hidden zone's record store: the user,
//   the business servers to try and the one that last worked. No secret is in it.
//
// The secrets: the one the business server holds as current, and the newest one the
// registration server issued (pending until the phone logs in with it). The phone imports a
// secret before it ever uses it, and retires the older one only after a server accepted the
// newer, so whatever the power, the network or a server does in between, one still logs in.
import { encode, decode, type CborValue } from '../protocol/cbor.ts';
import { array, bytes, text, parseServerEntry, serverEntryBody, USER_RE, DEST_RE, CRED_TABLE_MAX_BYTES, type CredReply, type ServerChoice } from '../protocol/messages.ts';
import { ProtocolError } from '../protocol/errors.ts';
import type { RecordStorage, StorageResult } from './storage.ts';

/** What the record holds. */
export interface SavedLoginRecord {
  user: string;
  servers: ServerChoice[];
  /** The server the last successful login used (S0.12: its address and port). */
  lastServer: string | null;
  /**
   * S3.11: the newest signed attack statistics table the phone accepted (protocol/attack-table.ts,
   * verified before it was saved: firmware/policy-table.ts), or null when it never got one.
   * Kept in this sealed record, so a host cannot roll it back to an older, valid one.
   */
  table: Uint8Array | null;
}

/** What the phone's programs use: the storage seam with the saved-login record. */
export type PhoneStorage = RecordStorage<SavedLoginRecord>;

/** The record with the generations the chip holds for its user: what the main program plans with. */
export interface SavedLogin extends SavedLoginRecord {
  /** Newest first; the secrets themselves stay in the chip. */
  gens: number[];
}

/**
 * Version 3 adds the attack table (S3.11); version 2 (no table) still reads, as table null.
 * (Version 1 held the secrets; they moved to the chip's slot.)
 */
const RECORD_VERSION = 3;

export function encodeSavedLogin(s: SavedLoginRecord): Uint8Array {
  return encode([RECORD_VERSION, s.user, s.servers.map(serverEntryBody), s.lastServer, s.table]);
}

/** Decodes a saved record; throws ProtocolError (a SAVED_, MSG_ or CBOR_ code) if it is not one. */
export function decodeSavedLogin(b: Uint8Array): SavedLoginRecord {
  const v = decode(b);
  const version = Array.isArray(v) ? v[0] : undefined;
  if (version !== 2 && version !== RECORD_VERSION) throw new ProtocolError('SAVED_VERSION', `saved login version ${String(version)}`);
  const a = array(v, 'savedLogin', version === 2 ? 4 : 5);
  const servers = array(a[2], 'savedLogin.servers', 1, 8).map((e, i) => parseServerEntry(e, `savedLogin.servers[${i}]`));
  const last = a[3] === null ? null : text(a[3] as CborValue, 'lastServer', 32, DEST_RE);
  const table = version === 2 || a[4] === null ? null : bytes(a[4], 'savedLogin.table', 1, CRED_TABLE_MAX_BYTES);
  return { user: text(a[1], 'user', 64, USER_RE), servers, lastServer: last, table };
}

/** The record to save when a credential reply arrives (S0.10); its secret goes to the chip. */
export function mergeCredReply(prev: SavedLoginRecord | null, cred: CredReply, table: Uint8Array | null = prev?.table ?? null): SavedLoginRecord {
  return { user: cred.user, servers: cred.servers, lastServer: prev && prev.user === cred.user ? prev.lastServer : null, table };
}

/** The record after a successful login on `server` (S0.12). */
export function afterLogin(s: SavedLoginRecord, server: string): SavedLoginRecord {
  return { user: s.user, servers: s.servers, lastServer: server, table: s.table };
}

/** Servers in the order to try: the last one that worked first (S0.13), then the rest. */
export function serverOrder(s: SavedLoginRecord): ServerChoice[] {
  const last = s.servers.find((x) => x.name === s.lastServer);
  return last ? [last, ...s.servers.filter((x) => x !== last)] : s.servers;
}

/**
 * The saved login as the main program uses it: the record, and the generations the chip holds
 * for the record's user. `value: null` when there is no record or the chip holds no secret of
 * that user (nothing to log in with).
 */
export function loadSaved(storage: RecordStorage<SavedLoginRecord>): StorageResult<SavedLogin | null> {
  const r = storage.loadLogin();
  if (!r.ok || !r.value) return r as StorageResult<null>;
  return withGens(storage, r.value);
}

/**
 * `record` with the generations the chip holds for its user, as loadSaved gives it: for a record
 * just saved (the store's write reads its slot back and compares it byte for byte before it
 * answers OK, firmware/zones/hidden.ts RecordStore.write, so reading it again would give the same
 * record). `value: null` when the chip holds no secret of that user.
 */
export function withGens(storage: RecordStorage<SavedLoginRecord>, record: SavedLoginRecord): StorageResult<SavedLogin | null> {
  const s = storage.secrets();
  if (!s.ok) return s;
  if (!s.value || s.value.user !== record.user) return { ok: true, value: null };
  return { ok: true, value: { ...record, gens: s.value.gens } };
}
