// The floor of one full login on the server side (bench/login-cost.bench.ts): every HKDF,
// HMAC, SHA-256, AEAD and CBOR operation the protocol requires of the registration server,
// the business server and the call between them for one registration with a password change
// and one business login with its confirmation, on inputs prepared beforehand: no I/O, no
// validation, no state. Counted from the code (reg-server/session.ts, reg-server/rotation.ts,
// server-kit/admin-rpc.ts, biz-server/session.ts, protocol/channel.ts); run on one engine
// (protocol/crypto-engine.ts), so the noble and node:crypto floors are the same list.
// clientLoginFloor: the same for the device's side of the same login (docs/protocol.md §6),
// counted from protocol/channel.ts, registration.ts, login.ts and secret-wrap.ts: what a phone's
// crypto and CBOR cannot do without, whatever runs them (the chip's flash writes not counted).
import { sha256 } from '@noble/hashes/sha2.js';
import type { CryptoEngine } from '../protocol/crypto-engine.ts';
import { encode, decode, type CborValue } from '../protocol/cbor.ts';
import { keystreamRng } from '../protocol/seeded-rng.ts';

const te = new TextEncoder();
const L = (s: string) => te.encode(s);
const ONE = Uint8Array.of(1);
/** The handshake's labels (protocol/channel.ts), encoded once. */
const S = L('usbphone/v1'), OPEN = L('usbphone/v1 opening mac'), SP = L('usbphone/v1 server proof'), CP = L('usbphone/v1 client proof');
const C2S = L('usbphone/v1 traffic c2s'), S2C = L('usbphone/v1 traffic s2c');

/** RFC 5869 on the engine's HMAC, as protocol/keys.ts does: extract, then one expand block. */
function kdfOn(e: CryptoEngine) {
  const extract = (ikm: Uint8Array, salt: Uint8Array) => e.hmacSha256(salt, [ikm]);
  const expand = (prk: Uint8Array, info: Uint8Array) => e.hmacSha256(prk, [info, ONE]);
  return { extract, expand, hkdf: (ikm: Uint8Array, salt: Uint8Array, info: Uint8Array) => expand(extract(ikm, salt), info) };
}

