// Properties of the codec and the validators, over generated values and bytes (fast-check).
// A failure prints the seed and the shrunk counterexample; rerun it with FC_SEED=<seed>.
import { bytesToHex as hex } from '@noble/hashes/utils.js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { encode, decode, checkWellFormed, type CborValue } from './cbor.ts';
import { ProtocolError } from './errors.ts';
import { Limits } from './limits.ts';
import {
  decodeEnvelope, parseHello, parseServerProof, parseFinish, parseLogin, parseLoginAck, parseLoginFail, parseError, parseCredRequest,
  parseCredReply, parseNotFound, parsePwConfirm,
} from './messages.ts';

if (process.env.FC_SEED) fc.configureGlobal({ seed: Number(process.env.FC_SEED) });

const edgeInts = [0, 1, 23, 24, 255, 256, 65535, 65536, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1,
  -1, -24, -25, -256, -257, -65536, -65537, -(2 ** 31), -(2 ** 31) - 1, -(2 ** 32), -(2 ** 32) - 1, -(2 ** 53 - 1)];

const leaf: fc.Arbitrary<CborValue> = fc.oneof(
  fc.maxSafeInteger(),
  fc.integer({ min: -300, max: 300 }),
  fc.constantFrom(...edgeInts),
  fc.string({ unit: 'binary', maxLength: 24 }),
  fc.string({ unit: 'grapheme-ascii', maxLength: 24 }),
  fc.uint8Array({ maxLength: 48 }),
  fc.boolean(),
  fc.constant(null),
);
const key = fc.oneof(fc.maxSafeInteger(), fc.integer({ min: -30, max: 30 }), fc.string({ maxLength: 6 }), fc.string({ unit: 'binary', maxLength: 4 }));

/** Arbitrary CBOR values of this profile; some exceed the limits on purpose. */
const { value } = fc.letrec<{ value: CborValue; arr: CborValue[]; map: Map<number | string, CborValue> }>((tie) => ({
  value: fc.oneof({ depthSize: 'small', maxDepth: 9 }, leaf, tie('arr'), tie('map')),
  arr: fc.array(tie('value'), { maxLength: 10 }),
  map: fc.uniqueArray(fc.tuple(key, tie('value')), { selector: ([k]) => k, maxLength: 6 }).map((es) => new Map(es)),
}));

/** The shape of a value for comparison: bytes by content, map entries as a set, -0 as 0. */
function norm(v: unknown): unknown {
  if (v instanceof Uint8Array) return { bytes: hex(v) };
  if (Array.isArray(v)) return v.map(norm);
  if (v instanceof Map) {
    const es = [...v].map(([k, x]) => [Object.is(k, -0) ? 0 : k, norm(x)] as [number | string, unknown]);
    return { map: es.sort((a, b) => (JSON.stringify(a[0]) < JSON.stringify(b[0]) ? -1 : 1)) };
  }
  if (Object.is(v, -0)) return 0;
  return v;
}

/** Depth, item count and largest container, as the decoder counts them. */
function measure(v: CborValue, depth = 1): { depth: number; items: number; wide: boolean } {
  if (Array.isArray(v) || v instanceof Map) {
    const kids = Array.isArray(v) ? v : [...v].flat();
    let d = depth;
    let items = 1;
    let wide = Array.isArray(v) ? v.length > Limits.maxArrayItems : v.size > Limits.maxMapEntries;
    for (const k of kids) {
      const m = measure(k as CborValue, depth + 1);
      d = Math.max(d, m.depth);
      items += m.items;
      wide ||= m.wide;
    }
    return { depth: d, items, wide };
  }
  return { depth: depth - 1, items: 1, wide: false };
}

test('round trip: any value within the limits decodes to itself; every encoding is deterministic', () => {
  let within = 0;
  fc.assert(
    fc.property(value, (v) => {
      const bytes = encode(v);
      const m = measure(v);
      const fits = m.depth <= Limits.maxDepth && m.items <= Limits.maxItems && !m.wide && bytes.length <= Limits.maxFrameBytes;
      if (!fits) {
        // Beyond a limit: refused with a limit code, never anything else.
        try {
          decode(bytes);
        } catch (e) {
          return e instanceof ProtocolError && ['CBOR_DEPTH', 'CBOR_LIMIT', 'CBOR_TOO_LARGE'].includes(e.code);
        }
        return false;
      }
      within++;
      checkWellFormed(bytes); // the strict walk accepts it: shortest forms, sorted keys
      const back = decode(bytes);
      assert.equal(norm(back), norm(v));
      assert.is(hex(encode(back)), hex(bytes)); // one value, one encoding
      return true;
    }),
    { numRuns: 1000 },
  );
  assert.ok(within > 600, `${within} values within the limits`);
});

