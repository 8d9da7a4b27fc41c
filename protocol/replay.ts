import { ProtocolError } from './errors.ts';

// A bounded memory of recently seen handshake openings, so that a replayed hello or login
// is refused at once (HS_REPLAY) instead of costing a handshake. Replays beyond its memory
// still fail: the replayer cannot answer the server's fresh nonce. Bounded: the oldest
// entries are dropped first, and entries older than `ttlMs` are forgotten.
export class ReplayCache {
  readonly #seen = new Map<string, number>();
  constructor(
    private readonly capacity = 100_000,
    private readonly ttlMs = 10 * 60_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** Records `id`; returns false if it was already seen within the TTL. */
  check(id: Uint8Array): boolean {
    const key = String.fromCharCode(...id);
    const t = this.now();
    const at = this.#seen.get(key);
    if (at !== undefined && t - at < this.ttlMs) return false;
    this.#seen.delete(key);
    this.#seen.set(key, t);
    while (this.#seen.size > this.capacity) this.#seen.delete(this.#seen.keys().next().value!);
    return true;
  }

  /**
   * Server: refuses an opening seen before with ProtocolError HS_REPLAY (close 1008).
   * Call it once the opening's MAC verified, with that MAC as `id`: the MAC binds the
   * identity, the client nonce and the destination, and an unverified opening cannot fill
   * the cache.
   */
  assertFresh(id: Uint8Array): void {
    if (!this.check(id)) throw new ProtocolError('HS_REPLAY', 'this opening was seen before');
  }

  get size(): number {
    return this.#seen.size;
  }
}
