// Message shapes: the envelope and every body validator, fed every wrong type in every
// field (table-driven, compare noble's TYPE_TEST). Each field's rule is restated here from
// docs/protocol.md's CDDL, independently of messages.ts, and the validator must agree with
// it on every sample: accept exactly what the rule admits, refuse the rest with its code.
import { bytesToHex as hex, hexToBytes as h } from '@noble/hashes/utils.js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  MsgType, typeName, SEALED_TYPES, PROTOCOL_VERSION, decodeEnvelope, encodeEnvelope, headerBytes, parseHello, parseServerProof,
  parseFinish, parseLogin, parseLoginAck, parseLoginFail, parseError, parseCredRequest, parseCredReply, parseNotFound, parsePwConfirm,
  errorBody, encodeError, credReplyBody, loginOpening, truncateUtf8, utf8Length, unexpected, text, type CredReply,
} from './messages.ts';
import { encode, type CborValue } from './cbor.ts';
import { ProtocolError, CloseCode } from './errors.ts';

const te = new TextEncoder();
const size = (s: string) => te.encode(s).length;
const B = (n: number, fill = 0xab) => new Uint8Array(n).fill(fill);

// ---- the rules, restated from the CDDL ----
type Rule = (v: unknown) => boolean;
const isUint = (max: number): Rule => (v) => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= max;
const isBytes = (min: number, max = min): Rule => (v) => v instanceof Uint8Array && v.length >= min && v.length <= max;
const isText = (max: number, re?: RegExp, min = 1): Rule => (v) => typeof v === 'string' && size(v) >= min && size(v) <= max && (!re || re.test(v));
const isUintMap: Rule = (v) => v instanceof Map && [...v.keys()].every((k) => typeof k === 'number' && Number.isInteger(k) && k >= 0);
const RE = {
  dest: /^[a-z0-9][a-z0-9-]{0,31}$/,
  user: /^[A-Za-z0-9._-]{1,64}$/,
  serial: /^[A-Za-z0-9][A-Za-z0-9-]{0,63}$/,
  ip: /^[0-9a-fA-F:.]+$/,
  url: /^wss?:\/\/[!-~]+$/,
};

interface Field { name: string; ok: Rule; code: string; valid: CborValue; samples?: CborValue[] }
/** `optional`: how many trailing fields may be left out (credReply.table). */
interface Spec { name: string; parse: (v: CborValue) => unknown; fields: Field[]; optional?: number }

// Values of every CBOR type the profile has, at the edges that matter to the rules above.
const common: CborValue[] = [
  0, 1, 23, 255, 256, 0xffffffff, 2 ** 32, 2 ** 53 - 1, -1, -(2 ** 32),
  B(0), B(1), B(16), B(31), B(32), B(33), B(42), B(64), B(105), B(106),
  '', 'a', 'A', '0', '-', 'reg-primary', 'Reg', 'a b', 'x'.repeat(16), 'x'.repeat(17), 'x'.repeat(32), 'x'.repeat(33), 'x'.repeat(45),
  'x'.repeat(46), 'x'.repeat(64), 'x'.repeat(65), 'x'.repeat(256), 'x'.repeat(257), '\u00e9'.repeat(32), '\u00e9'.repeat(33),
  '\u00e9'.repeat(128), '\u00e9'.repeat(129), '\u{1F600}'.repeat(64), '\u{1F600}'.repeat(65),
  true, false, null, [], [1], [B(32)], new Map(), new Map([[1, 1]]), new Map([['a', 1]]), new Map([[-1, 1]]),
];

const mac = B(32, 1);
const nonce = B(32, 2);
const server = ['biz-east', 'ws://127.0.0.1:8443/biz', 'east'];
const uint32 = isUint(0xffffffff);

