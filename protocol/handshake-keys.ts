// The key-holding half of the client handshake (docs/protocol.md §5): every computation of
// the handshake that needs the long-term key (the device key for registration, the login key
// for a business login), and nothing else. The rest of the client handshake (framing, seq
// checks, the running transcript) never touches the key.
//
// Two holders implement ClientKeyOps: softClientKeyOps() keeps the key in memory (servers'
// test device, vectors, benches), and the phone's secure element (firmware/secure/) runs the
// very same function inside the chip, so the long-term key never leaves it: the host gets
// the opening MAC, the finish MAC and the session traffic keys (ephemeral), nothing more.
import { equalBytes, concatBytes } from '@noble/ciphers/utils.js';
import { kdf, kdfExtract, kdfExpand, mac } from './keys.ts';
import { encode, type CborValue } from './cbor.ts';
import { NONCE_BYTES } from './messages.ts';

import type { Rng } from './rng.ts';
export type { Rng };

/** HKDF labels of the handshake and the traffic keys (docs/protocol.md §5.2). */
export const HS_LABEL = {
  opening: 'usbphone/v1 opening mac',
  serverProof: 'usbphone/v1 server proof',
  clientProof: 'usbphone/v1 client proof',
  c2s: 'usbphone/v1 traffic c2s',
  s2c: 'usbphone/v1 traffic s2c',
} as const;

/** The bytes the opening MAC covers: everything of the opening frame but the MAC. */
export function openingInput(type: number, seq: number, dest: string, fields: CborValue[]): Uint8Array {
  return encode(['usbphone/v1 opening', type, seq, dest, fields]);
}
/** What the server's proof binds besides the transcript: the proof frame's header and nS. */
export function proofInput(type: number, seq: number, dest: string, nonce: Uint8Array): Uint8Array {
  return encode(['usbphone/v1 proof', type, seq, dest, nonce]);
}

/** MAC of an opening (hello / login) under `key` (docs/protocol.md §5.2). */
export function openingMac(key: Uint8Array, input: Uint8Array): Uint8Array {
  const k = kdf(key, 'usbphone/v1', HS_LABEL.opening);
  const m = mac(k, input);
  k.fill(0);
  return m;
}

/** The opening the key holder made: the client nonce nC (32 bytes) and the opening MAC. */
export interface OpeningProof {
  nonce: Uint8Array;
  mac: Uint8Array;
}

/**
 * What the client sends back after a verified server proof: the finish MAC over th2 and the
 * traffic keys (c2s: client to server, s2c: server to client), each 32 bytes.
 */
export interface FinishKeys {
  finish: Uint8Array;
  c2s: Uint8Array;
  s2c: Uint8Array;
}

/** The server's proof as the client checks it: th1 = transcript hash with proofInput appended. */
export interface ServerProofCheck {
  th1: Uint8Array;
  nonce: Uint8Array;
  mac: Uint8Array;
  /** Transcript hash after the proof frame: what the finish MAC and the traffic keys bind. */
  th2: Uint8Array;
}

/**
 * The operations of a client handshake that use the long-term key. Single use: opening()
 * once, then proof() once; any failure or abort() wipes what it holds.
 */
export interface ClientKeyOps {
  /** Draws nC and MACs the opening of `fields` followed by nC. */
  opening(type: number, seq: number, dest: string, fields: CborValue[]): OpeningProof;
  /** Checks the server's proof; null when it does not verify (the server lacks the key). */
  proof(p: ServerProofCheck): FinishKeys | null;
  abort(): void;
}

/** The key in memory (a copy, wiped when done). */
export function softClientKeyOps(key: Uint8Array, rng: Rng): ClientKeyOps {
  let k: Uint8Array | null = Uint8Array.from(key);
  let nC: Uint8Array | null = null;
  const wipe = () => {
    k?.fill(0);
    k = null;
  };
  return {
    opening(type, seq, dest, fields) {
      if (!k || nC) throw new Error('softClientKeyOps: opening is the first step, once');
      nC = rng(NONCE_BYTES);
      return { nonce: Uint8Array.from(nC), mac: openingMac(k, openingInput(type, seq, dest, [...fields, nC])) };
    },
    proof(p) {
      if (!k || !nC) throw new Error('softClientKeyOps: proof before opening');
      try {
        // Both proof keys from one (key, nC | nS) extract, both traffic keys from one (key, th2)
        // extract: the same outputs as kdf() per label (RFC 5869 §2.2-2.3).
        const prk = kdfExtract(k, concatBytes(nC, p.nonce));
        const ok = equalBytes(mac(kdfExpand(prk, HS_LABEL.serverProof), p.th1), p.mac);
        if (!ok) {
          prk.fill(0);
          return null;
        }
        const finish = mac(kdfExpand(prk, HS_LABEL.clientProof), p.th2);
        prk.fill(0);
        const tprk = kdfExtract(k, p.th2);
        const out = { finish, c2s: kdfExpand(tprk, HS_LABEL.c2s), s2c: kdfExpand(tprk, HS_LABEL.s2c) };
        tprk.fill(0);
        return out;
      } finally {
        wipe();
      }
    },
    abort: wipe,
  };
}
