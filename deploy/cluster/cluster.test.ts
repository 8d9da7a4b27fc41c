// `make test-cluster` (issue 16): the reference topology on several hosts of this machine
// (network namespaces; loopback addresses where they are not allowed), its stores on
// PostgreSQL in fresh schemas (CLUSTER_STORE=sqlite: SQLite files), one gateway, one
// registration server, one business server and the policy server killed with -9 and one link
// cut while a fleet of phones cycles through both gateways; then every phone logs in again, no
// rotation lost or doubled, every store passes its check (deploy/cluster/cluster.ts). Prints
// the figures.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { runCluster } from './cluster.ts';

test('several hosts, kill -9 of a gateway, a registration, a business and the policy server, a cut link: every phone logs in again, no rotation lost or doubled, stores intact', async () => {
  const base = process.env.CLUSTER_DIR ?? join(tmpdir(), 'usbphone-cluster');
  mkdirSync(base, { recursive: true });
  const dir = mkdtempSync(join(base, 'run-'));
  const mode = process.env.CLUSTER_MODE === 'loopback' ? 'loopback' : undefined;
  const store = process.env.CLUSTER_STORE === 'sqlite' ? 'sqlite' : 'postgres';
  const port = (v: string | undefined) => (v ? Number(v) : undefined);
  const f = await runCluster({ dir, phones: Number(process.env.CLUSTER_PHONES ?? 24), mode, store, redisForwardPort: port(process.env.CLUSTER_REDIS_PORT), pgForwardPort: port(process.env.CLUSTER_PG_PORT), say: (l) => console.log(l) });
  console.log(`cluster figures: mode ${f.mode}${f.whyLoopback ? ` (${f.whyLoopback})` : ''}, store ${f.store}, phones ${f.phones}, kills ${f.kills}, partitions ${f.partitions}, cycles ${f.cycles}, logins ${f.logins}, logins during faults ${f.loginsDuringFaults}, registrations during faults ${f.registrationsDuringFaults}, via backup ${f.viaBackup}, logins from the saved generation ${f.savedLogins}, rotations ${f.rotations}, attacker alternating gateways counted ${f.attackerAttacks}x, logins while Redis was frozen ${f.loginsRedisFrozen}, lost ${f.rotationsLost}, doubled ${f.rotationsDoubled}, lockouts ${f.lockouts}, integrity ${JSON.stringify(f.integrity)}, ${(f.ms / 1000).toFixed(1)} s`);
  assert.equal(f.problems, []);
  assert.is(f.kills, 4);
  assert.is(f.store, store);
  assert.is(f.partitions, 1);
  assert.is(f.lockouts, 0);
  assert.is(f.attackerAttacks, 1);
  assert.ok(f.loginsDuringFaults > 0);
  rmSync(dir, { recursive: true, force: true });
});

test.run();