const specs: Spec[] = [
  { name: 'hello', parse: parseHello, fields: [
    { name: 'token', ok: isBytes(42, 105), code: 'MSG_BAD_FIELD', valid: B(60) },
    { name: 'measurement', ok: isBytes(32), code: 'MSG_BAD_FIELD', valid: B(32, 9) },
    { name: 'nonce', ok: isBytes(32), code: 'MSG_BAD_FIELD', valid: nonce },
    { name: 'mac', ok: isBytes(32), code: 'MSG_BAD_FIELD', valid: mac },
  ] },
  { name: 'helloReply', parse: (v) => parseServerProof(v), fields: [
    { name: 'nonce', ok: isBytes(32), code: 'MSG_BAD_FIELD', valid: nonce },
    { name: 'mac', ok: isBytes(32), code: 'MSG_BAD_FIELD', valid: mac },
  ] },
  { name: 'loginOk', parse: (v) => parseServerProof(v, 'loginOk'), fields: [
    { name: 'nonce', ok: isBytes(32), code: 'MSG_BAD_FIELD', valid: nonce },
    { name: 'mac', ok: isBytes(32), code: 'MSG_BAD_FIELD', valid: mac },
  ] },
  { name: 'finish', parse: parseFinish, fields: [{ name: 'mac', ok: isBytes(32), code: 'MSG_BAD_FIELD', valid: mac }] },
  { name: 'login', parse: parseLogin, fields: [
    { name: 'mech', ok: (v) => v === 'password' || v === 'fingerprint' || v === 'otp', code: 'MSG_BAD_FIELD', valid: 'password',
      samples: ['fingerprint', 'otp', 'Password', 'pin', 'password '] },
    { name: 'user', ok: isText(64, RE.user), code: 'MSG_BAD_FIELD', valid: 'u-1.x_y', samples: ['user@x', 'A.b-c_9', 'é'] },
    { name: 'gen', ok: uint32, code: 'MSG_BAD_FIELD', valid: 7 },
    { name: 'ext', ok: isUintMap, code: 'MSG_BAD_FIELD', valid: new Map([[1, 'x']]),
      samples: [new Map<number | string, CborValue>([[0, B(3)], [2 ** 40, [1]]]), new Map<number | string, CborValue>([[1, 1], ['b', 2]])] },
    { name: 'nonce', ok: isBytes(32), code: 'MSG_BAD_FIELD', valid: nonce },
    { name: 'mac', ok: isBytes(32), code: 'MSG_BAD_FIELD', valid: mac },
  ] },
  { name: 'loginAck', parse: parseLoginAck, fields: [] },
  { name: 'loginFail', parse: parseLoginFail, fields: [
    { name: 'code', ok: isText(64), code: 'MSG_BAD_FIELD', valid: 'BIZ_BAD_LOGIN' },
    { name: 'reason', ok: isText(256), code: 'MSG_BAD_FIELD', valid: 'authentication failed' },
  ] },
  { name: 'error', parse: parseError, fields: [
    { name: 'code', ok: isText(64), code: 'MSG_BAD_FIELD', valid: 'CHAN_BAD_TAG' },
    { name: 'prevSeq', ok: (v) => v === null || uint32(v), code: 'MSG_BAD_FIELD', valid: null, samples: [3] },
    { name: 'reason', ok: isText(256, undefined, 0), code: 'MSG_BAD_FIELD', valid: '' },
  ] },
  { name: 'credRequest', parse: parseCredRequest, fields: [
    { name: 'serial', ok: isText(64, RE.serial), code: 'MSG_BAD_FIELD', valid: 'SN-0000001', samples: ['-SN', 'SN_1', 'sn-1'] },
    { name: 'localIp', ok: isText(45, RE.ip), code: 'MSG_BAD_FIELD', valid: '127.1.0.5',
      samples: ['::1', 'fe80::1', '10.0.0.256', '1.2.3.4 ', 'host', '1.2.3.4/8', '::ffff:192.168.1.1'] },
  ] },
  { name: 'credReply', parse: parseCredReply, fields: [
    { name: 'user', ok: isText(64, RE.user), code: 'MSG_BAD_FIELD', valid: 'dev-0001' },
    { name: 'wrapped', ok: isBytes(72), code: 'MSG_BAD_FIELD', valid: B(72, 9) },
    { name: 'gen', ok: uint32, code: 'MSG_BAD_FIELD', valid: 2 },
    { name: 'currentGen', ok: uint32, code: 'MSG_BAD_FIELD', valid: 1 },
    { name: 'servers', ok: (v) => Array.isArray(v) && v.length >= 1 && v.length <= 8 && v.every((x) => x === server), code: 'MSG_BAD_SHAPE', valid: [server],
      samples: [[server, server], Array(8).fill(server), Array(9).fill(server)] },
    { name: 'table', ok: isBytes(1, 1536), code: 'MSG_BAD_FIELD', valid: B(300, 4), samples: [B(1536), B(1537)] },
  ], optional: 1 },
  { name: 'credReply.servers[0]', parse: (v) => parseCredReply(['u', B(72), 1, 0, [v]]), fields: [
    { name: 'name', ok: isText(32, RE.dest), code: 'MSG_BAD_FIELD', valid: 'biz-east' },
    { name: 'url', ok: isText(256, RE.url), code: 'MSG_BAD_FIELD', valid: 'wss://biz.example:443/x',
      samples: ['ws://a', 'wss://a', 'http://a', 'ws://', 'ws://a b', 'ws://\u00e9', 'WS://a', 'ws:/a', 'ws://a\t', 'ws://[::1]:8080/p?q=1#f'] },
    { name: 'region', ok: isText(32), code: 'MSG_BAD_FIELD', valid: 'east' },
  ] },
  { name: 'notFound', parse: parseNotFound, fields: [{ name: 'reason', ok: isText(256), code: 'MSG_BAD_FIELD', valid: 'no such device' }] },
  { name: 'pwConfirm', parse: parsePwConfirm, fields: [{ name: 'gen', ok: uint32, code: 'MSG_BAD_FIELD', valid: 2 }] },
  { name: 'pwConfirmAck', parse: (v) => parsePwConfirm(v, 'pwConfirmAck'), fields: [{ name: 'gen', ok: uint32, code: 'MSG_BAD_FIELD', valid: 2 }] },
];

