// The three error classes of the project (docs/errors.md lists every code).
// - ProtocolError: the peer's fault. Refuse, send an error frame, end the session (S0.7).
// - ImplementationError: our own bug or misconfiguration. Fail loudly.
// - TimeoutError: a peer did not answer in time.

/** WebSocket close codes used when a session ends (RFC 6455 §7.4.1). */
export const CloseCode = {
  normal: 1000,
  goingAway: 1001,
  protocol: 1002,
  unsupported: 1003,
  policy: 1008,
  tooBig: 1009,
  internal: 1011,
  tryAgainLater: 1013,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
  constructor(
    /** Stable code, e.g. 'CBOR_TRAILING_BYTES'; listed in docs/errors.md. */
    readonly code: string,
    message: string,
    /** The WebSocket close code that ends the session. */
    readonly closeCode: CloseCode = CloseCode.protocol,
  ) {
    super(`${code}: ${message}`);
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
