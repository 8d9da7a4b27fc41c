// The deployment CA: made once, keys owner-only, the server certificate reused while usable
// and issued again (same CA) for new names; a half CA is refused, never replaced.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { spawn } from 'node:child_process';
import { ensureServerTls } from './tls-ca.ts';
import { ImplementationError } from '../protocol/errors.ts';

const root = mkdtempSync(join(tmpdir(), 'usbphone-ca-'));
test.after(() => rmSync(root, { recursive: true, force: true }));

test('CA and server certificate: chain, names, usage, key files 0600; reused, then re-issued for a new name', async () => {
  const dir = join(root, 'a');
  const a = await ensureServerTls(dir, 'operator', ['127.0.0.1', 'localhost']);
  const ca = new X509Certificate(a.caPem);
  const cert = new X509Certificate(a.certPem);
  assert.ok(ca.ca);
  assert.not.ok(cert.ca);
  assert.ok(cert.verify(ca.publicKey));
  assert.ok(cert.checkIP('127.0.0.1'));
  assert.ok(cert.checkHost('localhost'));
  assert.is(cert.checkIP('127.0.0.2'), undefined);
  assert.match(cert.keyUsage?.join(',') ?? '', /1\.3\.6\.1\.5\.5\.7\.3\.1/);
  for (const k of [a.keyFile, join(dir, 'ca-key.pem')]) assert.is(statSync(k).mode & 0o777, 0o600, k);
  const again = await ensureServerTls(dir, 'operator', ['127.0.0.1']);
  assert.is(again.certPem, a.certPem);
  const moved = await ensureServerTls(dir, 'operator', ['127.0.0.1', '10.0.0.5']);
  assert.is.not(moved.certPem, a.certPem);
  assert.is(moved.caPem, a.caPem);
  assert.ok(new X509Certificate(moved.certPem).checkIP('10.0.0.5'));
  assert.is(statSync(moved.keyFile).mode & 0o777, 0o600);
});

test('half a CA is refused (TLS_CA_INCOMPLETE); bad names are refused (TLS_BAD_NAME)', async () => {
  const dir = join(root, 'b');
  await ensureServerTls(dir, 'operator', ['127.0.0.1']);
  unlinkSync(join(dir, 'ca.pem'));
  assert.match(await code(ensureServerTls(dir, 'operator', ['127.0.0.1'])), /^TLS_CA_INCOMPLETE /);
  assert.match(await code(ensureServerTls(join(root, 'c'), '../x', ['127.0.0.1'])), /^TLS_BAD_NAME /);
  assert.match(await code(ensureServerTls(join(root, 'c'), 'operator', [])), /^TLS_BAD_NAME /);
});

const code = async (p: Promise<unknown>) => {
  try {
    await p;
  } catch (e) {
    return e instanceof ImplementationError ? `${e.code} ${e.message}` : String(e);
  }
  return 'resolved';
};

test('a pair named ca or <x>-key is refused before anything is written (it would be the CA or another key)', async () => {
  const dir = join(root, 'names');
  const a = await ensureServerTls(dir, 'gw-1', ['10.0.0.1']);
  const before = ['ca.pem', 'ca-key.pem', 'gw-1-key.pem'].map((f) => readFileSync(join(dir, f), 'utf8'));
  assert.match(await code(ensureServerTls(dir, 'ca', ['10.77.0.99'])), /^TLS_BAD_NAME .*'ca'/);
  assert.match(await code(ensureServerTls(dir, 'gw-1-key', ['10.77.0.99'])), /^TLS_BAD_NAME .*ends in -key/);
  assert.equal(['ca.pem', 'ca-key.pem', 'gw-1-key.pem'].map((f) => readFileSync(join(dir, f), 'utf8')), before);
  assert.ok(new X509Certificate(a.certPem).verify(new X509Certificate(readFileSync(join(dir, 'ca.pem'))).publicKey));
  assert.match(await code(ensureServerTls(dir, 'gw-2', ['bad host!'])), /^TLS_BAD_NAME .*bad host!/);
});

