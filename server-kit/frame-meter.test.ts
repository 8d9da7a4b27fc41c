// The frame meter against hostile byte streams: refusals from the headers alone, the same
// verdict however the bytes are split into reads, and honest traffic never refused.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { FrameMeter } from './frame-meter.ts';
import { DeviceDefaults, type DeviceLimits } from './limits.ts';

/** A masked client frame (RFC 6455 §5.2). */
function frame(opcode: number, payload: number | Uint8Array, fin = true): Uint8Array {
  const p = typeof payload === 'number' ? new Uint8Array(payload) : payload;
  const ext = p.length < 126 ? 0 : p.length < 65536 ? 2 : 8;
  const out = new Uint8Array(2 + ext + 4 + p.length);
  out[0] = (fin ? 0x80 : 0) | opcode;
  out[1] = 0x80 | (ext === 0 ? p.length : ext === 2 ? 126 : 127);
  const dv = new DataView(out.buffer);
  if (ext === 2) dv.setUint16(2, p.length);
  if (ext === 8) dv.setUint32(6, p.length);
  out.set(p, 2 + ext + 4); // mask 0: the payload is its own masked form
  return out;
}
const cat = (...a: Uint8Array[]) => Uint8Array.from(a.flatMap((x) => [...x]));
const L = (o: Partial<DeviceLimits> = {}): DeviceLimits => ({ ...DeviceDefaults, framesPerSecond: 1e9, frameBurst: 1e9, ...o });
const run = (m: FrameMeter, bytes: Uint8Array, split: number) => {
  for (let i = 0; i < bytes.length; i += split) {
    const e = m.feed(bytes.subarray(i, i + split));
    if (e) return `${e.code}/${e.closeCode}`;
  }
  return null;
};

test('honest frames pass whatever the read boundaries; a frame of exactly maxFrameBytes too', () => {
  const honest = cat(frame(2, 10), frame(9, 0), frame(2, 200), frame(2, DeviceDefaults.maxFrameBytes), frame(2, 5, false), frame(0, 5));
  for (const split of [1, 2, 3, 7, 14, 1000, honest.length]) assert.is(run(new FrameMeter(L({ maxReadsPerMessage: 1e9 })), honest, split), null, `split ${split}`);
});

test('hostile streams: each refused with its code and close code, from the header', () => {
  const cases: [string, Uint8Array, Partial<DeviceLimits>, string][] = [
    ['text frame', frame(1, 3), {}, 'GW_TEXT_FRAME/1003'],
    ['declared length over the limit, no payload sent', frame(2, DeviceDefaults.maxFrameBytes + 1).subarray(0, 8), {}, 'GW_FRAME_TOO_LARGE/1009'],
    ['64-bit length 2^60', Uint8Array.of(0x82, 0xff, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), {}, 'GW_FRAME_TOO_LARGE/1009'],
    ['fragments adding up over the limit', cat(frame(2, 10_000, false), frame(0, 10_000, false)), {}, 'GW_FRAME_TOO_LARGE/1009'],
    ['one frame without FIN then 16,000 one-byte continuations', cat(frame(2, 1, false), ...Array.from({ length: 16_000 }, () => frame(0, 1, false))), {}, 'GW_FRAGMENTED/1008'],
    ['a flood of whole frames', cat(...Array.from({ length: 100 }, () => frame(2, 1))), { framesPerSecond: 20, frameBurst: 40 }, 'GW_RATE_LIMITED/1008'],
    ['a flood of pings', cat(...Array.from({ length: 100 }, () => frame(9, 0))), { framesPerSecond: 20, frameBurst: 40 }, 'GW_RATE_LIMITED/1008'],
  ];
  for (const [name, bytes, o, want] of cases) {
    for (const split of [1, 5, bytes.length]) {
      const limits = L({ maxReadsPerMessage: 1e9, ...o });
      assert.is(run(new FrameMeter(limits), bytes, split), want, `${name} (reads of ${split})`);
    }
  }
});

test('a message trickled in more reads than maxReadsPerMessage: GW_TRICKLED; the same bytes in few reads pass', () => {
  const f = frame(2, 500);
  assert.is(run(new FrameMeter(L({ maxReadsPerMessage: 64 })), f, 1), 'GW_TRICKLED/1008');
  assert.is(run(new FrameMeter(L({ maxReadsPerMessage: 64 })), f, 10), null);
  // The count is per message: many messages each in a few reads never add up.
  const many = cat(...Array.from({ length: 200 }, () => frame(2, 30)));
  assert.is(run(new FrameMeter(L({ maxReadsPerMessage: 8 })), many, 12), null);
});

test('after a refusal the meter refuses every read; partialSince tells the sweep how old an unfinished message is', () => {
  let now = 1000;
  const m = new FrameMeter(L(), () => now);
  assert.is(m.partialSince, 0);
  m.feed(frame(2, 100).subarray(0, 50));
  assert.is(m.partialSince, 1000);
  now = 2000;
  m.feed(frame(2, 100).subarray(50));
  assert.is(m.partialSince, 0);
  const e = m.feed(frame(1, 1));
  assert.ok(e);
  assert.is(m.feed(frame(2, 1)), e);
});

test.run();
