// The replay cache across the instances of one server (issue 16): a hello or login opening,
// or an admin request, seen by any instance is refused by every other one (HS_REPLAY /
// ADMIN_REPLAY), not only by the process that saw it (protocol/replay.ts ReplayCache).
//
// The exchange machines check an opening synchronously (deps.assertFresh, protocol/replay.ts,
// this process's memory); Redis answers later. So the session holds the machine's reply until
// the shared check answered (OpeningCheck.settle, awaited before send): no reply to a replayed
// opening leaves any instance. Redis: SET key NX PX ttl, one round trip.
//
// Redis down or slow (SharedStateDown, within its timeoutMs): FAIL OPEN to this process's
// cache, which still refuses a replay to the same instance. Why open: a replayed opening that
// passes a cache cannot complete (docs/protocol.md §8: the server's fresh nonce is in the
// transcript MAC_c covers, and the replayer has no key); the cache only spares the handshake's
// work. Closing would refuse every phone's login for as long as Redis is down, for no security.
import { bytesToHex } from '@noble/hashes/utils.js';
import { ProtocolError, type ErrorCode } from '../protocol/errors.ts';
import type { ReplayCache } from '../protocol/replay.ts';
import { SharedStateDown, type SharedState } from './redis.ts';

/** One id claimed across instances: true the first time within ttl, false when any instance claimed it. */
export interface SharedReplay {
  claim(id: Uint8Array): Promise<boolean>;
}

/** The Redis-backed SharedReplay of one cache (`scope`: 'reg-hello', 'biz-login', 'admin:biz-east', ...). */
export class RedisReplay implements SharedReplay {
  constructor(
    private readonly shared: SharedState,
    private readonly scope: string,
    private readonly ttlMs = 10 * 60_000,
    /** Told of each check Redis did not answer (metrics). */
    private readonly onFallback?: () => void,
  ) {}

  /** Resolves true/false from Redis; on SharedStateDown, true (fail open: the caller's local cache already checked). */
  async claim(id: Uint8Array): Promise<boolean> {
    const key = this.shared.key('replay', this.scope, bytesToHex(id));
    try {
      const r = await this.shared.call((c) => c.set(key, '1', 'PX', this.ttlMs, 'NX'));
      return r === 'OK';
    } catch (e) {
      if (e instanceof SharedStateDown) {
        this.onFallback?.();
        return true;
      }
      throw e;
    }
  }
}

/**
 * One session's opening check: `assertFresh` is the machine's (this process's cache, at once),
 * `settle` the shared one, awaited by the session before it sends the machine's reply.
 */
export class OpeningCheck {
  #pending: Uint8Array | null = null;

  constructor(
    private readonly local: ReplayCache,
    private readonly shared: SharedReplay | undefined,
    private readonly code: ErrorCode = 'HS_REPLAY',
  ) {}

  readonly assertFresh = (id: Uint8Array): void => {
    this.local.assertFresh(id);
    if (this.shared) this.#pending = Uint8Array.from(id);
  };

  /**
   * The shared check of the opening the machine just accepted: a promise that rejects with
   * ProtocolError HS_REPLAY when another instance saw it; null when there is nothing to check
   * (no Redis, or not an opening), so a session without Redis stays synchronous.
   */
  settle(): Promise<void> | null {
    const id = this.#pending;
    if (id === null) return null;
    this.#pending = null;
    return this.shared!.claim(id).then((fresh) => {
      if (!fresh) throw new ProtocolError(this.code, 'this opening was seen before (by another instance)');
    });
  }
}
