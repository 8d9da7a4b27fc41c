// Properties of the sealed channel (fast-check): any change to a sealed frame is refused and
// ends the session; sealing and opening round-trip any message. Rerun a failure with FC_SEED.
import { bytesToHex as hex } from '@noble/hashes/utils.js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { SecureChannel } from './channel.ts';
import { decodeEnvelope, SEALED_TYPES } from './messages.ts';
import { ProtocolError } from './errors.ts';
import type { CborValue } from './cbor.ts';

if (process.env.FC_SEED) fc.configureGlobal({ seed: Number(process.env.FC_SEED) });

const inner: fc.Arbitrary<CborValue> = fc.array(
  fc.oneof(fc.maxSafeInteger(), fc.string({ maxLength: 40 }), fc.uint8Array({ maxLength: 64 }), fc.boolean(), fc.constant(null)),
  { maxLength: 6 },
);
const sealedType = fc.constantFrom(...SEALED_TYPES);
const key = fc.uint8Array({ minLength: 32, maxLength: 32 });
const dest = fc.stringMatching(/^[a-z0-9][a-z0-9-]{0,31}$/);

/** A client/server pair on the given keys, both at `seq`, as after a handshake. */
function pair(k1: Uint8Array, k2: Uint8Array, d: string, seq: number) {
  return {
    c: new SecureChannel('client', d, k1.slice(), k2.slice(), seq, seq),
    s: new SecureChannel('server', d, k2.slice(), k1.slice(), seq, seq),
  };
}

test('seal then open gives the message back, in both directions', () => {
  fc.assert(
    fc.property(key, key, dest, fc.integer({ min: 0, max: 2 ** 32 - 10 }), sealedType, inner, (k1, k2, d, seq, t, m) => {
      const { c, s } = pair(k1, k2, d, seq);
      const norm = (v: unknown) => JSON.stringify(v, (_k, x) => (x instanceof Uint8Array ? hex(x) : x));
      assert.is(norm(s.open(decodeEnvelope(c.seal(t, m)))), norm(m));
      assert.is(norm(c.open(decodeEnvelope(s.seal(t, m)))), norm(m));
    }),
    { numRuns: 300 },
  );
});

/** Edits of a frame: one byte changed (any position, any nonzero xor), inserted, deleted, or cut. */
const edit = fc.oneof(
  fc.tuple(fc.constant('xor' as const), fc.nat(), fc.integer({ min: 1, max: 255 })),
  fc.tuple(fc.constant('insert' as const), fc.nat(), fc.integer({ min: 0, max: 255 })),
  fc.tuple(fc.constant('delete' as const), fc.nat(), fc.constant(0)),
  fc.tuple(fc.constant('cut' as const), fc.nat(), fc.constant(0)),
);
function apply(frame: Uint8Array, [op, at, byte]: [string, number, number]): Uint8Array {
  const b = [...frame];
  const i = at % b.length;
  if (op === 'xor') b[i]! ^= byte;
  else if (op === 'insert') b.splice(at % (b.length + 1), 0, byte);
  else if (op === 'delete') b.splice(i, 1);
  else b.length = i;
  return Uint8Array.from(b);
}

test('any single-byte change (or insertion, deletion, truncation) of a sealed frame is refused and ends the session', () => {
  fc.assert(
    fc.property(key, key, dest, fc.integer({ min: 0, max: 1000 }), sealedType, inner, edit, fc.boolean(), (k1, k2, d, seq, t, m, e, toServer) => {
      const { c, s } = pair(k1, k2, d, seq);
      const [from, to] = toServer ? [c, s] : [s, c];
      const bad = apply(from.seal(t, m), e);
      try {
        to.open(decodeEnvelope(bad));
      } catch (err) {
        if (!(err instanceof ProtocolError)) throw err;
        // Refused by the envelope decoder (the session code then closes) or by the channel, which closed itself.
        return err.code.startsWith('CBOR_') || err.code.startsWith('MSG_') || to.closed;
      }
      return false; // accepted: a forgery
    }),
    { numRuns: 2000 },
  );
});

test('a frame opened on a channel with any other key is refused (CHAN_BAD_TAG)', () => {
  fc.assert(
    fc.property(key, key, key, dest, sealedType, inner, (k1, k2, k3, d, t, m) => {
      fc.pre(hex(k1) !== hex(k3));
      const c = new SecureChannel('client', d, k1, k2, 2, 1);
      const wrong = new SecureChannel('server', d, k2.slice(), k3, 1, 2);
      try {
        wrong.open(decodeEnvelope(c.seal(t, m)));
      } catch (err) {
        return err instanceof ProtocolError && err.code === 'CHAN_BAD_TAG' && wrong.closed;
      }
      return false;
    }),
    { numRuns: 300 },
  );
});

test.run();
