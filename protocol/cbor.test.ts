// The strict CBOR codec: RFC 8949 Appendix A examples both ways, and a table of hostile
// inputs thrown at decode() / checkWellFormed(), each refused with its documented code.
import { bytesToHex as hex, hexToBytes as h } from '@noble/hashes/utils.js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { encode, decode, checkWellFormed, compareBytes, type CborValue } from './cbor.ts';
import { ProtocolError, ImplementationError, CloseCode } from './errors.ts';
import { Limits, type CborLimits } from './limits.ts';

/** Asserts that decode(bytes) throws ProtocolError `code` (and checkWellFormed the same). */
function refuses(bytes: Uint8Array, code: string, limits: CborLimits = Limits, label = hex(bytes.subarray(0, 40))): void {
  for (const f of [() => decode(bytes, limits), () => checkWellFormed(bytes, limits)]) {
    try {
      f();
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw new assert.Assertion({ message: `${label}: threw ${String(e)}, not a ProtocolError`, operator: 'refuses' } as never);
      assert.is(e.code, code, `${label}: code`);
      assert.is(e.closeCode, code === 'CBOR_TOO_LARGE' ? CloseCode.tooBig : CloseCode.protocol, `${label}: close code`);
      continue;
    }
    assert.unreachable(`${label}: accepted, expected ${code}`);
  }
}

/** Decoded byte strings are views (maybe Buffers): compare as plain Uint8Arrays. */
function plain(v: unknown): unknown {
  if (v instanceof Uint8Array) return Uint8Array.from(v);
  if (Array.isArray(v)) return v.map(plain);
  if (v instanceof Map) return new Map([...v].map(([k, x]) => [k, plain(x)]));
  return v;
}

const te = new TextEncoder();
const concat = (...p: Uint8Array[]) => Uint8Array.from(p.flatMap((x) => [...x]));

// ---- RFC 8949 Appendix A: every example, accepted both ways or refused with its code ----

const accepted: [string, CborValue][] = [
  ['00', 0], ['01', 1], ['0a', 10], ['17', 23], ['1818', 24], ['1819', 25], ['1864', 100],
  ['1903e8', 1000], ['1a000f4240', 1000000], ['1b000000e8d4a51000', 1000000000000],
  ['20', -1], ['29', -10], ['3863', -100], ['3903e7', -1000],
  ['f4', false], ['f5', true], ['f6', null],
  ['40', new Uint8Array(0)], ['4401020304', h('01020304')],
  ['60', ''], ['6161', 'a'], ['6449455446', 'IETF'], ['62225c', '"\\'], ['62c3bc', '\u00fc'],
  ['63e6b0b4', '\u6c34'], ['64f0908591', '\u{10151}'],
  ['80', []], ['83010203', [1, 2, 3]], ['8301820203820405', [1, [2, 3], [4, 5]]],
  ['98190102030405060708090a0b0c0d0e0f101112131415161718181819', Array.from({ length: 25 }, (_, i) => i + 1)],
  ['a0', new Map()], ['a201020304', new Map([[1, 2], [3, 4]])],
  ['a26161016162820203', new Map<string, CborValue>([['a', 1], ['b', [2, 3]]])],
  ['826161a161626163', ['a', new Map([['b', 'c']])]],
  ['a56161614161626142616361436164614461656145', new Map([['a', 'A'], ['b', 'B'], ['c', 'C'], ['d', 'D'], ['e', 'E']])],
  // Beyond Appendix A: the edges of each integer width, both signs.
  ['1affffffff', 0xffffffff], ['1b0000000100000000', 2 ** 32], ['1b001fffffffffffff', Number.MAX_SAFE_INTEGER],
  ['3affffffff', -(2 ** 32)], ['3b0000000100000000', -(2 ** 32) - 1], ['3b001ffffffffffffe', -Number.MAX_SAFE_INTEGER],
  // Mixed keys in deterministic order: uint < nint < text.
  ['a301022003616101', new Map<number | string, CborValue>([[1, 2], [-1, 3], ['a', 1]])],
];