/** Runs `f`; returns the ProtocolError it threw, or null. Anything else thrown fails the test. */
function attempt(f: () => unknown, label: string): ProtocolError | null {
  try {
    f();
    return null;
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw new Error(`${label}: threw ${String(e)}, not a ProtocolError`);
    assert.is(e.closeCode, e.code === 'CBOR_TOO_LARGE' ? CloseCode.tooBig : CloseCode.protocol, `${label}: close code`);
    return e;
  }
}

/** Parses a body the way a receiver does: encode into a frame, decode it, validate the body. */
function viaWire(spec: Spec, body: CborValue): () => unknown {
  return () => spec.parse(decodeEnvelope(encodeEnvelope(MsgType.error, 0, 'x', body)).body);
}

test('every message: the valid body parses, directly and through the wire', () => {
  for (const s of specs) {
    const body = s.fields.map((f) => f.valid);
    s.parse(body);
    viaWire(s, body)();
  }
});

test('every field of every message, fed every type: accepted exactly when its rule says so, else its code', () => {
  let refused = 0;
  let accepted = 0;
  for (const s of specs) {
    for (let i = 0; i < s.fields.length; i++) {
      const f = s.fields[i]!;
      for (const sample of [...common, ...(f.samples ?? [])]) {
        const body = s.fields.map((g) => g.valid);
        body[i] = sample;
        const label = `${s.name}.${f.name} = ${String(sample instanceof Uint8Array ? `bytes(${sample.length})` : sample instanceof Map ? 'map' : JSON.stringify(sample)).slice(0, 40)}`;
        for (const run of [() => s.parse(body), viaWire(s, body)]) {
          const e = attempt(run, label);
          if (f.ok(sample)) {
            assert.is(e, null, `${label}: refused (${e?.message}) but the rule admits it`);
            accepted++;
          } else {
            assert.ok(e, `${label}: accepted but the rule refuses it`);
            assert.is(e!.code, f.code, `${label}: code`);
            refused++;
          }
        }
      }
    }
  }
  assert.ok(refused > 1500 && accepted > 100, `${refused} refused, ${accepted} accepted`);
});

