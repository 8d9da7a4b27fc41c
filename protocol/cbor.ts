// The one CBOR configuration of the project (RFC 8949).
//
// Encoding: plain CBOR any decoder reads (no cbor-x records, no tags), deterministic per
// RFC 8949 §4.2.1: shortest integer and length forms, definite lengths, map keys sorted by
// their encoded bytes. Everything that is authenticated is encoded here.
//
// Decoding: a strict well-formedness walk checks every declared length against the limits
// and against the bytes that remain before anything is allocated, refuses trailing bytes,
// tags, indefinite lengths, non-shortest forms, unsorted or duplicate map keys, floats,
// undefined and other simple values, integers beyond ±(2^53-1) and invalid UTF-8; only then
// does cbor-x build the value. Byte strings in the result are views of the input:
// validators copy what they keep (messages.ts).
import { Encoder, Decoder } from 'cbor-x';
import { ProtocolError, ImplementationError , type ErrorCode } from './errors.ts';
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
// int64AsNumber: the walk admits only integers within ±(2^53-1), so 64-bit heads decode to
// exact numbers and decode(encode(n)) is n again (not a bigint).
const decoder = new Decoder({ useRecords: false, mapsAsObjects: false, int64AsNumber: true } as ConstructorParameters<typeof Decoder>[0]);
const utf8 = new TextDecoder('utf-8', { fatal: true });
const MAX_SAFE = Number.MAX_SAFE_INTEGER;

function fail(code: ErrorCode, message: string): never {
  throw new ProtocolError(code, message);
}

/**
 * Prepares a value for cbor-x so that its output is deterministic (RFC 8949 §4.2.1):
 * integers outside 32 bits become bigints (cbor-x would write them as float64), map keys are
 * sorted by their encodings. Returns `v` itself when nothing needs to change, so the common
 * case (arrays of small ints, strings and bytes) allocates nothing.
 */
function canonical(v: unknown): unknown {
  switch (typeof v) {
    case 'number':
      if (!Number.isSafeInteger(v)) throw new ImplementationError('CBOR_ENCODE_NUMBER', `only safe integers are encoded, got ${v}`);
      // cbor-x writes [-2^32, 2^32-1] in shortest form itself; beyond, only a bigint gets a
      // 64-bit integer head (and 9 bytes is the shortest form there).
      return v > 0xffffffff || v < -0x100000000 ? BigInt(v) : v;
    case 'bigint':
      if (v > BigInt(MAX_SAFE) || v < -BigInt(MAX_SAFE)) throw new ImplementationError('CBOR_ENCODE_NUMBER', `integer ${v} is beyond ±(2^53-1)`);
      return canonical(Number(v));
    case 'string':
      // A lone surrogate has no UTF-8 form; cbor-x would write bytes every decoder refuses.
      if (!(v as string & { isWellFormed(): boolean }).isWellFormed()) throw new ImplementationError('CBOR_ENCODE_TEXT', 'text with a lone surrogate is not encoded');
      return v;
    case 'boolean':
      return v;
    case 'undefined':
      throw new ImplementationError('CBOR_ENCODE_UNDEFINED', 'undefined is not encoded');
    case 'object': {
      if (v === null || v instanceof Uint8Array) return v;
      if (Array.isArray(v)) {
        let out: unknown[] | null = null;
        for (let i = 0; i < v.length; i++) {
          const x = v[i];
          const c = canonical(x);
          if (out) out.push(c);
          else if (c !== x) {
            out = v.slice(0, i);
            out.push(c);
          }
        }
        return out ?? v;
      }
      if (v instanceof Map) {
        const entries: [Uint8Array, unknown, unknown][] = [];
        for (const [k, x] of v) {
          if (typeof k !== 'string' && !Number.isSafeInteger(k)) throw new ImplementationError('CBOR_ENCODE_KEY', `map keys are safe integers or text, got ${String(k)}`);
          const ck = canonical(k);
          entries.push([encoder.encode(ck) as Uint8Array, ck, canonical(x)]);
        }
        entries.sort((a, b) => compareBytes(a[0], b[0]));
        return new Map(entries.map(([, k, x]) => [k, x]));
      }
      throw new ImplementationError('CBOR_ENCODE_TYPE', `${Object.prototype.toString.call(v)} is not a CBOR value of this protocol`);
    }
    default:
      throw new ImplementationError('CBOR_ENCODE_TYPE', `${typeof v} is not a CBOR value of this protocol`);
  }
}

