// The secure channel: a mutual-authentication handshake on a pre-shared symmetric key
// (the per-device key for registration, the login key for business login), then AEAD
// frames with per-direction keys and counters. docs/protocol.md §"Secure channel".
//
//   client                                   server
//   opening  (hello | login): nC, MAC_hello  ->       verifies MAC_hello (key lookup by caller)
//                                           <-  [loginAck: "received, verifying"]
//                                           <-  proof (helloReply | loginOk): nS, MAC_s
//   checks MAC_s before anything secret
//   finish: MAC_c                            ->       verifies MAC_c
//   sealed frames <-> sealed frames (ChaCha20-Poly1305, nonce = seq, AAD = header)
//
// Every handshake frame, in order, feeds a running transcript hash; both proofs are MACs
// over it, so a change to any byte of any handshake frame fails the next proof. Each side
// checks that every frame's seq is exactly the next one expected: a replayed, dropped or
// reordered frame ends the session.
import { equalBytes } from '@noble/ciphers/utils.js';
import { concatBytes as concat, utf8ToBytes as utf8 } from '@noble/hashes/utils.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { cryptoEngine } from './crypto-engine.ts';
import { kdf, kdfExtract, kdfExpand, mac } from './keys.ts';
import { encode, decode, type CborValue } from './cbor.ts';
import { ProtocolError, ImplementationError , type ErrorCode } from './errors.ts';
import { Limits } from './limits.ts';
import { encodeEnvelope, headerBytes, SEALED_TYPES, NONCE_BYTES, MAC_BYTES, bytes, type Envelope, type Opening } from './messages.ts';
import { HS_LABEL, openingInput, proofInput, softClientKeyOps, type ClientKeyOps } from './handshake-keys.ts';

export { systemRng, type Rng } from './rng.ts';
import { systemRng, type Rng } from './rng.ts';

export type Role = 'client' | 'server';

function refuse(code: ErrorCode, message: string): never {
  throw new ProtocolError(code, message);
}

/** Sequence check shared by the handshake and the channel: exactly the next one, no gaps. */
function checkSeq(got: number, expected: number): void {
  if (got < expected) refuse('CHAN_REPLAY', `seq ${got} already seen (expected ${expected})`);
  if (got > expected) refuse('CHAN_OUT_OF_ORDER', `seq ${got} arrived before ${expected}`);
}

/** Running transcript: SHA-256 over each frame, length-prefixed, in the order sent/received. */
class Transcript {
  #h = sha256.create();
  add(frame: Uint8Array): void {
    const len = new Uint8Array(4);
    new DataView(len.buffer).setUint32(0, frame.length);
    this.#h.update(len).update(frame);
  }
  /** Hash of the transcript so far followed by `extra` (not added). */
  peek(extra?: Uint8Array): Uint8Array {
    const h = this.#h.clone();
    if (extra) h.update(extra);
    return h.digest();
  }
}

const LABEL = HS_LABEL;
/** Stands in for an unknown identity's key; an opening is never accepted under it (acceptOpening). */
const DUMMY_KEY = new Uint8Array(32);
/** finish's wire type (messages.ts MsgType.finish). */
const MsgType_finish = 3;

/**
 * What both sides of a handshake share: the transcript, the seq counters, the key and its
 * wiping. Single use: it becomes a SecureChannel when done, and any refusal leaves it dead.
 */
abstract class HandshakeSide {
  protected readonly t = new Transcript();
  protected sendSeq = 0;
  protected recvSeq = 0;
  protected nC: Uint8Array | null = null;
  protected key: Uint8Array | null = null;
  /** HKDF PRK of (key, nC | nS): both proof keys expand from it. Wiped with the key. */
  protected prk: Uint8Array | null = null;
  #dead = false;

  constructor(
    readonly dest: string,
    protected readonly rng: Rng,
  ) {}