/** The floor's operations for `e`: call the result once per login. */
export function loginFloor(e: CryptoEngine): () => void {
  const r = keystreamRng('login floor');
  const { extract, expand, hkdf } = kdfOn(e);
  const master = r(32), key = r(32), nC = r(32), nS = r(32), n12 = r(12), n24 = r(24), adminKey = r(32), storeKey = r(32);
  const salt = new Uint8Array([...nC, ...nS]);
  const token = r(1 + 24 + 10 + 16);
  const tokenKey = hkdf(master, L('usbphone/v1 serial-token'), L('key'));
  const tokenBox = e.xchachaSeal(tokenKey, n24, token.subarray(0, 1), L('SN-0000001'));
  const hello = encode([1, 1, 0, 'reg-primary', [token, r(32), nC, r(32)]]);
  const finish = encode([1, 3, 2, 'reg-primary', [r(32)]]);
  const aad = r(20);
  const credReq = e.chachaSeal(key, n12, aad, encode(['192.168.1.20']));
  const credReqFrame = encode([1, 10, 3, 'reg-primary', credReq]);
  const adminReq = e.xchachaSeal(adminKey, n24, L('usbphone/v1 admin request|biz-east'), encode([Date.now(), r(16), 'installPending', ['u-1', r(32), r(72), 1, r(16)]]));
  const adminRes = e.xchachaSeal(adminKey, n24, L('usbphone/v1 admin response|biz-east|'), encode([true, [1, 2, true, r(72), r(16)]]));
  const stored = e.xchachaSeal(storeKey, n24, L('u-1/2'), r(32));
  const login = encode([1, 20, 0, 'biz-east', ['u-1', 2, 'password', nC, r(32)]]);
  const bizFinish = encode([1, 3, 3, 'biz-east', [r(32)]]);
  const confirm = e.chachaSeal(key, n12, aad, encode([2]));
  const confirmFrame = encode([1, 30, 4, 'biz-east', confirm]);
  const servers = [['biz-east', 'ws://127.0.0.1:7430/', 'east']];

  /** One server-side handshake (docs/protocol.md §5.2): opening MAC, proof, finish, traffic keys, exporter. */
  const handshake = (k: Uint8Array, opening: Uint8Array, fin: Uint8Array) => {
    decode(opening);
    const t = sha256.create().update(opening);
    e.hmacSha256(hkdf(k, S, OPEN), [encode(['usbphone/v1 opening', 1, 0, 'reg-primary', [nC]])]);
    const th1 = t.clone().update(encode(['usbphone/v1 proof', 2, 1, 'reg-primary', nS])).digest();
    const prk = extract(k, salt);
    const proof = encode([1, 2, 1, 'reg-primary', [nS, e.hmacSha256(expand(prk, SP), [th1])]]);
    t.update(proof);
    decode(fin);
    const th2 = t.clone().digest();
    e.hmacSha256(expand(prk, CP), [th2]);
    const tprk = extract(k, th2);
    const c2s = expand(tprk, C2S), s2c = expand(tprk, S2C);
    extract(new Uint8Array([...c2s, ...s2c]), th2);
  };

  return () => {
    // registration server: the token, the device key, the handshake, the credential request
    const tk = hkdf(master, L('usbphone/v1 serial-token'), L('key'));
    e.xchachaOpen(tk, n24, token.subarray(0, 1), tokenBox);
    const dk = hkdf(master, L('usbphone/v1 device-key'), L('SN-0000001'));
    handshake(dk, hello, finish);
    decode(e.chachaOpen(key, n12, aad, (decode(credReqFrame) as Uint8Array[])[4]!)!);
    // rotation: the new login key, the secret sealed for the reg servers, the admin call both ways
    hkdf(r(32), L('usbphone/v1 biz-login password'), L('u-1'));
    e.xchachaSeal(hkdf(master, L('usbphone/v1 pending secret'), L('SN-0000001')), n24, L('SN-0000001/u-1/'), r(32));
    e.xchachaSeal(adminKey, n24, L('usbphone/v1 admin request|biz-east'), encode([Date.now(), r(16), 'installPending', ['u-1', r(32), r(72), 1, r(16)]]));
    decode(e.xchachaOpen(adminKey, n24, L('usbphone/v1 admin request|biz-east'), adminReq)!);
    e.xchachaSeal(storeKey, n24, L('u-1/2'), r(32)); // the business store wraps the new login key
    e.xchachaSeal(adminKey, n24, L('usbphone/v1 admin response|biz-east|'), encode([true, [1, 2, true, r(72), r(16)]]));
    decode(e.xchachaOpen(adminKey, n24, L('usbphone/v1 admin response|biz-east|'), adminRes)!);
    // the credential reply: the secret wrapped for the chip, sealed on the channel
    const wrapped = e.xchachaSeal(hkdf(dk, L('usbphone/v1 secret wrap'), L('wrap')), n24, encode(['usbphone/v1 wrapped secret', 'u-1', 2]), r(32));
    encode([1, 11, 3, 'reg-primary', e.chachaSeal(key, n12, aad, encode(['u-1', wrapped, 2, 1, servers]))]);
    // business server: the login key unwrapped, the handshake, loginAck, pwConfirm and its ack
    const lk = e.xchachaOpen(storeKey, n24, L('u-1/2'), stored)!;
    encode([1, 21, 0, 'biz-east', []]);
    handshake(lk, login, bizFinish);
    decode(e.chachaOpen(key, n12, aad, (decode(confirmFrame) as Uint8Array[])[4]!)!);
    encode([1, 31, 3, 'biz-east', e.chachaSeal(key, n12, aad, encode([2]))]);
  };
}

