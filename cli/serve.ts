// `usbphone serve all|gateway|reg|biz|policy|operator`: runs server roles until SIGINT/SIGTERM/SIGHUP.
//   all      the embedded default in one process (deploy/stack.ts), state in --state DIR
//   gateway, reg, biz, policy, operator: one role from --config FILE (deploy/roles.ts; its
//            keys in deploy/config.ts ROLE_KEYS and in HELP below)
// Once listening it says so, with the addresses, and again when it stops; with --json
// these are JSON lines on stdout ({"event":"listening", ...}, {"event":"stopped", ...}).
import { appendFileSync, existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from './main.ts';
import { ImplementationError } from '../protocol/errors.ts';
import { parseOptions, intOption, refuseOptions } from './args.ts';
import { CliError, reportError, checkStateDir } from './flash-common.ts';
import { stopWithParent, releaseParentPipe, quietOnClosedPipe } from '../sim/lifetime.ts';
import { DEFAULT_GATEWAY_PORT, BASE_PORT_SPAN, ROLE_KEYS, type RolePorts, type Role } from '../deploy/config.ts';

export const OPTIONS = {
  state: { type: 'string' },
  port: { type: 'string' },
  host: { type: 'string' },
  config: { type: 'string' },
  'bank-mode': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

const HELP = `usage: usbphone serve all [--state DIR] [--port BASE] [--host ADDR] [--bank-mode 1|2] [--json]
       usbphone serve gateway|reg|biz|policy|operator --config FILE [--json]

  all        the gateway + reg-primary + reg-backup + biz-east (phones on 127.1.0.0/16) +
             biz-west (127.2.0.0/16) + the mobile operator (HTTPS) + the security policy
             server (S3), on loopback, in one process; in the state directory (created if
             missing): reg.sqlite, biz-accounts.sqlite, operator.sqlite, policy.sqlite, the key
             files master.key, link.key, admin.key, store.key, operator-token.key, policy.key
             (its public key goes into every phone), operator-client.json (0600) and tls/
             (the CA the operator's certificate chains to: tls/ca.pem). Phones plug in with
             'usbphone sim --gateway ws://127.0.0.1:7400/ --state DIR'
  gateway    one role as its own process, configured by a JSON file (--config); several
  reg        hosts, one deployment: docs/deploy.md (reference topology, example files in
  biz        deploy/examples/). Relative paths resolve against the file's directory; keys
  policy     are files, never inline. Keys of each file (* required):
  operator
    every server role: "host" (listen address, default 127.0.0.1)
    gateway  *port, operatorPort (/healthz, /metrics), *linkKeyFile, *upstreams [{name,
             linkUrl, linkCa?}], tls {cert, key}, limits {...gateway/limits.ts}, name (in
             attack reports, distinct per gateway), attacks {windowMs, limit, periodMs,
             maxTrackedIps, enabled}, redis, policy {name, adminUrl, pollMs?} + adminKeyFile
             (reports S3.5 and pushed tables S3.11)
    reg      *name, *linkPort, devicePort, *dbFile, store, *masterKeyFile | masterKeyEnv,
             *linkKeyFile, linkTls {cert, key}, *adminKeyFile, *bizServers [{name, region,
             url, adminUrl}], *regions [{cidr, region}], stepTimeoutMs, pendingTtlMs,
             healthIntervalMs, policy {name, adminUrl, pollMs?}, redis
    biz      *name, *region, *linkPort, *adminPort, devicePort, *dbFile, store,
             *storeKeyFile, *linkKeyFile, linkTls, *adminKeyFile, stepTimeoutMs, redis,
             bank {mode 1|2, httpPort, operator? {url https://, caFile, clientFile}}
    policy   name, *adminPort, *adminKeyFile, *dbFile, store, *policyKeyFile,
             *initialTable {sites: [{site, mechanisms, floor, degree}]}, *periodMs,
             thresholds [ppm...], tableLifetimeMs
    operator name, *port, *dbFile, store, *tls {cert, key}, *tokenKeyFile,
             monitoredPeriodDays, clients ["operator-client.json", ...] (registered, all scopes)
    store    absent or {"kind": "sqlite"}: SQLite in dbFile; {"kind": "postgres", "url":
             "postgres://...", "schema"?} (every role; no 'options' in the URL)
    redis    {"url": "redis://host:port", "namespace": "prod-1", "timeoutMs"?: 250}: what
             several instances share (attack window, replay caches; docs/architecture.md
             "What is shared, where"); without it each process keeps its own
             An unknown key, a missing or malformed one: CFG_INVALID (exit 2); an unreadable
             file CFG_UNREADABLE; a missing key file CFG_NO_KEY.

options:
  --state DIR     state directory for 'all' (default: state)
  --port BASE     base port for 'all' (default ${DEFAULT_GATEWAY_PORT}); every port moves with it:
                  gateway BASE, reg-primary BASE+10 (devices) / +11 (link), reg-backup
                  +20 / +21, biz-east +30 / +31 / +32 (admin), biz-west +40 / +41 / +42,
                  the policy server's admin API +45, the mobile operator's API +50;
                  0 = every port ephemeral
  --host ADDR     listen address for 'all' (default 127.0.0.1)
  --bank-mode M   'all': how the bank finds a login's binding: 1 by the SIM's ICCID (S4.3),
                  2 through the operator's number for the card, with the validity and
                  SIM-swap checks (S4.4, S4.6); default 1. Account pages: biz-east BASE+33,
                  biz-west BASE+43 (HTTP)
  --config FILE   JSON configuration of one role (gateway, reg, biz, policy, operator)
  --json          JSON lines on stdout ({"event":"listening",...}, {"event":"stopped",...})
                  instead of the human lines
  -h, --help      this help

GET /healthz and /metrics answer on the gateway's operator port (the gateway port + 1; not
on the device port), and so does the live page ('all': GET /, its feed GET /feed) and on each server's link port (not on the admin ports). Stops on Ctrl-C (SIGINT), SIGTERM or SIGHUP. If 'all'
cannot start, the key and database files it created are removed again.
Exit: 0 stopped cleanly, 1 could not start, 2 bad usage or configuration.
`;

function untilSignal(): Promise<string> {
  return new Promise((resolve) => {
    const on = (sig: string) => resolve(sig);
    for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.once(s, () => on(s));
    stopWithParent(() => on('parent gone'));
  });
}

/** The state directory's entries before a start, so a failed start removes only what it created. */
function snapshot(dir: string): Set<string> | null {
  return existsSync(dir) ? new Set(readdirSync(dir)) : null;
}
function undoCreated(dir: string, before: Set<string> | null): void {
  if (!existsSync(dir)) return;
  if (before === null) {
    rmSync(dir, { recursive: true, force: true });
    return;
  }
  for (const name of readdirSync(dir)) if (!before.has(name)) rmSync(join(dir, name), { recursive: true, force: true });
}

function humanPorts(ports: Record<string, RolePorts | number>): string[] {
  return Object.entries(ports)
    // Single ports are printed on their own lines (health, operator).
    .filter(([, p]) => typeof p === 'object')
    .map(([n, p]) => {
      const r = p as RolePorts;
      return `  ${n.padEnd(12)} devices ${r.device ?? '-'}, link ${r.link}${r.admin !== undefined ? `, admin ${r.admin}` : ''}`;
    });
}

export const command: Command = {
  summary: 'run the gateway, registration, business (bank), operator and policy servers',
  async run(argv) {
    let json = false;
    let role = '';
    try {
      const args = parseOptions('serve', argv, OPTIONS, { positionals: true });
      const v = args.values;
      if (v.help) {
        process.stdout.write(HELP);
        return 0;
      }
      json = v.json === true;
      const [r, ...extra] = args.positionals;
      role = r ?? '';
      if (!r || extra.length || !['all', ...Object.keys(ROLE_KEYS)].includes(r)) throw new CliError('CLI_BAD_ARGS', "name one role: all, gateway, reg, biz, policy or operator; see 'usbphone serve --help'");
      if (r === 'all') refuseOptions(v, ['state', 'port', 'host', 'bank-mode', 'json'], "'serve all'", 'it takes --state, not --config');
      else {
        refuseOptions(v, ['config', 'json'], `'serve ${r}'`, 'its configuration file sets these');
        if (!v.config) throw new CliError('CLI_BAD_ARGS', `serve ${r} needs --config FILE`);
      }
    } catch (e) {
      return reportError('serve', e);
    }
    quietOnClosedPipe();
    const args = parseOptions('serve', argv, OPTIONS, { positionals: true }).values;
    const say = (human: string, ev: Record<string, unknown>) => process.stdout.write(json ? JSON.stringify(ev) + '\n' : human + '\n');
    // The stop signals are caught from here on, before the ready line says 'stop with Ctrl-C': a
    // signal right after it would otherwise kill the process uncleanly (exit without a code, seen in CI).
    const signalled = untilSignal();

    let stop: () => Promise<void>;
    let undo: (() => void) | null = null;
    try {
      if (role === 'all') {
        const base = intOption(args.port, 'port', 0, 65535 - BASE_PORT_SPAN, DEFAULT_GATEWAY_PORT);
        const stateDir = (args.state as string | undefined) ?? 'state';
        checkStateDir(stateDir, { create: true });
        const before = snapshot(stateDir);
        undo = () => undoCreated(stateDir, before);
        if (!json) {
          // The servers' JSON log lines go to a file, so the terminal shows the human lines only
          // (found by review: they were mixed); --json keeps them on stderr for scripts.
          const { setLogSink } = await import('../server-kit/log.ts');
          const logFile = join(stateDir, 'servers.log');
          setLogSink((line) => appendFileSync(logFile, JSON.stringify(line) + '\n'));
        }
        const { startStack } = await import('../deploy/stack.ts');
        const bankMode = intOption(args['bank-mode'], 'bank-mode', 1, 2, 1) as 1 | 2;
        const stack = await startStack({ stateDir, gatewayPort: base, host: args.host as string | undefined, bankMode });
        const bankPages = stack.dests.biz.map((n) => `${n} ${stack.biz(n)?.bank?.pageUrl ?? '-'}<token>`).join(', ');
        const ports = stack.ports();
        // /healthz and /metrics answer on the gateway's operator port, not the device port.
        const health = `http://${new URL(stack.gatewayUrl).hostname}:${ports['gateway-operator']}/`;
        say(
          [
            `servers ready: gateway ${stack.gatewayUrl} (state directory ${stateDir})`,
            `  live page    ${stack.pageUrl} (phones, the protocol as a sequence diagram, servers, fleet)`,
            ...humanPorts(ports),
            `  health       ${health}healthz, metrics ${health}metrics`,
            `  operator     ${stack.operatorUrl} (mobile operator API, HTTPS; CA ${stateDir}/tls/ca.pem)`,
            `  bank pages   ${bankPages} (mode ${bankMode}; the token comes with a phone's bank login)`,
            `  policy       ${stack.policy.adminUrl} (attack table v${stack.policy.latest().table.version}, period ${Math.round(stack.policy.params.periodMs / 1000)} s; sealed admin API for the gateway's reports${stack.factoryPolicy.key ? `; public key ${Buffer.from(stack.factoryPolicy.key).toString('hex')}, for 'usbphone conformance --policy-key'` : ''})`,
            `  logs         ${join(stateDir, 'servers.log')}`,
            `plug a phone in: usbphone sim --gateway ${stack.gatewayUrl} --state ${stateDir}`,
            'stop with Ctrl-C',
          ].join('\n'),
          { event: 'listening', role, gatewayUrl: stack.gatewayUrl, operatorUrl: stack.operatorUrl, pageUrl: stack.pageUrl, bankMode, bankPageUrls: Object.fromEntries(stack.dests.biz.map((n) => [n, stack.biz(n)?.bank?.pageUrl ?? null])), stateDir, ports },
        );
        stop = () => stack.stop();
      } else {
        const { startRole } = await import('../deploy/roles.ts');
        const pause = process.env.USBPHONE_TEST_PAUSE_AT;
        // Test hook (kill -9 between rotation steps): stop here, say so, wait to be killed.
        const pauseAt = role === 'reg' && pause ? (step: string) => {
          if (step !== pause) return;
          process.stdout.write(JSON.stringify({ event: 'paused', step }) + '\n');
          return new Promise<void>(() => {});
        } : undefined;
        const r = await startRole(role as Role, args.config as string, { pauseAt });
        say(r.human, r.event);
        stop = () => r.stop();
      }
    } catch (e) {
      undo?.();
      if (e instanceof CliError) return reportError('serve', e);
      const err = e as NodeJS.ErrnoException;
      if (err.code === 'EADDRINUSE' || err.code === 'EACCES' || err.code === 'EADDRNOTAVAIL') {
        const hint = role === 'all' ? "; another 'serve all' (make serve)? give another --port base, or plug phones into the running one with 'usbphone sim --gateway'" : '';
        return reportError('serve', new CliError('SERVE_LISTEN_FAILED', `${err.message}${hint}`));
      }
      if (e instanceof ImplementationError) return reportError('serve', e);
      if (/^SQLITE_/.test(String(err.code))) return reportError('serve', e);
      return reportError('serve', new CliError('SERVE_FAILED', err.message ?? String(e)));
    }
    const sig = await signalled;
    await stop();
    say(`stopped (${sig})`, { event: 'stopped', role, signal: sig });
    releaseParentPipe();
    return 0;
  },
};
