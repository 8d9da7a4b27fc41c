// A business server process role: device/link ports (server-kit/host.ts) running BizSession,
// and the admin API for the registration server (installPending, status).
import type { Server } from 'node:http';
import { ReplayCache } from '../protocol/replay.ts';
import { Limits } from '../protocol/limits.ts';
import { USER_RE } from '../protocol/messages.ts';
import type { CborValue } from '../protocol/cbor.ts';
import { startHost, listen, closeServer, type Host } from '../server-kit/host.ts';
import { createAdminServer, AdminError, safeInt } from '../server-kit/admin-rpc.ts';
import { ServerMetrics } from '../server-kit/metrics.ts';
import { createLogger } from '../server-kit/log.ts';
import { SqliteBizStore, SEALED_MIN, SEALED_MAX } from './store.ts';
import { BizSession } from './session.ts';

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

function parseInstall(args: CborValue): { user: string; key: Uint8Array; sealed: Uint8Array; expiresAt: number; rotationId: Uint8Array } {
  if (!Array.isArray(args) || args.length !== 5) throw new AdminError('ADMIN_BAD_ARGS', 'installPending takes [user, key, sealed, expiresAt, rotationId]');
  const [user, key, sealed, , rotationId] = args;
  const expiresAt = safeInt(args[3]);
  if (typeof user !== 'string' || !USER_RE.test(user)) throw new AdminError('ADMIN_BAD_ARGS', 'bad user');
  if (!(key instanceof Uint8Array) || key.length !== 32) throw new AdminError('ADMIN_BAD_ARGS', 'key must be 32 bytes');
  if (!(sealed instanceof Uint8Array) || sealed.length < SEALED_MIN || sealed.length > SEALED_MAX) throw new AdminError('ADMIN_BAD_ARGS', `sealed must be ${SEALED_MIN}..${SEALED_MAX} bytes`);
  if (expiresAt === null || expiresAt < 0) throw new AdminError('ADMIN_BAD_ARGS', 'bad expiresAt');
  if (!(rotationId instanceof Uint8Array) || rotationId.length !== 16) throw new AdminError('ADMIN_BAD_ARGS', 'rotationId must be 16 bytes');
  return { user, key: Uint8Array.from(key), sealed: Uint8Array.from(sealed), expiresAt, rotationId: Uint8Array.from(rotationId) };
}

export async function startBizServer(cfg: BizConfig): Promise<BizServer> {
  const log = createLogger(cfg.name);
  const store = new SqliteBizStore(cfg.dbFile, cfg.storageKey);
  const replay = new ReplayCache();
  let draining = false;
  const metrics = new ServerMetrics(cfg.name);
  const sessionOpts = { name: cfg.name, stepTimeoutMs: cfg.stepTimeoutMs ?? Limits.stepTimeoutMs, log, metrics };
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
      factory: (t) => new BizSession(t, sessionOpts, { store, replay }),
      health: () => ({ region: cfg.region, draining }),
    });
    const h = host;
    admin = createAdminServer({
      key: cfg.adminKey,
      name: cfg.name,
      ops: {
        installPending(args) {
          const a = parseInstall(args);
          const r = store.installPending(a.user, a.key, a.sealed, a.expiresAt, a.rotationId);
          a.key.fill(0);
          log.info(r.installed ? 'pending installed' : 'pending kept', { user: a.user, currentGen: r.currentGen, pendingGen: r.pendingGen });
          return [r.currentGen, r.pendingGen, r.installed, r.sealed, r.rotationId];
        },
        status() {
          return [!draining, h.sessions(), cfg.region];
        },
      },
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
