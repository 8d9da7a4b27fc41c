// `usbphone certs FILE...`: the deployment CA and every server certificate the given role
// files name (deploy/tls-files.ts; docs/deploy.md §"TLS on every hop between hosts").
import type { Command } from './main.ts';
import { parseOptions } from './args.ts';
import { CliError, reportError } from './flash-common.ts';

export const OPTIONS = {
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

const HELP = `usage: usbphone certs [--json] FILE...

Makes the deployment's certificate authority and the certificate of every server the role
files ('usbphone serve <role> --config FILE') name: each "tls" {cert, key} (a gateway's device
port, the operator's API) and "linkTls" (a registration or business server's link port),
issued for the address the file listens on ("host"). The pair of server NAME is
DIR/NAME.pem and DIR/NAME-key.pem (0600), the CA DIR/ca.pem and DIR/ca-key.pem (0600), one
DIR for all files (paths relative to each file, as serve reads them). Every CA a file trusts
("linkCa" of a gateway's upstreams, "bank.operator.caFile") must be DIR/ca.pem.

Made once: a certificate still valid for 30 days that names its address is kept, and the CA
is never replaced (a half CA, one of ca.pem and ca-key.pem alone: TLS_CA_INCOMPLETE). Only a
pair this CA issued is ever renewed: a certificate or key of your own PKI at a path a file
names is left as it is and refused (TLS_FOREIGN_CERT): leave that file out of the command.
Each pair is printed as made, renewed or kept. Copy ca.pem and each host's own pair to that
host; ca-key.pem stays where certificates are made.
Example: usbphone certs deploy/examples/reference/*.json

options:
  --json      print what was made as JSON (each pair's status: made, renewed, kept)
  -h, --help  this help

Exit: 0 done, 2 a file unreadable or wrong (CFG_UNREADABLE, CFG_INVALID: a pair not named
DIR/NAME.pem + DIR/NAME-key.pem, pairs in two directories, a wildcard host, a trusted CA
that is not DIR/ca.pem), TLS_BAD_NAME (a pair named ca or NAME-key, a host that is neither
an address nor a DNS name), TLS_CA_INCOMPLETE, TLS_CA_MISMATCH, TLS_FOREIGN_CERT, TLS_BAD_PEM
(a file that is not PEM), TLS_KEY_MODE (a key readable by group or others: chmod 600).
`;

export const command: Command = {
  summary: 'make the deployment CA and the server certificates role files name',
  async run(argv) {
    try {
      const { values: v, positionals: files } = parseOptions('certs', argv, OPTIONS, { positionals: true });
      if (v.help) {
        process.stdout.write(HELP);
        return 0;
      }
      if (files.length === 0) throw new CliError('CLI_BAD_ARGS', "name the role files; see 'usbphone certs --help'");
      const { ensureDeploymentTls } = await import('../deploy/tls-files.ts');
      const r = await ensureDeploymentTls(files);
      if (v.json) process.stdout.write(JSON.stringify(r) + '\n');
      else {
        if (r.certs.length === 0) process.stdout.write('no file names a certificate (tls, linkTls)\n');
        else process.stdout.write(`CA ${r.caFile}\n`);
        for (const c of r.certs) process.stdout.write(`${c.file} ${c.key}: ${c.certFile} for ${c.hosts.join(', ')}: ${c.status}\n`);
      }
      return 0;
    } catch (e) {
      return reportError('certs', e);
    }
  },
};
