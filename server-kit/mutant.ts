// TEST ONLY (issue 13): the switches of the conformance suite's mutant servers. Each breaks one
// rule of docs/protocol.md in the project's own servers so that conformance/mutants.test.ts can
// show a named conformance case catches it. Set only through StackOptions.mutant /
// RegConfig.mutant / BizConfig.mutant by that test; no configuration file, environment
// variable or CLI option reaches them, and unset (always, in production) they change nothing.
import { Decoder } from 'cbor-x';
import { ReplayCache } from '../protocol/replay.ts';
import type { Envelope } from '../protocol/messages.ts';
import type { CborValue } from '../protocol/cbor.ts';

export type Mutant =
  /** §8: the replay cache forgets everything (reg-server/server.ts, biz-server/server.ts). */
  | 'skip-replay-cache'
  /** §8: a frame whose seq is not above the last one is silently dropped instead of refused (server-kit/session.ts). */
  | 'ignore-old-seq'
  /** §7 (S0.7): the error frame is sent but the connection is left open (server-kit/session.ts). */
  | 'no-close-after-refusal'
  /** §6.4: a pending generation is promoted at the verified opening, not at the finish (biz-server/session.ts). */
  | 'promote-at-opening'
  /** §4.1, §15: an envelope of version 0 is read as version 1 (server-kit/session.ts). */
  | 'accept-version-0'
  /** §7: a device's error frame is answered (with MSG_UNEXPECTED) instead of ending the session in silence (server-kit/session.ts). */
  | 'answer-device-error'
  /** §3: a frame that is not in the deterministic profile (non-shortest heads, keys out of order) is read anyway (server-kit/session.ts). */
  | 'lenient-cbor';

export const MUTANTS: readonly Mutant[] = ['skip-replay-cache', 'ignore-old-seq', 'no-close-after-refusal', 'promote-at-opening', 'accept-version-0', 'answer-device-error', 'lenient-cbor'];

/**
 * 'lenient-cbor': an envelope read with a general CBOR decoder, as a server without the strict
 * profile would; null when even that cannot read it.
 */
export function lenientEnvelope(frame: Uint8Array): Envelope | null {
  try {
    const v = lenient.decode(frame) as unknown;
    if (!Array.isArray(v) || v.length !== 5 || typeof v[1] !== 'number' || typeof v[2] !== 'number' || typeof v[3] !== 'string') return null;
    return { version: v[0] as number, type: v[1], seq: v[2], dest: v[3], body: v[4] as CborValue };
  } catch {
    return null;
  }
}
const lenient = new Decoder({ useRecords: false, mapsAsObjects: false } as ConstructorParameters<typeof Decoder>[0]);

/** A replay cache that never refuses ('skip-replay-cache'). */
export class ForgetfulReplayCache extends ReplayCache {
  override assertFresh(): void {}
}

/** The replay cache of a server: the real one unless the mutant says otherwise. */
export const replayCacheFor = (mutant: Mutant | undefined): ReplayCache => (mutant === 'skip-replay-cache' ? new ForgetfulReplayCache() : new ReplayCache());

/** 'accept-version-0': a frame [0, ...] read as [1, ...] (0x85 0x00 -> 0x85 0x01); any other frame as is. */
export function acceptVersion0(frame: Uint8Array): Uint8Array {
  if (frame[0] !== 0x85 || frame[1] !== 0x00) return frame;
  const f = Uint8Array.from(frame);
  f[1] = 0x01;
  return f;
}
