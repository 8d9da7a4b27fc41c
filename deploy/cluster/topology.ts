// The reference topology of docs/deploy.md (issue 16): two gateways, two registration servers
// (primary and backup), two business servers (east, west), the policy server and the mobile
// operator, each on its own host; one configuration file per role (`usbphone serve <role>
// --config FILE`). deploy/examples/reference/ holds these files for the addresses 10.77.0.x
// (deploy/examples.test.ts checks they are what this file writes); the cluster harness
// (deploy/cluster/cluster.ts) writes them for its own hosts and runs them.
import type { Role } from '../config.ts';

/** The hosts of the reference topology and the last octet of their 10.77.0.x address. */
export const REFERENCE_HOSTS = {
  gw1: 11, gw2: 12, reg1: 21, reg2: 22, biz1: 31, biz2: 32, policy: 41, oper: 42,
} as const;
export type HostName = keyof typeof REFERENCE_HOSTS;

export const PORTS = { gateway: 7400, gatewayOperator: 7401, regLink: 7411, bizDevice: 7430, bizLink: 7431, bizAdmin: 7432, bankPages: 7433, policyAdmin: 7445, operator: 7450 } as const;

export interface TopologyPlan {
  /** Each host's address. */
  addr: Record<HostName, string>;
  /**
   * What the phones are told to reach the business servers at (credReply url: this + the
   * server's name): the gateways' one name (DNS round robin / a load balancer), or one gateway.
   */
  phoneGatewayUrl: string;
  /** The shared Redis, or null (each process alone). */
  redis: { url: string; namespace: string; timeoutMs?: number } | null;
  /** Phones' regions: CIDR -> east / west. */
  regions: { cidr: string; region: 'east' | 'west' }[];
  /** The attack period T, ms (gateways' reports, the policy server's tables). */
  periodMs: number;
  /** Registration servers' health poll of the business servers, ms. */
  healthIntervalMs: number;
  /**
   * The stores: SQLite files in the deployment directory (shared by the hosts' processes), or
   * PostgreSQL (each role's default schema, or the schemas named: the harness's fresh ones).
   */
  store: { kind: 'sqlite' } | { kind: 'postgres'; url: string; schemas?: Record<StoreRole, string> };
  /**
   * TLS on every hop between hosts that is not sealed end to end already (docs/deploy.md §"TLS
   * on every hop between hosts"): the gateways' device ports (phoneGatewayUrl wss://) and the
   * reg/biz link ports (linkTls, the gateways' linkUrl wss:// with linkCa), with certificates of
   * the deployment's CA in tls/ (`usbphone certs`). Absent: plain ws:// (the cluster harness).
   */
  tls?: boolean;
}

export const REFERENCE_PLAN: TopologyPlan = {
  addr: Object.fromEntries(Object.entries(REFERENCE_HOSTS).map(([h, n]) => [h, `10.77.0.${n}`])) as Record<HostName, string>,
  phoneGatewayUrl: 'wss://10.77.0.11:7400/',
  redis: { url: 'redis://10.77.0.1:6379', namespace: 'usbphone-ref' },
  regions: [{ cidr: '10.77.0.96/28', region: 'east' }, { cidr: '10.77.0.112/28', region: 'west' }],
  periodMs: 60_000,
  healthIntervalMs: 2_000,
  store: { kind: 'sqlite' },
  tls: true,
};

/** The roles with a store. */
export type StoreRole = 'reg' | 'biz' | 'operator' | 'policy';

/** One file of the topology: its name, the host it runs on, its role and its JSON. */
export interface RoleFile { file: string; host: HostName; role: Role; config: Record<string, unknown> }

export const INITIAL_TABLE = {
  sites: [
    { site: 'biz-east', mechanisms: ['password', 'otp', 'fingerprint'], floor: 'password', degree: 0.3 },
    { site: 'biz-west', mechanisms: ['password', 'otp', 'fingerprint'], floor: 'password', degree: 0.3 },
  ],
};

