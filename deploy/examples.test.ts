// deploy/examples/reference/: the configuration files of docs/deploy.md's reference topology
// are what deploy/cluster/topology.ts writes for the addresses 10.77.0.x (the cluster harness
// runs the same files on its own hosts), and each one loads as its role reads it, once the
// deployment's key files exist; one with a key changed is refused.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readdirSync, readFileSync, cpSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from './test-util.ts';
import { referenceFiles, REFERENCE_PLAN } from './cluster/topology.ts';
import { loadRoleConfig } from './roles.ts';
import { ensureStateKeys, ensureOperatorClientFile } from './config.ts';
import { ensureServerTls } from '../server-kit/tls-ca.ts';
import { newClientSecret } from '../operator-server/tokens.ts';
import { systemRng } from '../protocol/rng.ts';
import { ImplementationError } from '../protocol/errors.ts';

const EXAMPLES = join(import.meta.dirname, 'examples', 'reference');

test('the example files are the reference topology as topology.ts writes it (8 roles, one file each)', () => {
  const files = referenceFiles(REFERENCE_PLAN);
  assert.equal(readdirSync(EXAMPLES).sort(), files.map((f) => f.file).sort());
  for (const rf of files) assert.equal(JSON.parse(readFileSync(join(EXAMPLES, rf.file), 'utf8')), rf.config, rf.file);
  assert.equal(files.map((f) => f.role).sort(), ['biz', 'biz', 'gateway', 'gateway', 'operator', 'policy', 'reg', 'reg']);
});

test('each example loads as its role reads it, with the deployment key files; a broken one is refused', async () => {
  const t = tempDir('usbphone-examples-');
  try {
    cpSync(EXAMPLES, t.dir, { recursive: true });
    const f = ensureStateKeys(t.dir);
    await ensureServerTls(f.tlsDir, 'operator', [REFERENCE_PLAN.addr.oper]);
    ensureOperatorClientFile(f.operatorClient, () => newClientSecret(systemRng));
    for (const rf of referenceFiles(REFERENCE_PLAN)) {
      const c = loadRoleConfig(rf.role, join(t.dir, rf.file)) as Record<string, unknown>;
      assert.ok(c && typeof c === 'object', rf.file);
      if (rf.role === 'gateway') assert.equal((c.redis as { namespace: string }).namespace, 'usbphone-ref');
    }
    const broken = { ...referenceFiles(REFERENCE_PLAN).find((r) => r.file === 'reg-primary.json')!.config, linkPort: 'x' };
    writeFileSync(join(t.dir, 'broken.json'), JSON.stringify(broken));
    const e = (() => {
      try {
        loadRoleConfig('reg', join(t.dir, 'broken.json'));
      } catch (x) {
        return x;
      }
    })();
    assert.ok(e instanceof ImplementationError && e.code === 'CFG_INVALID' && /linkPort/.test(e.message), String(e));
  } finally {
    t.remove();
  }
});

test.run();
