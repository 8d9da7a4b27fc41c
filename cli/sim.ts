// `usbphone sim`: boots virtual phones against the servers. Without options, one phone,
// verbosely (what `make sim` runs); --scenario runs an S0 story; --devices runs a fleet;
// --deterministic runs a story on the simulated HAL (virtual clock, seeded rng).
import { parseArgs } from 'node:util';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from './main.ts';
import { CliError, reportError } from './flash-common.ts';
import { formatTrace } from '../sim/trace.ts';
import { setLogSink } from '../server-kit/log.ts';
import type { Stack } from '../deploy/stack.ts';

const HELP = `usage: usbphone sim [options]

Boots virtual USB phones against the gateway, registration and business servers, all on
loopback, and shows them log in with nobody typing a password.

  (no options)            one phone, step by step (make sim): servers on 127.0.0.1:7400..,
                          SQLite files, keys and the phone's flash image in --state
  --scenario NAME|all     an S0 story, in a fresh temporary state: ${'{'}SCENARIOS}
  --devices N             a fleet of N phones (copy-on-write over one base image), each on
                          its own loopback address; prints a summary
  --deterministic         with --scenario first-boot|both-down-uses-saved: the same story on
                          the simulated HAL (virtual clock, seeded rng, in-memory network to
                          the servers); the same --seed gives the same trace, byte for byte

options:
  --state DIR             state directory for the single phone (default: state)
  --port N                gateway port for the single phone (default 7400; 0 = any free)
  --ip ADDR               the single phone's loopback address (default 127.1.0.1, region
                          east; 127.2.x.y is region west)
  --seed S                seed for fuses, serials, rng (default 1)
  --concurrency N         fleet: phones plugging in at once (default 64)
  --rounds N              fleet: plug every phone in N times (default 1)
  --servers WHERE         fleet: process (default: the servers in a process of their own,
                          as deployed), inline (in this process), reg-child (only the
                          registration servers in child processes)
  --loss P                deterministic: probability a frame is lost (default 0)
  --json                  fleet: one JSON object on stdout; scenario: JSON result
  -q, --quiet             no trace lines
  -h, --help              this help

exit codes: 0 the phone(s) logged in / the story ended as the patent says, 1 not, 2 bad usage
`;

