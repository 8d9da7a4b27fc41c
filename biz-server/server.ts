// A business server process role: device/link ports (server-kit/host.ts) running BizServerSession,
// and the admin API (server-kit/admin-messages.ts) for the registration server
// (installPending, status) and for enrollment (enrollAccount).
import type { Server } from 'node:http';
import { Limits } from '../protocol/limits.ts';
import { ImplementationError } from '../protocol/errors.ts';
import { startHost, listen, closeServer, type Host } from '../server-kit/host.ts';
import { createAdminServer, AdminError } from '../server-kit/admin-rpc.ts';
import { adminOps } from '../server-kit/admin-messages.ts';
import { ServerMetrics } from '../server-kit/metrics.ts';
import { createLogger } from '../server-kit/log.ts';
import { SqliteBizStore } from './store.ts';
import { BizServerSession } from './session.ts';
import { replayCacheFor, type Mutant } from '../server-kit/mutant.ts';

export interface BizConfig {
  name: string;
  region: string;
  host: string;
  /** Direct device port (0 = ephemeral, null = none). */
  devicePort: number | null;
  linkPort: number;
  adminPort: number;
  /** Accounts database (shared by all business servers on one machine). */
  dbFile: string;
  /** The key login keys are wrapped under in dbFile (never stored in it). */
  storageKey: Uint8Array;
  linkKey: Uint8Array;
  /** PEM certificate and key (contents or paths): the link port speaks wss:// (server-kit/host.ts). */
  linkTls?: { cert: string; key: string };
  adminKey: Uint8Array;
  stepTimeoutMs?: number;
  /** TEST ONLY: one rule broken on purpose (server-kit/mutant.ts); never set in production. */
  mutant?: Mutant;
}

export interface BizServer {
  name: string;
  region: string;
  devicePort: number | null;
  linkPort: number;
  adminPort: number;
  adminUrl: string;
  store: SqliteBizStore;
  /** Marks the server as not accepting (status reports healthy=false). */
  setDraining(on: boolean): void;
  sessions(): number;
  close(): Promise<void>;
}

export async function startBizServer(cfg: BizConfig): Promise<BizServer> {
  const log = createLogger(cfg.name);
  const store = new SqliteBizStore(cfg.dbFile, cfg.storageKey);
  const replay = replayCacheFor(cfg.mutant);
  let draining = false;
  const metrics = new ServerMetrics(cfg.name);
  const sessionOpts = { name: cfg.name, stepTimeoutMs: cfg.stepTimeoutMs ?? Limits.stepTimeoutMs, log, metrics, mutant: cfg.mutant };
  let host: Host | null = null;
  let admin: Server | null = null;
  try {
    host = await startHost({
      name: cfg.name,
      host: cfg.host,
      devicePort: cfg.devicePort,
      linkPort: cfg.linkPort,
      linkKey: cfg.linkKey,
      linkTls: cfg.linkTls,
      metrics,
      factory: (t) => new BizServerSession(t, sessionOpts, { store, replay }),
      health: () => ({ region: cfg.region, draining }),
    });
    const h = host;
    admin = createAdminServer({
      key: cfg.adminKey,
      name: cfg.name,
      ops: adminOps({
        installPending(a) {
          try {
            const r = store.installPending(a.user, a.loginKey, a.sealed, a.expiresAt, a.rotationId);
            log.info(r.installed ? 'pending installed' : 'pending kept', { user: a.user, currentGen: r.currentGen, pendingGen: r.pendingGen });
            return r;
          } finally {
            a.loginKey.fill(0);
          }
        },
        status() {
          return { healthy: !draining, sessions: h.sessions(), region: cfg.region };
        },
        // Enrollment (deploy/enroll.ts): the account with no password yet (generation 0).
        // Idempotent for the same account/user pair; bound to another: BIZ_ACCOUNT_CONFLICT.
        enrollAccount(a) {
          let r: 'created' | 'exists';
          try {
            r = store.createAccount(a.account, a.user);
          } catch (e) {
            // The store's refusals are the caller's to see, with their code (not ADMIN_INTERNAL).
            if (e instanceof ImplementationError && (e.code === 'BIZ_ACCOUNT_CONFLICT' || e.code === 'BIZ_BAD_USER')) throw new AdminError(e.code, e.message.replace(/^[A-Z_]+: /, ''));
            throw e;
          }
          if (r === 'created') log.info('account created', { user: a.user });
          return r;
        },
      }),
    });
    const adminPort = await listen(admin, cfg.adminPort, cfg.host);
    log.info('listening', { devicePort: host.devicePort, linkPort: host.linkPort, adminPort });
    const a = admin;
    return {
      name: cfg.name,
      region: cfg.region,
      devicePort: host.devicePort,
      linkPort: host.linkPort,
      adminPort,
      adminUrl: `http://${cfg.host}:${adminPort}/admin`,
      store,
      setDraining(on) {
        draining = on;
      },
      sessions: () => h.sessions(),
      async close() {
        await Promise.all([h.close(), closeServer(a)]);
        store.close();
      },
    };
  } catch (e) {
    await host?.close();
    if (admin) await closeServer(admin);
    store.close();
    throw e;
  }
}
