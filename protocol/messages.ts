// Message shapes and validators (docs/protocol.md §"Messages" gives the CDDL).
// Every frame is an envelope [version, type, seq, dest, body]. Handshake bodies travel in
// clear (they carry only nonces, MACs and the opaque encrypted serial); after the handshake
// the body is the AEAD ciphertext of the inner message (channel.ts). Each validator returns
// a typed value or throws ProtocolError with a MSG_* code; byte strings it returns are
// copies, never views of the frame.
import { decode, encode, type CborValue } from './cbor.ts';
import { ProtocolError , type ErrorCode } from './errors.ts';
import { Limits, type CborLimits } from './limits.ts';
import { SERIAL_RE, SERIAL_TOKEN_MAX, SERIAL_TOKEN_MIN } from './keys.ts';

export const PROTOCOL_VERSION = 1;
export const NONCE_BYTES = 32;
export const MAC_BYTES = 32;
export const SECRET_BYTES = 32;

/** Message types. Numbers are wire values: never reuse one. */
export const MsgType = {
  hello: 1,
  helloReply: 2,
  finish: 3,
  credRequest: 10,
  credReply: 11,
  notFound: 12,
  login: 20,
  loginAck: 21,
  loginOk: 22,
  loginFail: 23,
  pwConfirm: 30,
  pwConfirmAck: 31,
  // The bank exchange (protocol/bank.ts, S4): sealed, after pwConfirmAck.
  bankRegister: 40,
  bankRegistered: 41,
  bankLogin: 42,
  bankPage: 43,
  bankRefused: 44,
  bankRebind: 45,
  // S3.11: the gateway's push of the policy server's newest signed attack table (clear; §16).
  tablePush: 50,
  // Issue 15 (docs/protocol.md §2.1): sessions in sequence on one device connection (clear,
  // between the device and the gateway, never forwarded to a server).
  sessions: 51,
  sessionEnd: 52,
  error: 255,
} as const;
export type MsgType = (typeof MsgType)[keyof typeof MsgType];
const typeNames = new Map<number, string>(Object.entries(MsgType).map(([k, v]) => [v, k]));
export function typeName(t: number): string {
  return typeNames.get(t) ?? `type-${t}`;
}
/** Types whose body is sealed (AEAD ciphertext of an inner message). */
export const SEALED_TYPES: ReadonlySet<number> = new Set([
  MsgType.credRequest, MsgType.credReply, MsgType.notFound, MsgType.pwConfirm, MsgType.pwConfirmAck,
  MsgType.bankRegister, MsgType.bankRegistered, MsgType.bankLogin, MsgType.bankPage, MsgType.bankRefused, MsgType.bankRebind,
]);

export const DEST_RE = /^[a-z0-9][a-z0-9-]{0,31}$/;
/** Business server address: ws:// or wss:// then printable ASCII without spaces. */
export const URL_RE = /^wss?:\/\/[!-~]+$/;

export interface Envelope {
  version: number;
  type: number;
  seq: number;
  dest: string;
  body: CborValue;
}

function bad(code: ErrorCode, message: string): never {
  throw new ProtocolError(code, message);
}

// ---- field readers: check the type, name the field, copy byte strings ----

