// The conformance suite's model (issue 13): a case is named by the spec section it checks,
// runs on its own connections within a time bound, and ends with a verdict like Autobahn's
// plus the record of what it sent, what it expected and what came back.
import { ERRORS, errorSpec } from '../protocol/errors.ts';
import { decodeEnvelope, parseError, parseLoginFail, MsgType, typeName } from '../protocol/messages.ts';
import { Conn, type Line } from './wire.ts';

/**
 * - pass: the target did what the spec says.
 * - fail: it broke a MUST (accepted what it must refuse, did not end the session, ...).
 * - non-strict: allowed but not what the spec recommends (refused, but with another code of
 *   the same close class, or without the error frame).
 * - informational: a behaviour the spec leaves open, recorded.
 * - skipped: the case needs an input that was not given (the master key, the policy key).
 */
export type Verdict = 'pass' | 'fail' | 'non-strict' | 'informational' | 'skipped';

/** A test device as the target's registration server knows it (docs/protocol.md §5.1). */
export interface DeviceCreds {
  serial: string;
  /** K_dev, 32 bytes. */
  key: Uint8Array;
  /** The serial token of its hidden zone. */
  token: Uint8Array;
  /**
   * The firmware measurement its chip attests in the hello (docs/protocol.md §6.2, 32 bytes):
   * the `firmwareMeasurement` of its enrollment record; the target must accept that firmware.
   */
  measurement: Uint8Array;
}

/** What the suite needs from the target, and nothing more (docs/conformance.md). */
export interface Target {
  /** A gateway (`ws://host:port/`) or a server's direct device port. */
  url: string;
  /** The registration server's name: the dest of registration frames. */
  regDest: string;
  device: DeviceCreds;
  /** The master key (version, key), when given: lets the suite make a token for an unenrolled serial. */
  master?: { version: number; key: Uint8Array };
  /** The policy server's Ed25519 public key (32 bytes), when given: the §16 case checks the table's signature (S3.11). */
  policyKey?: Uint8Array;
  /** Longest wait for any one expected frame or close, ms. */
  timeoutMs: number;
  /** The target's step timeout (docs/protocol.md §9 stepTimeoutMs), to check TIMEOUT. */
  stepTimeoutMs: number;
}

/** What a case decided. */
export interface Outcome {
  verdict: Verdict;
  /** What the case expected, in words. */
  expected: string;
  /** Why this verdict, when the record alone does not say. */
  note?: string;
}

export interface CaseContext {
  target: Target;
  /** A new connection to `url` (default the target), recorded in this case's log. */
  connect(url?: string): Promise<Conn>;
  log: Line[];
}

/** A case of either half: `CaseContext` for a server (--target), DeviceCaseContext (conformance/device.ts) for a device. */
export interface Case<Ctx = CaseContext> {
  /** The spec section it checks, e.g. '§6.2'. */
  section: string;
  /** What is sent and what must follow: '§6.2 hello replayed -> HS_REPLAY and close 1008' is `${section} ${title}`. */
  title: string;
  /** 'master-key' / 'policy-key': skipped unless that input was given. */
  needs?: 'master-key' | 'policy-key';
  /** Runs within `timeout` (the runner bounds the whole case, too). */
  run(ctx: Ctx): Promise<Outcome>;
}

export const caseName = (c: { section: string; title: string }): string => `${c.section} ${c.title}`;

/** The WebSocket close code that ends a session after `code` (protocol/errors.ts ERRORS). */
export function closeOf(code: string): number {
  const s = errorSpec(code);
  if (!s) throw new Error(`conformance: ${code} is not in ERRORS`);
  return s.close;
}

const refusalCodes = new Set(Object.keys(ERRORS));

