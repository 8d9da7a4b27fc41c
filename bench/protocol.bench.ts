// Protocol hot paths against their floor, measured in the same run:  npx tsx bench/protocol.bench.ts
//
//   seal+encode   SecureChannel.seal(credRequest, [payload])            vs  bare ChaCha20-Poly1305 encrypt of
//                 (inner encode, AAD, AEAD, envelope encode)               the same plaintext (AAD made
//                                                                          beforehand) + bare cbor-x encode
//                                                                          of the same envelope
//   decode+open   decodeEnvelope(frame) + SecureChannel.open(env)       vs  bare cbor-x decode of the frame +
//                 (strict walk, validation, AAD, AEAD, inner walk and      bare ChaCha20-Poly1305 decrypt (AAD
//                 decode; a fresh receiver per frame)                      made beforehand) + bare cbor-x
//                                                                          decode of the plaintext
//   handshake     a whole registration handshake, both sides: token     vs  the same HKDF / HMAC / SHA-256 /
//                 opened, device key derived, hello, helloReply, finish    XChaCha calls on precomputed inputs
//                                                                          (no CBOR, no checks, no state)
//
// "body" is the payload: the inner message is [payload], a byte string of that size.
// Each figure is the median of several rounds of a fixed duration; full and floor rounds
// alternate so that both see the same machine. Target: full <= 1.5 x floor at 64 B.
import { chacha20poly1305, xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { hmac } from '@noble/hashes/hmac.js';
import { Encoder, Decoder } from 'cbor-x';
import { ClientHandshake, ServerHandshake, SecureChannel } from '../protocol/channel.ts';
import { decodeEnvelope, encodeEnvelope, headerBytes, parseHello, helloOpening, parseServerProof, MsgType } from '../protocol/messages.ts';
import { deriveDeviceKey, makeSerialToken, openSerialToken, MasterKeyring } from '../protocol/keys.ts';
import { encode } from '../protocol/cbor.ts';
import { keystreamRng } from '../protocol/seeded-rng.ts';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 15);
const ROUND_MS = Number(process.env.BENCH_ROUND_MS ?? 120);

/**
 * Operations per second of `full` and `floor`, and the ratio of their costs. Rounds of the two
 * alternate; the ratio is the median of each round pair's ratio, so a burst of load from
 * elsewhere on the machine hits both sides of a pair rather than skewing one median.
 */
function compare(full: () => void, floor: () => void): { full: number; floor: number; ratio: number } {
  const rate = (fn: () => void) => {
    let n = 0;
    const t0 = performance.now();
    let t = t0;
    while (t - t0 < ROUND_MS) {
      for (let i = 0; i < 16; i++) fn();
      n += 16;
      t = performance.now();
    }
    return (n * 1000) / (t - t0);
  };
  for (let i = 0; i < 3000; i++) {
    full();
    floor();
  }
  const a: number[] = [];
  const b: number[] = [];
  const r: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    // Alternate which goes first, so neither always runs right after a GC of the other.
    let x: number;
    let y: number;
    if (i % 2) {
      x = rate(full);
      y = rate(floor);
    } else {
      y = rate(floor);
      x = rate(full);
    }
    a.push(x);
    b.push(y);
    r.push(y / x);
  }
  const med = (x: number[]) => [...x].sort((p, q) => p - q)[x.length >> 1]!;
  return { full: med(a), floor: med(b), ratio: med(r) };
}

const rows: string[][] = [];
function report(name: string, size: string, m: { full: number; floor: number; ratio: number }): void {
  rows.push([name, size, fmt(m.full), fmt(m.floor), `${m.ratio.toFixed(2)}x`, size === '64 B' || name === 'handshake' ? (m.ratio <= 1.5 ? 'ok' : 'over 1.5x') : '']);
}
const fmt = (x: number) => (x >= 1e5 ? `${Math.round(x / 1000)} k/s` : x >= 1e4 ? `${(x / 1000).toFixed(1)} k/s` : `${Math.round(x)} /s`);

// Plain cbor-x with the codec's options: the floor for encode/decode.
const bareEnc = new Encoder({ useRecords: false, mapsAsObjects: false, variableMapSize: true, tagUint8Array: false } as ConstructorParameters<typeof Encoder>[0]);
const bareDec = new Decoder({ useRecords: false, mapsAsObjects: false } as ConstructorParameters<typeof Decoder>[0]);

const k1 = keystreamRng('bench k1')(32);
const k2 = keystreamRng('bench k2')(32);
const dest = 'reg-primary';