export const command: Command = {
  summary: 'boot virtual phones and watch them log in (one phone, an S0 scenario, or a fleet)',
  async run(argv) {
    const { STORIES } = await import('../sim/scenarios.ts');
    const help = HELP.replace('{SCENARIOS}', Object.keys(STORIES).join(', '));
    let a;
    try {
      a = parseArgs({
        args: argv,
        options: {
          scenario: { type: 'string' },
          devices: { type: 'string' },
          deterministic: { type: 'boolean' },
          state: { type: 'string', default: 'state' },
          port: { type: 'string', default: '7400' },
          ip: { type: 'string', default: '127.1.0.1' },
          seed: { type: 'string', default: '1' },
          concurrency: { type: 'string', default: '64' },
          rounds: { type: 'string', default: '1' },
          servers: { type: 'string', default: 'process' },
          loss: { type: 'string', default: '0' },
          json: { type: 'boolean' },
          quiet: { type: 'boolean', short: 'q' },
          help: { type: 'boolean', short: 'h' },
        },
        strict: true,
        allowPositionals: false,
      }).values;
    } catch (e) {
      return reportError('sim', new CliError('CLI_BAD_ARGS', (e as Error).message));
    }
    if (a.help) {
      process.stdout.write(help);
      return 0;
    }
    try {
      const int = (v: string, name: string, min: number, max: number) => {
        const n = Number(v);
        if (!Number.isInteger(n) || n < min || n > max) throw new CliError('CLI_BAD_ARGS', `--${name} must be an integer ${min}..${max}`);
        return n;
      };
      const seed = int(a.seed!, 'seed', 0, 2 ** 31);
      const loss = Number(a.loss);
      if (!(loss >= 0 && loss < 1)) throw new CliError('CLI_BAD_ARGS', '--loss must be in [0, 1)');
      const out = (s: string) => process.stdout.write(s + '\n');
      const trace = a.quiet ? undefined : (e: Parameters<typeof formatTrace>[0]) => out(formatTrace(e));

      if (a.deterministic) {
        const name = a.scenario ?? 'first-boot';
        const { runDeterministic, DETERMINISTIC_STORIES } = await import('../sim/deterministic.ts');
        if (!DETERMINISTIC_STORIES.includes(name)) throw new CliError('CLI_BAD_ARGS', `--deterministic runs ${DETERMINISTIC_STORIES.join(' or ')}`);
        setLogSink(() => {});
        const r = await runDeterministic(name, { seed, loss, trace, say: a.quiet ? undefined : (l) => out(`   ${l}`) });
        if (a.json) out(JSON.stringify({ scenario: name, seed, ok: r.ok, verdict: r.verdict, trace: r.trace }));
        else out(`${r.ok ? 'PASS' : 'FAIL'} ${name} (deterministic, seed ${seed}): ${r.verdict}`);
        return r.ok ? 0 : 1;
      }

      if (a.scenario) {
        const { runStory } = await import('../sim/scenarios.ts');
        const names = a.scenario === 'all' ? Object.keys(STORIES) : [a.scenario];
        for (const n of names) if (!STORIES[n]) throw new CliError('CLI_UNKNOWN_SCENARIO', `unknown scenario '${n}'; one of: ${Object.keys(STORIES).join(', ')}`);
        setLogSink(() => {});
        let failed = 0;
        for (const n of names) {
          if (!a.json) out(`== ${n}: ${STORIES[n]!.summary}`);
          const r = await runStory(n, { seed, trace, print: a.quiet ? undefined : (l) => out(`   ${l}`) });
          if (!r.ok) failed++;
          if (a.json) out(JSON.stringify({ scenario: n, ok: r.ok, verdict: r.verdict, outcomes: r.outcomes }));
          else out(`${r.ok ? 'PASS' : 'FAIL'} ${n}: ${r.verdict}\n`);
        }
        return failed ? 1 : 0;
      }

      if (a.devices !== undefined) {
        const devices = int(a.devices, 'devices', 1, 100_000);
        const servers = a.servers as 'inline' | 'reg-child' | 'process';
        if (!['inline', 'reg-child', 'process'].includes(servers)) throw new CliError('CLI_BAD_ARGS', '--servers must be process, inline or reg-child');
        const { runFleet } = await import('../sim/fleet.ts');
        setLogSink(() => {}, 'warn');
        const stateDir = mkdtempSync(join(tmpdir(), 'usbphone-fleet-'));
        try {
          const s = await runFleet({ devices, seed, stateDir, concurrency: int(a.concurrency!, 'concurrency', 1, 10_000), rounds: int(a.rounds!, 'rounds', 1, 100), servers });
          if (a.json) out(JSON.stringify(s));
          else {
            out(`fleet of ${s.devices} phones x ${s.rounds} round(s), ${s.concurrency} at a time, seed ${s.seed}, servers ${s.servers}`);
            out(`  per server      ${Object.entries(s.byServer).map(([k, v]) => `${k} ${v}`).join(', ')}`);
            out(`  logins ok       ${s.ok}`);
            out(`  failed          ${s.failed}${s.failed ? ` (${Object.entries(s.failedByReason).map(([k, v]) => `${k}: ${v}`).join(', ')})` : ''}`);
            out(`  logins/s        ${s.loginsPerSecond}  (${s.wallMs} ms wall)`);
            out(`  plug-in->login  p50 ${s.p50Ms} ms, p99 ${s.p99Ms} ms, max ${s.maxMs} ms`);
            out(`  memory          peak RSS ${(s.peakRssBytes / 1048576).toFixed(1)} MiB; ${(s.memPerDeviceBytes / 1024).toFixed(1)} KiB live memory per phone, of which ${(s.privateFlashBytesPerDevice / 1024).toFixed(1)} KiB private flash sectors`);
          }
          return s.failed ? 1 : 0;
        } finally {
          rmSync(stateDir, { recursive: true, force: true });
        }
      }

      const { runSinglePhone } = await import('../sim/single.ts');
      let stack: Stack | null = null;
      const onSig = () => {
        process.stderr.write('\ninterrupted: stopping the servers\n');
        void (stack?.stop() ?? Promise.resolve()).finally(() => process.exit(130));
      };
      process.once('SIGINT', onSig);
      process.once('SIGTERM', onSig);
      try {
        if (!/^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.test(a.ip!) || a.ip!.split('.').some((x) => Number(x) > 255)) throw new CliError('CLI_BAD_ARGS', '--ip must be a loopback address 127.x.y.z');
        const r = await runSinglePhone({ stateDir: a.state!, gatewayPort: int(a.port!, 'port', 0, 65535), ip: a.ip!, trace, say: (l) => out(l), onStack: (s) => (stack = s) });
        const o = r.outcome;
        out('');
        out(o.ok ? `LOGGED IN to ${o.server} with password generation ${o.gen} (via ${o.via}) in ${Math.round(o.ms)} ms` : `NOT LOGGED IN: ${o.kind}: ${o.reason}`);
        if (r.saved) {
          const s = r.saved;
          const last = s.servers.find((x) => x.name === s.lastServer);
          out(`saved login (hidden zone, sealed with the fuse key): user ${s.user}, password generation(s) ${s.secrets.map((x) => x.gen).join(', ')}, last server ${s.lastServer ?? 'none'}${last ? ` at ${last.url}` : ''}`);
        } else out('saved login: none');
        out(`run 'make sim' again for a second boot (a password change); 'make clean' starts over`);
        return o.ok ? 0 : 1;
      } finally {
        process.off('SIGINT', onSig);
        process.off('SIGTERM', onSig);
      }
    } catch (e) {
      if ((e as NodeJS.ErrnoException)?.code === 'EADDRINUSE') {
        return reportError('sim', new CliError('SIM_PORT_IN_USE', `${(e as Error).message}: another server (a running 'make serve'?) holds the embedded default's ports; stop it, or use --port 0`, 1));
      }
      return reportError('sim', e);
    }
  },
};