test('RFC 8949 Appendix A examples the profile admits: decode gives the value, encode gives the bytes', () => {
  for (const [x, v] of accepted) {
    assert.equal(plain(decode(h(x))), plain(v), `decode ${x}`);
    assert.is(hex(encode(v)), x, `encode ${JSON.stringify(v, (_k, y) => (typeof y === 'bigint' ? String(y) : y instanceof Map ? [...y] : y))}`);
  }
});

const refusedExamples: [string, string][] = [
  // integers beyond ±(2^53-1)
  ['1bffffffffffffffff', 'CBOR_INT_RANGE'], ['3bffffffffffffffff', 'CBOR_INT_RANGE'],
  ['1b0020000000000000', 'CBOR_INT_RANGE'], ['3b001fffffffffffff', 'CBOR_INT_RANGE'],
  // bignums are tags
  ['c249010000000000000000', 'CBOR_TAG'], ['c349010000000000000000', 'CBOR_TAG'],
  // floats: finite ones are CBOR_FLOAT, NaN and ±Infinity CBOR_NONFINITE, in all three widths
  ['f90000', 'CBOR_FLOAT'], ['f98000', 'CBOR_FLOAT'], ['f93c00', 'CBOR_FLOAT'], ['fb3ff199999999999a', 'CBOR_FLOAT'],
  ['f93e00', 'CBOR_FLOAT'], ['f97bff', 'CBOR_FLOAT'], ['fa47c35000', 'CBOR_FLOAT'], ['fa7f7fffff', 'CBOR_FLOAT'],
  ['fb7e37e43c8800759c', 'CBOR_FLOAT'], ['f90001', 'CBOR_FLOAT'], ['f90400', 'CBOR_FLOAT'], ['f9c400', 'CBOR_FLOAT'],
  ['fbc010666666666666', 'CBOR_FLOAT'],
  ['f97c00', 'CBOR_NONFINITE'], ['f97e00', 'CBOR_NONFINITE'], ['f9fc00', 'CBOR_NONFINITE'], ['f97c01', 'CBOR_NONFINITE'],
  ['fa7f800000', 'CBOR_NONFINITE'], ['fa7fc00000', 'CBOR_NONFINITE'], ['faff800000', 'CBOR_NONFINITE'],
  ['fb7ff0000000000000', 'CBOR_NONFINITE'], ['fb7ff8000000000000', 'CBOR_NONFINITE'], ['fbfff0000000000000', 'CBOR_NONFINITE'],
  // simple values other than false/true/null
  ['f7', 'CBOR_SIMPLE'], ['f0', 'CBOR_SIMPLE'], ['f8ff', 'CBOR_SIMPLE'], ['f818', 'CBOR_SIMPLE'], ['e0', 'CBOR_SIMPLE'],
  // tags
  ['c074323031332d30332d32315432303a30343a30305a', 'CBOR_TAG'], ['c11a514b67b0', 'CBOR_TAG'], ['c1fb41d452d9ec200000', 'CBOR_TAG'],
  ['d74401020304', 'CBOR_TAG'], ['d818456449455446', 'CBOR_TAG'], ['d82076687474703a2f2f7777772e6578616d706c652e636f6d', 'CBOR_TAG'],
  // indefinite lengths
  ['5f42010243030405ff', 'CBOR_INDEFINITE'], ['7f657374726561646d696e67ff', 'CBOR_INDEFINITE'], ['9fff', 'CBOR_INDEFINITE'],
  ['9f018202039f0405ffff', 'CBOR_INDEFINITE'], ['9f01820203820405ff', 'CBOR_INDEFINITE'], ['83018202039f0405ff', 'CBOR_INDEFINITE'],
  ['83019f0203ff820405', 'CBOR_INDEFINITE'], ['bf61610161629f0203ffff', 'CBOR_INDEFINITE'], ['826161bf61626163ff', 'CBOR_INDEFINITE'],
  ['bf6346756ef563416d7421ff', 'CBOR_INDEFINITE'],
];

