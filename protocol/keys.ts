// Key diversification and the key schedule (docs/protocol.md §"Keys").
// Per-device keys come from a master key and the serial number, so no database holds
// device keys and a backup registration server needs only the master key. Master keys are
// versioned: a device's identity record names the version its key was derived under, so a
// master key can be rotated while older devices keep working.
import { bytesToHex, hexToBytes, utf8ToBytes } from '@noble/hashes/utils.js';
import { cryptoEngine } from './crypto-engine.ts';
import { sealBoxWithNonce, openBox } from './sealed-box.ts';
import { ProtocolError, ImplementationError } from './errors.ts';

const td = new TextDecoder('utf-8', { fatal: true });

export const KEY_BYTES = 32;
export const SERIAL_MAX_BYTES = 64;
/** Serial numbers: printable ASCII letters, digits and '-', 1..64 bytes. */
export const SERIAL_RE = /^[A-Za-z0-9][A-Za-z0-9-]{0,63}$/;

// One encoder for the labels of every derivation: noble's utf8ToBytes makes a TextEncoder and
// a copy per call, 1.6 % of a server's CPU per login (issue 15's profile).
const te = new TextEncoder();
const bytesOf = (v: string | Uint8Array) => (typeof v === 'string' ? te.encode(v) : v);
const ZERO_SALT = new Uint8Array(32);
const ONE = Uint8Array.of(1);

/** RFC 5869 HKDF-SHA256 with a distinct label per purpose. */
export function kdf(ikm: Uint8Array, salt: string | Uint8Array, info: string | Uint8Array, length = KEY_BYTES): Uint8Array {
  const prk = kdfExtract(ikm, salt);
  const out = kdfExpand(prk, info, length);
  prk.fill(0);
  return out;
}

/**
 * RFC 5869 §2.2 HKDF-Extract: the pseudorandom key shared by every kdf() output with the
 * same (ikm, salt). kdf(ikm, salt, info) = kdfExpand(kdfExtract(ikm, salt), info): a key
 * schedule that derives several labels from one (ikm, salt) extracts once. Wipe the PRK.
 * HKDF is written here on the engine's HMAC (protocol/crypto-engine.ts), not taken from a
 * library, so that one native HMAC call serves each step; keys.test.ts checks it against
 * noble's hkdf.
 */
export function kdfExtract(ikm: Uint8Array, salt: string | Uint8Array): Uint8Array {
  const s = bytesOf(salt);
  // §2.2: PRK = HMAC-Hash(salt, IKM); an absent salt is HashLen zero bytes.
  return cryptoEngine().hmacSha256(s.length ? s : ZERO_SALT, [ikm]);
}

/** RFC 5869 §2.3 HKDF-Expand of a PRK from kdfExtract(). */
export function kdfExpand(prk: Uint8Array, info: string | Uint8Array, length = KEY_BYTES): Uint8Array {
  if (!Number.isInteger(length) || length < 1 || length > 255 * 32) throw new RangeError(`HKDF-Expand: length ${length} is not 1..8160`);
  const inf = bytesOf(info);
  const e = cryptoEngine();
  // §2.3: T(i) = HMAC-Hash(PRK, T(i-1) | info | i), T(0) empty; OKM = the first L bytes.
  // Every key of the protocol is one block: T(1) itself, no copy.
  if (length === 32) return e.hmacSha256(prk, [inf, ONE]);
  const out = new Uint8Array(length);
  let t: Uint8Array = new Uint8Array(0);
  for (let i = 1, off = 0; off < length; i++, off += 32) {
    const next = e.hmacSha256(prk, [t, inf, Uint8Array.of(i)]);
    t.fill(0);
    t = next;
    out.set(t.subarray(0, Math.min(32, length - off)), off);
  }
  t.fill(0);
  return out;
}

/** HMAC-SHA256 (RFC 2104) of the concatenation of `parts`. */
export function mac(key: Uint8Array, ...parts: Uint8Array[]): Uint8Array {
  return cryptoEngine().hmacSha256(key, parts);
}

export function checkSerial(serial: string): string {
  if (typeof serial !== 'string' || !SERIAL_RE.test(serial)) {
    throw new ImplementationError('KEY_BAD_SERIAL', 'serial must be 1..64 of [A-Za-z0-9-], starting with a letter or digit');
  }
  return serial;
}

