// The three error classes of the project, and the one table of every code a peer can be sent
// (docs/errors.md lists every code; protocol/docs.test.ts checks the two agree).
// - ProtocolError: the peer's fault. Refuse, send an error frame, end the session (S0.7).
// - ImplementationError: our own bug or misconfiguration. Fail loudly.
// - TimeoutError: a peer did not answer in time.

/** WebSocket close codes used when a session ends (RFC 6455 §7.4.1). */
export const CloseCode = {
  normal: 1000,
  goingAway: 1001,
  protocol: 1002,
  unsupported: 1003,
  invalidData: 1007,
  policy: 1008,
  tooBig: 1009,
  internal: 1011,
  tryAgainLater: 1013,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

/**
 * What the party that received a code should do next:
 * - `never`: the same request will be refused again (a bad frame, a wrong key, a refusal);
 * - `later`: the same server may accept it after a backoff (overload, a link that dropped,
 *   no business server healthy right now);
 * - `other-server`: this server cannot be reached now: try the next one at once (and this one
 *   again in a later round).
 * A code not in the table is `never` (retryClass()).
 */
export type RetryClass = 'never' | 'later' | 'other-server';

export interface ErrorSpec {
  /** The WebSocket close code that ends the session after this error. */
  readonly close: CloseCode;
  readonly retry: RetryClass;
}

const C = CloseCode;
const never = (close: CloseCode): ErrorSpec => ({ close, retry: 'never' });
const later = (close: CloseCode): ErrorSpec => ({ close, retry: 'later' });
const otherServer = (close: CloseCode): ErrorSpec => ({ close, retry: 'other-server' });

/**
 * Every code that ends a session with a peer, with its close code and retry class: the codes
 * of ProtocolError, the TIMEOUT of a session, and the codes of our own failures that a peer is
 * told (SRV_INTERNAL, STORE_CORRUPT_ROW). docs/errors.md has one row per code.
 */
export const ERRORS = {
  // CBOR codec (protocol/cbor.ts)
  CBOR_TOO_LARGE: never(C.tooBig),
  CBOR_TRUNCATED: never(C.protocol),
  CBOR_TRAILING_BYTES: never(C.protocol),
  CBOR_NOT_DETERMINISTIC: never(C.protocol),
  CBOR_DUPLICATE_KEY: never(C.protocol),
  CBOR_BAD_KEY: never(C.protocol),
  CBOR_INDEFINITE: never(C.protocol),
  CBOR_TAG: never(C.protocol),
  CBOR_NONFINITE: never(C.protocol),
  CBOR_FLOAT: never(C.protocol),
  CBOR_SIMPLE: never(C.protocol),
  CBOR_INT_RANGE: never(C.protocol),
  CBOR_BAD_UTF8: never(C.protocol),
  CBOR_DEPTH: never(C.protocol),
  CBOR_LIMIT: never(C.protocol),
  CBOR_MALFORMED: never(C.protocol),
  // Messages (protocol/messages.ts)
  MSG_BAD_SHAPE: never(C.protocol),
  MSG_VERSION: never(C.protocol),
  MSG_UNKNOWN_TYPE: never(C.protocol),
  MSG_BAD_FIELD: never(C.protocol),
  MSG_UNEXPECTED: never(C.protocol),
  // Handshake (protocol/channel.ts, protocol/replay.ts)
  HS_BAD_CLIENT_PROOF: never(C.policy),
  HS_BAD_SERVER_PROOF: never(C.policy),
  HS_WRONG_DEST: never(C.policy),
  HS_REPLAY: never(C.policy),
  HS_UNEXPECTED: never(C.protocol),
  // Sealed channel (protocol/channel.ts)
  CHAN_REPLAY: never(C.policy),
  CHAN_OUT_OF_ORDER: never(C.policy),
  CHAN_BAD_TAG: never(C.policy),
  CHAN_WRONG_DEST: never(C.policy),
  CHAN_NOT_SEALED: never(C.protocol),
  // Not a fault: the key is used up, a new session starts at once.
  CHAN_KEY_EXHAUSTED: later(C.normal),
  // Sessions
  TIMEOUT: later(C.goingAway),
  // Keys (protocol/keys.ts)
  KEY_BAD_TOKEN: never(C.policy),
  KEY_UNKNOWN_VERSION: never(C.policy),
  // Gateway (gateway/)
  GW_TEXT_FRAME: never(C.unsupported),
  GW_FRAME_TOO_LARGE: never(C.tooBig),
  GW_BAD_DIRECTION: never(C.policy),
  GW_BAD_BODY: never(C.protocol),
  GW_UNKNOWN_DEST: otherServer(C.policy),
  GW_UPSTREAM_UNAVAILABLE: otherServer(C.tryAgainLater),
  GW_UPSTREAM_LOST: later(C.tryAgainLater),
  GW_UPSTREAM_BAD_FRAME: otherServer(C.internal),
  GW_DEST_CHANGED: never(C.policy),
  GW_RATE_LIMITED: later(C.policy),
  GW_TOO_MANY_CONNECTIONS: later(C.tryAgainLater),
  GW_TOO_MANY_PER_IP: later(C.tryAgainLater),
  GW_IDLE_TIMEOUT: later(C.goingAway),
  GW_SLOW_PEER: later(C.goingAway),
  GW_WS_PROTOCOL: never(C.protocol),
  GW_FRAGMENTED: never(C.policy),
  GW_TRICKLED: never(C.policy),
  GW_FRAME_TIMEOUT: never(C.policy),
  // Servers (server-kit/, reg-server/, biz-server/)
  SRV_INTERNAL: later(C.internal),
  SRV_BUSY: later(C.tryAgainLater),
  STORE_CORRUPT_ROW: never(C.internal),
  REG_NOT_FOUND: never(C.normal),
  REG_NO_BIZ_SERVER: later(C.tryAgainLater),
  REG_BIZ_UNAVAILABLE: later(C.tryAgainLater),
  REG_FIRMWARE_REFUSED: never(C.policy),
  BIZ_AUTH_FAILED: never(C.policy),
  BIZ_MECH_UNSUPPORTED: never(C.policy),
  BIZ_ACCOUNT_DISABLED: never(C.policy),
  BIZ_CONFIRM_MISMATCH: never(C.policy),
  // The bank (protocol/bank.ts, biz-server/bank.ts, S4): sent in bankRefused, then the close.
  BANK_NAME_TAKEN: never(C.policy),
  BANK_PASSWORD_WEAK: never(C.policy),
  BANK_ID_BOUND: never(C.policy),
  BANK_BAD_CREDENTIALS: never(C.policy),
  BANK_NOT_BOUND: never(C.policy),
  BANK_DEVICE_MISMATCH: never(C.policy),
  BANK_CARD_INVALID: never(C.policy),
  BANK_SIM_SWAPPED: never(C.policy),
  BANK_MECH_UNSUPPORTED: never(C.policy),
  BANK_MECH_BELOW_FLOOR: never(C.policy),
  BANK_MECH_MISMATCH: never(C.policy),
  BANK_OPERATOR_UNAVAILABLE: later(C.tryAgainLater),
  BANK_BUSY: later(C.tryAgainLater),
  // Gateway <-> server links (server-kit/link.ts)
  LINK_BAD_FRAME: never(C.policy),
  LINK_AUTH_FAILED: never(C.policy),
  LINK_AUTH_TIMEOUT: never(C.policy),
  LINK_BAD_MAC: never(C.policy),
  // A silent link (nothing heard, heartbeats unanswered): terminated, relinked after a backoff.
  LINK_HEARTBEAT_TIMEOUT: later(C.tryAgainLater),
  // Admin API (server-kit/admin-rpc.ts): HTTP, no WebSocket close; the close code is nominal.
  ADMIN_BAD_AUTH: never(C.policy),
  ADMIN_BAD_REQUEST: never(C.protocol),
  ADMIN_STALE: never(C.policy),
  ADMIN_REPLAY: never(C.policy),
  ADMIN_UNKNOWN_OP: never(C.protocol),
  ADMIN_TOO_LARGE: never(C.tooBig),
  // Attack statistics table (protocol/attack-table.ts, S3.10, S3.11): a phone's refusals of a table.
  TABLE_MALFORMED: never(C.protocol),
  TABLE_BAD_SIGNATURE: never(C.policy),
  TABLE_STALE: never(C.policy),
  TABLE_EXPIRED: never(C.policy),
  // Person layer of a business login (S3.3): the site's verdicts (biz-server/person/).
  PERSON_PROOF_FAILED: never(C.policy),
  PERSON_OTP_REPLAYED: never(C.policy),
  PERSON_OTP_SKEW: never(C.policy),
  // Device-local (firmware/person-proof.ts): the phone sends no proof and ends the login itself.
  PERSON_FP_NO_MATCH: never(C.normal),
  PERSON_FP_BLOCKED: never(C.normal),
  PERSON_FP_NO_FINGER: never(C.normal),
  PERSON_NOT_PROVISIONED: never(C.normal),
  PERSON_CHIP_REFUSED: never(C.normal),
  // Device-local: a saved-login record this firmware cannot read (firmware/saved-login.ts).
  SAVED_VERSION: never(C.protocol),
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

/** The table's entry for `code`, or undefined for a code the table does not know. */
export function errorSpec(code: string): ErrorSpec | undefined {
  return Object.hasOwn(ERRORS, code) ? ERRORS[code as ErrorCode] : undefined;
}

/** What to do after receiving `code` from a peer; an unknown code is `never`. */
export function retryClass(code: string): RetryClass {
  return errorSpec(code)?.retry ?? 'never';
}

export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
  /** The WebSocket close code that ends the session (from ERRORS). */
  readonly closeCode: CloseCode;
  constructor(
    /** Stable code, e.g. 'CBOR_TRAILING_BYTES'; a key of ERRORS, listed in docs/errors.md. */
    readonly code: ErrorCode,
    message: string,
  ) {
    super(`${code}: ${message}`);
    this.closeCode = ERRORS[code].close;
  }
  get retry(): RetryClass {
    return ERRORS[this.code].retry;
  }
}

export class ImplementationError extends Error {
  override readonly name = 'ImplementationError';
  constructor(readonly code: string, message: string) {
    super(`${code}: ${message}`);
  }
}

export class TimeoutError extends Error {
  override readonly name = 'TimeoutError';
  readonly code = 'TIMEOUT';
  constructor(message: string) {
    super(`TIMEOUT: ${message}`);
  }
}
