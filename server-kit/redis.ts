// The shared state of several gateways and servers (issue 16), on Redis (ioredis): one client
// per process, every key under the deployment's namespace, every call bounded in time.
// What is shared and what happens while Redis is down is decided per item in
// docs/architecture.md §"What is shared, where"; this file gives the items one way to ask:
// `shared(p)` resolves with Redis's answer within `timeoutMs`, or rejects with
// SharedStateDown, and the caller falls back as its item says.
//
// Bounded: a Redis that is down (connection refused) fails a call at once (no offline queue);
// one that accepts and never answers fails it at `timeoutMs` (ioredis' commandTimeout, and
// our own timer for the time before the connection is ready); reconnection runs in the
// background (at most every `retryMs`), so the items use Redis again once it is back.
import { Redis } from 'ioredis';
import { ImplementationError } from '../protocol/errors.ts';
import { createLogger } from './log.ts';

export interface SharedStateConfig {
  /** redis://host:port[/db] */
  url: string;
  /** The deployment's namespace: every key starts with `${namespace}:` (several deployments, or tests, share one Redis). */
  namespace: string;
  /** A call's bound, ms (default 250): past it the item falls back. */
  timeoutMs?: number;
  /** Reconnection attempts at most this often, ms (default 1000). */
  retryMs?: number;
}

export const SHARED_DEFAULTS = { timeoutMs: 250, retryMs: 1000 } as const;
const NAMESPACE_RE = /^[A-Za-z0-9._-]{1,64}$/;

/** Redis did not answer (refused, timed out, or an error): the item falls back. */
export class SharedStateDown extends Error {
  readonly code = 'SHARED_STATE_DOWN';
}

/** Checks a shared-state configuration (CFG_INVALID names the field). */
export function sharedStateConfig(v: unknown, where: string): SharedStateConfig {
  const o = v as Record<string, unknown>;
  if (typeof v !== 'object' || v === null) throw new ImplementationError('CFG_INVALID', `${where}: redis must be {url, namespace, timeoutMs?}`);
  if (typeof o.url !== 'string' || !/^rediss?:\/\/[^\s/]+(\/\d+)?$/.test(o.url)) throw new ImplementationError('CFG_INVALID', `${where}: redis.url must be redis://host:port[/db]`);
  if (typeof o.namespace !== 'string' || !NAMESPACE_RE.test(o.namespace)) throw new ImplementationError('CFG_INVALID', `${where}: redis.namespace must match ${NAMESPACE_RE.source}`);
  for (const k of ['timeoutMs', 'retryMs'] as const) {
    const x = o[k];
    if (x !== undefined && (typeof x !== 'number' || !Number.isInteger(x) || x < 1 || x > 60_000)) throw new ImplementationError('CFG_INVALID', `${where}: redis.${k} must be a whole number of ms in [1, 60000]`);
  }
  return { url: o.url, namespace: o.namespace, ...(o.timeoutMs === undefined ? {} : { timeoutMs: o.timeoutMs as number }), ...(o.retryMs === undefined ? {} : { retryMs: o.retryMs as number }) };
}

export class SharedState {
  readonly redis: Redis;
  readonly namespace: string;
  readonly timeoutMs: number;
  readonly #log = createLogger('shared-state');
  #downSince: number | null = null;
  /** Calls that fell back since start (metrics, tests). */
  fallbacks = 0;

  constructor(cfg: SharedStateConfig) {
    const c = sharedStateConfig(cfg, 'shared state');
    this.namespace = c.namespace;
    this.timeoutMs = c.timeoutMs ?? SHARED_DEFAULTS.timeoutMs;
    const retryMs = c.retryMs ?? SHARED_DEFAULTS.retryMs;
    this.redis = new Redis(c.url, {
      commandTimeout: this.timeoutMs,
      connectTimeout: Math.max(this.timeoutMs, 1000),
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      retryStrategy: (times) => Math.min(times * 100, retryMs),
      lazyConnect: false,
    });
    // Connection errors are answered per call (SharedStateDown) and logged once per outage.
    this.redis.on('error', () => {});
    this.redis.on('ready', () => {
      if (this.#downSince !== null) this.#log.info('shared state back', { downMs: Date.now() - this.#downSince });
      this.#downSince = null;
    });
  }

  /** `${namespace}:${parts...}` */
  key(...parts: string[]): string {
    return `${this.namespace}:${parts.join(':')}`;
  }

  get up(): boolean {
    return this.redis.status === 'ready';
  }

  /** Runs one Redis call within timeoutMs; SharedStateDown otherwise (logged once per outage). */
  async call<T>(fn: (r: Redis) => Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    try {
      if (this.redis.status !== 'ready') throw new Error(`not connected (${this.redis.status})`);
      return await Promise.race([
        fn(this.redis),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer within ${this.timeoutMs} ms`)), this.timeoutMs);
        }),
      ]);
    } catch (e) {
      this.fallbacks++;
      if (this.#downSince === null) {
        this.#downSince = Date.now();
        this.#log.warn('shared state unavailable: items fall back (docs/architecture.md "What is shared, where")', { code: 'SHARED_STATE_DOWN', reason: (e as Error).message });
      }
      throw new SharedStateDown((e as Error).message);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Resolves once connected (false after ms): a server waits for it at start, so its first
   * sessions use Redis (the items fall back until it is up, and say so once).
   */
  async ready(ms = 1000): Promise<boolean> {
    if (this.up) return true;
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.redis.off('ready', on);
        resolve(false);
      }, ms);
      const on = () => {
        clearTimeout(t);
        resolve(true);
      };
      this.redis.once('ready', on);
    });
  }

  async close(): Promise<void> {
    this.redis.disconnect(false);
  }
}