export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

/**
 * Deterministic encoding. Throws ImplementationError for values the protocol never sends.
 * The result may be a view into a larger buffer: send or copy the view, not `.buffer`.
 */
export function encode(value: CborValue): Uint8Array {
  const out = encoder.encode(canonical(value));
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/** Whether bytes [from, to) are valid UTF-8 (RFC 3629); ASCII, the common case, is checked inline. */
function isUtf8(bytes: Uint8Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) {
    if (bytes[i]! >= 0x80) {
      try {
        utf8.decode(bytes.subarray(i, to));
        return true;
      } catch {
        return false;
      }
    }
  }
  return true;
}

/**
 * Checks that `bytes` hold exactly one well-formed, deterministic CBOR item within the
 * limits. Throws ProtocolError with a CBOR_* code; never allocates by a declared length.
 */
export function checkWellFormed(bytes: Uint8Array, limits: CborLimits = Limits): void {
  if (bytes.length > limits.maxFrameBytes) fail('CBOR_TOO_LARGE', `${bytes.length} bytes > ${limits.maxFrameBytes}`);
  if (bytes.length === 0) fail('CBOR_TRUNCATED', 'empty input');
  // The walk keeps its cursor in module state rather than in closures: it is on the hot path
  // of every frame, and it is synchronous, so no two walks ever interleave.
  w.bytes = bytes;
  w.end = bytes.length;
  w.pos = 0;
  w.items = 0;
  w.limits = limits;
  try {
    item(0);
    if (w.pos !== w.end) fail('CBOR_TRAILING_BYTES', `${w.end - w.pos} bytes after the item`);
  } finally {
    w.bytes = EMPTY; // hold no reference to the frame
  }
}

const EMPTY: Uint8Array = new Uint8Array(0);
const w = { bytes: EMPTY, end: 0, pos: 0, items: 0, limits: Limits as CborLimits };

// Reads the argument of the head starting at `start` (RFC 8949 §3): for ai < 24 the ai
// itself, else the 1/2/4/8 bytes that follow, which must be the shortest form (§4.2.1).
// Values beyond 2^53 are refused: nothing in the protocol needs them. Advances the cursor.
function argument(start: number, major: number, ai: number): number {
  if (ai < 24) return ai;
  const n = 1 << (ai - 24);
  const b = w.bytes;
  let pos = w.pos;
  if (pos + n > w.end) fail('CBOR_TRUNCATED', `input ends inside the head at byte ${start}`);
  let val = 0;
  for (let i = 0; i < n; i++) val = val * 256 + b[pos++]!;
  w.pos = pos;
  if (val > MAX_SAFE || (major === 1 && val > MAX_SAFE - 1)) {
    fail(major >= 2 ? 'CBOR_LIMIT' : 'CBOR_INT_RANGE', `argument beyond 2^53 at byte ${start}`);
  }
  const min = ai === 24 ? 24 : ai === 25 ? 0x100 : ai === 26 ? 0x10000 : 0x100000000;
  if (val < min) fail('CBOR_NOT_DETERMINISTIC', `non-shortest argument at byte ${start}`);
  return val;
}

