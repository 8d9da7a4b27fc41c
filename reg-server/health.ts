// Health and load of the business servers, as the registration server sees them: each is
// asked for its status over the admin API every interval; no answer marks it unhealthy so
// placement (placement.ts) skips it. Results go to the shared store.
import { adminCall, type AdminCaller } from '../server-kit/admin-messages.ts';
import type { Logger } from '../server-kit/log.ts';
import type { BizServerRecord, RegStore } from './store.ts';

export class HealthPoller {
  #timer: NodeJS.Timeout | null = null;
  #running: Promise<void> | null = null;

  constructor(
    private readonly store: RegStore,
    private readonly client: (s: BizServerRecord) => AdminCaller,
    private readonly log: Logger,
    private readonly intervalMs: number,
  ) {}

  /** Polls every server once now. */
  poll(): Promise<void> {
    this.#running ??= this.#poll().finally(() => (this.#running = null));
    return this.#running;
  }

  async #poll(): Promise<void> {
    await Promise.all(this.store.listServers().map(async (s) => {
      let healthy = false;
      let load = s.load;
      try {
        const st = await adminCall(this.client(s), 'status', {});
        healthy = st.healthy;
        load = st.sessions;
      } catch {
        healthy = false;
      }
      if (healthy !== s.healthy) this.log.info(healthy ? 'business server healthy' : 'business server unhealthy', { server: s.name });
      try {
        this.store.setServerHealth(s.name, healthy, load);
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