/** A set of master keys by version. The newest is used for new devices. */
export class MasterKeyring {
  readonly #keys = new Map<number, Uint8Array>();
  constructor(entries: Iterable<[number, Uint8Array]>) {
    for (const [v, k] of entries) {
      if (!Number.isInteger(v) || v < 1 || v > 255) throw new ImplementationError('KEY_BAD_VERSION', `master key version ${v} is not 1..255`);
      if (!(k instanceof Uint8Array) || k.length !== KEY_BYTES) throw new ImplementationError('KEY_BAD_MASTER', `master key v${v} must be ${KEY_BYTES} bytes`);
      this.#keys.set(v, Uint8Array.from(k));
    }
    if (this.#keys.size === 0) throw new ImplementationError('KEY_BAD_MASTER', 'no master key');
  }
  get current(): number {
    return Math.max(...this.#keys.keys());
  }
  get versions(): number[] {
    return [...this.#keys.keys()].sort((a, b) => a - b);
  }
  has(version: number): boolean {
    return this.#keys.has(version);
  }
  /** The master key of a version, or null: for a caller that must not branch on it early (identifyToken). */
  find(version: number): Uint8Array | null {
    return this.#keys.get(version) ?? null;
  }
  /** The master key of a version; a version we do not hold is the peer's fault. */
  key(version: number): Uint8Array {
    const k = this.#keys.get(version);
    if (!k) throw new ProtocolError('KEY_UNKNOWN_VERSION', `no master key of version ${version}`);
    return k;
  }

  /**
   * Parses a master key file: one key per line, `v<N> <64 hex digits>`, or a single line of
   * 64 hex digits (version 1). Blank lines and `#` comments are ignored.
   */
  static parse(text: string): MasterKeyring {
    const entries: [number, Uint8Array][] = [];
    for (const raw of text.split(/\r?\n/)) {
      const line = raw.replace(/#.*/, '').trim();
      if (!line) continue;
      const m = /^(?:v(\d{1,3})\s+)?([0-9a-fA-F]{64})$/.exec(line);
      if (!m) throw new ImplementationError('KEY_BAD_MASTER', 'master key file: each line must be "v<N> <64 hex digits>"');
      entries.push([m[1] ? Number(m[1]) : 1, hexToBytes(m[2]!)]);
    }
    return new MasterKeyring(entries);
  }
  static format(version: number, key: Uint8Array): string {
    return `v${version} ${bytesToHex(key)}\n`;
  }
}

/** K_dev = HKDF(master_v, salt "usbphone/v1 device-key", info serial). */
export function deriveDeviceKey(master: Uint8Array, serial: string): Uint8Array {
  return kdf(master, 'usbphone/v1 device-key', checkSerial(serial));
}

function serialTokenKey(master: Uint8Array): Uint8Array {
  return kdf(master, 'usbphone/v1 serial-token', 'key');
}

/**
 * The encrypted serial number (S0.1, S0.8): what the device presents in its hello so the
 * registration server can find its key without the serial ever crossing the wire in clear.
 * Layout: version (1) || sealed box (protocol/sealed-box.ts: nonce (24) ||
 * XChaCha20-Poly1305(serial), aad the version byte). Made at the factory and stored in the
 * hidden zone; the nonce is an HMAC of the serial, so building the same device twice gives
 * the same bytes (reproducible images).
 */
export function makeSerialToken(master: Uint8Array, version: number, serial: string): Uint8Array {
  const key = serialTokenKey(master);
  const nonce = mac(key, utf8ToBytes('nonce'), utf8ToBytes(checkSerial(serial))).subarray(0, 24);
  const box = sealBoxWithNonce(key, nonce, utf8ToBytes(serial), Uint8Array.of(version));
  const out = new Uint8Array(1 + box.length);
  out[0] = version;
  out.set(box, 1);
  return out;
}

export const SERIAL_TOKEN_MIN = 1 + 24 + 1 + 16;
export const SERIAL_TOKEN_MAX = 1 + 24 + SERIAL_MAX_BYTES + 16;

/** Why a token names no device (identifyToken). Never sent to the peer: see identifyToken. */
export type TokenRefusal = 'KEY_BAD_TOKEN' | 'KEY_UNKNOWN_VERSION';
export type TokenIdentity =
  | { ok: true; version: number; serial: string; key: Uint8Array }
  | { ok: false; why: TokenRefusal; detail: string };

/** Stand-ins for the work a token that does not open still costs (identifyToken). */
const DUMMY_MASTER = new Uint8Array(KEY_BYTES);
const DUMMY_SERIAL = 'none';
const DUMMY_BOX = new Uint8Array(24 + 10 + 16);
/**
 * A box that opens only under DUMMY_OPEN_KEY (no token key is that constant). identifyToken
 * opens it beside the token so that every token costs one open that succeeds and one that
 * fails: a failed open costs a thrown exception (about 2 µs) a successful one does not.
 */
const DUMMY_OPEN_KEY = new Uint8Array(KEY_BYTES).fill(0x5a);
const DUMMY_OPEN_AAD = utf8ToBytes('usbphone/v1 dummy token');
const DUMMY_OPEN_BOX = sealBoxWithNonce(DUMMY_OPEN_KEY, new Uint8Array(24), utf8ToBytes('SN-0000000'), DUMMY_OPEN_AAD);

/**
 * The device a hello's serial token names and its device key K_dev (32 bytes, the caller
 * wipes it), or why the token names none. Does the same work either way (issue 10): a token
 * of the wrong length, of a version we do not hold, or that does not open still costs one
 * token-key derivation, one AEAD open and one device-key derivation (under a dummy master key
 * and serial), so a registration server that answers all of them and a wrong MAC alike
 * (HS_BAD_CLIENT_PROOF) tells an unauthenticated client neither whether its token is genuine
 * nor which master key versions exist. `why` and `detail` are for the server's log only.
 */
export function identifyToken(keys: MasterKeyring, token: Uint8Array): TokenIdentity {
  const lengthOk = token.length >= SERIAL_TOKEN_MIN && token.length <= SERIAL_TOKEN_MAX;
  const version = lengthOk ? token[0]! : 0;
  const master = keys.find(version);
  const tk = serialTokenKey(master ?? DUMMY_MASTER);
  const pt = openBox(tk, lengthOk ? token.subarray(1) : DUMMY_BOX, Uint8Array.of(version));
  const stand = openBox(pt ? tk : DUMMY_OPEN_KEY, DUMMY_OPEN_BOX, DUMMY_OPEN_AAD);
  tk.fill(0);
  // The serial checks run on the token's plaintext, or on the stand-in's when it has none.
  let s: string | null = null;
  try {
    s = td.decode((pt ?? stand)!);
  } catch {
    s = null;
  }
  const valid = s !== null && SERIAL_RE.test(s);
  let refusal: { why: TokenRefusal; detail: string } | null = null;
  if (!lengthOk) refusal = { why: 'KEY_BAD_TOKEN', detail: 'serial token has the wrong length' };
  else if (!master) refusal = { why: 'KEY_UNKNOWN_VERSION', detail: `no master key of version ${version}` };
  else if (!pt) refusal = { why: 'KEY_BAD_TOKEN', detail: 'serial token does not authenticate' };
  else if (s === null) refusal = { why: 'KEY_BAD_TOKEN', detail: 'serial token is not UTF-8' };
  else if (!valid) refusal = { why: 'KEY_BAD_TOKEN', detail: 'serial token holds no valid serial' };
  const serial = refusal ? DUMMY_SERIAL : s!;
  pt?.fill(0);
  const key = deriveDeviceKey(master && !refusal ? master : DUMMY_MASTER, refusal ? DUMMY_SERIAL : serial);
  if (refusal) {
    key.fill(0);
    return { ok: false, ...refusal };
  }
  return { ok: true, version, serial, key };
}

/**
 * Opens a serial token; any tampering or a token of another master key is refused
 * (ProtocolError KEY_BAD_TOKEN, KEY_UNKNOWN_VERSION). For tools and tests that want the
 * reason; a registration server uses identifyToken and does not send it.
 */
export function openSerialToken(keys: MasterKeyring, token: Uint8Array): { version: number; serial: string } {
  const id = identifyToken(keys, token);
  if (!id.ok) throw id.why === 'KEY_UNKNOWN_VERSION' ? new ProtocolError('KEY_UNKNOWN_VERSION', id.detail) : new ProtocolError('KEY_BAD_TOKEN', id.detail);
  id.key.fill(0);
  return { version: id.version, serial: id.serial };
}