  protected alive(): void {
    if (this.#dead) throw new ImplementationError('HS_DEAD', 'handshake already failed or finished');
  }
  protected guard<T>(f: () => T): T {
    this.alive();
    try {
      return f();
    } catch (e) {
      this.wipe();
      throw e;
    }
  }

  protected wipe(): void {
    this.#dead = true;
    this.key?.fill(0);
    this.prk?.fill(0);
  }

  /** The traffic keys after a verified handshake, from one (key, th2) extract: [c2s, s2c]. */
  protected trafficKeys(th2: Uint8Array): [Uint8Array, Uint8Array] {
    const prk = kdfExtract(this.key!, th2);
    const keys: [Uint8Array, Uint8Array] = [kdfExpand(prk, LABEL.c2s), kdfExpand(prk, LABEL.s2c)];
    prk.fill(0);
    return keys;
  }

  /** A clear frame (loginAck, loginFail, error) counted in seq and transcript. */
  clear(type: number, body: CborValue): Uint8Array {
    return this.guard(() => {
      const frame = encodeEnvelope(type, this.sendSeq++, this.dest, body);
      this.t.add(frame);
      return frame;
    });
  }

  /**
   * Ends the handshake and wipes its key: what a session calls when it refuses a frame
   * before the handshake saw it (a decode or shape error), or gives up (timeout, close).
   */
  abort(): void {
    this.wipe();
  }

  /** The seq this side's next frame will carry (for error frames after a refusal). */
  get nextSendSeq(): number {
    return this.sendSeq;
  }
  get lastRecvSeq(): number | null {
    return this.recvSeq > 0 ? this.recvSeq - 1 : null;
  }
}

/**
 * The client's side of one handshake (docs/protocol.md §4.2, §6): opening() first, then
 * receiveClear() for each clear server frame (loginAck), then acceptProof(). The long-term key
 * (device key or login key) is used only through `keys` (protocol/handshake-keys.ts): in
 * memory (a Uint8Array: copied, wiped when done) or inside the phone's secure element, so this
 * class frames, counts and keeps the transcript and never sees the key itself.
 */
export class ClientHandshake extends HandshakeSide {
  readonly #keys: ClientKeyOps;

  constructor(dest: string, keys: Uint8Array | ClientKeyOps, rng: Rng = systemRng) {
    super(dest, rng);
    this.#keys = keys instanceof Uint8Array ? softClientKeyOps(keys, rng) : keys;
  }

  protected override wipe(): void {
    super.wipe();
    this.#keys.abort();
  }

  /** The opening frame (hello or login) with `fields` followed by nC and the MAC. */
  opening(type: number, fields: CborValue[]): Uint8Array {
    return this.guard(() => {
      if (this.sendSeq !== 0) throw new ImplementationError('HS_STATE', 'opening is the client\'s first frame');
      const seq = this.sendSeq++;
      const o = this.#keys.opening(type, seq, this.dest, fields);
      this.nC = o.nonce;
      const frame = encodeEnvelope(type, seq, this.dest, [...fields, o.nonce, o.mac]);
      this.t.add(frame);
      return frame;
    });
  }

  /** A clear server frame before the proof (loginAck). */
  receiveClear(frame: Uint8Array, env: Envelope): void {
    this.guard(() => {
      checkSeq(env.seq, this.recvSeq);
      if (env.dest !== this.dest) refuse('HS_WRONG_DEST', `frame for '${env.dest}' on a handshake with '${this.dest}'`);
      this.recvSeq++;
      this.t.add(frame);
    });
  }

