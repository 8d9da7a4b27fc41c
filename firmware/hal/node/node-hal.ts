// The Node HAL: real WebSocket client (ws), real clock, crypto randomness. Each phone's
// sockets are bound to its own loopback address so the gateway sees distinct client IPs.
import WebSocket from 'ws';
import { performance } from 'node:perf_hooks';
import { randomFillSync } from 'node:crypto';
import type { Clock, NetSocket, Network, Rng, NetHandlers } from '../hal.ts';
import { Limits } from '../../../protocol/limits.ts';

export const nodeClock: Clock = {
  now: () => performance.now(),
  epochMs: () => Date.now(),
  setTimer: (ms, fn) => setTimeout(fn, ms),
  clearTimer: (h) => clearTimeout(h as NodeJS.Timeout),
};

/** Bytes of node:crypto's CSPRNG drawn at once for nodeRng; larger requests go to it directly. */
const RNG_POOL_BYTES = 4096;
const RNG_DIRECT_ABOVE = 256;
const rngPool = new Uint8Array(RNG_POOL_BYTES);
let rngPos = RNG_POOL_BYTES;

/**
 * n bytes of node:crypto's CSPRNG (a fresh array). Small requests (<= 256 bytes: nonces, keys,
 * jitter) come from a 4 KiB pool filled by one randomFillSync and refilled when spent, as
 * node:crypto's randomUUID does: each byte is handed out once and wiped from the pool as it is.
 * One randomFillSync per request cost ~4 us of set-up, ~0.7 % of a fleet's phone CPU (issue 15).
 */
export const nodeRng: Rng = (n) => {
  // A length that is not a whole number >= 0 would move the pool's position back (bytes handed
  // out twice) or poison it (NaN: every later request empty): refused, the pool untouched (found by review).
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`nodeRng: ${n} is not a byte count`);
  if (n > RNG_DIRECT_ABOVE) return randomFillSync(new Uint8Array(n));
  if (rngPos + n > RNG_POOL_BYTES) {
    randomFillSync(rngPool);
    rngPos = 0;
  }
  const out = rngPool.slice(rngPos, rngPos + n);
  rngPool.fill(0, rngPos, rngPos + n);
  rngPos += n;
  return out;
};

export function nodeNetwork(localIp = '127.0.0.1'): Network {
  return {
    localIp,
    connect(url: string, h: NetHandlers): NetSocket {
      let ws: WebSocket;
      try {
        ws = new WebSocket(url, { localAddress: localIp, maxPayload: Limits.maxFrameBytes, perMessageDeflate: false });
      } catch (e) {
        // ws refuses some addresses synchronously (a malformed host): the contract is one
        // onClose, as for a connection that never opened, never a throw at the firmware.
        setImmediate(() => h.onClose(1006, `bad address (${(e as Error).message})`));
        return { send() {}, close() {} };
      }
      ws.binaryType = 'nodebuffer';
      let closed = false;
      const close = (code: number, reason: string) => {
        if (closed) return;
        closed = true;
        h.onClose(code, reason);
      };
      ws.on('open', () => h.onOpen());
      ws.on('message', (data: Buffer, isBinary: boolean) => {
        if (!isBinary) return close(1003, 'text frame');
        h.onMessage(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      });
      ws.on('close', (code, reason) => close(code, reason.toString()));
      ws.on('error', (e) => {
        close(1006, (e as NodeJS.ErrnoException).code ?? e.message);
        ws.terminate();
      });
      return {
        send(data) {
          if (ws.readyState === WebSocket.OPEN) ws.send(data);
        },
        close(code = 1000, reason = '') {
          if (ws.readyState === WebSocket.OPEN) ws.close(code, reason);
          else ws.terminate();
        },
      };
    },
  };
}
