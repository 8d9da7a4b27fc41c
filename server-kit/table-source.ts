// The latest signed attack statistics table (S3.11; docs/protocol.md §16), as a server that
// hands it on keeps it: the registration server puts it in each credential reply. Polled from
// the policy server's sealed admin API (`latestTable`) at start and every `intervalMs`; the
// bytes stay opaque here, the phone verifies them against the policy key it got at the
// factory. A failed poll keeps the table it has (logged once per outage, counted): phones then
// get a table that is still signed and versioned, never one the source made up, and the
// expiry the policy server set still applies on the phone.
import { adminCall, type AdminCaller } from './admin-messages.ts';
import type { Logger } from './log.ts';
import { equalBytes } from '@noble/ciphers/utils.js';
import { decode } from '../protocol/cbor.ts';
import { decodeTableBody, TableLimits } from '../protocol/attack-table.ts';
import type { CborLimits } from '../protocol/limits.ts';

const SIGNED_LIMITS: CborLimits = { maxFrameBytes: TableLimits.maxTableBytes, maxDepth: 1, maxArrayItems: 2, maxMapEntries: 0, maxStringBytes: TableLimits.maxTableBytes, maxItems: 3 };

/**
 * The version a signed table states, read WITHOUT checking its signature (for logs and the
 * live page: the phone is the one that checks it); null when the bytes are not a readable table.
 */
export function statedTableVersion(signed: Uint8Array): number | null {
  try {
    const v = decode(signed, SIGNED_LIMITS);
    if (!Array.isArray(v) || !(v[0] instanceof Uint8Array)) return null;
    return decodeTableBody(v[0]).version;
  } catch {
    return null;
  }
}

export interface TableSourceOptions {
  /** The policy server's admin client (server-kit/admin-rpc.ts AdminClient with POLICY_ADMIN_LIMITS). */
  client: AdminCaller;
  /** Poll period, ms (default 5000). */
  intervalMs?: number;
  log: Logger;
  /** Told of every poll's outcome (metrics). */
  onPoll?: (ok: boolean) => void;
  /** Told of each table that differs from the one held before (the gateway pushes it, S3.11); not of the first. */
  onUpdate?: (table: Uint8Array) => void;
}

export class TableSource {
  #current: Uint8Array | null = null;
  #version: number | null = null;
  #timer: NodeJS.Timeout | null = null;
  #failing = false;
  #closed = false;
  readonly #o: TableSourceOptions;

  constructor(o: TableSourceOptions) {
    this.#o = o;
  }

  /** The newest signed table polled so far, or null before the first poll that succeeded. */
  current(): Uint8Array | null {
    return this.#current;
  }

  /** The version the held table states (unchecked: statedTableVersion), or null. */
  version(): number | null {
    return this.#version;
  }

  /** One poll now; never throws (a failure keeps the table held). */
  async refresh(): Promise<void> {
    try {
      const t = await adminCall(this.#o.client, 'latestTable', {});
      const prev = this.#current;
      this.#current = t;
      if (!prev || !equalBytes(prev, t)) this.#version = statedTableVersion(t);
      if (prev && !equalBytes(prev, t)) this.#o.onUpdate?.(t);
      if (this.#failing) this.#o.log.info('attack table source back', { bytes: t.length });
      this.#failing = false;
      this.#o.onPoll?.(true);
    } catch (e) {
      if (!this.#failing) this.#o.log.warn('attack table source unavailable; keeping the table held', { error: (e as Error).message.slice(0, 200), held: this.#current !== null });
      this.#failing = true;
      this.#o.onPoll?.(false);
    }
  }

  /** Polls now and then every intervalMs, until close(). */
  async start(): Promise<void> {
    await this.refresh();
    const tick = () => {
      if (this.#closed) return;
      this.#timer = setTimeout(() => void this.refresh().finally(tick), this.#o.intervalMs ?? 5_000);
      this.#timer.unref();
    };
    tick();
  }

  close(): void {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
  }
}
