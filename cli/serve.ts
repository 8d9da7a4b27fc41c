// `usbphone serve all|gateway|reg|biz`: runs server roles until SIGINT/SIGTERM.
//   all      the embedded default in one process (deploy/stack.ts), state in --state DIR
//   gateway  one gateway, from --config FILE (deploy/config.ts GatewayFileConfig)
//   reg      one registration server (primary or backup), from --config FILE
//   biz      one business server, from --config FILE
// Once listening it prints one JSON line on stdout: {"event":"listening", ...ports}.
import { parseArgs } from 'node:util';
import type { Command } from './main.ts';
import { ImplementationError } from '../protocol/errors.ts';

const HELP = `usage: usbphone serve all [--state DIR] [--port N] [--host ADDR]
       usbphone serve gateway|reg|biz --config FILE

  all        gateway (default 127.0.0.1:7400) + reg-primary + reg-backup + biz-east
             (127.1.0.0/16) + biz-west (127.2.0.0/16) on loopback; SQLite files and
             master.key / link.key / admin.key in the state directory (created if missing)
  gateway    one role as its own process, configured by a JSON file
  reg        (see docs/architecture.md §"Configuration")
  biz

options:
  --state DIR     state directory for 'all' (default ./state)
  --port N        gateway port for 'all' (default 7400; 0 = ephemeral, all ports ephemeral)
  --host ADDR     listen address for 'all' (default 127.0.0.1)
  --config FILE   JSON configuration of one role
  -h, --help      this help

Prints {"event":"listening", ...} on stdout when ready; stops on SIGINT/SIGTERM.
Exit: 0 stopped cleanly, 1 could not start, 2 bad usage or configuration.
`;

function fail(code: string, msg: string, exit: number): number {
  process.stderr.write(`usbphone serve: ${msg} (${code})\n`);
  return exit;
}

function untilSignal(): Promise<string> {
  return new Promise((resolve) => {
    const on = (sig: string) => resolve(sig);
    process.once('SIGINT', on);
    process.once('SIGTERM', on);
  });
}

export const command: Command = {
  summary: 'run the gateway, registration and business servers',
  async run(argv) {
    let args;
    try {
      args = parseArgs({
        args: argv,
        allowPositionals: true,
        options: {
          state: { type: 'string' },
          port: { type: 'string' },
          host: { type: 'string' },
          config: { type: 'string' },
          help: { type: 'boolean', short: 'h' },
        },
      });
    } catch (e) {
      return fail('CLI_BAD_ARGS', (e as Error).message, 2);
    }
    if (args.values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    const [role, ...extra] = args.positionals;
    if (!role || extra.length || !['all', 'gateway', 'reg', 'biz'].includes(role)) return fail('CLI_BAD_ARGS', 'name one role: all, gateway, reg or biz', 2);
    if (role !== 'all' && !args.values.config) return fail('CLI_BAD_ARGS', `serve ${role} needs --config FILE`, 2);
    if (role === 'all' && args.values.config) return fail('CLI_BAD_ARGS', 'serve all takes --state, not --config', 2);
    let port: number | undefined;
    if (args.values.port !== undefined) {
      port = Number(args.values.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535) return fail('CLI_BAD_ARGS', '--port must be 0..65535', 2);
    }

    let stop: () => Promise<void>;
    try {
      const out = (o: Record<string, unknown>) => process.stdout.write(JSON.stringify({ event: 'listening', ...o }) + '\n');
      if (role === 'all') {
        const { startStack } = await import('../deploy/stack.ts');
        const stack = await startStack({ stateDir: args.values.state ?? 'state', gatewayPort: port, host: args.values.host });
        out({ role, gatewayUrl: stack.gatewayUrl, stateDir: stack.stateDir, ports: stack.ports() });
        stop = () => stack.stop();
      } else {
        const cfg = await import('../deploy/config.ts');
        const raw = cfg.readJsonFile(args.values.config!);
        if (role === 'gateway') {
          const { startGateway } = await import('../gateway/gateway.ts');
          const g = await startGateway(cfg.gatewayConfigFrom(raw, args.values.config!));
          out({ role, url: g.url, port: g.port, operatorUrl: g.operatorUrl });
          stop = () => g.close();
        } else if (role === 'reg') {
          const { startRegServer } = await import('../reg-server/server.ts');
          const c = cfg.regConfigFrom(raw, args.values.config!);
          const pause = process.env.USBPHONE_TEST_PAUSE_AT;
          if (pause) {
            // Test hook (kill -9 between rotation steps): stop here, say so, wait to be killed.
            c.pauseAt = (step) => {
              if (step !== pause) return;
              process.stdout.write(JSON.stringify({ event: 'paused', step }) + '\n');
              return new Promise<void>(() => {});
            };
          }
          const r = await startRegServer(c);
          out({ role, name: r.name, devicePort: r.devicePort, linkPort: r.linkPort });
          stop = () => r.close();
        } else {
          const { startBizServer } = await import('../biz-server/server.ts');
          const b = await startBizServer(cfg.bizConfigFrom(raw, args.values.config!));
          out({ role, name: b.name, devicePort: b.devicePort, linkPort: b.linkPort, adminPort: b.adminPort });
          stop = () => b.close();
        }
      }
    } catch (e) {
      if (e instanceof ImplementationError) return fail(e.code, e.message.replace(/^[A-Z_]+: /, ''), 2);
      const err = e as NodeJS.ErrnoException;
      if (err.code === 'EADDRINUSE' || err.code === 'EACCES' || err.code === 'EADDRNOTAVAIL') return fail('SERVE_LISTEN_FAILED', err.message, 1);
      return fail('SERVE_FAILED', err.message ?? String(e), 1);
    }
    await untilSignal();
    await stop();
    return 0;
  },
};
