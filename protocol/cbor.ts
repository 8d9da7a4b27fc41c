// The one CBOR configuration of the project (RFC 8949).
//
// Encoding: plain CBOR any decoder reads (no cbor-x records, no tags), deterministic per
// RFC 8949 §4.2.1: shortest integer and length forms, definite lengths, map keys sorted by
// their encoded bytes. Everything that is authenticated is encoded here.
//
// Decoding: a strict well-formedness walk checks every declared length against the bytes
// that remain and against the limits before anything is allocated, refuses trailing bytes,
// tags, indefinite lengths, non-shortest forms, floats, undefined and other simple values,
// invalid UTF-8 and duplicate map keys; only then does cbor-x build the value. Byte strings
// in the result are views of the input: validators copy what they keep (messages.ts).
import { Encoder, Decoder } from 'cbor-x';
import { ProtocolError, ImplementationError, CloseCode } from './errors.ts';
import { Limits, type CborLimits } from './limits.ts';

export type CborValue =
  | number
  | bigint
  | string
  | boolean
  | null
  | Uint8Array
  | CborValue[]
  | Map<number | string, CborValue>;

const encoder = new Encoder({ useRecords: false, mapsAsObjects: false, variableMapSize: true, tagUint8Array: false, useFloat32: 0 } as ConstructorParameters<typeof Encoder>[0]);
const decoder = new Decoder({ useRecords: false, mapsAsObjects: false } as ConstructorParameters<typeof Decoder>[0]);
const utf8 = new TextDecoder('utf-8', { fatal: true });

function fail(code: string, message: string): never {
  throw new ProtocolError(code, message, code === 'CBOR_TOO_LARGE' ? CloseCode.tooBig : CloseCode.protocol);
}

/** RFC 8949 §4.2.1: map keys sorted by the bytewise order of their encodings. */
function canonical(v: unknown): unknown {
  if (v instanceof Uint8Array) return v;
  if (Array.isArray(v)) return v.map(canonical);
  if (v instanceof Map) {
    const entries = [...v.entries()].map(([k, x]) => [encoder.encode(k) as Uint8Array, k, canonical(x)] as const);
    entries.sort((a, b) => compareBytes(a[0], b[0]));
    return new Map(entries.map(([, k, x]) => [k, x]));
  }
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v)) throw new ImplementationError('CBOR_ENCODE_NUMBER', `only safe integers are encoded, got ${v}`);
    if (Math.abs(v) > 0xffffffff) return BigInt(v);
  }
  if (v === undefined) throw new ImplementationError('CBOR_ENCODE_UNDEFINED', 'undefined is not encoded');
  return v;
}

export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

