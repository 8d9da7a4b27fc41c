// A deterministic Rng for tests, test vectors and simulations that must replay from a seed
// (STYLE: "seed each virtual device's Rng from its index"). Never for production keys or
// nonces: anyone who knows the seed knows every byte it will produce. The simulator's
// per-part rng (firmware/hal/sim-hal.ts simRng) is this stream under a labelled seed.
//
// Output: the RFC 8439 ChaCha20 keystream under key SHA-256("usbphone/v1 seeded rng " ||
// seed) and an all-zero nonce, consumed in order; any implementation can reproduce it.
import { chacha20 } from '@noble/ciphers/chacha.js';
import { sha256 } from '@noble/hashes/sha2.js';
import type { Rng } from './rng.ts';

const CHUNK = 1024; // bytes of keystream made at a time (16 blocks)

/** The ChaCha20 keystream of `seed`, handed out in order (n bytes per call). */
export function keystreamRng(seed: number | string): Rng {
  const key = sha256(new TextEncoder().encode(`usbphone/v1 seeded rng ${seed}`));
  const nonce = new Uint8Array(12);
  let buf = new Uint8Array(0);
  let used = 0;
  let block = 0;
  return (n: number): Uint8Array => {
    if (!Number.isInteger(n) || n < 0) throw new RangeError(`rng: n must be a non-negative integer, got ${n}`);
    const out = new Uint8Array(n);
    let o = 0;
    while (o < n) {
      if (used === buf.length) {
        buf = chacha20(key, nonce, new Uint8Array(CHUNK), undefined, block);
        block += CHUNK / 64;
        used = 0;
      }
      const take = Math.min(n - o, buf.length - used);
      out.set(buf.subarray(used, used + take), o);
      used += take;
      o += take;
    }
    return out;
  };
}

/** An Rng that hands out the given byte strings in order, then refuses: for replaying test vectors. */
export function scriptedRng(outputs: Uint8Array[]): Rng {
  const queue = outputs.map((b) => Uint8Array.from(b));
  return (n: number): Uint8Array => {
    const next = queue.shift();
    if (!next || next.length !== n) throw new RangeError(`scripted rng: asked for ${n} bytes, script has ${next ? next.length : 'nothing'}`);
    return next;
  };
}
