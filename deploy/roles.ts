// One role as its own process, from its JSON file (`usbphone serve <role> --config FILE`, the
// cluster harness's hosts): gateway, reg, biz, policy or operator. The file's keys are in
// deploy/config.ts (ROLE_KEYS) and `usbphone serve --help`; what the roles share goes to the
// store (SQLite or PostgreSQL) and to Redis (docs/architecture.md "What is shared, where").
import { ImplementationError } from '../protocol/errors.ts';
import { ROLE_KEYS, type Role, readJsonFile, gatewayConfigFrom, gatewayExtrasFrom, regConfigFrom, bizConfigFrom, policyConfigFrom, operatorConfigFrom } from './config.ts';
import { startGateway } from '../gateway/gateway.ts';
import { startRegServer } from '../reg-server/server.ts';
import { startBizServer } from '../biz-server/server.ts';
import { startPolicyServer } from '../policy-server/server.ts';
import { startOperatorServer } from '../operator-server/server.ts';
import { secretHash } from '../operator-server/tokens.ts';
import { ALL_OPERATOR_SCOPES } from '../server-kit/operator-api.ts';
import { AdminClient } from '../server-kit/admin-rpc.ts';
import { adminCall, POLICY_ADMIN_LIMITS } from '../server-kit/admin-messages.ts';
import { TableSource } from '../server-kit/table-source.ts';
import { createLogger } from '../server-kit/log.ts';
import type { RotationStep } from '../reg-server/rotation.ts';

export type { Role } from './config.ts';

export interface RunningRole {
  /** The ready line for a person. */
  human: string;
  /** The ready line as JSON ({event: 'listening', role, ...ports}). */
  event: Record<string, unknown>;
  stop(): Promise<void>;
}

export interface RoleOptions {
  /** reg only, TEST ONLY: stop at a rotation step (kill -9 tests). */
  pauseAt?: (step: RotationStep) => void | Promise<void>;
}

/** Reads and checks `role`'s file without starting it (what startRole would run); the same errors. */
export function loadRoleConfig(role: Role, file: string): unknown {
  const raw = readJsonFile(file);
  switch (role) {
    case 'gateway':
      return { ...gatewayConfigFrom(raw, file), ...gatewayExtrasFrom(raw, file) };
    case 'reg':
      return regConfigFrom(raw, file);
    case 'biz':
      return bizConfigFrom(raw, file);
    case 'policy':
      return policyConfigFrom(raw, file);
    case 'operator':
      return operatorConfigFrom(raw, file);
    default:
      throw new ImplementationError('CFG_INVALID', `no role '${String(role)}' (roles: ${Object.keys(ROLE_KEYS).join(', ')})`);
  }
}

/** Starts `role` from `file`; CFG_INVALID / CFG_UNREADABLE / CFG_NO_KEY for a bad file. */
export async function startRole(role: Role, file: string, opts: RoleOptions = {}): Promise<RunningRole> {
  const raw = readJsonFile(file);
  switch (role) {
    case 'gateway': {
      const cfg = gatewayConfigFrom(raw, file);
      const x = gatewayExtrasFrom(raw, file);
      // S3.5 / S3.11: reports to the policy server, its new tables pushed to the phones connected.
      const client = x.policy ? new AdminClient({ target: x.policy.name, url: x.policy.adminUrl, key: x.policy.adminKey, limits: POLICY_ADMIN_LIMITS }) : null;
      const g = await startGateway({
        ...cfg,
        ...(client ? { attackReports: { gateway: x.name, send: (r) => adminCall(client, 'reportAttacks', r) } } : {}),
      });
      let tables: TableSource | null = null;
      if (client) {
        tables = new TableSource({ client, intervalMs: x.policy!.pollMs, log: createLogger(`${x.name}/tables`), onUpdate: (t) => void g.pushTable(t) });
        await tables.start();
      }
      return {
        human: `gateway ${x.name} ready: ${g.url}, operator port ${g.operatorUrl ?? '-'} (stop with Ctrl-C)`,
        event: { event: 'listening', role, name: x.name, url: g.url, port: g.port, operatorUrl: g.operatorUrl },
        async stop() {
          tables?.close();
          await g.close();
          client?.close();
        },
      };
    }
    case 'reg': {
      const c = regConfigFrom(raw, file);
      if (opts.pauseAt) c.pauseAt = opts.pauseAt;
      const s = await startRegServer(c);
      return {
        human: `${s.name} ready: devices ${s.devicePort ?? '-'}, link ${s.linkPort} (stop with Ctrl-C)`,
        event: { event: 'listening', role, name: s.name, devicePort: s.devicePort, linkPort: s.linkPort },
        stop: () => s.close(),
      };
    }
    case 'biz': {
      const b = await startBizServer(bizConfigFrom(raw, file));
      return {
        human: `${b.name} ready: devices ${b.devicePort ?? '-'}, link ${b.linkPort}, admin ${b.adminPort}${b.bank ? `, bank pages ${b.bank.pageUrl}` : ''} (stop with Ctrl-C)`,
        event: { event: 'listening', role, name: b.name, devicePort: b.devicePort, linkPort: b.linkPort, adminPort: b.adminPort, bankPageUrl: b.bank?.pageUrl ?? null },
        stop: () => b.close(),
      };
    }
    case 'policy': {
      const p = await startPolicyServer(policyConfigFrom(raw, file));
      return {
        human: `${p.name} ready: admin ${p.adminUrl} (attack table v${p.latest().table.version}) (stop with Ctrl-C)`,
        event: { event: 'listening', role, name: p.name, adminPort: p.adminPort, adminUrl: p.adminUrl },
        stop: () => p.close(),
      };
    }
    case 'operator': {
      const { clients, ...cfg } = operatorConfigFrom(raw, file);
      const o = await startOperatorServer(cfg);
      // The banks' OAuth2 clients, with every scope: the client files are the truth.
      for (const c of clients) o.store.putClient(c.clientId, secretHash(c.clientSecret), [...ALL_OPERATOR_SCOPES]);
      return {
        human: `${o.name} ready: ${o.url} (stop with Ctrl-C)`,
        event: { event: 'listening', role, name: o.name, port: o.port, url: o.url },
        stop: () => o.close(),
      };
    }
    default:
      throw new ImplementationError('CFG_INVALID', `no role '${String(role)}' (roles: ${Object.keys(ROLE_KEYS).join(', ')})`);
  }
}
