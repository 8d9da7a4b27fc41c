// Generates the golden test vectors in docs/vectors/*.json:  npx tsx docs/vectors/generate.ts
//
// Fixed master keys and serials; every nonce comes from keystreamRng (protocol/seeded-rng.ts),
// so running this again gives the same files byte for byte. The frames are made by the real
// protocol code (ClientHandshake, ServerHandshake, SecureChannel, encodeEnvelope); every intermediate value of the
// key schedule is computed here a second time, straight from docs/protocol.md §"Key schedule"
// with the bare primitives, and the two must agree before anything is written.
// protocol/vectors.test.ts checks the files against the code in both directions.
import { BankMessages } from '../../protocol/bank-messages.ts';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sha256 } from '@noble/hashes/sha2.js';
import { hkdf, extract, expand } from '@noble/hashes/hkdf.js';
import { hmac } from '@noble/hashes/hmac.js';
import { chacha20poly1305, xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { encode, decode, type CborValue } from '../../protocol/cbor.ts';
import { ClientHandshake, ServerHandshake, passwordLoginKey } from '../../protocol/channel.ts';
import { secretWrapKey, secretWrapAad, wrapSecret } from '../../protocol/secret-wrap.ts';
import { deriveDeviceKey, makeSerialToken } from '../../protocol/keys.ts';
import { bytesToHex as hex, hexToBytes } from '@noble/hashes/utils.js';
import {
  decodeEnvelope, encodeEnvelope, headerBytes, MsgType, parseHello, parseLogin, helloOpening, loginOpening, parseServerProof, credReplyBody, errorBody,
  typeName, parseSessionEnd, sessionEndFrame, sessionsFrame, SESSION_END_REASON_MAX,
} from '../../protocol/messages.ts';
import { keystreamRng } from '../../protocol/seeded-rng.ts';
import { ProtocolError } from '../../protocol/errors.ts';
import { Limits } from '../../protocol/limits.ts';
import { validateDeviceFrame } from '../../gateway/validate.ts';
import { toJson, diag, type Json } from '../../protocol/cbor-json.ts';

const te = new TextEncoder();
const u8 = (s: string) => te.encode(s);
const cat = (...p: Uint8Array[]) => {
  const out = new Uint8Array(p.reduce((n, x) => n + x.length, 0));
  let o = 0;
  for (const x of p) {
    out.set(x, o);
    o += x.length;
  }
  return out;
};
const u32be = (n: number) => Uint8Array.of(n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255);

// ---- the key schedule, restated from docs/protocol.md with bare primitives ----
export const ref = {
  hkdf: (ikm: Uint8Array, salt: Uint8Array | string, info: Uint8Array | string) =>
    hkdf(sha256, ikm, typeof salt === 'string' ? u8(salt) : salt, typeof info === 'string' ? u8(info) : info, 32),
  deviceKey: (master: Uint8Array, serial: string) => ref.hkdf(master, 'usbphone/v1 device-key', serial),
  serialTokenKey: (master: Uint8Array) => ref.hkdf(master, 'usbphone/v1 serial-token', 'key'),
  serialTokenNonce: (master: Uint8Array, serial: string) => hmac(sha256, ref.serialTokenKey(master), cat(u8('nonce'), u8(serial))).subarray(0, 24),
  serialToken: (master: Uint8Array, version: number, serial: string) => {
    const nonce = ref.serialTokenNonce(master, serial);
    return cat(Uint8Array.of(version), nonce, xchacha20poly1305(ref.serialTokenKey(master), nonce, Uint8Array.of(version)).encrypt(u8(serial)));
  },
  loginKey: (secret: Uint8Array, user: string) => ref.hkdf(secret, 'usbphone/v1 biz-login password', user),
  openingMacKey: (k: Uint8Array) => ref.hkdf(k, 'usbphone/v1', 'usbphone/v1 opening mac'),
  openingMacInput: (type: number, seq: number, dest: string, fields: CborValue[]) => encode(['usbphone/v1 opening', type, seq, dest, fields]),
  proofInput: (type: number, seq: number, dest: string, nS: Uint8Array) => encode(['usbphone/v1 proof', type, seq, dest, nS]),
  /** The transcript: each handshake frame, as sent, prefixed by its length (4 bytes, big-endian). */
  transcript: (frames: Uint8Array[]) => cat(...frames.flatMap((f) => [u32be(f.length), f])),
  serverProofKey: (k: Uint8Array, nC: Uint8Array, nS: Uint8Array) => ref.hkdf(k, cat(nC, nS), 'usbphone/v1 server proof'),
  clientProofKey: (k: Uint8Array, nC: Uint8Array, nS: Uint8Array) => ref.hkdf(k, cat(nC, nS), 'usbphone/v1 client proof'),
  trafficKey: (k: Uint8Array, th2: Uint8Array, dir: 'c2s' | 's2c') => ref.hkdf(k, th2, `usbphone/v1 traffic ${dir}`),
  /** §5.4: X = HKDF-Extract(salt = th2, IKM = k_c2s || k_s2c); value = HKDF-Expand(X, "usbphone/v1 exporter " || label, L). */
  exporterSecret: (c2s: Uint8Array, s2c: Uint8Array, th2: Uint8Array) => extract(sha256, cat(c2s, s2c), th2),
  exporter: (x: Uint8Array, label: string, length: number) => expand(sha256, x, u8('usbphone/v1 exporter ' + label), length),
  aeadNonce: (seq: number) => {
    const n = new Uint8Array(12);
    new DataView(n.buffer).setBigUint64(4, BigInt(seq));
    return n;
  },
  seal: (key: Uint8Array, type: number, seq: number, dest: string, inner: CborValue) =>
    encodeEnvelope(type, seq, dest, chacha20poly1305(key, ref.aeadNonce(seq), headerBytes(type, seq, dest)).encrypt(encode(inner))),
};

function same(what: string, a: Uint8Array, b: Uint8Array): void {
  if (hex(a) !== hex(b)) throw new Error(`generator: ${what} differs between the code and the restated schedule`);
}

// ---- fixed inputs ----
const MASTER_V1 = hexToBytes('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f');
const MASTER_V2 = hexToBytes('202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f');
const SERIAL = 'SN-0000001';

interface FrameVector { name: string; direction: 'c2s' | 's2c'; seq: number; hex: string; value: Json; diag: string }
const frameVector = (name: string, direction: 'c2s' | 's2c', frame: Uint8Array): FrameVector => {
  const env = decodeEnvelope(frame);
  const v: CborValue = [env.version, env.type, env.seq, env.dest, env.body];
  return { name, direction, seq: env.seq, hex: hex(frame), value: toJson(v), diag: diag(v) };
};
interface SealedVector { name: string; direction: 'c2s' | 's2c'; type: number; seq: number; inner: Json; innerDiag: string; innerHex: string; aad: string; nonce: string; frame: string }

function keysVectors() {
  const cases = [
    { masterKey: MASTER_V1, version: 1, serial: SERIAL },
    { masterKey: MASTER_V1, version: 1, serial: 'SN-0000002' },
    { masterKey: MASTER_V2, version: 2, serial: 'abc-XYZ-0123456789' },
  ].map(({ masterKey, version, serial }) => {
    const deviceKey = deriveDeviceKey(masterKey, serial);
    same('device key', deviceKey, ref.deviceKey(masterKey, serial));
    const token = makeSerialToken(masterKey, version, serial);
    same('serial token', token, ref.serialToken(masterKey, version, serial));
    return {
      masterKey: hex(masterKey), version, serial,
      deviceKey: hex(deviceKey),
      serialTokenKey: hex(ref.serialTokenKey(masterKey)),
      serialTokenNonce: hex(ref.serialTokenNonce(masterKey, serial)),
      serialToken: hex(token),
    };
  });
  const secret = keystreamRng('vectors secret')(32);
  const loginKey = passwordLoginKey(secret, 'dev-0000001');
  same('login key', loginKey, ref.loginKey(secret, 'dev-0000001'));
  // The secret wrapped for the chip (protocol/secret-wrap.ts), as the credential reply carries it.
  const devKey = deriveDeviceKey(MASTER_V1, SERIAL);
  const wrapKey = secretWrapKey(devKey);
  const wrapNonce = keystreamRng('vectors wrap')(24);
  const wrapped = wrapSecret(wrapKey, 'dev-0000001', 2, secret, () => Uint8Array.from(wrapNonce));
  return {
    description: 'Key diversification (docs/protocol.md §"Key schedule"): device keys and serial tokens from a master key and a serial; the login key of the password mechanism from a secret and a user name; a business secret wrapped for the chip (§6.2).',
    deviceKeys: cases,
    loginKeys: [{ secret: hex(secret), user: 'dev-0000001', loginKey: hex(loginKey) }],
    secretWraps: [{ deviceKey: hex(devKey), user: 'dev-0000001', gen: 2, secret: hex(secret), wrapKey: hex(wrapKey), aad: hex(secretWrapAad('dev-0000001', 2)), nonce: hex(wrapNonce), wrapped: hex(wrapped) }],
  };
}

/** One handshake, run by the real code with seeded nonces, and its intermediates restated. */
function handshakeVector(kind: 'hello' | 'login', opts: { dest: string; seed: string; key: Uint8Array; fields: CborValue[]; sealed: { name: string; type: number; dir: 'c2s' | 's2c'; inner: CborValue }[]; exporters?: { label: string; length: number }[]; description: string; inputs: Record<string, unknown> }) {
  const rc = keystreamRng(`vectors ${opts.seed} client`);
  const rs = keystreamRng(`vectors ${opts.seed} server`);
  const client = new ClientHandshake(opts.dest, opts.key, rc);
  const server = new ServerHandshake(opts.dest, rs);
  const openingType = kind === 'hello' ? MsgType.hello : MsgType.login;
  const proofType = kind === 'hello' ? MsgType.helloReply : MsgType.loginOk;
  const opening = client.opening(openingType, opts.fields);
  const oenv = decodeEnvelope(opening);
  const frames: FrameVector[] = [frameVector(typeName(openingType), 'c2s', opening)];
  let nonceC: Uint8Array;
  let openingMac: Uint8Array;
  if (kind === 'hello') {
    const h = parseHello(oenv.body);
    nonceC = h.nonce;
    openingMac = h.mac;
    server.acceptOpening(opening, oenv, helloOpening(h), opts.key);
  } else {
    const l = parseLogin(oenv.body);
    nonceC = l.nonce;
    openingMac = l.mac;
    server.acceptOpening(opening, oenv, loginOpening(l), opts.key);
  }
  server.requireVerifiedOpening();
  const hsFrames = [opening];
  if (kind === 'login') {
    const ack = server.clear(MsgType.loginAck, []);
    client.receiveClear(ack, decodeEnvelope(ack));
    frames.push(frameVector('loginAck', 's2c', ack));
    hsFrames.push(ack);
  }
  const proof = server.proof(proofType);
  const penv = decodeEnvelope(proof);
  const p = parseServerProof(penv.body);
  const { finish, channel: c } = client.acceptProof(proof, penv, p);
  const s = server.acceptFinish(finish, decodeEnvelope(finish));
  frames.push(frameVector(typeName(proofType), 's2c', proof), frameVector('finish', 'c2s', finish));

  // The schedule restated, checked against what the code sent.
  const k = opts.key;
  const nS = p.nonce;
  const omk = ref.openingMacKey(k);
  const omi = ref.openingMacInput(openingType, 0, opts.dest, [...opts.fields, nonceC]);
  same('opening mac', hmac(sha256, omk, omi), openingMac);
  const t1 = ref.transcript(hsFrames);
  const pin = ref.proofInput(proofType, penv.seq, opts.dest, nS);
  const th1 = sha256(cat(t1, pin));
  const spk = ref.serverProofKey(k, nonceC, nS);
  same('server proof', hmac(sha256, spk, th1), p.mac);
  const th2 = sha256(ref.transcript([...hsFrames, proof]));
  const cpk = ref.clientProofKey(k, nonceC, nS);
  same('client proof', hmac(sha256, cpk, th2), (decodeEnvelope(finish).body as Uint8Array[])[0]!);
  const c2s = ref.trafficKey(k, th2, 'c2s');
  const s2c = ref.trafficKey(k, th2, 's2c');

  // The exporter (§5.4): both channels give the restated value.
  const exporterSecret = ref.exporterSecret(c2s, s2c, th2);
  const exporters = (opts.exporters ?? []).map(({ label, length }) => {
    const value = ref.exporter(exporterSecret, label, length);
    same(`exporter ${label} (client)`, c.exporter(label, length), value);
    same(`exporter ${label} (server)`, s.exporter(label, length), value);
    return { label, length, value: hex(value) };
  });

  const sealed: SealedVector[] = [];
  for (const m of opts.sealed) {
    const [from, key] = m.dir === 'c2s' ? [c, c2s] : [s, s2c];
    const seq = from.nextSendSeq;
    const frame = from.seal(m.type, m.inner);
    same(`sealed ${m.name}`, frame, ref.seal(key, m.type, seq, opts.dest, m.inner));
    const to = m.dir === 'c2s' ? s : c;
    to.open(decodeEnvelope(frame));
    sealed.push({
      name: m.name, direction: m.dir, type: m.type, seq,
      inner: toJson(m.inner), innerDiag: diag(m.inner), innerHex: hex(encode(m.inner)),
      aad: hex(headerBytes(m.type, seq, opts.dest)), nonce: hex(ref.aeadNonce(seq)), frame: hex(frame),
    });
  }
  return {
    description: opts.description,
    inputs: { ...opts.inputs, key: hex(k), dest: opts.dest, clientNonce: hex(nonceC), serverNonce: hex(nS) },
    frames,
    schedule: {
      openingMacKey: hex(omk),
      openingMacInput: hex(omi),
      openingMac: hex(openingMac),
      transcriptBeforeProof: hex(t1),
      proofInput: hex(pin),
      th1: hex(th1),
      serverProofKey: hex(spk),
      serverProofMac: hex(p.mac),
      th2: hex(th2),
      clientProofKey: hex(cpk),
      clientProofMac: hex((decodeEnvelope(finish).body as Uint8Array[])[0]!),
      trafficKeyC2S: hex(c2s),
      trafficKeyS2C: hex(s2c),
      ...(exporters.length ? { exporterSecret: hex(exporterSecret) } : {}),
    },
    ...(exporters.length ? { exporters } : {}),
    sealed,
  };
}

/** The firmware measurement the vectors' hellos attest (SHA-256 of a signed boot manifest body; any 32 bytes here). */
const FIRMWARE = keystreamRng('vectors firmware measurement')(32);

function messageVectors() {
  const b = (seed: string, n: number) => keystreamRng(`vectors messages ${seed}`)(n);
  const token = makeSerialToken(MASTER_V1, 1, SERIAL);
  const frames: [string, number, number, string, CborValue][] = [
    ['hello', MsgType.hello, 0, 'reg-primary', [token, FIRMWARE, b('nc', 32), b('mac1', 32)]],
    ['helloReply', MsgType.helloReply, 0, 'reg-primary', [b('ns', 32), b('mac2', 32)]],
    ['finish', MsgType.finish, 1, 'reg-primary', [b('mac3', 32)]],
    ['login', MsgType.login, 0, 'biz-east', ['password', 'dev-0000001', 2, new Map(), b('nc2', 32), b('mac4', 32)]],
    ['loginAck', MsgType.loginAck, 0, 'biz-east', []],
    ['loginOk', MsgType.loginOk, 1, 'biz-east', [b('ns2', 32), b('mac5', 32)]],
    ['loginFail', MsgType.loginFail, 1, 'biz-east', ['BIZ_BAD_LOGIN', 'authentication failed']],
    ['error', MsgType.error, 1, 'reg-primary', errorBody('CHAN_BAD_TAG', 2, 'frame does not authenticate')],
    ['error (no previous frame)', MsgType.error, 0, 'reg-primary', errorBody('CBOR_TRUNCATED', null, 'input ends at byte 7')],
    // S3.11 (§16): the gateway's push; the table is a sample byte string here (attack-table.json has signed ones).
    ['tablePush', MsgType.tablePush, 0, 'gateway', [b('signed table', 96)]],
    // Issue 15 (§2.1): sessions in sequence on one connection.
    ['sessions', MsgType.sessions, 0, 'gateway', []],
    ['sessionEnd', MsgType.sessionEnd, 1, 'reg-primary', [1000, '']],
  ];
  // Sealed types: the inner message, which is what the AEAD encrypts (see handshake-*.json for sealed frames).
  const inner: [string, number, CborValue][] = [
    ['credRequest', MsgType.credRequest, [SERIAL, '127.1.0.5']],
    ['credReply', MsgType.credReply, credReplyBody({
      user: 'dev-0000001', wrapped: b('wrapped', 72), gen: 2, currentGen: 1,
      servers: [{ name: 'biz-east', url: 'ws://127.0.0.1:7101/biz', region: 'east' }, { name: 'biz-west', url: 'ws://127.0.0.1:7102/biz', region: 'west' }],
    })],
    ['notFound', MsgType.notFound, ['no device with this serial']],
    ['pwConfirm', MsgType.pwConfirm, [2]],
    ['pwConfirmAck', MsgType.pwConfirmAck, [2]],
    // The bank exchange (S4, §6.5): sample values; the password is a sample, never a real one.
    ['bankRegister', MsgType.bankRegister, BankMessages.bankRegister.encode({ name: 'alice', password: 'correct horse battery', ids: VECTOR_SIM })],
    // S3.3 (§17): the registration with the chip's fingerprint key for the site, the answer with the wrapped TOTP seed.
    ['bankRegister fpKey', MsgType.bankRegister, BankMessages.bankRegister.encode({ name: 'alice', password: 'correct horse battery', ids: VECTOR_SIM, fingerprint: { publicKey: b('fp public key', 32), attestation: b('fp attestation', 32) } })],
    ['bankRegistered', MsgType.bankRegistered, BankMessages.bankRegistered.encode({ account: '620000000000123', mode: 1, boundAt: 1_764_460_800_000 })],
    ['bankRegistered person', MsgType.bankRegistered, BankMessages.bankRegistered.encode({ account: '620000000000123', mode: 1, boundAt: 1_764_460_800_000, otpSeed: b('wrapped otp seed', 85), fpKept: true })],
    ['bankLogin', MsgType.bankLogin, BankMessages.bankLogin.encode({ name: 'alice', mech: 'password', proof: new TextEncoder().encode('correct horse battery'), ids: VECTOR_SIM })],
    ['bankLogin otp', MsgType.bankLogin, BankMessages.bankLogin.encode({ name: 'alice', mech: 'otp', proof: '287082', password: new TextEncoder().encode('correct horse battery'), ids: VECTOR_SIM })],
    ['bankLogin fingerprint', MsgType.bankLogin, BankMessages.bankLogin.encode({ name: 'alice', mech: 'fingerprint', proof: b('fp signature', 64), ids: VECTOR_SIM })],
    ['bankPage', MsgType.bankPage, BankMessages.bankPage.encode({
      account: '***********0123', mode: 2, binding: { ids: VECTOR_SIM, boundAt: 1_764_460_800_000 },
      lastLogins: [{ at: 1_764_460_860_000, mode: 2 }], token: b('page token', 32), ttlS: 300,
    })],
    ['bankRefused', MsgType.bankRefused, BankMessages.bankRefused.encode({ code: 'BANK_SIM_SWAPPED', reason: 'the card of this line changed after the binding: re-bind it' })],
    ['bankRebind', MsgType.bankRebind, BankMessages.bankRebind.encode({ name: 'alice', password: 'correct horse battery', ids: { idKind: 'card', cardId: 'CARD-0001' } })],
  ];
  return {
    description: 'The encoding of every message type. Clear frames: the whole envelope [version, type, seq, dest, body]. Sealed types: the inner message the AEAD encrypts. Byte strings are sample values (not a real handshake).',
    frames: frames.map(([name, type, seq, dest, body]) => {
      const f = encodeEnvelope(type, seq, dest, body);
      const v: CborValue = [1, type, seq, dest, body];
      return { name, type, hex: hex(f), value: toJson(v), diag: diag(v) };
    }),
    sealedInner: inner.map(([name, type, v]) => ({ name, type, hex: hex(encode(v)), value: toJson(v), diag: diag(v) })),
    sessionChecksDescription: 'sessions and sessionEnd (docs/protocol.md §2.1), accepted and refused: hex -> value (absent when the bytes are not deterministic CBOR). parsed (sessionEnd only): the frame against the CDDL, as every receiver reads it first: the end {n, dest, code, reason} or the stable error code. fromDevice: the gateway\'s check of the frame sent by a device (rule 4: a device ends a session only with [1000, ""]), before any check of the connection\'s state: "ok" or the stable error code.',
    sessionChecks: sessionCheckVectors(),
  };
}

/** A verdict as the vectors write it: what `f` returned (as JSON), or the stable code it refused with. */
function verdictOf<T>(f: () => T, ok: (x: T) => unknown): unknown {
  try {
    return ok(f());
  } catch (e) {
    if (e instanceof ProtocolError) return e.code;
    throw e;
  }
}

/** What a device's frame gets at the gateway (gateway/validate.ts, before any state check): 'ok' or the code. */
export const fromDeviceVerdict = (frame: Uint8Array): unknown => verdictOf(() => validateDeviceFrame(frame, true, Limits.maxFrameBytes), () => 'ok');
/** A sessionEnd frame against §2.1's CDDL (parseSessionEnd): the end it carries, or the code. */
export const parsedVerdict = (frame: Uint8Array): unknown => verdictOf(() => parseSessionEnd(decodeEnvelope(frame)), (e) => ({ ...e }));

/**
 * §2.1 (issue 15): `sessions` and `sessionEnd` frames, accepted and refused, each with its
 * verdicts written here by hand from docs/protocol.md §2.1 and docs/errors.md; the code must
 * agree before anything is written. `parsed` (sessionEnd only): the frame against the CDDL, as
 * every receiver reads it first. `fromDevice`: the gateway's check of a device's frame (rule 4:
 * a device ends a session only with [1000, ""], decision 133), before any check of the
 * connection's state (an unopened number or another dest is MSG_UNEXPECTED after it).
 */
function sessionCheckVectors() {
  const end = (code: number, reason: string) => ({ n: 1, dest: 'reg-primary', code, reason });
  const reason123 = 'r'.repeat(SESSION_END_REASON_MAX);
  // [name, the frame's value or its raw bytes (hex, when the bytes are not deterministic CBOR), parsed, fromDevice]
  const cases: [string, CborValue | { raw: string }, unknown, unknown][] = [
    ['sessions', [1, 51, 0, 'gateway', []], undefined, 'ok'],
    ['sessions, seq 1', [1, 51, 1, 'gateway', []], undefined, 'MSG_BAD_FIELD'],
    ['sessions, dest not "gateway"', [1, 51, 0, 'reg-primary', []], undefined, 'MSG_BAD_FIELD'],
    ['sessions, a field in its body', [1, 51, 0, 'gateway', [0]], undefined, 'MSG_BAD_FIELD'],
    ['sessions, body a map', [1, 51, 0, 'gateway', new Map()], undefined, 'MSG_BAD_FIELD'],
    ['sessions, a sixth envelope item', [1, 51, 0, 'gateway', [], 0], undefined, 'MSG_BAD_SHAPE'],
    ['sessionEnd normal [1000, ""]', [1, 52, 1, 'reg-primary', [1000, '']], end(1000, ''), 'ok'],
    // A normal end never carries a reason (rules 3-4, decision 133): the CDDL reads it, no device may send it.
    ['sessionEnd [1000, "done"]: a normal end with a reason', [1, 52, 1, 'reg-primary', [1000, 'done']], end(1000, 'done'), 'MSG_BAD_FIELD'],
    // Any other end is the gateway's (rule 3: the close code and reason the close would have carried).
    ['sessionEnd [1011, "GW_UPSTREAM_LOST"]: the gateway\'s end of a lost upstream, with its reason', [1, 52, 1, 'reg-primary', [1011, 'GW_UPSTREAM_LOST']], end(1011, 'GW_UPSTREAM_LOST'), 'MSG_BAD_FIELD'],
    ['sessionEnd [1001, ""]: another code, no reason', [1, 52, 1, 'reg-primary', [1001, '']], end(1001, ''), 'MSG_BAD_FIELD'],
    ['sessionEnd [4999, reason of 123 bytes]: the largest code and reason', [1, 52, 1, 'reg-primary', [4999, reason123]], end(4999, reason123), 'MSG_BAD_FIELD'],
    ['sessionEnd [1011, reason of 124 bytes]', [1, 52, 1, 'reg-primary', [1011, reason123 + 'r']], 'MSG_BAD_FIELD', 'MSG_BAD_FIELD'],
    ['sessionEnd [5000, ""]: code over 4999', [1, 52, 1, 'reg-primary', [5000, '']], 'MSG_BAD_FIELD', 'MSG_BAD_FIELD'],
    ['sessionEnd [-1, ""]: a negative code', [1, 52, 1, 'reg-primary', [-1, '']], 'MSG_BAD_FIELD', 'MSG_BAD_FIELD'],
    ['sessionEnd ["1000", ""]: code as text', [1, 52, 1, 'reg-primary', ['1000', '']], 'MSG_BAD_FIELD', 'MSG_BAD_FIELD'],
    ['sessionEnd [1000, h\'\']: reason as bytes', [1, 52, 1, 'reg-primary', [1000, new Uint8Array(0)]], 'MSG_BAD_FIELD', 'MSG_BAD_FIELD'],
    ['sessionEnd [1000, null]: reason null', [1, 52, 1, 'reg-primary', [1000, null]], 'MSG_BAD_FIELD', 'MSG_BAD_FIELD'],
    ['sessionEnd [1000]: no reason field', [1, 52, 1, 'reg-primary', [1000]], 'MSG_BAD_SHAPE', 'MSG_BAD_SHAPE'],
    ['sessionEnd [1000, "", 0]: an extra field', [1, 52, 1, 'reg-primary', [1000, '', 0]], 'MSG_BAD_SHAPE', 'MSG_BAD_SHAPE'],
    ['sessionEnd {0: 1000, 1: ""}: body a map', [1, 52, 1, 'reg-primary', new Map<number, CborValue>([[0, 1000], [1, '']])], 'MSG_BAD_SHAPE', 'MSG_BAD_SHAPE'],
    ['sessionEnd 1000: body not an array', [1, 52, 1, 'reg-primary', 1000], 'MSG_BAD_SHAPE', 'MSG_BAD_SHAPE'],
    // The same value as the normal end with the code's head not in shortest form (1a 000003e8): other bytes, same meaning.
    ['sessionEnd [1000, ""], code in 5 bytes', { raw: '85011834016b7265672d7072696d617279821a000003e860' }, 'CBOR_NOT_DETERMINISTIC', 'CBOR_NOT_DETERMINISTIC'],
    // The code as a half float 1000.0 (f9 63d0).
    ['sessionEnd [1000.0, ""], code a float', { raw: '85011834016b7265672d7072696d61727982f963d060' }, 'CBOR_FLOAT', 'CBOR_FLOAT'],
  ];
  const out = cases.map(([name, v, parsed, fromDevice]) => {
    const raw = v !== null && typeof v === 'object' && 'raw' in v;
    const frame = raw ? hexToBytes(v.raw) : encode(v as CborValue);
    const got = { parsed: parsed === undefined ? undefined : parsedVerdict(frame), fromDevice: fromDeviceVerdict(frame) };
    if (JSON.stringify(got) !== JSON.stringify({ parsed, fromDevice })) throw new Error(`${name}: the code says ${JSON.stringify(got)}, the vector ${JSON.stringify({ parsed, fromDevice })}`);
    if (!raw) decode(frame); // the value's bytes decode back (checked both ways by protocol/vectors.test.ts)
    return { name, hex: hex(frame), ...(raw ? {} : { value: toJson(v as CborValue), diag: diag(v as CborValue) }), ...(parsed === undefined ? {} : { parsed }), fromDevice };
  });
  // The accepted ones are what the code sends.
  if (out[0]!.hex !== hex(sessionsFrame()) || out[6]!.hex !== hex(sessionEndFrame(1, 'reg-primary', 1000, ''))) throw new Error('sessionChecks: the accepted frames are not what sessionsFrame / sessionEndFrame send');
  return out;
}

const VECTOR_SIM = { idKind: 'sim', iccid: '89441000000000000018', imsi: '234150000000001', msisdn: '+447700900001' } as const;

export function buildVectors(): Record<string, unknown> {
  const devKey = deriveDeviceKey(MASTER_V1, SERIAL);
  const token = makeSerialToken(MASTER_V1, 1, SERIAL);
  const secret = keystreamRng('vectors secret')(32);
  const user = 'dev-0000001';
  const wrapNonce = keystreamRng('vectors wrap')(24);
  const wrapped = wrapSecret(secretWrapKey(devKey), user, 2, secret, () => Uint8Array.from(wrapNonce));
  const loginKey = passwordLoginKey(secret, user);
  return {
    'keys.json': keysVectors(),
    'handshake-hello.json': handshakeVector('hello', {
      description: 'Registration session (S0.5, S0.8, S0.14): hello, helloReply, finish, then credRequest / credReply / pwConfirm / pwConfirmAck sealed.',
      dest: 'reg-primary', seed: 'hello', key: devKey, fields: [token, FIRMWARE],
      inputs: { masterKey: hex(MASTER_V1), version: 1, serial: SERIAL, serialToken: hex(token), measurement: hex(FIRMWARE) },
      sealed: [
        { name: 'pwConfirm', type: MsgType.pwConfirm, dir: 'c2s', inner: [1] },
        { name: 'pwConfirmAck', type: MsgType.pwConfirmAck, dir: 's2c', inner: [1] },
        { name: 'credRequest', type: MsgType.credRequest, dir: 'c2s', inner: [SERIAL, '127.1.0.5'] },
        { name: 'credReply', type: MsgType.credReply, dir: 's2c', inner: credReplyBody({ user, wrapped, gen: 2, currentGen: 1, servers: [{ name: 'biz-east', url: 'ws://127.0.0.1:7101/biz', region: 'east' }] }) },
      ],
    }),
    'handshake-hello-notfound.json': handshakeVector('hello', {
      description: 'Registration session of a device the server has no record of (S0.9): the handshake succeeds (its key derives from the master key), the credRequest is answered by notFound, sealed.',
      dest: 'reg-backup', seed: 'notfound', key: deriveDeviceKey(MASTER_V1, 'SN-9999999'), fields: [makeSerialToken(MASTER_V1, 1, 'SN-9999999'), FIRMWARE],
      inputs: { masterKey: hex(MASTER_V1), version: 1, serial: 'SN-9999999', serialToken: hex(makeSerialToken(MASTER_V1, 1, 'SN-9999999')), measurement: hex(FIRMWARE) },
      sealed: [
        { name: 'credRequest', type: MsgType.credRequest, dir: 'c2s', inner: ['SN-9999999', '10.0.0.7'] },
        { name: 'notFound', type: MsgType.notFound, dir: 's2c', inner: ['no device with this serial'] },
      ],
    }),
    'handshake-login.json': handshakeVector('login', {
      description: 'Business login (S0.11): login under the login key of generation 2, loginAck ("received, verifying"), loginOk (the server\'s proof), finish. The traffic keys would seal what the business session carries next. The exporter (§5.4): the session\'s exporter secret and two exported values, the first the fingerprint challenge of S3.3.',
      dest: 'biz-east', seed: 'login', key: loginKey, fields: ['password', user, 2, new Map()],
      inputs: { secret: hex(secret), user, gen: 2, mech: 'password' },
      sealed: [],
      exporters: [{ label: 'person fingerprint', length: 32 }, { label: 'test 64', length: 64 }],
    }),
    'messages.json': messageVectors(),
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const dir = dirname(fileURLToPath(import.meta.url));
  for (const [name, v] of Object.entries(buildVectors())) {
    writeFileSync(join(dir, name), JSON.stringify(v, null, 2) + '\n');
    process.stdout.write(`wrote docs/vectors/${name}\n`);
  }
}
