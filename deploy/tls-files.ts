// The certificates a deployment's role files name (docs/deploy.md §"TLS on every hop between
// hosts"; `usbphone certs`): for each role file, every `tls` (the gateway's device port, the
// operator's API) and `linkTls` (a registration or business server's link port) pair it names
// is issued by the deployment's own CA (server-kit/tls-ca.ts) for the address the file listens
// on (`host`), and every CA a file trusts (`upstreams[].linkCa`, `bank.operator.caFile`) must
// be that CA's certificate. Nothing is issued again while it is usable (tls-ca.ts renews one
// that expires within 30 days or lacks the address), so running it again changes nothing.
//
// Paths follow tls-ca.ts: `<dir>/<name>.pem` and `<dir>/<name>-key.pem`, the CA in
// `<dir>/ca.pem` (+ `ca-key.pem`, which stays where the certificates are made: a host needs
// ca.pem and its own pair only). One deployment, one CA: pairs in two directories are refused.
import { dirname, resolve, basename, join } from 'node:path';
import { existsSync } from 'node:fs';
import { ImplementationError } from '../protocol/errors.ts';
import { checkPairName, ensureServerTls, isCertHost } from '../server-kit/tls-ca.ts';
import { readJsonFile } from './config.ts';

export interface IssuedCert {
  /** The role file that names the pair, and under which key. */
  file: string;
  key: 'tls' | 'linkTls';
  name: string;
  hosts: string[];
  certFile: string;
  keyFile: string;
  /** made (there was none), renewed (this CA's pair issued again), kept (still usable). */
  status: 'made' | 'renewed' | 'kept';
}

export interface DeploymentTls {
  caFile: string;
  certs: IssuedCert[];
  /** Every file and key that trusts the CA (linkCa, bank.operator.caFile). */
  trusts: string[];
}

function bad(file: string, why: string): never {
  throw new ImplementationError('CFG_INVALID', `${file}: ${why}`);
}

/** The pairs `file` names, checked against tls-ca.ts's naming, with the host they are for. */
function pairsOf(file: string, c: Record<string, unknown>): { key: 'tls' | 'linkTls'; name: string; dir: string; certFile: string; keyFile: string; host: string }[] {
  const dir = dirname(resolve(file));
  const out = [];
  for (const key of ['tls', 'linkTls'] as const) {
    const t = c[key] as { cert?: unknown; key?: unknown } | undefined;
    if (t === undefined) continue;
    if (typeof t !== 'object' || t === null || typeof t.cert !== 'string' || typeof t.key !== 'string') bad(file, `${key} must be { cert, key }`);
    const certFile = resolve(dir, t.cert);
    const keyFile = resolve(dir, t.key);
    const name = basename(certFile, '.pem');
    if (!certFile.endsWith('.pem') || keyFile !== join(dirname(certFile), `${name}-key.pem`)) bad(file, `${key}: to be made here, the pair is <dir>/<name>.pem and <dir>/<name>-key.pem (got ${t.cert}, ${t.key})`);
    // A pair named `ca` is the CA's own files; one named `<x>-key` has <x>'s key as its certificate.
    const nameWhy = checkPairName(name);
    if (nameWhy) throw new ImplementationError('TLS_BAD_NAME', `${file}: ${key}: ${nameWhy}`);
    const host = typeof c.host === 'string' ? c.host : '127.0.0.1';
    // A certificate names where clients reach the server; a wildcard listen address is not that.
    if (host === '0.0.0.0' || host === '::' || host === '') bad(file, `${key}: host '${host}' is a wildcard: a certificate needs the address or name clients use`);
    if (!isCertHost(host)) throw new ImplementationError('TLS_BAD_NAME', `${file}: ${key}: host '${host.slice(0, 64)}' is neither an IP address nor a DNS name`);
    out.push({ key, name, dir: dirname(certFile), certFile, keyFile, host });
  }
  return out;
}

/** The CA files `file` trusts, by where it names them. */
function trustsOf(file: string, c: Record<string, unknown>): { where: string; caFile: string }[] {
  const dir = dirname(resolve(file));
  const out: { where: string; caFile: string }[] = [];
  if (Array.isArray(c.upstreams)) {
    c.upstreams.forEach((u: Record<string, unknown>, i: number) => {
      if (typeof u?.linkCa === 'string') out.push({ where: `upstreams[${i}].linkCa`, caFile: resolve(dir, u.linkCa) });
    });
  }
  const op = (c.bank as { operator?: { caFile?: unknown } } | undefined)?.operator;
  if (typeof op?.caFile === 'string') out.push({ where: 'bank.operator.caFile', caFile: resolve(dir, op.caFile) });
  return out;
}