export function uint(v: unknown, name: string, max = 0xffffffff): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) bad('MSG_BAD_FIELD', `${name} must be an integer 0..${max}`);
  return v;
}
export function bytes(v: unknown, name: string, min: number, max = min): Uint8Array {
  if (!(v instanceof Uint8Array)) bad('MSG_BAD_FIELD', `${name} must be a byte string`);
  if (v.length < min || v.length > max) bad('MSG_BAD_FIELD', `${name} must be ${min === max ? min : `${min}..${max}`} bytes, got ${v.length}`);
  return Uint8Array.from(v);
}
/** Length of a string in UTF-8 bytes, what CDDL's `.size` counts (RFC 8610 §3.8.1). */
export function utf8Length(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) n += 1;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 2; // a pair: 2 UTF-16 units, 4 UTF-8 bytes
        i++;
      } else n += 2;
    } else n += 2;
  }
  return n;
}
/** A text field of 1..max UTF-8 bytes, optionally matching `re` (anchored). */
export function text(v: unknown, name: string, max: number, re?: RegExp): string {
  if (typeof v !== 'string') bad('MSG_BAD_FIELD', `${name} must be a text string`);
  if (v.length === 0 || utf8Length(v) > max) bad('MSG_BAD_FIELD', `${name} must be 1..${max} bytes of UTF-8`);
  if (re && !re.test(v)) bad('MSG_BAD_FIELD', `${name} has characters outside ${re.source}`);
  return v;
}
export function array(v: unknown, name: string, min: number, max = min): unknown[] {
  if (!Array.isArray(v)) bad('MSG_BAD_SHAPE', `${name} must be an array`);
  if (v.length < min || v.length > max) bad('MSG_BAD_SHAPE', `${name} must have ${min === max ? min : `${min}..${max}`} items, got ${v.length}`);
  return v;
}
function intMap(v: unknown, name: string): Map<number, CborValue> {
  if (!(v instanceof Map)) bad('MSG_BAD_FIELD', `${name} must be a map`);
  for (const k of v.keys()) if (typeof k !== 'number' || !Number.isInteger(k) || k < 0) bad('MSG_BAD_FIELD', `${name} keys must be unsigned integers`);
  return v as Map<number, CborValue>;
}

// ---- envelope ----

/** Decodes a frame into its envelope; the body is left for the type's validator. */
export function decodeEnvelope(frame: Uint8Array, limits: CborLimits = Limits): Envelope {
  const v = decode(frame, limits);
  const a = array(v, 'envelope', 5);
  const version = a[0];
  if (version !== PROTOCOL_VERSION) bad('MSG_VERSION', `protocol version ${String(version)} is not ${PROTOCOL_VERSION}`);
  const type = uint(a[1], 'type', 255);
  if (!typeNames.has(type)) bad('MSG_UNKNOWN_TYPE', `unknown message type ${type}`);
  return { version, type, seq: uint(a[2], 'seq'), dest: text(a[3], 'dest', 32, DEST_RE), body: a[4] as CborValue };
}

export function encodeEnvelope(type: number, seq: number, dest: string, body: CborValue): Uint8Array {
  return encode([PROTOCOL_VERSION, type, seq, dest, body]);
}

/** The associated data of a sealed frame: the envelope without its body. */
export function headerBytes(type: number, seq: number, dest: string): Uint8Array {
  return encode([PROTOCOL_VERSION, type, seq, dest]);
}

// ---- handshake bodies (clear) ----

/** An opening as the server handshake takes it: the fields its MAC covers, then the client nonce and the MAC. */
export interface Opening {
  fields: CborValue[];
  nonce: Uint8Array;
  mac: Uint8Array;
}

/**
 * One message of an exchange's table (protocol/registration.ts, protocol/login.ts): its wire
 * type and the encoder paired with its decoder, so no call site builds a body by position.
 * `decode` throws ProtocolError MSG_BAD_SHAPE / MSG_BAD_FIELD.
 */
export interface MessageCodec<T> {
  readonly type: MsgType;
  encode(v: T): CborValue;
  decode(body: CborValue): T;
}
/**
 * An opening (hello, login): the handshake appends the client nonce and the MAC to the
 * fields; `opening` gives the server handshake what the MAC covers.
 */
export interface OpeningCodec<F, T extends F> {
  readonly type: MsgType;
  fields(v: F): CborValue[];
  decode(body: CborValue): T;
  opening(v: T): Opening;
}

/** The firmware measurement a hello attests: SHA-256 of the signed boot manifest's body (docs/protocol.md §6.2). */
export const MEASUREMENT_BYTES = 32;

