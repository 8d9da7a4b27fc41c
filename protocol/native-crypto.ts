// The protocol's primitives on node:crypto (OpenSSL), one engine for every host that runs
// node (issue 15): the servers install it (server-kit/host.ts), and the phones' chip engine
// of a fleet is this one plus SHA-256 and Ed25519 (firmware/hal/node/chip-crypto.ts). Same
// bytes as the noble reference (crypto-engine.ts), checked by native-crypto.test.ts and
// chip-crypto.test.ts.
//
// Unlike the rest of protocol/, it imports node:*: it is here because both the servers
// (server-kit/ imports only protocol/) and the node hardware layer (firmware/hal/node/) use it.
// The firmware's own code never reaches it: scripts/imports.test.ts checks that no firmware
// module outside firmware/hal/node/ and firmware/host/ reaches a node:* module through any
// chain of imports (decision 132).
//
// Why these shapes (measured on Node 20, bench/login-cost.bench.ts):
// - HMAC through createHmac: one native call per MAC. (HKDF is built on it in
//   protocol/keys.ts; crypto.hkdfSync costs more than two createHmac calls on Node 20.)
// - ChaCha20-Poly1305 through createCipheriv('chacha20-poly1305').
// - XChaCha20-Poly1305, which OpenSSL lacks: HChaCha20 (draft-irtf-cfrg-xchacha §2.2) in
//   TypeScript (noble's unrolled core, a few hundred ns) for the subkey, then the native
//   ChaCha20-Poly1305 with nonce 0^4 || nonce[16..24] (§2.3).
import { createHmac, createCipheriv, createDecipheriv } from 'node:crypto';
import { hchacha } from '@noble/ciphers/chacha.js';
import type { CryptoEngine } from './crypto-engine.ts';

const TAG = 16;
/**
 * A plain Uint8Array copy of what node returned (callers keep and wipe it; a Buffer's slice()
 * would share memory). new Uint8Array(buffer) copies 32 bytes in a fraction of the time
 * buffer.slice() of the ArrayBuffer takes (1 µs of a 3.5 µs HMAC).
 */
const own = (b: Buffer) => new Uint8Array(b);

function chachaSeal(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, pt: Uint8Array): Uint8Array {
  if (key.length !== 32) throw new RangeError(`key: 32 bytes expected, got ${key.length}`);
  if (nonce.length !== 12) throw new RangeError(`nonce: 12 bytes expected, got ${nonce.length}`);
  const c = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG });
  c.setAAD(aad, { plaintextLength: pt.length });
  const out = new Uint8Array(pt.length + TAG);
  out.set(c.update(pt));
  c.final();
  out.set(c.getAuthTag(), pt.length);
  return out;
}

function chachaOpen(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, sealed: Uint8Array): Uint8Array | null {
  if (key.length !== 32) throw new RangeError(`key: 32 bytes expected, got ${key.length}`);
  if (nonce.length !== 12) throw new RangeError(`nonce: 12 bytes expected, got ${nonce.length}`);
  if (sealed.length < TAG) return null;
  const n = sealed.length - TAG;
  const d = createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG });
  d.setAAD(aad, { plaintextLength: n });
  d.setAuthTag(sealed.subarray(n));
  const pt = d.update(sealed.subarray(0, n));
  try {
    // The tag is checked here; the plaintext above is not handed out unless it verifies.
    d.final();
  } catch {
    pt.fill(0);
    return null;
  }
  const out = own(pt);
  pt.fill(0);
  return out;
}

// "expand 32-byte k" (RFC 8439 §2.3).
const SIGMA = new Uint32Array([0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]);
const LE = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
/**
 * The first n little-endian 32-bit words of b (a copy, aligned). new Uint8Array(view) copies:
 * b.slice() would not when b is a Buffer (SQLite's BLOBs are), and .buffer is then node's
 * whole 8 KiB pool.
 */
const u32 = (b: Uint8Array, n: number) => {
  if (LE) return new Uint32Array(new Uint8Array(b.subarray(0, 4 * n)).buffer);
  const w = new Uint32Array(n);
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  for (let i = 0; i < n; i++) w[i] = dv.getUint32(4 * i, true);
  return w;
};

/** XChaCha20-Poly1305's subkey and 12-byte nonce (draft-irtf-cfrg-xchacha §2.3). */
function xkey(key: Uint8Array, nonce: Uint8Array): { k: Uint8Array; n: Uint8Array } {
  if (key.length !== 32) throw new RangeError(`key: 32 bytes expected, got ${key.length}`);
  if (nonce.length !== 24) throw new RangeError(`nonce: 24 bytes expected, got ${nonce.length}`);
  const kw = u32(key, 8);
  const out = new Uint32Array(8);
  hchacha(SIGMA, kw, u32(nonce, 4), out);
  kw.fill(0);
  const k = new Uint8Array(32);
  if (LE) k.set(new Uint8Array(out.buffer));
  else for (let i = 0; i < 8; i++) new DataView(k.buffer).setUint32(4 * i, out[i]!, true);
  out.fill(0);
  const n = new Uint8Array(12);
  n.set(nonce.subarray(16, 24), 4);
  return { k, n };
}

export const nodeEngine: CryptoEngine = {
  name: 'node:crypto',
  hmacSha256(key, parts) {
    const h = createHmac('sha256', key);
    for (const p of parts) h.update(p);
    return own(h.digest());
  },
  chachaSeal,
  chachaOpen,
  xchachaSeal(key, nonce, aad, pt) {
    const { k, n } = xkey(key, nonce);
    try {
      return chachaSeal(k, n, aad, pt);
    } finally {
      k.fill(0);
    }
  },
  xchachaOpen(key, nonce, aad, sealed) {
    const { k, n } = xkey(key, nonce);
    try {
      return chachaOpen(k, n, aad, sealed);
    } finally {
      k.fill(0);
    }
  },
};