test('RFC 8949 Appendix A examples outside the profile are refused with their codes', () => {
  for (const [x, code] of refusedExamples) refuses(h(x), code);
});

// ---- hostile inputs, table-driven (compare noble's TYPE_TEST) ----

const small: CborLimits = { maxFrameBytes: 64, maxDepth: 3, maxArrayItems: 4, maxMapEntries: 2, maxStringBytes: 8, maxItems: 10 };

const hostile: [string, string, string, CborLimits?][] = [
  // [what, hex, code, limits]
  ['empty input', '', 'CBOR_TRUNCATED'],
  ['trailing byte after an int', '0000', 'CBOR_TRAILING_BYTES'],
  ['trailing bytes after an array', '8201020304', 'CBOR_TRAILING_BYTES'],
  ['two items', '6161f6', 'CBOR_TRAILING_BYTES'],
  // non-shortest forms (RFC 8949 §4.2.1)
  ['uint 0 in 1 byte', '1800', 'CBOR_NOT_DETERMINISTIC'], ['uint 23 in 1 byte', '1817', 'CBOR_NOT_DETERMINISTIC'],
  ['uint 255 in 2 bytes', '1900ff', 'CBOR_NOT_DETERMINISTIC'], ['uint 65535 in 4 bytes', '1a0000ffff', 'CBOR_NOT_DETERMINISTIC'],
  ['uint 2^32-1 in 8 bytes', '1b00000000ffffffff', 'CBOR_NOT_DETERMINISTIC'], ['nint -1 in 1 byte', '3800', 'CBOR_NOT_DETERMINISTIC'],
  ['nint -1 in 8 bytes', '3b0000000000000000', 'CBOR_NOT_DETERMINISTIC'],
  ['bytes length 0 in 1 byte', '5800', 'CBOR_NOT_DETERMINISTIC'], ['text length 1 in 2 bytes', '79000161', 'CBOR_NOT_DETERMINISTIC'],
  ['array length 0 in 1 byte', '9800', 'CBOR_NOT_DETERMINISTIC'], ['map length 1 in 4 bytes', 'ba000000010102', 'CBOR_NOT_DETERMINISTIC'],
  ['int key non-shortest', 'a1180102', 'CBOR_NOT_DETERMINISTIC'],
  // map keys: order and duplicates
  ['keys 3, 1 out of order', 'a203040102', 'CBOR_NOT_DETERMINISTIC'],
  ['text key before int key', 'a261610101f6', 'CBOR_NOT_DETERMINISTIC'], ['nint key before uint key', 'a220010102', 'CBOR_NOT_DETERMINISTIC'],
  ['longer text key first', 'a2626262016161f6', 'CBOR_NOT_DETERMINISTIC'],
  ['duplicate int key', 'a201020103', 'CBOR_DUPLICATE_KEY'], ['duplicate text key', 'a2616101616102', 'CBOR_DUPLICATE_KEY'],
  ['duplicate key in a nested map', '81a201020103', 'CBOR_DUPLICATE_KEY'],
  ['bytes as key', 'a14101f6', 'CBOR_BAD_KEY'], ['array as key', 'a18001', 'CBOR_BAD_KEY'], ['map as key', 'a1a001', 'CBOR_BAD_KEY'],
  ['null as key', 'a1f601', 'CBOR_BAD_KEY'], ['false as key', 'a1f401', 'CBOR_BAD_KEY'], ['float as key', 'a1f9000001', 'CBOR_BAD_KEY'],
  ['tag as key', 'a1c00101', 'CBOR_BAD_KEY'],
  // truncation
  ['uint head cut', '19ff', 'CBOR_TRUNCATED'], ['uint64 head cut', '1b000000010000', 'CBOR_TRUNCATED'],
  ['bytes body cut', '44010203', 'CBOR_TRUNCATED'], ['text body cut', '636162', 'CBOR_TRUNCATED'],
  ['array items missing', '830102', 'CBOR_TRUNCATED'], ['map value missing', 'a10102a1', 'CBOR_TRAILING_BYTES'],
  ['map value cut', 'a101', 'CBOR_TRUNCATED'], ['map key missing', 'a2010203', 'CBOR_TRUNCATED'],
  ['float head cut', 'fb3ff1', 'CBOR_TRUNCATED'], ['half head cut', 'f97c', 'CBOR_TRUNCATED'], ['simple head cut', 'f8', 'CBOR_TRUNCATED'],
  // huge declared lengths: refused before any allocation, by limit or by the bytes that remain
  ['bytes of 2^32-1', '5affffffff', 'CBOR_LIMIT'], ['bytes of 2^53-1', '5b001fffffffffffff', 'CBOR_LIMIT'],
  ['bytes of 2^64-1', '5bffffffffffffffff', 'CBOR_LIMIT'], ['text of 2^64-1', '7bffffffffffffffff', 'CBOR_LIMIT'],
  ['array of 2^64-1', '9bffffffffffffffff', 'CBOR_LIMIT'], ['map of 2^64-1', 'bbffffffffffffffff', 'CBOR_LIMIT'],
  ['array of 2^32-1', '9affffffff', 'CBOR_LIMIT'], ['map of 2^32-1', 'baffffffff', 'CBOR_LIMIT'],
  ['bytes of 4096 with 0 present', '591000', 'CBOR_TRUNCATED'], ['bytes of 4097', '591001', 'CBOR_LIMIT'],
  ['array of 64 with 0 present', '9840', 'CBOR_TRUNCATED'], ['array of 65', '9841', 'CBOR_LIMIT'],
  ['map of 32 with 1 byte present', 'b82000', 'CBOR_TRUNCATED'], ['map of 33', 'b821', 'CBOR_LIMIT'],
  // limits, with small ones to keep the inputs short
  ['string over the limit', '49000000000000000000', 'CBOR_LIMIT', small],
  ['array over the limit', '850102030405', 'CBOR_LIMIT', small], ['map over the limit', 'a3010102020303', 'CBOR_LIMIT', small],
  ['nesting deeper than the limit', '81818180', 'CBOR_DEPTH', small], ['nesting at the limit', '818180', '', small],
  ['map nesting deeper than the limit', 'a101a101a10180', 'CBOR_DEPTH', small],
  ['more items than the limit', '83' + '83010203'.repeat(3), 'CBOR_LIMIT', small],
  ['frame over the limit', '5840' + '00'.repeat(64), 'CBOR_TOO_LARGE', small],
  // reserved and malformed heads
  ['reserved ai 28', '1c', 'CBOR_MALFORMED'], ['reserved ai 29 on bytes', '5d', 'CBOR_MALFORMED'], ['reserved ai 30 on array', '9e', 'CBOR_MALFORMED'],
  ['ai 31 on uint', '1f', 'CBOR_MALFORMED'], ['ai 31 on nint', '3f', 'CBOR_MALFORMED'], ['lone break', 'ff', 'CBOR_MALFORMED'],
  ['break inside a definite array', '82ff01', 'CBOR_MALFORMED'], ['reserved simple ai 28', 'fc', 'CBOR_MALFORMED'],
  ['tag with ai 31', 'df', 'CBOR_TAG'], ['tag 55799 (self-describe)', 'd9d9f7f6', 'CBOR_TAG'], ['tag head cut', 'd9', 'CBOR_TAG'],
  ['tag inside an array', '82c00101', 'CBOR_TAG'], ['unknown tag 12345', 'd9303901', 'CBOR_TAG'],
  ['indefinite map inside an array', '81bfff', 'CBOR_INDEFINITE'], ['indefinite bytes, empty', '5fff', 'CBOR_INDEFINITE'],
  // floats and simple values nested in a frame
  ['NaN inside an array', '8201f97e00', 'CBOR_NONFINITE'], ['-Infinity as a map value', 'a101fbfff0000000000000', 'CBOR_NONFINITE'],
  ['float32 Infinity nested', '818181fa7f800000', 'CBOR_NONFINITE'], ['undefined nested', '8201f7', 'CBOR_SIMPLE'],
  // invalid UTF-8 (RFC 3629)
  ['lone continuation byte', '6180', 'CBOR_BAD_UTF8'], ['0xff', '61ff', 'CBOR_BAD_UTF8'], ['0xc0 0x80 overlong NUL', '62c080', 'CBOR_BAD_UTF8'],
  ['overlong slash', '63e080af', 'CBOR_BAD_UTF8'], ['UTF-16 surrogate D800', '63eda080', 'CBOR_BAD_UTF8'],
  ['surrogate DFFF', '63edbfbf', 'CBOR_BAD_UTF8'], ['beyond U+10FFFF', '64f4908080', 'CBOR_BAD_UTF8'],
  ['cut multibyte at end', '62c3', 'CBOR_TRUNCATED'], ['cut multibyte inside the string', '61c3', 'CBOR_BAD_UTF8'],
  ['ASCII then a bad byte', '6461626380', 'CBOR_BAD_UTF8'], ['bad UTF-8 in a map key', 'a161ff01', 'CBOR_BAD_UTF8'],
  ['5-byte form', '65f888808080', 'CBOR_BAD_UTF8'],
];