test('every message: a body that is not an array, or has one item too few or too many, is MSG_BAD_SHAPE', () => {
  for (const s of specs) {
    const valid = s.fields.map((f) => f.valid);
    const shapes: CborValue[] = [valid.slice(0, -1 - (s.optional ?? 0)), [...valid, 0], 0, 'x', B(4), null, true, new Map([[0, valid]])];
    if (valid.length === 0) shapes.shift();
    for (const body of shapes) {
      const e = attempt(() => s.parse(body), `${s.name} shape`);
      assert.ok(e, `${s.name}: accepted a body of the wrong shape`);
      assert.is(e!.code, 'MSG_BAD_SHAPE', s.name);
    }
  }
});

test('validators return copies: changing the frame afterwards changes nothing parsed', () => {
  const frame = encodeEnvelope(MsgType.hello, 0, 'reg-primary', [B(60, 5), B(32, 9), nonce, mac]);
  const hello = parseHello(decodeEnvelope(frame).body);
  frame.fill(0);
  assert.is(hex(hello.token), hex(B(60, 5)));
  assert.is(hex(hello.mac), hex(mac));
  const reply: CredReply = { user: 'u', wrapped: B(72, 3), gen: 2, currentGen: 1, servers: [{ name: 'b', url: 'ws://b', region: 'r' }] };
  const f2 = encodeEnvelope(MsgType.error, 0, 'x', credReplyBody(reply));
  const r = parseCredReply(decodeEnvelope(f2).body);
  f2.fill(0);
  assert.equal({ ...r, wrapped: hex(r.wrapped) }, { ...reply, wrapped: hex(reply.wrapped) });
});

// ---- the envelope ----

const envFields: Field[] = [
  { name: 'version', ok: (v) => v === PROTOCOL_VERSION, code: 'MSG_VERSION', valid: 1, samples: [2, 0] },
  { name: 'type', ok: (v) => typeof v === 'number' && Object.values(MsgType).includes(v as MsgType), code: 'MSG_BAD_FIELD', valid: MsgType.hello },
  { name: 'seq', ok: uint32, code: 'MSG_BAD_FIELD', valid: 0 },
  { name: 'dest', ok: isText(32, RE.dest), code: 'MSG_BAD_FIELD', valid: 'reg-primary', samples: ['biz-1', 'a-', '-a', 'A', 'a_b', 'a.b', 'x'.repeat(32)] },
];

test('envelope: every field fed every type, from raw bytes', () => {
  let n = 0;
  for (let i = 0; i < envFields.length; i++) {
    const f = envFields[i]!;
    for (const sample of [...common, ...(f.samples ?? [])]) {
      const a: CborValue[] = [...envFields.map((g) => g.valid), []];
      a[i] = sample;
      const e = attempt(() => decodeEnvelope(encode(a)), `envelope.${f.name}=${String(sample)}`);
      if (f.ok(sample)) assert.is(e, null, `envelope.${f.name} = ${String(sample)}: ${e?.message}`);
      else {
        assert.ok(e, `envelope.${f.name} = ${String(sample)} accepted`);
        // An integer type that fits the field but names no message is MSG_UNKNOWN_TYPE.
        const want = f.name === 'type' && isUint(255)(sample) ? 'MSG_UNKNOWN_TYPE' : f.code;
        assert.is(e!.code, want, `envelope.${f.name} = ${String(sample)}`);
        n++;
      }
    }
  }
  assert.ok(n > 150);
});

test('envelope: not an array of five items is MSG_BAD_SHAPE; CBOR faults keep their CBOR_* code', () => {
  for (const v of [[], [1, 1, 0, 'x'], [1, 1, 0, 'x', null, null], 1, 'x', B(5), null, new Map([[0, 1]])] as CborValue[]) {
    assert.is(attempt(() => decodeEnvelope(encode(v)), 'shape')?.code, 'MSG_BAD_SHAPE');
  }
  assert.is(attempt(() => decodeEnvelope(h('8501010063')), 'cut')?.code, 'CBOR_TRUNCATED');
  assert.is(attempt(() => decodeEnvelope(h('85010100617840ff')), 'trailing')?.code, 'CBOR_TRAILING_BYTES');
  assert.is(attempt(() => decodeEnvelope(h('850101006178f97e00')), 'NaN body')?.code, 'CBOR_NONFINITE');
  assert.is(attempt(() => decodeEnvelope(new Uint8Array(16 * 1024 + 1)), 'big')?.closeCode, CloseCode.tooBig);
});