function item(depth: number): void {
  const limits = w.limits;
  if (++w.items > limits.maxItems) fail('CBOR_LIMIT', `more than ${limits.maxItems} items`);
  if (w.pos >= w.end) fail('CBOR_TRUNCATED', `input ends at byte ${w.pos}`);
  const start = w.pos;
  const ib = w.bytes[w.pos++]!;
  const major = ib >> 5;
  const ai = ib & 31;
  if (major === 6) fail('CBOR_TAG', `tag at byte ${start} (no message defines tags)`);
  if (major === 7) return simple(start, ai);
  if (ai > 27 && ai < 31) fail('CBOR_MALFORMED', `reserved additional information ${ai} at byte ${start}`);
  if (ai === 31) {
    // RFC 8949 §3.2: indefinite length exists for strings, arrays and maps only.
    if (major >= 2) fail('CBOR_INDEFINITE', `indefinite length at byte ${start}`);
    fail('CBOR_MALFORMED', `additional information 31 on an integer at byte ${start}`);
  }
  const arg = argument(start, major, ai);
  switch (major) {
    case 0:
    case 1:
      return;
    case 2:
    case 3: {
      if (arg > limits.maxStringBytes) fail('CBOR_LIMIT', `string of ${arg} bytes at byte ${start} > ${limits.maxStringBytes}`);
      if (arg > w.end - w.pos) fail('CBOR_TRUNCATED', `string at byte ${start} declares ${arg} bytes, ${w.end - w.pos} remain`);
      if (major === 3 && !isUtf8(w.bytes, w.pos, w.pos + arg)) fail('CBOR_BAD_UTF8', `text string at byte ${start} is not UTF-8`);
      w.pos += arg;
      return;
    }
    case 4: {
      if (depth >= limits.maxDepth) fail('CBOR_DEPTH', `nesting deeper than ${limits.maxDepth} at byte ${start}`);
      if (arg > limits.maxArrayItems) fail('CBOR_LIMIT', `array of ${arg} items at byte ${start} > ${limits.maxArrayItems}`);
      if (arg > w.end - w.pos) fail('CBOR_TRUNCATED', `array at byte ${start} declares ${arg} items, ${w.end - w.pos} bytes remain`);
      for (let i = 0; i < arg; i++) item(depth + 1);
      return;
    }
    default: {
      // major 5, a map
      if (depth >= limits.maxDepth) fail('CBOR_DEPTH', `nesting deeper than ${limits.maxDepth} at byte ${start}`);
      if (arg > limits.maxMapEntries) fail('CBOR_LIMIT', `map of ${arg} entries at byte ${start} > ${limits.maxMapEntries}`);
      if (2 * arg > w.end - w.pos) fail('CBOR_TRUNCATED', `map at byte ${start} declares ${arg} entries, ${w.end - w.pos} bytes remain`);
      let prevFrom = -1;
      let prevTo = -1;
      for (let i = 0; i < arg; i++) {
        const k0 = w.pos;
        if (k0 >= w.end) fail('CBOR_TRUNCATED', `input ends inside the map at byte ${start}`);
        const kMajor = w.bytes[k0]! >> 5;
        if (kMajor !== 0 && kMajor !== 1 && kMajor !== 3) fail('CBOR_BAD_KEY', `map key at byte ${k0} is not an integer or text`);
        item(depth + 1);
        // RFC 8949 §4.2.1: keys in the bytewise order of their encodings; an equal key is
        // a duplicate (§5.6), which the protocol refuses outright.
        if (prevFrom >= 0) {
          const c = compareRange(w.bytes, prevFrom, prevTo, k0, w.pos);
          if (c === 0) fail('CBOR_DUPLICATE_KEY', `duplicate map key at byte ${k0}`);
          if (c > 0) fail('CBOR_NOT_DETERMINISTIC', `map key at byte ${k0} is out of order`);
        }
        prevFrom = k0;
        prevTo = w.pos;
        item(depth + 1);
      }
      return;
    }
  }
}

// Major type 7 (RFC 8949 §3.3): only false, true and null are part of the protocol.
function simple(start: number, ai: number): void {
  if (ai === 20 || ai === 21 || ai === 22) return;
  if (ai >= 24 && ai <= 27) {
    const n = 1 << (ai - 24);
    if (w.pos + n > w.end) fail('CBOR_TRUNCATED', `input ends inside the head at byte ${start}`);
    w.pos += n;
    if (ai >= 25) {
      const b = w.bytes;
      const dv = new DataView(b.buffer, b.byteOffset + start + 1, n);
      const f = ai === 25 ? halfToNumber(dv.getUint16(0)) : ai === 26 ? dv.getFloat32(0) : dv.getFloat64(0);
      if (!Number.isFinite(f)) fail('CBOR_NONFINITE', `NaN or Infinity at byte ${start}`);
      fail('CBOR_FLOAT', `floating-point number at byte ${start} (the protocol has none)`);
    }
    fail('CBOR_SIMPLE', `simple value ${w.bytes[start + 1]} at byte ${start}`);
  }
  if (ai === 31) fail('CBOR_MALFORMED', `unexpected break at byte ${start}`);
  if (ai > 27) fail('CBOR_MALFORMED', `reserved additional information ${ai} at byte ${start}`);
  fail('CBOR_SIMPLE', `simple value ${ai} at byte ${start}`);
}

function compareRange(b: Uint8Array, aFrom: number, aTo: number, bFrom: number, bTo: number): number {
  const n = Math.min(aTo - aFrom, bTo - bFrom);
  for (let i = 0; i < n; i++) {
    const d = b[aFrom + i]! - b[bFrom + i]!;
    if (d !== 0) return d;
  }
  return aTo - aFrom - (bTo - bFrom);
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
