// A deployment's own certificate authority and the server certificates it issues, made in
// Node with WebCrypto (@peculiar/x509), so no openssl binary is needed. The embedded stack
// uses it for the bank -> operator link (S4.6): the operator serves HTTPS with a certificate
// of this CA, and the bank's client trusts only this CA (server-kit/operator-client.ts).
//
// Files in `dir` (private keys 0600):
//   ca.pem, ca-key.pem          ECDSA P-256 CA, 10 years, pathLen 0
//   <name>.pem, <name>-key.pem  the server's certificate (1 year): CN = name, SAN = the
//                               names/addresses it is reached at, EKU serverAuth
// A file that is new is published with link(2) from a private temporary file, which fails
// when the name exists: a new file never replaces one (two processes making the CA at once:
// the second finds ca-key.pem taken and uses the CA that won). A server certificate that is
// expired, expires within 30 days, or lacks one of the names asked for is issued again from
// the same CA (clients keep trusting ca.pem), replacing its pair (rename) ONLY when the
// certificate there was issued by this CA (its signature and authority key identifier): a
// certificate or key of another PKI, or a file that is not PEM, is refused
// (TLS_FOREIGN_CERT, TLS_BAD_PEM) and left as it is. A private key readable by group or
// others is refused (TLS_KEY_MODE), as ssh refuses one.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createPrivateKey, webcrypto, X509Certificate, type webcrypto as WebCrypto } from 'node:crypto';
import { isIP } from 'node:net';
import { existsSync, linkSync, mkdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
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
  /** What this call did to the server's pair: made (there was none), renewed (replaced a pair this CA issued), kept. */
  status: 'made' | 'renewed' | 'kept';
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

const tmpName = (file: string) => `${file}.tmp-${process.pid}-${Buffer.from(webcrypto.getRandomValues(new Uint8Array(6))).toString('hex')}`;

/**
 * Publishes a NEW file: written in full to a private temporary name (O_EXCL, its mode from
 * the start), then link(2)ed to `file`, which fails with EEXIST when `file` exists: nothing
 * is ever replaced. Returns false when `file` already exists.
 */
function publishNew(file: string, text: string, mode: number): boolean {
  const tmp = tmpName(file);
  writeFileSync(tmp, text, { mode, flag: 'wx' });
  try {
    linkSync(tmp, file);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  } finally {
    unlinkSync(tmp);
  }
}

/** Replaces `file` atomically (a renewal of a file this CA made): never half written or briefly world-readable. */
function replaceOwn(file: string, text: string, mode: number): void {
  const tmp = tmpName(file);
  writeFileSync(tmp, text, { mode, flag: 'wx' });
  renameSync(tmp, file);
}

/** A private key file: group/other access refused (like ssh), then read. */
function readKeyFile(file: string): string {
  const mode = statSync(file).mode & 0o777;
  if (mode & 0o077) throw new ImplementationError('TLS_KEY_MODE', `${file} is readable by others (mode ${mode.toString(8).padStart(4, '0')}): a private key must be owner-only; chmod 600 ${file}`);
  return readFileSync(file, 'utf8');
}

function parseCert(file: string, pem: string): x509.X509Certificate {
  try {
    if (!/-----BEGIN CERTIFICATE-----/.test(pem)) throw new Error('no "BEGIN CERTIFICATE" block');
    return new x509.X509Certificate(pem);
  } catch (e) {
    throw new ImplementationError('TLS_BAD_PEM', `${file} is not a PEM certificate (${(e as Error).message}); move it away or fix it`);
  }
}
async function parseKey(file: string, pem: string): Promise<CryptoKey> {
  try {
    if (!/-----BEGIN PRIVATE KEY-----/.test(pem)) throw new Error('no "BEGIN PRIVATE KEY" (PKCS#8) block');
    return await importKey(pem, ['sign']);
  } catch (e) {
    throw new ImplementationError('TLS_BAD_PEM', `${file} is not a PKCS#8 P-256 private key in PEM (${(e as Error).message}); move it away or fix it`);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** How long a ca-key.pem without ca.pem is taken for another process making the CA right now. */
const CA_SETTLE_MS = 3_000;

type Ca = { cert: x509.X509Certificate; key: CryptoKey; pem: string };

async function readCa(dir: string): Promise<Ca> {
  const certFile = join(dir, 'ca.pem');
  const keyFile = join(dir, 'ca-key.pem');
  const keyPem = readKeyFile(keyFile);
  const pem = readFileSync(certFile, 'utf8');
  const cert = parseCert(certFile, pem);
  const key = await parseKey(keyFile, keyPem);
  // The key must be the certificate's: a CA whose files come from two CAs signs certificates nobody trusts.
  const probe = new Uint8Array(32);
  const sig = await webcrypto.subtle.sign(ALG, key, probe);
  if (!(await webcrypto.subtle.verify(ALG, await cert.publicKey.export(ALG, ['verify']), sig, probe))) {
    throw new ImplementationError('TLS_CA_MISMATCH', `${keyFile} is not the key of ${certFile}: restore the pair that belongs together`);
  }
  return { cert, key, pem };
}

async function ensureCa(dir: string, caName: string): Promise<Ca> {
  const certFile = join(dir, 'ca.pem');
  const keyFile = join(dir, 'ca-key.pem');
  // ca-key.pem alone: another process may be between publishing the key and the certificate.
  for (let waited = 0; existsSync(keyFile) && !existsSync(certFile) && waited < CA_SETTLE_MS; waited += 50) await sleep(50);
  if (existsSync(certFile) && existsSync(keyFile)) return readCa(dir);
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
  // Key first, published with link(): the process whose link succeeds makes the CA; one that
  // finds ca-key.pem taken waits for that CA's certificate and uses it. A crash between the
  // two leaves ca-key.pem alone, refused above, never a CA certificate whose key is lost.
  if (!publishNew(keyFile, await exportKey(keys.privateKey), 0o600)) return ensureCa(dir, caName);
  if (!publishNew(certFile, pem, 0o644)) throw new ImplementationError('TLS_CA_INCOMPLETE', `${certFile} appeared while this process held ${keyFile}: two CAs; remove both and run again`);
  return { cert, key: keys.privateKey, pem };
}

/** Whether `cert` was issued by `ca`: its signature verifies with the CA's key and its authority key identifier (when present) is the CA's. */
async function issuedBy(cert: x509.X509Certificate, ca: Ca): Promise<boolean> {
  if (!(await cert.verify({ publicKey: ca.cert.publicKey, signatureOnly: true }).catch(() => false))) return false;
  const aki = cert.getExtension(x509.AuthorityKeyIdentifierExtension);
  const ski = ca.cert.getExtension(x509.SubjectKeyIdentifierExtension);
  return !aki?.keyId || !ski || aki.keyId === ski.keyId;
}

/** Whether `pem` is valid for another 30 days and names every host. */
function usable(pem: string, hosts: string[], now: number): boolean {
  const c = new X509Certificate(pem);
  if (Date.parse(c.validTo) - now < RENEW_BEFORE_MS) return false;
  return hosts.every((h) => (isIP(h) ? c.checkIP(h) !== undefined : c.checkHost(h) !== undefined));
}

/** Whether `h` can be a certificate's name: an IP address or a DNS name (RFC 1123 labels). */
export function isCertHost(h: string): boolean {
  if (isIP(h)) return true;
  return h.length <= 253 && h.split('.').every((l) => /^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/.test(l));
}

/** Whether `name` can name a server's pair: file-safe, and neither the CA's files (`ca`) nor another pair's key (`<x>-key`). */
export function checkPairName(name: string): string | null {
  if (!/^[a-z0-9][a-z0-9-]{0,31}$/.test(name)) return `server name '${name.slice(0, 32)}' is not a file-safe name`;
  if (name === 'ca') return "server name 'ca' would be the deployment CA's own files (ca.pem, ca-key.pem)";
  if (name.endsWith('-key')) return `server name '${name}' ends in -key: its certificate would be the key file of server '${name.slice(0, -4)}'`;
  return null;
}

/**
 * The CA and the certificate of server `name` for `hosts` (IP addresses or DNS names) in
 * `dir`, made when missing or no longer usable. Throws TLS_CA_INCOMPLETE when only half of
 * the CA is there (never silently replaces a CA clients trust), TLS_FOREIGN_CERT when the
 * pair there was not issued by this CA, TLS_BAD_PEM for a file that does not parse,
 * TLS_KEY_MODE for a key others can read, TLS_BAD_NAME for a name or host that cannot be.
 */
export async function ensureServerTls(dir: string, name: string, hosts: string[], caName = 'usbphone deployment CA'): Promise<TlsFiles> {
  const why = checkPairName(name);
  if (why) throw new ImplementationError('TLS_BAD_NAME', why);
  if (hosts.length === 0) throw new ImplementationError('TLS_BAD_NAME', 'a server certificate needs at least one host');
  for (const h of hosts) if (!isCertHost(h)) throw new ImplementationError('TLS_BAD_NAME', `host '${h.slice(0, 64)}' is neither an IP address nor a DNS name`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const ca = await ensureCa(dir, caName);
  const caFile = join(dir, 'ca.pem');
  const certFile = join(dir, `${name}.pem`);
  const keyFile = join(dir, `${name}-key.pem`);
  const now = Date.now();
  const haveCert = existsSync(certFile);
  const haveKey = existsSync(keyFile);
  if (haveCert) {
    const certPem = readFileSync(certFile, 'utf8');
    const cert = parseCert(certFile, certPem);
    if (!(await issuedBy(cert, ca))) {
      throw new ImplementationError('TLS_FOREIGN_CERT', `${certFile} was not issued by ${caFile} (another PKI's certificate, '${cert.subject}'): it is left as it is; remove this pair from the files given to 'certs' (and have the clients trust its CA), or move ${certFile} and ${keyFile} away to have them made here`);
    }
    if (haveKey) {
      const keyPem = readKeyFile(keyFile);
      await parseKey(keyFile, keyPem);
      // A key that is not the certificate's (a renewal cut between its two files) is issued again.
      if (new X509Certificate(certPem).checkPrivateKey(createPrivateKey(keyPem)) && usable(certPem, hosts, now)) return { caPem: ca.pem, certPem, keyPem, caFile, certFile, keyFile, status: 'kept' };
    }
  } else if (haveKey) {
    // A key without a certificate: this CA publishes the certificate first, so this key is not one it made.
    throw new ImplementationError('TLS_FOREIGN_CERT', `${keyFile} exists without ${certFile}: not a key made here; it is left as it is; move it away to have the pair made here`);
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
  if (!haveCert) {
    // A new pair, certificate first (a crash after it leaves a certificate of this CA without
    // its key: issued again next time); both with link(), so a file that appeared meanwhile
    // (another run) is never replaced: that run's pair is used.
    if (!publishNew(certFile, certPem, 0o644)) return ensureServerTls(dir, name, hosts, caName);
    if (!publishNew(keyFile, keyPem, 0o600)) {
      unlinkSync(certFile);
      return ensureServerTls(dir, name, hosts, caName);
    }
    return { caPem: ca.pem, certPem, keyPem, caFile, certFile, keyFile, status: 'made' };
  }
  // A renewal of this CA's own pair: each file replaced atomically, certificate first (a crash
  // between leaves a certificate of this CA whose key does not match: issued again next time).
  replaceOwn(certFile, certPem, 0o644);
  if (haveKey) replaceOwn(keyFile, keyPem, 0o600);
  else if (!publishNew(keyFile, keyPem, 0o600)) throw new ImplementationError('TLS_FOREIGN_CERT', `${keyFile} appeared while its certificate was being issued; run again`);
  return { caPem: ca.pem, certPem, keyPem, caFile, certFile, keyFile, status: haveKey ? 'renewed' : 'made' };
}