test('hostile inputs: each refused with its documented code, nothing else thrown', () => {
  let n = 0;
  for (const [what, x, code, limits] of hostile) {
    if (code === '') {
      decode(h(x), limits); // the control case at the limit: accepted
      continue;
    }
    refuses(h(x), code, limits ?? Limits, what);
    n++;
  }
  assert.ok(n > 80, `${n} rows`);
});

test('nesting exactly at Limits.maxDepth is accepted, one more is refused', () => {
  const nest = (d: number) => h('81'.repeat(d - 1) + '80');
  decode(nest(Limits.maxDepth));
  refuses(nest(Limits.maxDepth + 1), 'CBOR_DEPTH');
  refuses(h('81'.repeat(10_000) + '80'), 'CBOR_DEPTH'); // deep input cannot overflow the stack
});

test('a frame of exactly Limits.maxFrameBytes passes the size check; one byte more does not', () => {
  // A single string cannot reach the frame limit; an array of four strings can:
  // head (1) + 3 x (3 + 4096) + (3 + rest).
  const strings = (total: number) => {
    const rest = total - 1 - 3 * (3 + Limits.maxStringBytes) - 3;
    return encode([1, 2, 3].map(() => new Uint8Array(Limits.maxStringBytes)).concat([new Uint8Array(rest)]));
  };
  const ok = strings(Limits.maxFrameBytes);
  assert.is(ok.length, Limits.maxFrameBytes);
  decode(ok);
  refuses(concat(ok, Uint8Array.of(0)), 'CBOR_TOO_LARGE');
  refuses(new Uint8Array(10 * 1024 * 1024), 'CBOR_TOO_LARGE'); // 10 MiB: refused by its length alone
});