/**
 * hello [token, measurement, nC, mac] (S0.5): the serial token and the firmware measurement
 * the chip took at power-on, both covered by the opening MAC (the chip's device-key policy
 * only MACs its own token and its own measurement: remote attestation, issue 9).
 */
export interface Hello { token: Uint8Array; measurement: Uint8Array; nonce: Uint8Array; mac: Uint8Array }
export function parseHello(body: CborValue): Hello {
  const a = array(body, 'hello', 4);
  return {
    token: bytes(a[0], 'hello.token', SERIAL_TOKEN_MIN, SERIAL_TOKEN_MAX),
    measurement: bytes(a[1], 'hello.measurement', MEASUREMENT_BYTES),
    nonce: bytes(a[2], 'hello.nonce', NONCE_BYTES),
    mac: bytes(a[3], 'hello.mac', MAC_BYTES),
  };
}

export interface HelloReply { nonce: Uint8Array; mac: Uint8Array }
/** Shared by helloReply (S0.5) and loginOk (S0.11): the server's nonce and its proof. */
export function parseServerProof(body: CborValue, name = 'helloReply'): HelloReply {
  const a = array(body, name, 2);
  return { nonce: bytes(a[0], `${name}.nonce`, NONCE_BYTES), mac: bytes(a[1], `${name}.mac`, MAC_BYTES) };
}

export function parseFinish(body: CborValue): { mac: Uint8Array } {
  const a = array(body, 'finish', 1);
  return { mac: bytes(a[0], 'finish.mac', MAC_BYTES) };
}

/** Login mechanisms (S3.3). Only 'password' is served so far; the field is there for the rest. */
export const MECHANISMS = ['password', 'fingerprint', 'otp'] as const;
export type Mechanism = (typeof MECHANISMS)[number];
export const USER_RE = /^[A-Za-z0-9._-]{1,64}$/;

/**
 * Business login (S0.11): the client's opening [mech, user, gen, ext, nonce, mac] (the
 * handshake appends nonce and MAC to the fields), authenticated by a MAC under the key of the
 * mechanism. `ext` carries later fields (device identity S4.2, ...) under integer keys, all
 * covered by the MAC; unknown keys are ignored by old servers.
 * Wire order: [mech, user, gen, ext, nonce, mac] — like every opening, the fields the MAC
 * covers first, then the client nonce, then the MAC (ClientHandshake.opening builds exactly this
 * from fields [mech, user, gen, ext]).
 */
export interface Login { mech: Mechanism; user: string; gen: number; nonce: Uint8Array; mac: Uint8Array; ext: Map<number, CborValue> }
export function parseLogin(body: CborValue): Login {
  const a = array(body, 'login', 6);
  const mech = text(a[0], 'login.mech', 16);
  if (!(MECHANISMS as readonly string[]).includes(mech)) bad('MSG_BAD_FIELD', `login.mech '${mech}' is not one of ${MECHANISMS.join(', ')}`);
  return {
    mech: mech as Mechanism,
    user: text(a[1], 'login.user', 64, USER_RE),
    gen: uint(a[2], 'login.gen'),
    ext: intMap(a[3], 'login.ext'),
    nonce: bytes(a[4], 'login.nonce', NONCE_BYTES),
    mac: bytes(a[5], 'login.mac', MAC_BYTES),
  };
}
/** The fields a login's MAC covers, in wire order, then its nonce and MAC: what ServerHandshake.acceptOpening takes. */
export function loginOpening(l: Login): Opening {
  return { fields: [l.mech, l.user, l.gen, l.ext], nonce: l.nonce, mac: l.mac };
}
/** The same for a hello: its MAC covers the serial token and the firmware measurement. */
export function helloOpening(h: Hello): Opening {
  return { fields: [h.token, h.measurement], nonce: h.nonce, mac: h.mac };
}