test('envelope: every message type round-trips; unassigned numbers are MSG_UNKNOWN_TYPE', () => {
  for (const [name, t] of Object.entries(MsgType)) {
    const env = decodeEnvelope(encodeEnvelope(t, 4294967295, 'biz-1', [name]));
    assert.equal(env, { version: 1, type: t, seq: 4294967295, dest: 'biz-1', body: [name] });
    assert.is(typeName(t), name);
  }
  for (const t of [0, 4, 9, 13, 19, 24, 29, 32, 100, 254]) {
    assert.is(attempt(() => decodeEnvelope(encodeEnvelope(t, 0, 'x', [])), `type ${t}`)?.code, 'MSG_UNKNOWN_TYPE');
  }
  assert.is(typeName(77), 'type-77');
  assert.equal([...SEALED_TYPES].sort((a, b) => a - b), [10, 11, 12, 30, 31, 40, 41, 42, 43, 44, 45]);
});

test('headerBytes is the envelope without its body (the AAD of a sealed frame)', () => {
  const frame = encodeEnvelope(MsgType.credReply, 5, 'reg-backup', B(20));
  const header = headerBytes(MsgType.credReply, 5, 'reg-backup');
  assert.is(header[0], 0x84);
  assert.is(hex(frame.subarray(1, header.length)), hex(header.subarray(1)));
});

// ---- helpers for senders ----

test('text sizes count UTF-8 bytes; error reasons are cut on a character boundary', () => {
  for (const s of ['', 'a', '\u00e9', '\u6c34', '\u{1F600}', 'a\u00e9\u6c34\u{1F600}', 'x'.repeat(300)]) assert.is(utf8Length(s), size(s), s);
  const long = 'a' + '\u{1F600}'.repeat(100); // 401 bytes
  const cut = truncateUtf8(long, 256);
  assert.is(size(cut), 253); // 1 + 63 x 4: one more emoji would pass 256
  assert.ok((cut as string & { isWellFormed(): boolean }).isWellFormed());
  assert.is(truncateUtf8('\u00e9'.repeat(200), 255), '\u00e9'.repeat(127));
  const frame = encodeError(3, 'reg-primary', 'CHAN_BAD_TAG', 2, '\u6c34'.repeat(200));
  const env = decodeEnvelope(frame);
  assert.is(env.type, MsgType.error);
  const e = parseError(env.body);
  assert.is(e.code, 'CHAN_BAD_TAG');
  assert.is(e.prevSeq, 2);
  assert.is(size(e.reason), 255);
  assert.equal(errorBody('X', null, 'r'), ['X', null, 'r']);
  assert.throws(() => text('\u00e9'.repeat(33), 'f', 64), (x: unknown) => x instanceof ProtocolError && x.code === 'MSG_BAD_FIELD');
});

test('loginOpening gives what the login MAC covers, in wire order, then nonce and MAC', () => {
  const body: CborValue = ['password', 'dev-1', 3, new Map([[1, 'x']]), nonce, mac];
  const l = parseLogin(body);
  assert.equal(loginOpening(l), { fields: ['password', 'dev-1', 3, new Map([[1, 'x']])], nonce: l.nonce, mac: l.mac });
});

test('unexpected() is MSG_UNEXPECTED, close 1002', () => {
  const e = unexpected(MsgType.credReply, 'WAIT_FINISH');
  assert.ok(e instanceof ProtocolError);
  assert.is(e.code, 'MSG_UNEXPECTED');
  assert.is(e.closeCode, CloseCode.protocol);
  assert.match(e.message, /credReply/);
});

test.run();