/** The configuration files of the reference topology for `plan` (paths relative to the deployment directory). */
export function referenceFiles(plan: TopologyPlan): RoleFile[] {
  const a = plan.addr;
  const pgStore = plan.store.kind === 'postgres' ? plan.store : null;
  const store = (file: string, role: StoreRole) => (pgStore === null ? { dbFile: file } : { dbFile: file, store: { kind: 'postgres', url: pgStore.url, ...(pgStore.schemas ? { schema: pgStore.schemas[role] } : {}) } });
  const redis = plan.redis ? { redis: plan.redis } : {};
  // tls: each server's pair in tls/ under its name (the naming of server-kit/tls-ca.ts), the CA tls/ca.pem.
  const pair = (name: string) => ({ cert: `tls/${name}.pem`, key: `tls/${name}-key.pem` });
  const linkTls = (name: string) => (plan.tls ? { linkTls: pair(name) } : {});
  const policy = { name: 'policy', adminUrl: `http://${a.policy}:${PORTS.policyAdmin}/admin`, pollMs: 2_000 };
  const biz = (name: 'biz-east' | 'biz-west', host: 'biz1' | 'biz2', region: 'east' | 'west'): RoleFile => ({
    file: `${name}.json`, host, role: 'biz',
    config: {
      name, region, host: a[host], devicePort: null, linkPort: PORTS.bizLink, adminPort: PORTS.bizAdmin, ...store('biz-accounts.sqlite', 'biz'),
      storeKeyFile: 'store.key', linkKeyFile: 'link.key', ...linkTls(name), adminKeyFile: 'admin.key', ...redis,
      bank: { mode: 2, httpPort: PORTS.bankPages, operator: { url: `https://${a.oper}:${PORTS.operator}`, caFile: 'tls/ca.pem', clientFile: 'operator-client.json' } },
    },
  });
  const reg = (name: 'reg-primary' | 'reg-backup', host: 'reg1' | 'reg2'): RoleFile => ({
    file: `${name}.json`, host, role: 'reg',
    config: {
      name, host: a[host], devicePort: null, linkPort: PORTS.regLink, ...store('reg.sqlite', 'reg'),
      masterKeyFile: 'master.key', linkKeyFile: 'link.key', ...linkTls(name), adminKeyFile: 'admin.key',
      bizServers: [
        { name: 'biz-east', region: 'east', url: `${plan.phoneGatewayUrl}biz-east`, adminUrl: `http://${a.biz1}:${PORTS.bizAdmin}/admin` },
        { name: 'biz-west', region: 'west', url: `${plan.phoneGatewayUrl}biz-west`, adminUrl: `http://${a.biz2}:${PORTS.bizAdmin}/admin` },
      ],
      regions: plan.regions, healthIntervalMs: plan.healthIntervalMs, policy, ...redis,
    },
  });
  const ws = plan.tls ? 'wss' : 'ws';
  const ca = plan.tls ? { linkCa: 'tls/ca.pem' } : {};
  const upstreams = [
    { name: 'reg-primary', linkUrl: `${ws}://${a.reg1}:${PORTS.regLink}/`, ...ca },
    { name: 'reg-backup', linkUrl: `${ws}://${a.reg2}:${PORTS.regLink}/`, ...ca },
    { name: 'biz-east', linkUrl: `${ws}://${a.biz1}:${PORTS.bizLink}/`, ...ca },
    { name: 'biz-west', linkUrl: `${ws}://${a.biz2}:${PORTS.bizLink}/`, ...ca },
  ];
  const gw = (name: 'gw-1' | 'gw-2', host: 'gw1' | 'gw2'): RoleFile => ({
    file: `${name}.json`, host, role: 'gateway',
    config: {
      name, host: a[host], port: PORTS.gateway, operatorPort: PORTS.gatewayOperator, ...(plan.tls ? { tls: pair(name) } : {}), linkKeyFile: 'link.key', adminKeyFile: 'admin.key',
      upstreams, attacks: { periodMs: plan.periodMs }, policy, ...redis,
    },
  });
  return [
    { file: 'operator.json', host: 'oper', role: 'operator', config: { host: a.oper, port: PORTS.operator, ...store('operator.sqlite', 'operator'), tls: { cert: 'tls/operator.pem', key: 'tls/operator-key.pem' }, tokenKeyFile: 'operator-token.key', clients: ['operator-client.json'] } },
    { file: 'policy.json', host: 'policy', role: 'policy', config: { host: a.policy, adminPort: PORTS.policyAdmin, adminKeyFile: 'admin.key', ...store('policy.sqlite', 'policy'), policyKeyFile: 'policy.key', initialTable: INITIAL_TABLE, periodMs: plan.periodMs } },
    biz('biz-east', 'biz1', 'east'),
    biz('biz-west', 'biz2', 'west'),
    reg('reg-primary', 'reg1'),
    reg('reg-backup', 'reg2'),
    gw('gw-1', 'gw1'),
    gw('gw-2', 'gw2'),
  ];
}