export function parseLoginAck(body: CborValue): void {
  array(body, 'loginAck', 0);
}

export interface LoginFail { code: string; reason: string }
export function parseLoginFail(body: CborValue): LoginFail {
  const a = array(body, 'loginFail', 2);
  return { code: text(a[0], 'loginFail.code', 64), reason: text(a[1], 'loginFail.reason', 256) };
}

/** A well-formed message of a type the receiver's state does not accept (S0.7): throw it. */
export function unexpected(type: number, state: string): ProtocolError {
  return new ProtocolError('MSG_UNEXPECTED', `${typeName(type)} is not accepted in state ${state}`);
}

// ---- error frame: [code, previous message seq or null, reason] (compare FDO's error) ----

export interface ErrorBody { code: string; prevSeq: number | null; reason: string }
export function parseError(body: CborValue): ErrorBody {
  const a = array(body, 'error', 3);
  return {
    code: text(a[0], 'error.code', 64),
    prevSeq: a[1] === null ? null : uint(a[1], 'error.prevSeq'),
    reason: typeof a[2] === 'string' && utf8Length(a[2]) <= 256 ? a[2] : bad('MSG_BAD_FIELD', 'error.reason must be text of at most 256 bytes of UTF-8'),
  };
}
export function errorBody(code: string, prevSeq: number | null, reason: string): CborValue {
  return [code, prevSeq, truncateUtf8(reason, 256)];
}
/** An error frame, ready to send: the last frame of a session (S0.7). Never sealed. */
export function encodeError(seq: number, dest: string, code: string, prevSeq: number | null, reason: string): Uint8Array {
  return encodeEnvelope(MsgType.error, seq, dest, errorBody(code, prevSeq, reason));
}
/** The longest prefix of `s` of at most `max` UTF-8 bytes that does not split a character. */
export function truncateUtf8(s: string, max: number): string {
  if (s.length <= max && utf8Length(s) <= max) return s;
  let n = 0;
  let i = 0;
  while (i < s.length) {
    const c = s.charCodeAt(i);
    const pair = c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && s.charCodeAt(i + 1) >= 0xdc00 && s.charCodeAt(i + 1) <= 0xdfff;
    const w = c < 0x80 ? 1 : c < 0x800 ? 2 : pair ? 4 : 3;
    if (n + w > max) break;
    n += w;
    i += pair ? 2 : 1;
  }
  return s.slice(0, i);
}

// ---- sealed inner messages ----

export interface CredRequest { serial: string; localIp: string }
export function parseCredRequest(v: CborValue): CredRequest {
  const a = array(v, 'credRequest', 2);
  return { serial: text(a[0], 'credRequest.serial', 64, SERIAL_RE), localIp: text(a[1], 'credRequest.localIp', 45, /^[0-9a-fA-F:.]+$/) };
}

/**
 * A business server the device may log into (S0.8): `name` is the envelope dest of every frame
 * to it (docs/protocol.md §4.1), `url` where to connect, `region` for the trace.
 */
export interface ServerChoice { name: string; url: string; region: string }
/**
 * The one validator of a server entry [name, url, region], for a credential reply and for the
 * saved login alike: name a dest (DEST_RE), url ws:// or wss:// (URL_RE, <= 256 bytes), region
 * 1..32 bytes. Throws ProtocolError MSG_BAD_SHAPE / MSG_BAD_FIELD.
 */
export function parseServerEntry(v: unknown, name = 'server'): ServerChoice {
  const e = array(v, name, 3);
  return {
    name: text(e[0], `${name}.name`, 32, DEST_RE),
    url: text(e[1], `${name}.url`, 256, URL_RE),
    region: text(e[2], `${name}.region`, 32),
  };
}
export function serverEntryBody(s: ServerChoice): CborValue {
  return [s.name, s.url, s.region];
}
/** Bytes of a business secret wrapped for the chip (protocol/secret-wrap.ts): nonce 24 + secret 32 + tag 16. */
export const WRAPPED_SECRET_BYTES = SECRET_BYTES + 40;