  /**
   * Checks the server's proof (helloReply / loginOk) — before anything secret is sent — and
   * answers with the finish frame. Returns the channel for what follows. Throws ProtocolError
   * HS_BAD_SERVER_PROOF (close 1008), CHAN_REPLAY / CHAN_OUT_OF_ORDER.
   */
  acceptProof(frame: Uint8Array, env: Envelope, proof: { nonce: Uint8Array; mac: Uint8Array }): { finish: Uint8Array; channel: SecureChannel } {
    return this.guard(() => {
      if (!this.nC) throw new ImplementationError('HS_STATE', 'no opening sent');
      checkSeq(env.seq, this.recvSeq);
      const th1 = this.t.peek(proofInput(env.type, env.seq, env.dest, proof.nonce));
      // The proof frame joins the transcript before it is checked: a refusal ends the handshake
      // anyway (guard), so no transcript outlives a bad proof.
      this.t.add(frame);
      const th2 = this.t.peek();
      const out = env.dest === this.dest ? this.#keys.proof({ th1, nonce: proof.nonce, mac: proof.mac, th2 }) : null;
      if (!out) refuse('HS_BAD_SERVER_PROOF', 'the server does not hold this key (or the transcript was altered)');
      this.recvSeq++;
      const seq = this.sendSeq++;
      const finish = encodeEnvelope(MsgType_finish, seq, this.dest, [out.finish]);
      const channel = new SecureChannel('client', this.dest, out.c2s, out.s2c, this.sendSeq, this.recvSeq, undefined, exporterSecret(out.c2s, out.s2c, th2));
      this.wipe();
      return { finish, channel };
    });
  }
}

/**
 * The server's side of one handshake (docs/protocol.md §4.2, §6): acceptOpening() with the
 * key the caller looked up, then verifyOpening() / requireVerifiedOpening(), clear frames if
 * any (loginAck, loginFail), proof(), acceptFinish().
 */
export class ServerHandshake extends HandshakeSide {
  #nS: Uint8Array | null = null;
  #verified = false;

  constructor(dest: string, rng: Rng = systemRng) {
    super(dest, rng);
  }

  /**
   * Takes the client's opening. `key` is what the caller looked up for the identity the
   * opening names (null when unknown: that fails exactly like a wrong MAC, after the same
   * work, so the two cannot be told apart by answer or time). The MAC is checked by verifyOpening(), so that a server may first
   * acknowledge receipt (S0.11). Throws CHAN_REPLAY / CHAN_OUT_OF_ORDER, HS_WRONG_DEST.
   */
  acceptOpening(frame: Uint8Array, env: Envelope, opening: Opening, key: Uint8Array | null): void {
    this.guard(() => {
      if (this.recvSeq !== 0) throw new ImplementationError('HS_STATE', 'opening is the first frame a server takes');
      checkSeq(env.seq, 0);
      if (env.dest !== this.dest) refuse('HS_WRONG_DEST', `opening for '${env.dest}' reached '${this.dest}'`);
      this.recvSeq++;
      this.t.add(frame);
      this.nC = Uint8Array.from(opening.nonce);
      this.key = key ? Uint8Array.from(key) : null;
      // Unknown identity: the same derivation and MAC under a dummy key, and the verdict only
      // then, so the time a refusal takes does not say whether the identity exists (issue 10).
      const ok = equalBytes(mac(kdf(this.key ?? DUMMY_KEY, 'usbphone/v1', LABEL.opening), openingInput(env.type, env.seq, env.dest, [...opening.fields, opening.nonce])), opening.mac);
      this.#verified = ok && this.key !== null;
    });
  }

  /** Whether the opening's MAC matched the key (false: refuse, HS_BAD_CLIENT_PROOF). */
  verifyOpening(): boolean {
    this.alive();
    return this.#verified;
  }