/** The device side's floor for `e` (clientLoginFloor above): call the result once per login. */
export function clientLoginFloor(e: CryptoEngine): () => void {
  const r = keystreamRng('client login floor');
  const { extract, expand, hkdf } = kdfOn(e);
  const dk = r(32), secret = r(32), key = r(32), nC = r(32), nS = r(32), n12 = r(12), n24 = r(24), aad = r(20);
  const salt = new Uint8Array([...nC, ...nS]);
  const helloReply = encode([1, 2, 1, 'reg-primary', [nS, r(32)]]);
  const loginAck = encode([1, 21, 0, 'biz-east', []]);
  const loginOk = encode([1, 22, 1, 'biz-east', [nS, r(32)]]);
  const servers = [['biz-east', 'ws://127.0.0.1:7430/', 'east']];
  const wrapped = e.xchachaSeal(hkdf(dk, L('usbphone/v1 secret wrap'), L('wrap')), n24, encode(['usbphone/v1 wrapped secret', 'u-1', 2]), secret);
  const credReply = encode([1, 11, 3, 'reg-primary', e.chachaSeal(key, n12, aad, encode(['u-1', wrapped, 2, 1, servers]))]);
  const ack = encode([1, 31, 3, 'biz-east', e.chachaSeal(key, n12, aad, encode([2]))]);
  const sessions = encode([1, 51, 0, 'gateway', []]);
  const sessionEnd = encode([1, 52, 1, 'reg-primary', [1000, '']]);

  /** One client-side handshake (docs/protocol.md §5.2): opening MAC, the server's proof checked, finish, traffic keys, exporter. */
  const handshake = (k: Uint8Array, dest: string, opening: CborValue[], proofFrame: Uint8Array, clear: Uint8Array | null) => {
    e.hmacSha256(hkdf(k, S, OPEN), [encode(['usbphone/v1 opening', 1, 0, dest, [nC]])]);
    const o = encode([1, 1, 0, dest, [...opening, nC, r(32)]]);
    const t = sha256.create().update(o);
    if (clear) {
      decode(clear);
      t.update(clear);
    }
    decode(proofFrame);
    const th1 = t.clone().update(encode(['usbphone/v1 proof', 2, 1, dest, nS])).digest();
    const prk = extract(k, salt);
    e.hmacSha256(expand(prk, SP), [th1]);
    t.update(proofFrame);
    const th2 = t.clone().digest();
    encode([1, 3, 2, dest, [e.hmacSha256(expand(prk, CP), [th2])]]);
    const tprk = extract(k, th2);
    const c2s = expand(tprk, C2S), s2c = expand(tprk, S2C);
    extract(new Uint8Array([...c2s, ...s2c]), th2);
  };

  return () => {
    decode(sessions);
    encode([1, 51, 0, 'gateway', []]);
    // registration: the handshake under the device key, credRequest sealed, credReply opened, the secret unwrapped
    handshake(dk, 'reg-primary', [r(51), r(32)], helloReply, null);
    encode([1, 10, 3, 'reg-primary', e.chachaSeal(key, n12, aad, encode(['192.168.1.20']))]);
    const reply = decode(e.chachaOpen(key, n12, aad, (decode(credReply) as Uint8Array[])[4]!)!) as unknown[];
    e.xchachaOpen(hkdf(dk, L('usbphone/v1 secret wrap'), L('wrap')), n24, encode(['usbphone/v1 wrapped secret', 'u-1', 2]), reply[1] as Uint8Array);
    decode(sessionEnd);
    encode([1, 52, 1, 'reg-primary', [1000, '']]);
    // business login: the login key from the secret, the handshake, pwConfirm sealed, its ack opened
    const lk = hkdf(secret, L('usbphone/v1 biz-login password'), L('u-1'));
    handshake(lk, 'biz-east', ['password', 'u-1', 2], loginOk, loginAck);
    encode([1, 30, 4, 'biz-east', e.chachaSeal(key, n12, aad, encode([2]))]);
    decode(e.chachaOpen(key, n12, aad, (decode(ack) as Uint8Array[])[4]!)!);
    encode([1, 52, 2, 'biz-east', [1000, '']]);
  };
}