test('own PKI: a certificate another CA issued is refused (TLS_FOREIGN_CERT), its key never replaced; this CA renews its own', async () => {
  const dir = join(root, 'own');
  await ensureServerTls(dir, 'operator', ['127.0.0.1']); // the deployment CA exists
  // A pair from another CA (another directory's CA) placed where 'gw-1' goes.
  const other = await ensureServerTls(join(root, 'other-ca'), 'gw-1', ['10.77.0.11']);
  writeFileSync(join(dir, 'gw-1.pem'), other.certPem);
  writeFileSync(join(dir, 'gw-1-key.pem'), other.keyPem, { mode: 0o600 });
  const r = await code(ensureServerTls(dir, 'gw-1', ['10.77.0.11']));
  assert.match(r, /^TLS_FOREIGN_CERT .*gw-1\.pem was not issued by .*ca\.pem/);
  assert.is(readFileSync(join(dir, 'gw-1-key.pem'), 'utf8'), other.keyPem);
  assert.is(readFileSync(join(dir, 'gw-1.pem'), 'utf8'), other.certPem);
  // A key alone (its certificate elsewhere) is not this CA's either.
  unlinkSync(join(dir, 'gw-1.pem'));
  assert.match(await code(ensureServerTls(dir, 'gw-1', ['10.77.0.11'])), /^TLS_FOREIGN_CERT .*gw-1-key\.pem exists without/);
  assert.is(readFileSync(join(dir, 'gw-1-key.pem'), 'utf8'), other.keyPem);
  // This CA's own pair: made, kept, renewed (for a new address).
  unlinkSync(join(dir, 'gw-1-key.pem'));
  assert.is((await ensureServerTls(dir, 'gw-1', ['10.77.0.11'])).status, 'made');
  assert.is((await ensureServerTls(dir, 'gw-1', ['10.77.0.11'])).status, 'kept');
  assert.is((await ensureServerTls(dir, 'gw-1', ['10.77.0.11', '10.77.0.12'])).status, 'renewed');
});

test('unclear files: garbage PEM named (TLS_BAD_PEM), a group-readable key refused (TLS_KEY_MODE), a CA key of another CA (TLS_CA_MISMATCH)', async () => {
  const dir = join(root, 'garbage');
  await ensureServerTls(dir, 'operator', ['127.0.0.1']);
  writeFileSync(join(dir, 'gw-1.pem'), 'not a certificate\n');
  assert.match(await code(ensureServerTls(dir, 'gw-1', ['10.0.0.1'])), /^TLS_BAD_PEM .*gw-1\.pem is not a PEM certificate/);
  assert.is(readFileSync(join(dir, 'gw-1.pem'), 'utf8'), 'not a certificate\n');
  chmodSync(join(dir, 'ca-key.pem'), 0o640);
  assert.match(await code(ensureServerTls(dir, 'operator', ['127.0.0.1'])), /^TLS_KEY_MODE .*ca-key\.pem is readable by others \(mode 0640\).*chmod 600/);
  chmodSync(join(dir, 'ca-key.pem'), 0o600);
  chmodSync(join(dir, 'operator-key.pem'), 0o644);
  assert.match(await code(ensureServerTls(dir, 'operator', ['127.0.0.1'])), /^TLS_KEY_MODE .*operator-key\.pem/);
  chmodSync(join(dir, 'operator-key.pem'), 0o600);
  const caPem = readFileSync(join(dir, 'ca.pem'), 'utf8');
  writeFileSync(join(dir, 'ca.pem'), 'garbage');
  assert.match(await code(ensureServerTls(dir, 'operator', ['127.0.0.1'])), /^TLS_BAD_PEM .*ca\.pem is not a PEM certificate/);
  writeFileSync(join(dir, 'ca.pem'), caPem);
  const stranger = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  const caKey = readFileSync(join(dir, 'ca-key.pem'), 'utf8');
  writeFileSync(join(dir, 'ca-key.pem'), stranger);
  assert.match(await code(ensureServerTls(dir, 'operator', ['127.0.0.1'])), /^TLS_CA_MISMATCH .*ca-key\.pem is not the key of/);
  writeFileSync(join(dir, 'ca-key.pem'), caKey);
  assert.is((await ensureServerTls(dir, 'operator', ['127.0.0.1'])).status, 'kept');
});

test('parallel runs on a fresh directory (processes and in-process): one CA, every certificate chains to ca.pem', async () => {
  for (let trial = 0; trial < 2; trial++) {
    const dir = join(root, `race-${trial}`);
    mkdirSync(dir, { recursive: true });
    const names = ['gw-1', 'gw-2', 'reg-primary', 'biz-east'];
    const script = (n: string) => `import { ensureServerTls } from ${JSON.stringify(join(import.meta.dirname, 'tls-ca.ts'))}; await ensureServerTls(${JSON.stringify(dir)}, ${JSON.stringify(n)}, ['127.0.0.1']);`;
    const runs = names.slice(0, 2).map(
      (n) =>
        new Promise<number>((res) => {
          const p = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script(n)], { stdio: ['ignore', 'ignore', 'inherit'] });
          p.on('exit', (c) => res(c ?? 1));
        }),
    );
    const inProc = names.slice(2).map((n) => ensureServerTls(dir, n, ['127.0.0.1']));
    assert.equal(await Promise.all(runs), [0, 0]);
    await Promise.all(inProc);
    const ca = new X509Certificate(readFileSync(join(dir, 'ca.pem')));
    for (const n of names) assert.ok(new X509Certificate(readFileSync(join(dir, `${n}.pem`))).verify(ca.publicKey), `${n} chains`);
    // ca-key.pem is ca.pem's key: one more certificate made with it chains too.
    assert.ok(new X509Certificate((await ensureServerTls(dir, 'extra', ['127.0.0.1'])).certPem).verify(ca.publicKey));
    assert.equal(readdirSync(dir).filter((f) => f.includes('.tmp-')), []);
  }
});

test.run();
