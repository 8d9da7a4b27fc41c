// Option parsing shared by the `usbphone` commands: node:util parseArgs, with every mistake
// one line that says what is wrong (never Node's three-line "argument is ambiguous").
//   --seed -1, --devices -5   taken as values, so the range check says what is allowed
//   --seed ""                 refused: an empty value is never meant
//   unknown options, missing values, stray arguments: one line, with the --help hint
import { parseArgs } from 'node:util';
import { CliError } from './flash-common.ts';

export type OptionSpec = Record<string, { type: 'string' | 'boolean'; short?: string }>;

export interface Parsed {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
}

export function parseOptions(cmd: string, argv: string[], options: OptionSpec, opts: { positionals?: boolean } = {}): Parsed {
  const see = `see 'usbphone ${cmd} --help'`;
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const m = /^--([a-z-]+)$/.exec(a);
    // A negative number after a string option is its value (then refused by its range).
    if (m && options[m[1]!]?.type === 'string' && i + 1 < argv.length && /^-\d/.test(argv[i + 1]!)) {
      args.push(`${a}=${argv[++i]}`);
      continue;
    }
    args.push(a);
  }
  let r;
  try {
    r = parseArgs({ args, options, strict: true, allowPositionals: opts.positionals === true });
  } catch (e) {
    const err = e as Error & { code?: string };
    const name = /'(-[^' ]+)/.exec(err.message)?.[1] ?? '';
    let why: string;
    if (err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') why = `unknown option '${name}'`;
    else if (err.code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') why = `unexpected argument '${/'([^']*)'/.exec(err.message)?.[1] ?? ''}'`;
    else if (/does not take an argument/.test(err.message)) why = `${name} takes no value`;
    else if (/ambiguous/.test(err.message)) why = `${name} needs a value (a value that starts with '-' is written ${name}=-...)`;
    else if (/argument missing/.test(err.message)) why = `${name} needs a value`;
    else why = err.message.split('\n')[0]!;
    throw new CliError('CLI_BAD_ARGS', `${why}; ${see}`);
  }
  for (const [k, v] of Object.entries(r.values)) {
    if (v === '' || (typeof v === 'string' && v.trim() === '')) throw new CliError('CLI_BAD_ARGS', `--${k} needs a value, not an empty string; ${see}`);
  }
  return { values: r.values as Parsed['values'], positionals: r.positionals };
}

/** A whole number in min..max, or the default when not given; refuses anything else with the range. */
export function intOption(v: string | boolean | undefined, name: string, min: number, max: number, dflt: number): number {
  if (v === undefined) return dflt;
  const s = String(v).trim();
  const n = Number(s);
  if (!/^-?\d+$/.test(s) || !Number.isSafeInteger(n) || n < min || n > max) throw new CliError('CLI_BAD_ARGS', `--${name} must be a whole number ${min}..${max}, not '${v}'`);
  return n;
}

/** Refuses the options given that do not apply to `what` (one line, the first of them). */
export function refuseOptions(values: Parsed['values'], allowed: string[], what: string, hint = ''): void {
  for (const k of Object.keys(values)) {
    if (values[k] === undefined || k === 'help' || allowed.includes(k)) continue;
    throw new CliError('CLI_BAD_ARGS', `--${k} does not apply to ${what}${hint ? `; ${hint}` : ''}`);
  }
}