export interface CredReply {
  user: string;
  /**
   * The new business secret wrapped for this phone's chip (protocol/secret-wrap.ts): only the
   * secure element that holds the device key can open it, for this user and generation.
   */
  wrapped: Uint8Array;
  /** Generation of the wrapped secret at the business server (pending until first used). */
  gen: number;
  /** Generation the business server holds as current: the device keeps that one too. */
  currentGen: number;
  /** Business servers best placed for the device's IP, best first (S0.8). */
  servers: ServerChoice[];
  /**
   * S3.11: the policy server's signed attack statistics table for these servers' sites
   * (protocol/attack-table.ts; opaque here, the phone verifies it against the policy key it
   * got at the factory). Absent when the registration server has none to give.
   */
  table?: Uint8Array;
}
/**
 * Most bytes of credReply.table: a table of a phone's few sites (8 at most, ~60 bytes each,
 * plus version, dates and the 64-byte signature) fits easily, and with the rest of the saved
 * record in the chip's 2048-byte sealed record.
 */
export const CRED_TABLE_MAX_BYTES = 1536;
export function parseCredReply(v: CborValue): CredReply {
  const a = array(v, 'credReply', 5, 6);
  const servers = array(a[4], 'credReply.servers', 1, 8).map((s, i) => parseServerEntry(s, `credReply.servers[${i}]`));
  return {
    user: text(a[0], 'credReply.user', 64, USER_RE),
    wrapped: bytes(a[1], 'credReply.wrapped', WRAPPED_SECRET_BYTES),
    gen: uint(a[2], 'credReply.gen'),
    currentGen: uint(a[3], 'credReply.currentGen'),
    servers,
    ...(a.length === 6 ? { table: bytes(a[5], 'credReply.table', 1, CRED_TABLE_MAX_BYTES) } : {}),
  };
}
export function credReplyBody(r: CredReply): CborValue {
  const body: CborValue[] = [r.user, r.wrapped, r.gen, r.currentGen, r.servers.map(serverEntryBody)];
  if (r.table) body.push(r.table);
  return body;
}

export function parseNotFound(v: CborValue): { reason: string } {
  const a = array(v, 'notFound', 1);
  return { reason: text(a[0], 'notFound.reason', 256) };
}

/** Password-change confirmation (S0.14): the device saved generation `gen` and used it. */
export function parsePwConfirm(v: CborValue, name = 'pwConfirm'): { gen: number } {
  const a = array(v, name, 1);
  return { gen: uint(a[0], `${name}.gen`) };
}

// ---- the messages both exchanges carry (docs/protocol.md §6.2, §6.3) ----

/** The server's proof of a handshake, [nS, mac]: built by ServerHandshake.proof(), hence no encoder here. */
export const helloReply = { type: MsgType.helloReply, decode: (b: CborValue) => parseServerProof(b, 'helloReply') } as const;
export const loginOk = { type: MsgType.loginOk, decode: (b: CborValue) => parseServerProof(b, 'loginOk') } as const;
/** pwConfirm [gen] (sealed): the device saved and used generation `gen` (S0.14). */
export const pwConfirm: MessageCodec<{ gen: number }> = { type: MsgType.pwConfirm, encode: (c) => [c.gen], decode: (b) => parsePwConfirm(b, 'pwConfirm') };
/** pwConfirmAck [gen] (sealed): the server recorded it. */
export const pwConfirmAck: MessageCodec<{ gen: number }> = { type: MsgType.pwConfirmAck, encode: (c) => [c.gen], decode: (b) => parsePwConfirm(b, 'pwConfirmAck') };