/** Deterministic encoding. Throws ImplementationError for values the protocol never sends. */
export function encode(value: CborValue): Uint8Array {
  const out = encoder.encode(canonical(value));
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/**
 * Checks that `bytes` hold exactly one well-formed, deterministic CBOR item within the
 * limits. Throws ProtocolError with a CBOR_* code; never allocates by a declared length.
 */
export function checkWellFormed(bytes: Uint8Array, limits: CborLimits = Limits): void {
  if (bytes.length > limits.maxFrameBytes) fail('CBOR_TOO_LARGE', `${bytes.length} bytes > ${limits.maxFrameBytes}`);
  if (bytes.length === 0) fail('CBOR_TRUNCATED', 'empty input');
  let pos = 0;
  let items = 0;

  // Reads an item head: returns [major, argument]; argument is a number (< 2^53) or -1 for
  // the indefinite marker. Enforces shortest form.
  const head = (): [number, number, number] => {
    if (pos >= bytes.length) fail('CBOR_TRUNCATED', `input ends at byte ${pos}`);
    const start = pos;
    const ib = bytes[pos++]!;
    const major = ib >> 5;
    const ai = ib & 31;
    if (ai < 24) return [major, ai, ai];
    if (ai === 31) return [major, -1, ai];
    if (ai > 27) fail('CBOR_MALFORMED', `reserved additional information ${ai} at byte ${start}`);
    const n = 1 << (ai - 24);
    if (pos + n > bytes.length) fail('CBOR_TRUNCATED', `input ends inside the head at byte ${start}`);
    if (major === 7) {
      pos += n;
      return [major, 0, ai];
    }
    let val = 0;
    for (let i = 0; i < n; i++) val = val * 256 + bytes[pos++]!;
    if (val > Number.MAX_SAFE_INTEGER) fail('CBOR_INT_RANGE', `argument beyond 2^53 at byte ${start}`);
    const min = ai === 24 ? 24 : ai === 25 ? 0x100 : ai === 26 ? 0x10000 : 0x100000000;
    if (val < min) fail('CBOR_NOT_DETERMINISTIC', `non-shortest argument at byte ${start}`);
    return [major, val, ai];
  };

  const item = (depth: number): void => {
    if (++items > limits.maxItems) fail('CBOR_LIMIT', `more than ${limits.maxItems} items`);
    const start = pos;
    const [major, arg, ai] = head();
    if (arg === -1 && major !== 7) fail('CBOR_INDEFINITE', `indefinite length at byte ${start}`);
    switch (major) {
      case 0:
      case 1:
        return;
      case 2:
      case 3: {
        if (arg > limits.maxStringBytes) fail('CBOR_LIMIT', `string of ${arg} bytes at byte ${start} > ${limits.maxStringBytes}`);
        if (pos + arg > bytes.length) fail('CBOR_TRUNCATED', `string at byte ${start} declares ${arg} bytes, ${bytes.length - pos} remain`);
        if (major === 3) {
          try {
            utf8.decode(bytes.subarray(pos, pos + arg));
          } catch {
            fail('CBOR_BAD_UTF8', `text string at byte ${start} is not UTF-8`);
          }
        }
        pos += arg;
        return;
      }
      case 4: {
        if (depth >= limits.maxDepth) fail('CBOR_DEPTH', `nesting deeper than ${limits.maxDepth} at byte ${start}`);
        if (arg > limits.maxArrayItems) fail('CBOR_LIMIT', `array of ${arg} items at byte ${start} > ${limits.maxArrayItems}`);
        if (arg > bytes.length - pos) fail('CBOR_TRUNCATED', `array at byte ${start} declares ${arg} items, ${bytes.length - pos} bytes remain`);
        for (let i = 0; i < arg; i++) item(depth + 1);
        return;
      }
      case 5: {
        if (depth >= limits.maxDepth) fail('CBOR_DEPTH', `nesting deeper than ${limits.maxDepth} at byte ${start}`);
        if (arg > limits.maxMapEntries) fail('CBOR_LIMIT', `map of ${arg} entries at byte ${start} > ${limits.maxMapEntries}`);
        if (2 * arg > bytes.length - pos) fail('CBOR_TRUNCATED', `map at byte ${start} declares ${arg} entries, ${bytes.length - pos} bytes remain`);
        const seen = new Set<string>();
        for (let i = 0; i < arg; i++) {
          const k0 = pos;
          const kMajor = pos < bytes.length ? bytes[pos]! >> 5 : -1;
          if (kMajor !== 0 && kMajor !== 1 && kMajor !== 3) {
            if (kMajor === -1) fail('CBOR_TRUNCATED', `input ends inside the map at byte ${start}`);
            fail('CBOR_BAD_KEY', `map key at byte ${k0} is not an integer or text`);
          }
          item(depth + 1);
          const key = String.fromCharCode(...bytes.subarray(k0, pos));
          if (seen.has(key)) fail('CBOR_DUPLICATE_KEY', `duplicate map key at byte ${k0}`);
          seen.add(key);
          item(depth + 1);
        }
        return;
      }
      case 6:
        fail('CBOR_TAG', `tag ${arg} at byte ${start} (no message defines tags)`);
      case 7: {
        if (ai === 20 || ai === 21 || ai === 22) return; // false, true, null
        if (ai >= 25 && ai <= 27) {
          const dv = new DataView(bytes.buffer, bytes.byteOffset + start + 1, pos - start - 1);
          const f = ai === 25 ? halfToNumber(dv.getUint16(0)) : ai === 26 ? dv.getFloat32(0) : dv.getFloat64(0);
          if (!Number.isFinite(f)) fail('CBOR_NONFINITE', `NaN or Infinity at byte ${start}`);
          fail('CBOR_FLOAT', `floating-point number at byte ${start} (the protocol has none)`);
        }
        if (ai === 31) fail('CBOR_MALFORMED', `unexpected break at byte ${start}`);
        fail('CBOR_SIMPLE', `simple value ${ai === 24 ? 'extended' : ai} at byte ${start}`);
      }
    }
  };

  item(0);
  if (pos !== bytes.length) fail('CBOR_TRAILING_BYTES', `${bytes.length - pos} bytes after the item`);
}

function halfToNumber(h: number): number {
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0x1f) return frac ? NaN : h & 0x8000 ? -Infinity : Infinity;
  return 0; // finite: the value itself does not matter, floats are refused anyway
}

/** Strictly decodes one CBOR item. ProtocolError with a CBOR_* code on any violation. */
export function decode(bytes: Uint8Array, limits: CborLimits = Limits): CborValue {
  checkWellFormed(bytes, limits);
  try {
    return decoder.decode(bytes) as CborValue;
  } catch (e) {
    // The walk above accepts only what cbor-x decodes; reaching here is our bug.
    throw new ImplementationError('CBOR_DECODER', `cbor-x refused a well-formed item: ${(e as Error).message}`);
  }
}
