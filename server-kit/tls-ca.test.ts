// The deployment CA: made once, keys owner-only, the server certificate reused while usable
// and issued again (same CA) for new names; a half CA is refused, never replaced.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
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
  const code = async (p: Promise<unknown>) => {
    try {
      await p;
    } catch (e) {
      return e instanceof ImplementationError ? e.code : String(e);
    }
    return 'resolved';
  };
  assert.is(await code(ensureServerTls(dir, 'operator', ['127.0.0.1'])), 'TLS_CA_INCOMPLETE');
  assert.is(await code(ensureServerTls(join(root, 'c'), '../x', ['127.0.0.1'])), 'TLS_BAD_NAME');
  assert.is(await code(ensureServerTls(join(root, 'c'), 'operator', [])), 'TLS_BAD_NAME');
});

test.run();