/**
 * Reads what the target sends until it closes, and judges it as a refusal (S0.7,
 * docs/protocol.md §7): one error frame (or loginFail, for a business login) with one of
 * `codes`, nothing after it, then the close with that code's close code. `codes[0]` is the
 * code the spec names; the others are codes documented for the same refusal at another party
 * (a gateway refuses some frames itself: docs/errors.md §Gateway). `before`: frame types the
 * refusal may follow (a loginAck is owed before a business verdict, S0.11).
 */
export async function expectRefusal(c: Conn, codes: string[], before: number[] = []): Promise<Outcome> {
  const expected = `${codes.length > 1 ? `one of ${codes.join(', ')}` : codes[0]} (error frame) then close ${[...new Set(codes.map(closeOf))].join('/')}`;
  let refusal: string | null = null;
  let after = false;
  for (;;) {
    const r = await c.next();
    if (r.kind === 'timeout') {
      c.close();
      if (refusal && after) return { verdict: 'fail', expected, note: `${refusal} was sent, then more frames (§7: it is the last frame: the session went on), and no close within the timeout` };
      if (refusal) return { verdict: 'fail', expected, note: `${refusal} was sent but the session was not closed within the timeout (S0.7)` };
      return { verdict: 'fail', expected, note: 'neither a refusal nor a close within the timeout' };
    }
    if (r.kind === 'close') {
      if (refusal === null) {
        // A direct device port refuses frame-level violations (GW_*) with the close alone,
        // its code as the reason (docs/errors.md §Gateway); anything else owes an error frame.
        if (codes.includes(r.reason) && r.code === closeOf(r.reason)) {
          return r.reason.startsWith('GW_') ? { verdict: 'pass', expected } : { verdict: 'non-strict', expected, note: 'closed with the right code and reason but no error frame (§7 step 2)' };
        }
        return { verdict: 'fail', expected, note: `closed ${r.code} without an error frame` };
      }
      if (after) return { verdict: 'fail', expected, note: 'frames followed the refusal (§7: it is the last frame)' };
      if (!codes.includes(refusal)) {
        if (refusalCodes.has(refusal) && r.code === closeOf(codes[0]!)) return { verdict: 'non-strict', expected, note: `refused with ${refusal} instead` };
        return { verdict: 'fail', expected, note: `refused with ${refusal}, close ${r.code}` };
      }
      if (r.code !== closeOf(refusal)) return { verdict: 'fail', expected, note: `${refusal} then close ${r.code}, not ${closeOf(refusal)}` };
      return { verdict: 'pass', expected };
    }
    let type: number;
    let code: string | null = null;
    try {
      const env = decodeEnvelope(r.bytes);
      type = env.type;
      if (type === MsgType.error) code = parseError(env.body).code;
      else if (type === MsgType.loginFail) code = parseLoginFail(env.body).code;
    } catch (e) {
      c.close();
      return { verdict: 'fail', expected, note: `the target sent a frame that does not decode: ${(e as Error).message}` };
    }
    if (refusal !== null) {
      after = true;
      continue;
    }
    if (code !== null) {
      refusal = code;
      continue;
    }
    if (before.includes(type)) {
      before = before.filter((t) => t !== type);
      continue;
    }
    c.close();
    return { verdict: 'fail', expected, note: `the target answered with ${typeName(type)}: it accepted what it must refuse` };
  }
}

/** Waits for the close alone (no frame expected first). */
export async function expectClose(c: Conn, code: number, what: string): Promise<Outcome> {
  const expected = `${what}, close ${code}`;
  const r = await c.next();
  if (r.kind === 'close' && r.code === code) return { verdict: 'pass', expected };
  c.close();
  if (r.kind === 'close') return { verdict: 'fail', expected, note: `closed ${r.code}` };
  if (r.kind === 'timeout') return { verdict: 'fail', expected, note: 'no close within the timeout' };
  return { verdict: 'fail', expected, note: 'a frame came instead' };
}

export const pass = (expected: string, note?: string): Outcome => ({ verdict: 'pass', expected, note });
export const fail = (expected: string, note: string): Outcome => ({ verdict: 'fail', expected, note });