test('the encoding does not depend on map insertion order', () => {
  fc.assert(
    fc.property(fc.uniqueArray(fc.tuple(key, leaf), { selector: ([k]) => k, minLength: 2, maxLength: 12 }), (es) => {
      const a = new Map(es);
      const b = new Map([...es].reverse());
      return hex(encode(a)) === hex(encode(b));
    }),
    { numRuns: 300 },
  );
});

const isProtocolError = (f: () => unknown): boolean => {
  try {
    f();
    return true;
  } catch (e) {
    if (e instanceof ProtocolError) return true;
    throw e; // fast-check reports it with the input that caused it
  }
};

test('decode of arbitrary bytes returns a value or throws ProtocolError, nothing else', () => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (b) => isProtocolError(() => decode(b))), { numRuns: 2000 });
});

/** Valid encodings with a few random edits: reaches far deeper into the decoder than noise. */
const mutated = fc.tuple(value, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom('set', 'insert', 'delete')), { minLength: 1, maxLength: 4 }))
  .map(([v, edits]) => {
    const b = [...encode(v)];
    for (const [at, byte, op] of edits) {
      const i = b.length ? at % b.length : 0;
      if (op === 'set' && b.length) b[i] = byte;
      else if (op === 'insert') b.splice(i, 0, byte);
      else b.splice(i, 1);
    }
    return Uint8Array.from(b);
  });

test('decode of mutated valid encodings returns a value or throws ProtocolError, nothing else', () => {
  fc.assert(fc.property(mutated, (b) => isProtocolError(() => decode(b))), { numRuns: 2000 });
});

const parsers: ((v: CborValue) => unknown)[] = [
  parseHello, (v) => parseServerProof(v), parseFinish, parseLogin, parseLoginAck, parseLoginFail, parseError, parseCredRequest,
  parseCredReply, parseNotFound, (v) => parsePwConfirm(v),
];

// ---- a simple reference of the strict walk (the fast one keeps its cursor in module state) ----

/**
 * The profile's well-formedness rules written the obvious way: returns the CBOR_* code the
 * walk must throw, or null when the input is accepted. Same checks, same order.
 */