/**
 * S3.11, docs/protocol.md §16: the gateway pushes the policy server's newest signed attack
 * table to the devices connected to it: envelope [1, tablePush, 0, "gateway", [table]]. In the
 * clear and outside the session's sequence (its seq is always 0 and moves nothing): the table's
 * own Ed25519 signature, version and expiry are its protection, which the phone checks
 * (firmware/policy-table.ts) — a forged, stale or expired push changes nothing, and a push
 * never ends or disturbs the session it arrives in.
 */
export function tablePushFrame(table: Uint8Array): Uint8Array {
  return encodeEnvelope(MsgType.tablePush, 0, 'gateway', [table]);
}

/**
 * The table of a tablePush frame, or null when `frame` is not one. Cheap for every other
 * frame (two bytes compared: the envelope [1, 50, ...] starts 85 01 18 32); a frame that
 * starts like one but is malformed is null too (then the session's machine refuses it).
 */
export function peekTablePush(frame: Uint8Array): Uint8Array | null {
  if (frame[0] !== 0x85 || frame[1] !== 0x01 || frame[2] !== 0x18 || frame[3] !== MsgType.tablePush) return null;
  try {
    const env = decodeEnvelope(frame);
    if (env.type !== MsgType.tablePush || env.seq !== 0 || env.dest !== 'gateway') return null;
    return bytes(array(env.body, 'tablePush', 1)[0], 'tablePush.table', 1, CRED_TABLE_MAX_BYTES);
  } catch {
    return null;
  }
}

// ---- sessions in sequence on one connection (docs/protocol.md §2.1, issue 15) ----

/** The frame that asks for sessions in sequence (device) and grants it (gateway): [1, 51, 0, "gateway", []]. */
export function sessionsFrame(): Uint8Array {
  return encodeEnvelope(MsgType.sessions, 0, 'gateway', []);
}

/** Whether `frame` is a well-formed `sessions` frame (cheap for every other frame: [1, 51] starts 85 01 18 33). */
export function isSessionsFrame(frame: Uint8Array): boolean {
  if (frame[0] !== 0x85 || frame[1] !== 0x01 || frame[2] !== 0x18 || frame[3] !== MsgType.sessions) return false;
  try {
    const env = decodeEnvelope(frame);
    return env.seq === 0 && env.dest === 'gateway' && Array.isArray(env.body) && env.body.length === 0;
  } catch {
    return false;
  }
}

/** A session's end on a connection that runs sessions in sequence: its number, its dest, the close code and reason. */
export interface SessionEnd { n: number; dest: string; code: number; reason: string }

/** The longest reason of a sessionEnd: a WebSocket close reason's (RFC 6455 §5.5: 125 bytes, 2 of them the code). */
export const SESSION_END_REASON_MAX = 123;

export function sessionEndFrame(n: number, dest: string, code: number, reason: string): Uint8Array {
  let r = reason;
  while (utf8Length(r) > SESSION_END_REASON_MAX) r = r.slice(0, -1);
  return encodeEnvelope(MsgType.sessionEnd, n, dest, [code, r]);
}

/** The body of a sessionEnd frame (MSG_BAD_FIELD / MSG_BAD_SHAPE when malformed). */
export function parseSessionEnd(env: Envelope): SessionEnd {
  const a = array(env.body, 'sessionEnd', 2);
  const reason = a[1] === '' ? '' : text(a[1], 'sessionEnd.reason', SESSION_END_REASON_MAX);
  return { n: env.seq, dest: env.dest, code: uint(a[0], 'sessionEnd.code', 4999), reason };
}

/** The sessionEnd in `frame`, or null when it is not a well-formed one (cheap for every other frame: 85 01 18 34). */
export function peekSessionEnd(frame: Uint8Array): SessionEnd | null {
  if (frame[0] !== 0x85 || frame[1] !== 0x01 || frame[2] !== 0x18 || frame[3] !== MsgType.sessionEnd) return null;
  try {
    return parseSessionEnd(decodeEnvelope(frame));
  } catch {
    return null;
  }
}
