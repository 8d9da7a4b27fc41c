// Every limit of the wire in one place, sized for device frames (KiB, not ws's 100 MiB).
// docs/protocol.md §"Limits" restates them; the gateway and servers take theirs from here.

export const Limits = {
  /** Largest frame (one WebSocket message) anyone accepts. */
  maxFrameBytes: 16 * 1024,
  /** Deepest nesting of arrays/maps in a frame (the envelope counts as 1). */
  maxDepth: 8,
  /** Most items in one array. */
  maxArrayItems: 64,
  /** Most entries in one map. */
  maxMapEntries: 32,
  /** Longest byte or text string. */
  maxStringBytes: 4096,
  /** Most data items in one frame, all levels together. */
  maxItems: 1024,
  /** Messages one direction of a session may seal before the session must end (rekey). */
  maxMessagesPerKey: 2 ** 32,
  /** How long a party waits for the next expected message of a session. */
  stepTimeoutMs: 10_000,
} as const;

/** The limits the CBOR decoder takes; a party may pass tighter ones than Limits. */
export type CborLimits = { readonly [K in 'maxFrameBytes' | 'maxDepth' | 'maxArrayItems' | 'maxMapEntries' | 'maxStringBytes' | 'maxItems']: number };
