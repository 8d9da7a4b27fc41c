// A deployment's own certificate authority and the server certificates it issues, made in
// Node with WebCrypto (@peculiar/x509), so no openssl binary is needed. The embedded stack
// uses it for the bank -> operator link (S4.6): the operator serves HTTPS with a certificate
// of this CA, and the bank's client trusts only this CA (server-kit/operator-client.ts).
//
// Files in `dir` (private keys 0600, written once with O_EXCL):
//   ca.pem, ca-key.pem          ECDSA P-256 CA, 10 years, pathLen 0
//   <name>.pem, <name>-key.pem  the server's certificate (1 year): CN = name, SAN = the
//                               names/addresses it is reached at, EKU serverAuth
// A server certificate that is expired, expires within 30 days, or lacks one of the names
// asked for is issued again from the same CA (clients keep trusting ca.pem).
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto, X509Certificate, type webcrypto as WebCrypto } from 'node:crypto';
import { isIP } from 'node:net';
import { existsSync, mkdirSync, readFileSync, writeFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { ImplementationError } from '../protocol/errors.ts';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY = 86_400_000;
const CA_DAYS = 3650;
const SERVER_DAYS = 365;
const RENEW_BEFORE_MS = 30 * DAY;

export interface TlsFiles {
  /** The CA certificate (PEM): what a client trusts. */
  caPem: string;
  /** The server's certificate (PEM). */
  certPem: string;
  /** The server's private key (PKCS#8 PEM). */
  keyPem: string;
  caFile: string;
  certFile: string;
  keyFile: string;
}

const serial = () => {
  // RFC 5280 §4.1.2.2: positive, at most 20 octets; 16 random bytes with the top bit clear.
  const b = webcrypto.getRandomValues(new Uint8Array(16));
  b[0]! &= 0x7f;
  return Buffer.from(b).toString('hex');
};

async function exportKey(k: CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey('pkcs8', k);
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}
async function importKey(pem: string, usage: WebCrypto.KeyUsage[]): Promise<CryptoKey> {
  return webcrypto.subtle.importKey('pkcs8', x509.PemConverter.decodeFirst(pem), ALG, true, usage);
}

/** Writes a file atomically: a private key is never half written or briefly world-readable. */
function writeOnce(file: string, text: string, mode: number): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, text, { mode, flag: 'wx' });
  renameSync(tmp, file);
}

async function ensureCa(dir: string, caName: string): Promise<{ cert: x509.X509Certificate; key: CryptoKey; pem: string }> {
  const certFile = join(dir, 'ca.pem');
  const keyFile = join(dir, 'ca-key.pem');
  if (existsSync(certFile) && existsSync(keyFile)) {
    const pem = readFileSync(certFile, 'utf8');
    return { cert: new x509.X509Certificate(pem), key: await importKey(readFileSync(keyFile, 'utf8'), ['sign']), pem };
  }
  if (existsSync(certFile) || existsSync(keyFile)) throw new ImplementationError('TLS_CA_INCOMPLETE', `${dir} holds only one of ca.pem and ca-key.pem`);
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as WebCrypto.CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${caName}`,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + CA_DAYS * DAY),
    keys,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const pem = cert.toString('pem');
  // Key first: a crash between the two leaves ca-key.pem alone, refused above, never a CA
  // certificate whose key is lost.
  writeOnce(keyFile, await exportKey(keys.privateKey), 0o600);
  writeOnce(certFile, pem, 0o644);
  return { cert, key: keys.privateKey, pem };
}

/** Whether `pem` is valid for another 30 days, names every host and chains to `caPem`. */
function usable(pem: string, caPem: string, hosts: string[], now: number): boolean {
  const c = new X509Certificate(pem);
  if (Date.parse(c.validTo) - now < RENEW_BEFORE_MS) return false;
  if (!c.verify(new X509Certificate(caPem).publicKey)) return false;
  return hosts.every((h) => (isIP(h) ? c.checkIP(h) !== undefined : c.checkHost(h) !== undefined));
}

/**
 * The CA and the certificate of server `name` for `hosts` (IP addresses or DNS names) in
 * `dir`, made when missing or no longer usable. Throws TLS_CA_INCOMPLETE when only half of
 * the CA is there (never silently replaces a CA clients trust).
 */
export async function ensureServerTls(dir: string, name: string, hosts: string[], caName = 'usbphone deployment CA'): Promise<TlsFiles> {
  if (!/^[a-z0-9][a-z0-9-]{0,31}$/.test(name)) throw new ImplementationError('TLS_BAD_NAME', `server name '${name.slice(0, 32)}' is not a file-safe name`);
  if (hosts.length === 0) throw new ImplementationError('TLS_BAD_NAME', 'a server certificate needs at least one host');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const ca = await ensureCa(dir, caName);
  const certFile = join(dir, `${name}.pem`);
  const keyFile = join(dir, `${name}-key.pem`);
  const now = Date.now();
  if (existsSync(certFile) && existsSync(keyFile) && usable(readFileSync(certFile, 'utf8'), ca.pem, hosts, now)) {
    return { caPem: ca.pem, certPem: readFileSync(certFile, 'utf8'), keyPem: readFileSync(keyFile, 'utf8'), caFile: join(dir, 'ca.pem'), certFile, keyFile };
  }
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as WebCrypto.CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${name}`,
    issuer: ca.cert.subject,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + SERVER_DAYS * DAY),
    publicKey: keys.publicKey,
    signingKey: ca.key,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(hosts.map((h) => ({ type: isIP(h) ? ('ip' as const) : ('dns' as const), value: h }))),
      await x509.AuthorityKeyIdentifierExtension.create(ca.cert),
    ],
  });
  const keyPem = await exportKey(keys.privateKey);
  const certPem = cert.toString('pem');
  // Each file is replaced atomically. A crash between the two leaves a certificate that was
  // not usable (the reason it is re-issued), so the next start issues the pair again.
  writeOnce(keyFile, keyPem, 0o600);
  writeOnce(certFile, certPem, 0o644);
  return { caPem: ca.pem, certPem, keyPem, caFile: join(dir, 'ca.pem'), certFile, keyFile };
}
