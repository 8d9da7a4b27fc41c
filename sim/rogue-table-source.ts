// A rogue table source for the S3.11 stories (sim/attack-scenarios.ts): an admin endpoint that
// answers the registration servers' `latestTable` poll (server-kit/table-source.ts) with bytes
// the story chose: a table signed by another key (forged), an older one recorded earlier
// (replayed), one whose expiry has passed. It models a registration server whose table source
// is compromised or stuck: it holds the deployment's admin key (an insider, or a server whose
// configuration was changed), so the registration server takes its answers and hands them on
// in credential replies. What stands between such a source and the phones is the phone's own
// check (protocol/attack-table.ts verifyTable; firmware/policy-table.ts acceptTable).
import { createServer } from 'node:http';
import { adminListener } from '../server-kit/admin-rpc.ts';
import { adminOps, POLICY_ADMIN_LIMITS } from '../server-kit/admin-messages.ts';
import { listen, closeServer } from '../server-kit/host.ts';

export interface RogueTableSource {
  /** What a registration server's StartRegOptions.policy takes. */
  ref: { name: string; adminUrl: string };
  /** Polls answered so far. */
  polls(): number;
  close(): Promise<void>;
}

/** Serves `table()` as the latest table to whoever polls with `adminKey`, as the policy server `name`. */
export async function startRogueTableSource(adminKey: Uint8Array, table: () => Uint8Array, name = 'policy'): Promise<RogueTableSource> {
  let polls = 0;
  const admin = adminListener({ key: adminKey, name, limits: POLICY_ADMIN_LIMITS, ops: adminOps({ latestTable: () => (polls++, table()) }) });
  const server = createServer(admin);
  const port = await listen(server, 0, '127.0.0.1');
  return { ref: { name, adminUrl: `http://127.0.0.1:${port}/admin` }, polls: () => polls, close: () => closeServer(server) };
}
