// The `usbphone` command line: a table of subcommands, each in its own module, loaded lazily
// so `usbphone --help` stays fast. Exit codes: 0 ok, 1 the job failed (or problems found),
// 2 bad usage or unusable input.

export interface Command {
  summary: string;
  /** Runs the command; returns the process exit code. */
  run(argv: string[]): Promise<number>;
}

type Loader = () => Promise<Command>;

const commands: Record<string, Loader> = {
  certs: () => import('./certs.ts').then((m) => m.command),
  image: () => import('./image.ts').then((m) => m.command),
  inspect: () => import('./inspect.ts').then((m) => m.command),
  serve: () => import('./serve.ts').then((m) => m.command),
  enroll: () => import('./enroll.ts').then((m) => m.command),
  sim: () => import('./sim.ts').then((m) => m.command),
  conformance: () => import('./conformance.ts').then((m) => m.command),
  simulate: () => import('./simulate.ts').then((m) => m.command),
};

export const VERSION = '0.1.0';

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    const rows = await Promise.all(Object.keys(commands).sort().map(async (n) => `  ${n.padEnd(10)} ${(await commands[n]!()).summary}`));
    const text = [
      'usbphone: a virtual USB phone that logs itself in, and the servers it talks to',
      '',
      'usage: usbphone <command> [options]      (usbphone <command> --help for its options)',
      '',
      'commands:',
      ...rows,
      '',
    ].join('\n');
    // No command at all is a usage error (exit 2, help on stderr); asking for help is not.
    (name === undefined ? process.stderr : process.stdout).write(text);
    return name === undefined ? 2 : 0;
  }
  if (name === '--version') {
    process.stdout.write(`${VERSION}\n`);
    return 0;
  }
  const load = commands[name];
  if (!load) {
    process.stderr.write(`usbphone: unknown command '${name}'; see 'usbphone --help' (CLI_UNKNOWN_COMMAND)\n`);
    return 2;
  }
  return (await load()).run(rest);
}