for (const size of [64, 1024]) {
  const label = size === 64 ? '64 B' : '1 KiB';
  const payload = keystreamRng(`bench payload ${size}`)(size);
  const inner = [payload];

  // seal + encode
  const sender = new SecureChannel('client', dest, k1.slice(), k2.slice(), 2, 1, Number.MAX_SAFE_INTEGER);
  let seqF = 2;
  const nonce = new Uint8Array(12);
  const aad = headerBytes(MsgType.credRequest, 2, dest);
  const seal = compare(
    () => void sender.seal(MsgType.credRequest, inner),
    () => {
      const seq = seqF++;
      nonce[11] = seq & 255;
      const ct = chacha20poly1305(k1, nonce, aad).encrypt(bareEnc.encode(inner));
      bareEnc.encode([1, MsgType.credRequest, seq, dest, ct]);
    },
  );
  report('seal+encode', label, seal);

  // decode + open: one frame opened again and again by a receiver reset to its seq
  const frame = new SecureChannel('client', dest, k1.slice(), k2.slice(), 2, 1).seal(MsgType.credRequest, inner);
  const fixedNonce = new Uint8Array(12);
  fixedNonce[11] = 2;
  const open = compare(
    () => {
      const receiver = new SecureChannel('server', dest, k2.slice(), k1.slice(), 1, 2);
      receiver.open(decodeEnvelope(frame));
    },
    () => {
      const env = bareDec.decode(frame) as [number, number, number, string, Uint8Array];
      const p = chacha20poly1305(k1, fixedNonce, aad).decrypt(env[4]);
      bareDec.decode(p);
    },
  );
  report('decode+open', label, open);
}

// ---- handshakes ----
const master = keystreamRng('bench master')(32);
const ring = new MasterKeyring([[1, master]]);
const serial = 'SN-0000001';
const token = makeSerialToken(master, 1, serial);
const devKey = deriveDeviceKey(master, serial);
const rngC = keystreamRng('bench c');
const rngS = keystreamRng('bench s');

function fullHandshake(): void {
  const client = new ClientHandshake(dest, devKey, rngC);
  const server = new ServerHandshake(dest, rngS);
  const hello = client.opening(MsgType.hello, [token, new Uint8Array(32).fill(0xf1)]);
  const env = decodeEnvelope(hello);
  const h = parseHello(env.body);
  const id = openSerialToken(ring, h.token);
  server.acceptOpening(hello, env, helloOpening(h), deriveDeviceKey(ring.key(id.version), id.serial));
  server.requireVerifiedOpening();
  const reply = server.proof(MsgType.helloReply);
  const renv = decodeEnvelope(reply);
  const { finish } = client.acceptProof(reply, renv, parseServerProof(renv.body));
  server.acceptFinish(finish, decodeEnvelope(finish));
}

// The floor: the primitive calls a handshake cannot avoid, on inputs prepared beforehand.
const te = new TextEncoder();
const L = (s: string) => te.encode(s);
const hk = (ikm: Uint8Array, salt: Uint8Array, info: Uint8Array) => hkdf(sha256, ikm, salt, info, 32);
const nC = rngC(32);
const nS = rngS(32);
const salt = new Uint8Array([...nC, ...nS]);
const helloPre = encodeEnvelope(MsgType.hello, 0, dest, [token, nC, new Uint8Array(32)]);
const replyPre = encodeEnvelope(MsgType.helloReply, 0, dest, [nS, new Uint8Array(32)]);
const omi = encode(['usbphone/v1 opening', 1, 0, dest, [token, nC]]);
const pin = encode(['usbphone/v1 proof', 2, 0, dest, nS]);
const tokKeySalt = L('usbphone/v1 serial-token');
const devSalt = L('usbphone/v1 device-key');
const [S, SER, KEY, OPEN, OPENMAC, SP, CP, C2S, S2C] = ['usbphone/v1', serial, 'key', 'usbphone/v1 opening mac', 'x', 'usbphone/v1 server proof', 'usbphone/v1 client proof', 'usbphone/v1 traffic c2s', 'usbphone/v1 traffic s2c'].map(L) as Uint8Array[];
void OPENMAC;

function floorHandshake(): void {
  // server: open the token, derive the device key
  const tk = hk(master, tokKeySalt, KEY!);
  xchacha20poly1305(tk, token.subarray(1, 25), token.subarray(0, 1)).decrypt(token.subarray(25));
  const k = hk(master, devSalt, SER!);
  // client: opening MAC; server: the same check
  hmac(sha256, hk(devKey, S!, OPEN!), omi);
  hmac(sha256, hk(k, S!, OPEN!), omi);
  // server proof: made by the server, checked by the client
  const th1 = sha256.create().update(helloPre).update(pin).digest();
  hmac(sha256, hk(k, salt, SP!), th1);
  hmac(sha256, hk(devKey, salt, SP!), th1);
  // client proof and traffic keys, on both sides
  const th2 = sha256.create().update(helloPre).update(replyPre).digest();
  for (const key of [devKey, k]) {
    hmac(sha256, hk(key, salt, CP!), th2);
    hk(key, th2, C2S!);
    hk(key, th2, S2C!);
  }
}

report('handshake', '-', compare(fullHandshake, floorHandshake));

const head = ['path', 'body', 'full', 'floor', 'full/floor', 'target <= 1.5x'];
const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ');
process.stdout.write(`node ${process.version}, ${ROUNDS} alternating rounds of ${ROUND_MS} ms each; rates and ratio are medians\n${line(head)}\n${rows.map(line).join('\n')}\n`);