/**
 * Makes the deployment CA and every certificate `files` name (role files, any role), and
 * checks that every CA they trust is this one. CFG_INVALID for a pair that does not follow the
 * naming, pairs in two directories (two CAs), a wildcard host, or a trusted CA file elsewhere;
 * TLS_BAD_NAME for a pair named `ca` or `<x>-key` or a host that is no DNS name or address;
 * TLS_CA_INCOMPLETE for a half CA (never replaced); TLS_FOREIGN_CERT, TLS_BAD_PEM,
 * TLS_KEY_MODE, TLS_CA_MISMATCH from server-kit/tls-ca.ts (a file there is left as it is).
 */
export async function ensureDeploymentTls(files: string[]): Promise<DeploymentTls> {
  const loaded = files.map((f) => ({ file: f, c: readJsonFile(f) }));
  const pairs = loaded.flatMap(({ file, c }) => pairsOf(file, c).map((p) => ({ ...p, file })));
  const dirs = [...new Set(pairs.map((p) => p.dir))];
  if (dirs.length > 1) bad(pairs.find((p) => p.dir !== dirs[0])!.file, `certificates in ${dirs.join(' and ')}: one deployment, one CA, one directory`);
  const trusts = loaded.flatMap(({ file, c }) => trustsOf(file, c).map((t) => ({ ...t, file })));
  const tlsDir = dirs[0] ?? (trusts[0] ? dirname(trusts[0].caFile) : null);
  if (tlsDir === null) return { caFile: '', certs: [], trusts: [] };
  const caFile = join(tlsDir, 'ca.pem');
  for (const t of trusts) if (t.caFile !== caFile) bad(t.file, `${t.where} is ${t.caFile}, not the deployment CA ${caFile}: it would not trust the certificates made here`);
  // Several files may name one pair (both business servers' bank trust; a shared gateway name).
  const byName = new Map<string, { hosts: Set<string>; uses: typeof pairs }>();
  for (const p of pairs) {
    const e = byName.get(p.name) ?? { hosts: new Set<string>(), uses: [] };
    e.hosts.add(p.host);
    e.uses.push(p);
    byName.set(p.name, e);
  }
  // No pair's file may be the CA's or another pair's (checkPairName makes this so; kept as the rule itself).
  const owner = new Map<string, string>([[caFile, 'the deployment CA'], [join(tlsDir, 'ca-key.pem'), 'the deployment CA']]);
  for (const [name, e] of byName) {
    for (const f of [e.uses[0]!.certFile, e.uses[0]!.keyFile]) {
      const o = owner.get(f);
      if (o !== undefined) throw new ImplementationError('TLS_BAD_NAME', `${e.uses[0]!.file}: ${f} is a file of ${o}`);
      owner.set(f, `server '${name}'`);
    }
  }
  // No CA yet: a pair already there was not issued by it (your own PKI's): refused before a CA is made.
  if (!existsSync(caFile) && !existsSync(join(tlsDir, 'ca-key.pem'))) {
    for (const e of byName.values()) {
      const p = e.uses[0]!;
      const f = [p.certFile, p.keyFile].find((x) => existsSync(x));
      if (f) throw new ImplementationError('TLS_FOREIGN_CERT', `${p.file}: ${f} exists but ${caFile} does not: not a file this CA made; it is left as it is; leave this file out of 'certs' (its pair is your own), or move the pair away to have it made here`);
    }
  }
  const certs: IssuedCert[] = [];
  for (const [name, e] of byName) {
    const hosts = [...e.hosts].sort();
    const t = await ensureServerTls(tlsDir, name, hosts);
    for (const p of e.uses) certs.push({ file: p.file, key: p.key, name, hosts, certFile: t.certFile, keyFile: t.keyFile, status: t.status });
  }
  // Files that only trust the CA: nothing to issue, and no CA is made without a certificate.
  if (certs.length === 0 && !existsSync(caFile)) bad(trusts[0]!.file, `${trusts[0]!.where}: ${caFile} does not exist; give the files that serve TLS too`);
  return { caFile, certs, trusts: trusts.map((t) => `${t.file} ${t.where}`) };
}