function reference(b: Uint8Array, L = Limits): string | null {
  class Stop {
    constructor(readonly code: string) {}
  }
  const no = (code: string): never => {
    throw new Stop(code);
  };
  let pos = 0;
  let items = 0;
  const arg = (major: number, ai: number): number => {
    if (ai < 24) return ai;
    const n = [1, 2, 4, 8][ai - 24]!;
    if (pos + n > b.length) no('CBOR_TRUNCATED');
    let v = 0n;
    for (let i = 0; i < n; i++) v = v * 256n + BigInt(b[pos++]!);
    const max = major === 1 ? BigInt(Number.MAX_SAFE_INTEGER) - 1n : BigInt(Number.MAX_SAFE_INTEGER);
    if (v > max) no(major >= 2 ? 'CBOR_LIMIT' : 'CBOR_INT_RANGE');
    if (v < [24n, 256n, 65536n, 4294967296n][ai - 24]!) no('CBOR_NOT_DETERMINISTIC');
    return Number(v);
  };
  const one = (depth: number): void => {
    if (++items > L.maxItems) no('CBOR_LIMIT');
    if (pos >= b.length) no('CBOR_TRUNCATED');
    const at = pos++;
    const major = b[at]! >> 5;
    const ai = b[at]! & 31;
    if (major === 6) no('CBOR_TAG');
    if (major === 7) {
      if (ai === 20 || ai === 21 || ai === 22) return;
      if (ai === 24) return void (pos + 1 > b.length ? no('CBOR_TRUNCATED') : no('CBOR_SIMPLE'));
      if (ai >= 25 && ai <= 27) {
        const n = [2, 4, 8][ai - 25]!;
        if (pos + n > b.length) no('CBOR_TRUNCATED');
        const dv = new DataView(b.buffer, b.byteOffset + pos, n);
        const exp = ai === 25 ? (dv.getUint16(0) >> 10) & 31 : NaN;
        const finite = ai === 25 ? exp !== 31 : Number.isFinite(ai === 26 ? dv.getFloat32(0) : dv.getFloat64(0));
        no(finite ? 'CBOR_FLOAT' : 'CBOR_NONFINITE');
      }
      no(ai >= 28 ? 'CBOR_MALFORMED' : 'CBOR_SIMPLE');
    }
    if (ai >= 28 && ai <= 30) no('CBOR_MALFORMED');
    if (ai === 31) no(major >= 2 ? 'CBOR_INDEFINITE' : 'CBOR_MALFORMED');
    const n = arg(major, ai);
    if (major <= 1) return;
    if (major <= 3) {
      if (n > L.maxStringBytes) no('CBOR_LIMIT');
      if (pos + n > b.length) no('CBOR_TRUNCATED');
      if (major === 3) {
        try {
          new TextDecoder('utf-8', { fatal: true }).decode(b.subarray(pos, pos + n));
        } catch {
          no('CBOR_BAD_UTF8');
        }
      }
      pos += n;
      return;
    }
    if (depth >= L.maxDepth) no('CBOR_DEPTH');
    if (n > (major === 4 ? L.maxArrayItems : L.maxMapEntries)) no('CBOR_LIMIT');
    if ((major === 4 ? n : 2 * n) > b.length - pos) no('CBOR_TRUNCATED');
    let prev: string | null = null;
    for (let i = 0; i < n; i++) {
      if (major === 5) {
        const k0 = pos;
        if (k0 >= b.length) no('CBOR_TRUNCATED');
        if (![0, 1, 3].includes(b[k0]! >> 5)) no('CBOR_BAD_KEY');
        one(depth + 1);
        const k = hex(b.subarray(k0, pos));
        if (prev !== null && k === prev) no('CBOR_DUPLICATE_KEY');
        // Hex strings compare like the bytes they spell, a prefix first.
        if (prev !== null && k < prev) no('CBOR_NOT_DETERMINISTIC');
        prev = k;
      }
      one(depth + 1);
    }
  };
  try {
    if (b.length > L.maxFrameBytes) no('CBOR_TOO_LARGE');
    if (b.length === 0) no('CBOR_TRUNCATED');
    one(0);
    if (pos !== b.length) no('CBOR_TRAILING_BYTES');
    return null;
  } catch (e) {
    if (e instanceof Stop) return e.code;
    throw e;
  }
}

const fastCode = (b: Uint8Array): string | null => {
  try {
    checkWellFormed(b);
    return null;
  } catch (e) {
    if (e instanceof ProtocolError) return e.code;
    throw e;
  }
};

test('the fast strict walk and the simple reference agree on every input: same verdict, same code', () => {
  fc.assert(fc.property(fc.oneof(fc.uint8Array({ maxLength: 64 }), mutated, value.map((v) => encode(v))), (b) => {
    assert.is(fastCode(b), reference(b), hex(b.subarray(0, 64)));
  }), { numRuns: 3000 });
  // Every one- and two-byte input, exhaustively.
  for (let x = 0; x < 256; x++) {
    assert.is(fastCode(Uint8Array.of(x)), reference(Uint8Array.of(x)));
    for (let y = 0; y < 256; y++) assert.is(fastCode(Uint8Array.of(x, y)), reference(Uint8Array.of(x, y)), `${x} ${y}`);
  }
});

test('every validator, given any decoded value, returns or throws ProtocolError, nothing else', () => {
  fc.assert(fc.property(value, (v) => parsers.every((p) => isProtocolError(() => p(v)))), { numRuns: 1000 });
  // Near-misses: arrays of the right length with arbitrary items.
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 6 }).chain((n) => fc.array(leaf, { minLength: n, maxLength: n })), (a) => parsers.every((p) => isProtocolError(() => p(a)))),
    { numRuns: 2000 },
  );
});

test('decodeEnvelope of arbitrary and mutated bytes returns an envelope or throws ProtocolError', () => {
  fc.assert(fc.property(fc.oneof(fc.uint8Array({ maxLength: 100 }), mutated), (b) => isProtocolError(() => decodeEnvelope(b))), { numRuns: 2000 });
  const envelopes = fc.tuple(fc.constantFrom(1, 2), fc.constantFrom(1, 2, 3, 10, 11, 20, 255, 7), fc.maxSafeInteger(), fc.string({ maxLength: 34 }), value);
  fc.assert(fc.property(envelopes, (e) => isProtocolError(() => decodeEnvelope(encode(e)))), { numRuns: 1000 });
});

test.run();