  /**
   * verifyOpening() or refuse. Throws ProtocolError HS_BAD_CLIENT_PROOF (close 1008) and ends
   * the handshake when the opening's MAC did not match. For a registration hello; a business
   * server answers a bad login with loginFail instead (clear() then close).
   */
  requireVerifiedOpening(): void {
    this.guard(() => {
      if (!this.#verified) refuse('HS_BAD_CLIENT_PROOF', 'the opening does not authenticate under the key of the identity it names');
    });
  }

  /** After verifyOpening() succeeded, the proof frame (helloReply / loginOk). */
  proof(type: number): Uint8Array {
    return this.guard(() => {
      if (!this.nC || !this.key || !this.#verified) throw new ImplementationError('HS_STATE', 'proof before a verified opening');
      const nS = this.rng(NONCE_BYTES);
      this.#nS = nS;
      const seq = this.sendSeq++;
      const th1 = this.t.peek(proofInput(type, seq, this.dest, nS));
      this.prk = kdfExtract(this.key, concat(this.nC, nS));
      const frame = encodeEnvelope(type, seq, this.dest, [nS, mac(kdfExpand(this.prk, LABEL.serverProof), th1)]);
      this.t.add(frame);
      return frame;
    });
  }

  /** Checks the client's finish; returns the channel. Throws HS_UNEXPECTED, HS_WRONG_DEST, HS_BAD_CLIENT_PROOF, MSG_*. */
  acceptFinish(frame: Uint8Array, env: Envelope): SecureChannel {
    return this.guard(() => {
      if (!this.nC || !this.#nS || !this.key || !this.prk) throw new ImplementationError('HS_STATE', 'finish before proof');
      checkSeq(env.seq, this.recvSeq);
      if (env.type !== 3) refuse('HS_UNEXPECTED', `expected finish, got type ${env.type}`);
      if (env.dest !== this.dest) refuse('HS_WRONG_DEST', `finish for '${env.dest}' reached '${this.dest}'`);
      const body = env.body;
      if (!Array.isArray(body) || body.length !== 1) refuse('MSG_BAD_SHAPE', 'finish must be [mac]');
      const got = bytes(body[0], 'finish.mac', MAC_BYTES);
      const th2 = this.t.peek();
      if (!equalBytes(mac(kdfExpand(this.prk, LABEL.clientProof), th2), got)) {
        refuse('HS_BAD_CLIENT_PROOF', 'the client\'s finish does not match the transcript');
      }
      this.recvSeq++;
      const [c2s, s2c] = this.trafficKeys(th2);
      const channel = new SecureChannel('server', this.dest, s2c, c2s, this.sendSeq, this.recvSeq, undefined, exporterSecret(c2s, s2c, th2));
      this.wipe();
      return channel;
    });
  }
}

/**
 * AEAD frames after the handshake. ChaCha20-Poly1305 (RFC 8439) with a key per direction;
 * the 96-bit nonce is 32 zero bits then the 64-bit seq, so no nonce repeats under a key;
 * the AAD is the frame's header, so type, seq and dest cannot be changed.
 */
export class SecureChannel {
  #sendKey: Uint8Array;
  #recvKey: Uint8Array;
  #exporter: Uint8Array | null;
  #dead = false;

  constructor(
    readonly role: Role,
    readonly dest: string,
    sendKey: Uint8Array,
    recvKey: Uint8Array,
    private sendSeq: number,
    private recvSeq: number,
    private readonly maxMessages: number = Limits.maxMessagesPerKey,
    /** The exporter secret of the handshake that made the channel (exporterSecret()); null: no exporter. */
    exporter: Uint8Array | null = null,
  ) {
    this.#sendKey = sendKey;
    this.#recvKey = recvKey;
    this.#exporter = exporter;
  }

  /**
   * A value both ends of this session derive alike and no other session can (docs/protocol.md
   * §5.4): HKDF-Expand(X, "usbphone/v1 exporter " || label, length), X the session's exporter
   * secret. For a channel binding (the fingerprint challenge of S3.3): a proof signed over it
   * is worthless in any other session. `label`: 1..64 printable ASCII characters; `length`:
   * 16..64 bytes. Throws ImplementationError CHAN_CLOSED, CHAN_NO_EXPORTER (a channel not made
   * by a handshake), CHAN_BAD_EXPORTER (label or length out of range).
   */
  exporter(label: string, length = 32): Uint8Array {
    if (this.#dead) throw new ImplementationError('CHAN_CLOSED', 'channel is closed');
    if (!this.#exporter) throw new ImplementationError('CHAN_NO_EXPORTER', 'this channel was not made by a handshake: it has no exporter secret');
    if (typeof label !== 'string' || !EXPORTER_LABEL_RE.test(label)) throw new ImplementationError('CHAN_BAD_EXPORTER', 'exporter label must be 1..64 printable ASCII characters');
    if (!Number.isInteger(length) || length < 16 || length > 64) throw new ImplementationError('CHAN_BAD_EXPORTER', `exporter length ${length} is not 16..64 bytes`);
    return kdfExpand(this.#exporter, EXPORTER_INFO + label, length);
  }

  get closed(): boolean {
    return this.#dead;
  }
  get nextSendSeq(): number {
    return this.sendSeq;
  }
  get lastRecvSeq(): number | null {
    return this.recvSeq > 0 ? this.recvSeq - 1 : null;
  }

  /** Ends the channel and wipes its keys. */
  close(): void {
    this.#dead = true;
    this.#sendKey.fill(0);
    this.#recvKey.fill(0);
    this.#exporter?.fill(0);
  }

  seal(type: number, inner: CborValue): Uint8Array {
    if (this.#dead) throw new ImplementationError('CHAN_CLOSED', 'channel is closed');
    if (!SEALED_TYPES.has(type)) throw new ImplementationError('CHAN_NOT_SEALED_TYPE', `type ${type} is not a sealed type`);
    if (this.sendSeq >= this.maxMessages) {
      this.close();
      throw new ProtocolError('CHAN_KEY_EXHAUSTED', 'message limit per key reached; start a new session');
    }
    const pt = encode(inner);
    // The body is one byte string: a receiver refuses more than maxStringBytes (CBOR_LIMIT).
    if (pt.length + 16 > Limits.maxStringBytes) throw new ImplementationError('CHAN_TOO_LARGE', `inner message of ${pt.length} bytes; at most ${Limits.maxStringBytes - 16} can be sealed`);
    const seq = this.sendSeq++;
    const ct = cryptoEngine().chachaSeal(this.#sendKey, seqNonce(seq), headerBytes(type, seq, this.dest), pt);
    return encodeEnvelope(type, seq, this.dest, ct);
  }

  /** Opens a sealed frame (already decoded to its envelope). Any refusal ends the channel. */
  open(env: Envelope): CborValue {
    if (this.#dead) throw new ImplementationError('CHAN_CLOSED', 'channel is closed');
    try {
      if (!SEALED_TYPES.has(env.type)) refuse('CHAN_NOT_SEALED', `type ${env.type} must not arrive in clear after the handshake`);
      if (env.dest !== this.dest) refuse('CHAN_WRONG_DEST', `frame for '${env.dest}' on a channel of '${this.dest}'`);
      checkSeq(env.seq, this.recvSeq);
      if (this.recvSeq >= this.maxMessages) refuse('CHAN_KEY_EXHAUSTED', 'message limit per key reached');
      if (!(env.body instanceof Uint8Array) || env.body.length < 16) refuse('CHAN_BAD_TAG', 'sealed body missing or shorter than a tag');
      const pt = cryptoEngine().chachaOpen(this.#recvKey, seqNonce(env.seq), headerBytes(env.type, env.seq, env.dest), env.body);
      if (!pt) refuse('CHAN_BAD_TAG', 'frame does not authenticate (altered, forged, or sealed for the other direction)');
      this.recvSeq++;
      return decode(pt);
    } catch (e) {
      this.close();
      throw e;
    }
  }
}

const EXPORTER_INFO = 'usbphone/v1 exporter ';
const EXPORTER_LABEL_RE = /^[\x20-\x7e]{1,64}$/;

/**
 * The exporter secret of a session (docs/protocol.md §5.4): X = HKDF-Extract(salt = th2,
 * IKM = k_c2s || k_s2c). Both traffic keys are secret to the two ends and differ in every
 * session; th2 binds the whole handshake transcript. The exporter's outputs are one-way in X,
 * so an exported value reveals nothing of the traffic keys. 32 bytes; the channel wipes it.
 */
export function exporterSecret(c2s: Uint8Array, s2c: Uint8Array, th2: Uint8Array): Uint8Array {
  const ikm = concat(c2s, s2c);
  const x = kdfExtract(ikm, th2);
  ikm.fill(0);
  return x;
}

function seqNonce(seq: number): Uint8Array {
  const n = new Uint8Array(12);
  const dv = new DataView(n.buffer);
  dv.setUint32(4, Math.floor(seq / 2 ** 32));
  dv.setUint32(8, seq >>> 0);
  return n;
}

/** Login key of the password mechanism: what the business server stores, not the secret. */
export function passwordLoginKey(secret: Uint8Array, user: string): Uint8Array {
  return kdf(secret, 'usbphone/v1 biz-login password', utf8(user));
}
