// deploy/examples/reference/: the configuration files of docs/deploy.md's reference topology
// are what deploy/cluster/topology.ts writes for the addresses 10.77.0.x (the cluster harness
// runs the same files on its own hosts, without TLS), and each one loads as its role reads it,
// once the deployment's key files and certificates (usbphone certs: deploy/tls-files.ts) exist;
// one with a key changed is refused. The files' TLS works end to end on loopback, and a role
// refuses a peer whose certificate another CA issued.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readdirSync, readFileSync, cpSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { WebSocket } from 'ws';
import { tempDir } from './test-util.ts';
import { referenceFiles, REFERENCE_PLAN, type HostName, type TopologyPlan } from './cluster/topology.ts';
import { loadRoleConfig } from './roles.ts';
import { ensureStateKeys, ensureOperatorClientFile } from './config.ts';
import { ensureDeploymentTls } from './tls-files.ts';
import { startGateway, type GatewayConfig } from '../gateway/gateway.ts';
import { startHost } from '../server-kit/host.ts';
import type { RegConfig } from '../reg-server/server.ts';
import { encodeEnvelope, MsgType } from '../protocol/messages.ts';
import { setLogLevel } from '../server-kit/log.ts';
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
    // What docs/deploy.md says to run: usbphone certs *.json (the CA and every pair the files name).
    const tls = await ensureDeploymentTls(referenceFiles(REFERENCE_PLAN).map((rf) => join(t.dir, rf.file)));
    assert.equal(tls.certs.map((c) => c.name).sort(), ['biz-east', 'biz-west', 'gw-1', 'gw-2', 'operator', 'reg-backup', 'reg-primary']);
    assert.is(tls.trusts.length, 4 * 2 + 2, 'each gateway trusts the CA for its 4 links, each bank for the operator');
    const ca = new X509Certificate(readFileSync(join(f.tlsDir, 'ca.pem')));
    for (const c of tls.certs) {
      const x = new X509Certificate(readFileSync(c.certFile));
      assert.ok(x.verify(ca.publicKey) && x.checkIP(c.hosts[0]!) && existsSync(c.keyFile), c.name);
    }
    ensureOperatorClientFile(f.operatorClient, () => newClientSecret(systemRng));
    for (const rf of referenceFiles(REFERENCE_PLAN)) {
      const c = loadRoleConfig(rf.role, join(t.dir, rf.file)) as Record<string, unknown>;
      assert.ok(c && typeof c === 'object', rf.file);
      if (rf.role === 'gateway') {
        assert.equal((c.redis as { namespace: string }).namespace, 'usbphone-ref');
        // Every hop to another host that the sealed admin API does not cover runs TLS.
        assert.ok((c as unknown as GatewayConfig).tls && (c as unknown as GatewayConfig).upstreams.every((u) => u.linkUrl.startsWith('wss://') && u.linkCa === join(f.tlsDir, 'ca.pem')), rf.file);
      }
      if (rf.role === 'reg') assert.ok((c as unknown as RegConfig).linkTls && (c as unknown as RegConfig).bizServers.every((b) => b.url.startsWith('wss://')), rf.file);
      if (rf.role === 'biz') assert.ok((c as { linkTls?: unknown }).linkTls, rf.file);
    }
    // Run again: nothing is made anew.
    const again = await ensureDeploymentTls(referenceFiles(REFERENCE_PLAN).map((rf) => join(t.dir, rf.file)));
    for (const c of again.certs) assert.ok(tls.certs.some((d) => d.certFile === c.certFile && readFileSync(c.certFile, 'utf8') === readFileSync(d.certFile, 'utf8')));
    assert.equal([...new Set(tls.certs.map((c) => c.status))], ['made']);
    assert.equal([...new Set(again.certs.map((c) => c.status))], ['kept']);
    // A file naming the CA's own files (or another pair's key) as its pair is refused, the CA untouched.
    const caBefore = readFileSync(join(f.tlsDir, 'ca-key.pem'), 'utf8');
    writeFileSync(join(t.dir, 'evil.json'), JSON.stringify({ name: 'x', host: '10.77.0.99', port: 7400, tls: { cert: 'tls/ca.pem', key: 'tls/ca-key.pem' } }));
    await ensureDeploymentTls([join(t.dir, 'evil.json')]).then(() => assert.unreachable('accepted'), (e) => assert.ok(e instanceof ImplementationError && e.code === 'TLS_BAD_NAME' && /evil\.json/.test(e.message), String(e)));
    writeFileSync(join(t.dir, 'evil.json'), JSON.stringify({ name: 'x', host: '10.77.0.99', port: 7400, tls: { cert: 'tls/gw-1-key.pem', key: 'tls/gw-1-key-key.pem' } }));
    await ensureDeploymentTls([join(t.dir, 'evil.json')]).then(() => assert.unreachable('accepted'), (e) => assert.ok(e instanceof ImplementationError && e.code === 'TLS_BAD_NAME' && /ends in -key/.test(e.message), String(e)));
    assert.is(readFileSync(join(f.tlsDir, 'ca-key.pem'), 'utf8'), caBefore);
    // A pair that does not follow the naming is refused, before anything is made.
    const odd = { ...referenceFiles(REFERENCE_PLAN).find((r) => r.file === 'reg-primary.json')!.config, linkTls: { cert: 'tls/reg.crt', key: 'tls/reg.key' } };
    writeFileSync(join(t.dir, 'odd.json'), JSON.stringify(odd));
    await ensureDeploymentTls([join(t.dir, 'odd.json')]).then(() => assert.unreachable('accepted'), (e) => assert.ok(e instanceof ImplementationError && e.code === 'CFG_INVALID' && /linkTls/.test(e.message), String(e)));
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

