// §3 (the CBOR profile), §4.1 (the envelope) and §9 (limits): one hostile frame as the first
// frame of a registration session, each refused with the code docs/errors.md gives it and the
// close code of protocol/errors.ts ERRORS. The frames start from a genuine hello
// (RegMessages.hello through ClientHandshake) and change only what the case is about.
import { concatBytes } from '@noble/hashes/utils.js';
import { headerBytes, MsgType } from '../../protocol/messages.ts';
import { encode } from '../../protocol/cbor.ts';
import { Limits } from '../../protocol/limits.ts';
import { closeOf, expectRefusal, type Case, type CaseContext } from '../suite.ts';
import { helloFrame } from '../flows.ts';

const hello = (ctx: CaseContext) => helloFrame(ctx.target.regDest, ctx.target.device).frame;
/** A genuine hello with its byte `at` (the version, right after the 0x85 array head) replaced by `by`. */
const patchVersion = (ctx: CaseContext, by: number[]) => {
  const h = hello(ctx);
  return concatBytes(h.subarray(0, 1), Uint8Array.from(by), h.subarray(2));
};
/** A hello envelope [1, 1, 0, dest, body] whose body is the raw bytes `body`. */
const withBody = (ctx: CaseContext, body: number[], type: number = MsgType.hello) => concatBytes(Uint8Array.of(0x85), headerBytes(type, 0, ctx.target.regDest).subarray(1), Uint8Array.from(body));

/** One frame, then the refusal: `codes[0]` is the spec's code, the rest a gateway's for the same refusal. */
export function oneFrame(section: string, what: string, frame: (ctx: CaseContext) => Uint8Array | string, codes: string[]): Case {
  return {
    section,
    title: `${what} -> ${codes[0]} and close ${closeOf(codes[0]!)}`,
    async run(ctx) {
      const c = await ctx.connect();
      const f = frame(ctx);
      c.send(f);
      return expectRefusal(c, codes);
    },
  };
}

const tooLarge = ['CBOR_TOO_LARGE', 'GW_FRAME_TOO_LARGE'];