test('more than Limits.maxItems items are refused', () => {
  // 17 arrays of 63 zeros = 17 + 17*63 = 1088 items > 1024, depth 2, 1 + 17*(2+63) bytes
  const inner = concat(Uint8Array.of(0x98, 63), new Uint8Array(63));
  refuses(concat(Uint8Array.of(0x91), ...Array.from({ length: 17 }, () => inner)), 'CBOR_LIMIT');
  const fine = concat(Uint8Array.of(0x8f), ...Array.from({ length: 15 }, () => inner)); // 961 items
  decode(fine);
});

test('a valid frame truncated at every length is refused with CBOR_TRUNCATED; extended by any byte, CBOR_TRAILING_BYTES', () => {
  const frame = encode([1, 10, 2, 'reg-primary', new Map<number | string, CborValue>([[1, 'x'], [2, h('00ff')], ['k', [true, false, null, -300, 2 ** 40]]])]);
  for (let n = 0; n < frame.length; n++) refuses(frame.subarray(0, n), 'CBOR_TRUNCATED', Limits, `cut at ${n}`);
  for (let b = 0; b < 256; b++) refuses(concat(frame, Uint8Array.of(b)), 'CBOR_TRAILING_BYTES', Limits, `plus ${b}`);
});

test('every single initial byte, alone and followed by zeros: ProtocolError or a value, nothing else', () => {
  for (let b = 0; b < 256; b++) {
    for (const tail of [0, 1, 8, 40]) {
      const x = concat(Uint8Array.of(b), new Uint8Array(tail));
      try {
        decode(x);
      } catch (e) {
        assert.ok(e instanceof ProtocolError && e.code.startsWith('CBOR_'), `${hex(x)}: ${String(e)}`);
      }
    }
  }
});