test('a gateway file: the link heartbeat (limits.linkHeartbeatMs, linkHeartbeatMisses): loaded as given; out of range refused (CFG_INVALID)', () => {
  const t = tempDir('usbphone-hb-');
  try {
    ensureStateKeys(t.dir);
    const gw1 = referenceFiles(REFERENCE_PLAN).find((r) => r.file === 'gw-1.json')!.config;
    const load = (limits: unknown) => {
      writeFileSync(join(t.dir, 'gw.json'), JSON.stringify({ ...gw1, limits }));
      return loadRoleConfig('gateway', join(t.dir, 'gw.json')) as GatewayConfig;
    };
    assert.equal(load({ linkHeartbeatMs: 500, linkHeartbeatMisses: 5 }).limits, { linkHeartbeatMs: 500, linkHeartbeatMisses: 5 });
    for (const [limits, what] of [[{ linkHeartbeatMs: 0 }, 'linkHeartbeatMs'], [{ linkHeartbeatMs: '2000' }, 'linkHeartbeatMs'], [{ linkHeartbeatMisses: 0 }, 'linkHeartbeatMisses'], [[], 'limits']] as const) {
      assert.throws(() => load(limits), (e: unknown) => e instanceof ImplementationError && e.code === 'CFG_INVALID' && e.message.includes(what), JSON.stringify(limits));
    }
  } finally {
    t.remove();
  }
});

/** The reference files with every host on 127.0.0.1, in a new directory with its own keys and CA. */
async function loopbackDeployment() {
  const t = tempDir('usbphone-tls-');
  const plan: TopologyPlan = { ...REFERENCE_PLAN, addr: Object.fromEntries(Object.keys(REFERENCE_PLAN.addr).map((h) => [h, '127.0.0.1'])) as Record<HostName, string>, redis: null };
  const files = referenceFiles(plan);
  for (const rf of files) writeFileSync(join(t.dir, rf.file), JSON.stringify(rf.config));
  const f = ensureStateKeys(t.dir);
  await ensureDeploymentTls(files.map((rf) => join(t.dir, rf.file)));
  const reg = loadRoleConfig('reg', join(t.dir, 'reg-primary.json')) as RegConfig;
  const gw = loadRoleConfig('gateway', join(t.dir, 'gw-1.json')) as GatewayConfig;
  return { t, reg, gw, ca: readFileSync(join(f.tlsDir, 'ca.pem'), 'utf8') };
}

test('the reference files TLS on loopback: gateway and link server link over wss:// and serve a phone that trusts the CA; a link server or a gateway with a certificate of another CA is refused', async () => {
  setLogLevel('error');
  const a = await loopbackDeployment();
  const b = await loopbackDeployment();
  const echo = { factory: (tr: { send(f: Uint8Array): void }) => ({ onFrame: (fr: Uint8Array) => tr.send(fr), onClose() {} }) };
  // reg-primary of deployment A, and an impostor on the same address with A's link key but B's certificate.
  const real = await startHost({ name: 'reg-primary', host: '127.0.0.1', devicePort: null, linkPort: 0, linkKey: a.reg.linkKey, linkTls: a.reg.linkTls, ...echo });
  const impostor = await startHost({ name: 'reg-primary', host: '127.0.0.1', devicePort: null, linkPort: 0, linkKey: a.reg.linkKey, linkTls: b.reg.linkTls, ...echo });
  const gwOf = (d: typeof a, linkPort: number) => {
    const u = d.gw.upstreams.find((x) => x.name === 'reg-primary')!;
    return startGateway({ host: '127.0.0.1', port: 0, tls: d.gw.tls, upstreams: [{ ...u, linkUrl: `wss://127.0.0.1:${linkPort}/`, linkKey: a.reg.linkKey }], limits: { reconnectMinMs: 50, reconnectMaxMs: 100 } });
  };
  const good = await gwOf(a, real.linkPort);
  const fooled = await gwOf(a, impostor.linkPort);
  const other = await gwOf(b, real.linkPort);
  const phone = (url: string, ca: string) =>
    new Promise<Uint8Array>((resolve, reject) => {
      const ws = new WebSocket(url + 'reg-primary', { ca });
      ws.on('open', () => ws.send(encodeEnvelope(MsgType.finish, 0, 'reg-primary', [new Uint8Array(32)])));
      ws.on('message', (d: Buffer) => {
        resolve(new Uint8Array(d));
        ws.close();
      });
      ws.on('error', reject);
    });
  try {
    assert.ok(good.url.startsWith('wss://'));
    assert.ok(await good.waitUpstreams(5_000), 'A links to A over wss://');
    assert.equal(await phone(good.url, a.ca), encodeEnvelope(MsgType.finish, 0, 'reg-primary', [new Uint8Array(32)]));
    // The gateway of A does not link to a server whose certificate B's CA issued (same name, same address, right link key).
    assert.is(await fooled.waitUpstreams(1_500), false, 'linked to a certificate of another CA');
    assert.is(impostor.sessions(), 0);
    // A phone that trusts A's CA does not talk to a gateway with B's certificate.
    await phone(other.url, a.ca).then(() => assert.unreachable('a phone trusted another CA'), (e: Error) => assert.match(e.message, /self.signed|unable to (get|verify)/i));
  } finally {
    for (const g of [good, fooled, other]) await g.close();
    await real.close();
    await impostor.close();
    a.t.remove();
    b.t.remove();
  }
});

test.run();