export const cborCases: Case[] = [
  oneFrame('§3', 'an empty binary message', () => new Uint8Array(0), ['CBOR_TRUNCATED']),
  oneFrame('§3', 'a hello cut by one byte', (ctx) => hello(ctx).slice(0, -1), ['CBOR_TRUNCATED']),
  oneFrame('§3', 'a hello followed by one more byte', (ctx) => concatBytes(hello(ctx), Uint8Array.of(0)), ['CBOR_TRAILING_BYTES']),
  oneFrame('§3', 'a hello whose version is in a non-shortest head (18 01)', (ctx) => patchVersion(ctx, [0x18, 0x01]), ['CBOR_NOT_DETERMINISTIC']),
  oneFrame('§3', 'a hello as an indefinite-length array', (ctx) => {
    const h = hello(ctx);
    return concatBytes(Uint8Array.of(0x9f), h.subarray(1), Uint8Array.of(0xff));
  }, ['CBOR_INDEFINITE']),
  oneFrame('§3', 'a hello whose version is tagged (tag 1)', (ctx) => patchVersion(ctx, [0xc1, 0x01]), ['CBOR_TAG']),
  oneFrame('§3', 'a hello whose version is the half float 1.0', (ctx) => patchVersion(ctx, [0xf9, 0x3c, 0x00]), ['CBOR_FLOAT']),
  oneFrame('§3', 'a hello whose version is a NaN', (ctx) => patchVersion(ctx, [0xf9, 0x7e, 0x00]), ['CBOR_NONFINITE']),
  oneFrame('§3', 'a body holding undefined', (ctx) => withBody(ctx, [0xf7]), ['CBOR_SIMPLE']),
  oneFrame('§3', 'a body holding the integer 2^53', (ctx) => withBody(ctx, [0x1b, 0, 0x20, 0, 0, 0, 0, 0, 0]), ['CBOR_INT_RANGE']),
  oneFrame('§3', 'a body map with keys out of order ({2: 0, 1: 0})', (ctx) => withBody(ctx, [0xa2, 0x02, 0x00, 0x01, 0x00]), ['CBOR_NOT_DETERMINISTIC']),
  oneFrame('§3', 'a body map with a duplicate key', (ctx) => withBody(ctx, [0xa2, 0x01, 0x00, 0x01, 0x00]), ['CBOR_DUPLICATE_KEY']),
  oneFrame('§3', 'a body map with a byte-string key', (ctx) => withBody(ctx, [0xa1, 0x41, 0x00, 0x00]), ['CBOR_BAD_KEY']),
  oneFrame('§3', 'a body text string that is not UTF-8 (c3 28)', (ctx) => withBody(ctx, [0x62, 0xc3, 0x28]), ['CBOR_BAD_UTF8']),
  oneFrame('§3', 'a body of reserved additional information (1c)', (ctx) => withBody(ctx, [0x1c]), ['CBOR_MALFORMED']),
  oneFrame('§3', 'a body nested one deeper than maxDepth', (ctx) => withBody(ctx, [...Array(Limits.maxDepth - 1).fill(0x81), 0x80]), ['CBOR_DEPTH']),
  oneFrame('§3', 'a body array of maxArrayItems + 1 items', (ctx) => withBody(ctx, [0x98, Limits.maxArrayItems + 1, ...Array(Limits.maxArrayItems + 1).fill(0)]), ['CBOR_LIMIT']),
  oneFrame('§9', 'a frame of maxFrameBytes + 1 bytes', (ctx) => {
    const f = new Uint8Array(Limits.maxFrameBytes + 1);
    f.set(hello(ctx).subarray(0, 5));
    return f;
  }, tooLarge),
  // The boundary: exactly maxFrameBytes passes the size check, so the refusal is for the
  // content (a byte string over maxStringBytes), not 1009.
  oneFrame('§9', 'a frame of exactly maxFrameBytes with a body string over maxStringBytes', (ctx) => {
    const head = encode([1, MsgType.hello, 0, ctx.target.regDest]);
    // 0x85, the header items, then a byte string head 59 + 2-byte length (its shortest form) and its bytes.
    const n = Limits.maxFrameBytes - head.length - 3;
    const f = new Uint8Array(Limits.maxFrameBytes);
    f.set([0x85, ...head.subarray(1), 0x59, n >>> 8, n & 0xff]);
    return f;
  }, ['CBOR_LIMIT']),
  oneFrame('§2', 'a text WebSocket message', (ctx) => Buffer.from(hello(ctx)).toString('latin1'), ['GW_TEXT_FRAME']),
];

export const envelopeCases: Case[] = [
  oneFrame('§4.1', 'a hello of envelope version 0 (downgrade)', (ctx) => patchVersion(ctx, [0x00]), ['MSG_VERSION']),
  oneFrame('§4.1', 'a hello of envelope version 2', (ctx) => patchVersion(ctx, [0x02]), ['MSG_VERSION']),
  oneFrame('§4.1', 'an envelope of four items (no body)', (ctx) => headerBytes(MsgType.hello, 0, ctx.target.regDest), ['MSG_BAD_SHAPE']),
  oneFrame('§4.1', 'an envelope of unknown type 99', (ctx) => encode([1, 99, 0, ctx.target.regDest, []]), ['MSG_UNKNOWN_TYPE']),
  oneFrame('§4.1', 'an envelope of type 256', (ctx) => encode([1, 256, 0, ctx.target.regDest, []]), ['MSG_BAD_FIELD']),
  oneFrame('§4.1', 'an envelope whose seq is 2^32', (ctx) => encode([1, MsgType.hello, 2 ** 32, ctx.target.regDest, []]), ['MSG_BAD_FIELD']),
  oneFrame('§4.1', "an envelope whose dest breaks its pattern ('Reg_Primary')", () => encode([1, MsgType.hello, 0, 'Reg_Primary', []]), ['MSG_BAD_FIELD']),
  oneFrame('§4.2', 'a hello whose body has two items', (ctx) => encode([1, MsgType.hello, 0, ctx.target.regDest, [new Uint8Array(50), new Uint8Array(32)]]), ['MSG_BAD_SHAPE']),
  // A gateway knows no upstream of that name (GW_UNKNOWN_DEST); a server's own port is not it (HS_WRONG_DEST).
  oneFrame('§2', 'a hello for a dest nobody serves', (ctx) => helloFrame('no-such-server', ctx.target.device).frame, ['HS_WRONG_DEST', 'GW_UNKNOWN_DEST']),
];