test('decoded byte strings are views of the input (validators copy what they keep)', () => {
  const input = h('4401020304');
  const v = decode(input) as Uint8Array;
  assert.is(v.buffer, input.buffer);
});

// ---- the encoder ----

test('encode: maps sorted by encoded key, whatever the insertion order', () => {
  const m = new Map<number | string, CborValue>([['bb', 1], ['a', 2], [-1, 3], [24, 4], [1, 5], ['b', 6], [-25, 7]]);
  // 01 < 1818 < 20 < 3818 < 6161 < 6162 < 626262
  assert.is(hex(encode(m)), 'a7' + '0105' + '181804' + '2003' + '381807' + '616102' + '616206' + '62626201');
  const keys = [...(decode(encode(m)) as Map<number | string, CborValue>).keys()];
  assert.equal(keys, [1, 24, -1, -25, 'a', 'b', 'bb']);
});

test('encode: output always passes the strict walk (deterministic)', () => {
  const values: CborValue[] = [0, -0, 2 ** 53 - 1, -(2 ** 53 - 1), 2 ** 32, -(2 ** 32), -(2 ** 32) - 1, 5n, -5n, 2n ** 40n,
    new Map<number | string, CborValue>([[2 ** 40, 1], [-(2 ** 31) - 5, 2], ['z', 3]]), 'x'.repeat(300), new Uint8Array(70000).subarray(0, 4096)];
  for (const v of values) checkWellFormed(encode(v));
  assert.is(decode(encode(5n)), 5);
  assert.is(hex(encode(-0)), '00');
});

test('encode refuses values the protocol never sends, with ImplementationError', () => {
  const bad: unknown[] = [1.5, NaN, Infinity, -Infinity, 2 ** 53, -(2 ** 53), 2n ** 53n, -(2n ** 64n), undefined, { a: 1 }, new Date(0),
    Symbol('s'), () => 1, 'a\ud800', '\udc00b', [1, undefined], new Map([[1.5, 1]]), new Map([[null, 1]]), new Map([[2 ** 60, 1]]), new Set([1])];
  for (const v of bad) {
    assert.throws(() => encode(v as CborValue), (e: unknown) => e instanceof ImplementationError && e.code.startsWith('CBOR_ENCODE_'), String(typeof v === 'symbol' ? 'symbol' : v));
  }
});

test('compareBytes orders bytewise, shorter first on a common prefix', () => {
  assert.ok(compareBytes(h('01'), h('02')) < 0);
  assert.ok(compareBytes(h('0102'), h('01')) > 0);
  assert.is(compareBytes(h('0102'), h('0102')), 0);
});

test.run();
