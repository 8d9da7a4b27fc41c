// Health and load of the business servers, as THIS registration server sees them: each is
// asked for its status over the admin API every interval, and the verdict stays in this
// process (HealthView). Placement (placement.ts) reads it through withHealthView(); the
// shared store only gets a copy for operators to read, never a verdict another server acts
// on. So a registration server that was stopped (SIGSTOP, a long GC pause, a VM freeze) and
// whose first calls after resuming land on connections the business servers already closed
// cannot make the other registration server refuse devices (issue 10).
//
// A server that answers is believed at once (healthy, or draining: unhealthy). A server that
// does not answer is marked unhealthy only after `failuresToMark` consecutive polls failed,
// each poll having retried once at once (on a fresh connection: the admin client drops a
// socket that failed): one lost answer is not a verdict.
import { adminCall, type AdminCaller } from '../server-kit/admin-messages.ts';
import type { Logger } from '../server-kit/log.ts';
import type { BizServerRecord, RegStore } from './store.ts';

export interface HealthState { healthy: boolean; load: number; failures: number }

export const DEFAULT_FAILURES_TO_MARK = 2;

export class HealthPoller {
  #timer: NodeJS.Timeout | null = null;
  #running: Promise<void> | null = null;
  /** This process's view: server name -> verdict. Absent = not polled yet (trust the store). */
  readonly #view = new Map<string, HealthState>();

  constructor(
    private readonly store: RegStore,
    private readonly client: (s: BizServerRecord) => AdminCaller,
    private readonly log: Logger,
    private readonly intervalMs: number,
    private readonly failuresToMark = DEFAULT_FAILURES_TO_MARK,
  ) {}

  /** Polls every server once now. */
  poll(): Promise<void> {
    this.#running ??= this.#poll().finally(() => (this.#running = null));
    return this.#running;
  }

  /** This process's verdict on `name`, if it has polled it. */
  state(name: string): HealthState | undefined {
    return this.#view.get(name);
  }

  /** The store's records with health and load replaced by this process's view. */
  overlay(servers: BizServerRecord[]): BizServerRecord[] {
    return servers.map((s) => {
      const v = this.#view.get(s.name);
      return v ? { ...s, healthy: v.healthy, load: v.load } : s;
    });
  }

  async #ask(s: BizServerRecord): Promise<{ healthy: boolean; load: number } | null> {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const st = await adminCall(this.client(s), 'status', {});
        return { healthy: st.healthy, load: st.sessions };
      } catch {
        // No answer: once more, then the poll counts as failed.
      }
    }
    return null;
  }

  async #poll(): Promise<void> {
    await Promise.all((await this.store.listServers()).map(async (s) => {
      const prev = this.#view.get(s.name) ?? { healthy: s.healthy, load: s.load, failures: 0 };
      const got = await this.#ask(s);
      const next: HealthState = got
        ? { healthy: got.healthy, load: got.load, failures: 0 }
        : { healthy: prev.failures + 1 >= this.failuresToMark ? false : prev.healthy, load: prev.load, failures: prev.failures + 1 };
      this.#view.set(s.name, next);
      if (next.healthy !== prev.healthy) this.log.info(next.healthy ? 'business server healthy' : 'business server unhealthy', { server: s.name, failures: next.failures });
      try {
        // For operators only (placement never reads it back): the last writer's view.
        await this.store.setServerHealth(s.name, next.healthy, next.load);
      } catch (e) {
        this.log.warn('health not recorded', { server: s.name, err: (e as Error).message });
      }
    }));
  }

  start(): void {
    if (this.#timer || this.intervalMs <= 0) return;
    this.#timer = setInterval(() => void this.poll(), this.intervalMs);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    await this.#running;
  }
}

/**
 * The store as this server's sessions see it: listServers() carries this process's health
 * view, everything else is the store itself. (The sessions take the whole store; placement
 * is the one reader of health.)
 */
export function withHealthView<S extends RegStore>(store: S, poller: HealthPoller): S {
  return new Proxy(store, {
    get(target, prop) {
      if (prop === 'listServers') {
        return () => {
          const list = target.listServers();
          return list instanceof Promise ? list.then((l) => poller.overlay(l)) : poller.overlay(list);
        };
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}
