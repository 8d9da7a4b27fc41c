// A registration server process role (primary or backup: the same code, its own name and
// ports, the same master key and store). Device/link ports run RegServerSession; a health poller
// keeps the business servers' health and load in its own view (health.ts), which placement reads.
import { Limits } from '../protocol/limits.ts';
import type { MasterKeyring } from '../protocol/keys.ts';
import { parseCidr } from '../server-kit/ip.ts';
import { startHost, type Host } from '../server-kit/host.ts';
import { AdminClient } from '../server-kit/admin-rpc.ts';
import { TableSource } from '../server-kit/table-source.ts';
import { POLICY_ADMIN_LIMITS } from '../server-kit/admin-messages.ts';
import { ServerMetrics } from '../server-kit/metrics.ts';
import { createLogger } from '../server-kit/log.ts';
import type { RegStore, BizServerRecord, RegionRecord } from './store.ts';
import { openRegStore } from './pg-store.ts';
import { placeOf, type StoreChoice } from '../server-kit/store-choice.ts';
import { RegServerSession } from './session.ts';
import { HealthPoller, withHealthView } from './health.ts';
import { withTablesCache } from './tables-cache.ts';
import type { RotationStep } from './rotation.ts';
import { SharedState, type SharedStateConfig } from '../server-kit/redis.ts';
import { RedisReplay } from '../server-kit/shared-replay.ts';
import { replayCacheFor, type Mutant } from '../server-kit/mutant.ts';

export interface RegBizServer { name: string; region: string; url: string; adminUrl: string }

export interface RegConfig {
  name: string;
  host: string;
  devicePort: number | null;
  linkPort: number;
  /** The SQLite file (under the default store choice). */
  dbFile: string;
  /** SQLite (default) or PostgreSQL shared by several registration servers (issue 16). */
  store?: StoreChoice;
  ring: MasterKeyring;
  linkKey: Uint8Array;
  /** PEM certificate and key (contents or paths): the link port speaks wss:// (server-kit/host.ts). */
  linkTls?: { cert: string; key: string };
  adminKey: Uint8Array;
  bizServers: RegBizServer[];
  regions: RegionRecord[];
  stepTimeoutMs?: number;
  /** How long an issued (pending) password stays usable before its first login. */
  pendingTtlMs?: number;
  healthIntervalMs?: number;
  adminTimeoutMs?: number;
  pauseAt?: (step: RotationStep) => void | Promise<void>;
  /**
   * S3.11: the policy server whose latest signed attack table goes into every credential reply
   * (server-kit/table-source.ts; polled with the admin key). Absent: replies carry no table.
   */
  policy?: { name: string; adminUrl: string; pollMs?: number };
  /**
   * Issue 16: the Redis this server shares with the other instances of its name (the hello
   * replay cache: server-kit/shared-replay.ts). Absent: this process's memory only.
   */
  redis?: SharedStateConfig;
  /** TEST ONLY: one rule broken on purpose (server-kit/mutant.ts); never set in production. */
  mutant?: Mutant;
}

export interface RegServer {
  name: string;
  devicePort: number | null;
  linkPort: number;
  store: RegStore;
  /** Polls the business servers' health now (also runs every healthIntervalMs). */
  pollHealth(): Promise<void>;
  sessions(): number;
  close(): Promise<void>;
}

export const DEFAULT_PENDING_TTL_MS = 30 * 24 * 3600_000;

export async function startRegServer(cfg: RegConfig): Promise<RegServer> {
  const log = createLogger(cfg.name);
  for (const r of cfg.regions) parseCidr(r.cidr);
  const store = await openRegStore(placeOf(cfg.store ?? { kind: 'sqlite' }, cfg.dbFile));
  let host: Host | null = null;
  let tables: TableSource | null = null;
  const shared = cfg.redis ? new SharedState(cfg.redis) : null;
  try {
    if (shared && !(await shared.ready())) log.warn('shared state not reachable at start: the hello replay cache is this process\'s until it is', { code: 'SHARED_STATE_DOWN' });
    await store.syncTopology(cfg.bizServers, cfg.regions);
    const clients = new Map<string, AdminClient>();
    const adminClient = (s: BizServerRecord) => {
      let c = clients.get(s.adminUrl);
      if (!c) clients.set(s.adminUrl, (c = new AdminClient({ target: s.name, url: s.adminUrl, key: cfg.adminKey, timeoutMs: cfg.adminTimeoutMs ?? 3_000, batch: true })));
      return c;
    };
    const poller = new HealthPoller(store, adminClient, log, cfg.healthIntervalMs ?? 2_000);
    await poller.poll();
    poller.start();
    const metrics = new ServerMetrics(cfg.name);
    if (cfg.policy) {
      const client = new AdminClient({ target: cfg.policy.name, url: cfg.policy.adminUrl, key: cfg.adminKey, timeoutMs: cfg.adminTimeoutMs ?? 3_000, limits: POLICY_ADMIN_LIMITS });
      tables = new TableSource({ client, intervalMs: cfg.policy.pollMs, log, onPoll: (ok) => metrics.event(ok ? 'table_poll_ok' : 'table_poll_failed') });
      await tables.start();
    }
    const replay = replayCacheFor(cfg.mutant);
    const sessionOpts = { name: cfg.name, stepTimeoutMs: cfg.stepTimeoutMs ?? Limits.stepTimeoutMs, log, metrics, mutant: cfg.mutant };
    // Placement reads this process's own health view, never another server's verdict. Under
    // it, the firmware, region and server tables from memory while their version holds (issue 15).
    // Instances of one name share it: a hello is bound to its destination name (HS_WRONG_DEST).
    const sharedReplay = shared ? new RedisReplay(shared, `reg-hello:${cfg.name}`, undefined, () => metrics.event('shared_replay_fallback')) : undefined;
    const deps = { store: withHealthView(withTablesCache(store), poller), ring: cfg.ring, replay, sharedReplay, adminClient, table: () => tables?.current() ?? null, tableVersion: () => tables?.version() ?? null, pendingTtlMs: cfg.pendingTtlMs ?? DEFAULT_PENDING_TTL_MS, log, pauseAt: cfg.pauseAt };
    host = await startHost({
      name: cfg.name,
      host: cfg.host,
      devicePort: cfg.devicePort,
      linkPort: cfg.linkPort,
      linkKey: cfg.linkKey,
      linkTls: cfg.linkTls,
      metrics,
      factory: (t) => new RegServerSession(t, sessionOpts, deps),
    });
    log.info('listening', { devicePort: host.devicePort, linkPort: host.linkPort });
    const h = host;
    return {
      name: cfg.name,
      devicePort: h.devicePort,
      linkPort: h.linkPort,
      store,
      pollHealth: () => poller.poll(),
      sessions: () => h.sessions(),
      async close() {
        tables?.close();
        await poller.stop();
        await h.close();
        for (const c of clients.values()) c.close();
        await shared?.close();
        await store.close();
      },
    };
  } catch (e) {
    tables?.close();
    await host?.close();
    await shared?.close();
    await store.close();
    throw e;
  }
}
