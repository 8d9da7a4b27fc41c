// `usbphone simulate`: the whole system in one deterministic simulation (issue 14,
// sim/dsim.ts). Runs seeds, prints the failing ones with the invariant they broke, shrinks each
// to a shorter fault schedule; `--seed S --trace` replays one seed with its full event trace.
import type { Command } from './main.ts';
import { parseOptions, intOption } from './args.ts';
import { CliError, reportError } from './flash-common.ts';

export const OPTIONS = {
  seeds: { type: 'string' },
  from: { type: 'string' },
  seed: { type: 'string' },
  faults: { type: 'string' },
  trace: { type: 'boolean' },
  'no-shrink': { type: 'boolean' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

const HELP = `usage: usbphone simulate --seeds N [--from S] [--faults KINDS] [--no-shrink] [--json]
       usbphone simulate --seed S [--trace] [--faults KINDS] [--no-shrink] [--json]

Runs the whole system in one process on a virtual clock and a simulated network, from one seed
per run: 1-3 phones, the real gateway (and its links), the registration primary and backup, two business
servers with their real SQLite stores. Each seed's faults come and go while the phones log in;
then every fault heals and each phone must log in again. Named invariants are checked all along
(docs/simulation.md): no-lockout, liveness, secrets-per-user, no-secret-on-wire,
no-secret-in-zones, no-half-validated-frame, store-integrity.

  --seeds N        run seeds S .. S+N-1; a progress line on a terminal
  --from S         the first seed of --seeds (default 1)
  --seed S         run one seed (the same seed replays the same run, event for event)
  --trace          with --seed: print its full event trace
  --faults KINDS   only these fault kinds, comma-separated, or 'none'; default all:
                   ${'{FAULTS}'}
  --no-shrink      do not shrink a failing seed's fault schedule
  --json           one JSON object on stdout: {seeds, failed, results: [...]}, failing seeds
                   with their violations and shrunk schedule
  -h, --help       this text

Exit: 0 every seed kept every invariant, 1 a seed broke one (SIMULATE_VIOLATION), 2 bad usage.
`;

export const command: Command = {
  summary: 'run seeds of the whole system in one deterministic simulation, with faults; replay one with --trace (issue 14)',
  async run(argv) {
    try {
      const v = parseOptions('simulate', argv, OPTIONS).values;
      const { FAULT_KINDS, runSeeds, shrink, describeFault } = await import('../sim/dsim.ts');
      if (v.help) {
        process.stdout.write(HELP.replace('{FAULTS}', FAULT_KINDS.join(',')));
        return 0;
      }
      if (v.seed !== undefined && (v.seeds !== undefined || v.from !== undefined)) throw new CliError('CLI_BAD_ARGS', "give --seed S (one run) or --seeds N [--from S], not both; see 'usbphone simulate --help'");
      if (v.seed === undefined && v.seeds === undefined) throw new CliError('CLI_BAD_ARGS', "give --seeds N or --seed S; see 'usbphone simulate --help'");
      if (v.trace && v.seed === undefined) throw new CliError('CLI_BAD_ARGS', '--trace applies to one seed: --seed S --trace');
      let kinds: (typeof FAULT_KINDS)[number][] | undefined;
      if (typeof v.faults === 'string') {
        const list = v.faults === 'none' ? [] : v.faults.split(',').map((s) => s.trim());
        for (const k of list) if (!(FAULT_KINDS as readonly string[]).includes(k)) throw new CliError('CLI_BAD_ARGS', `--faults: no fault kind '${k}'; the kinds: ${FAULT_KINDS.join(', ')}; or --faults none alone`);
        // One set of kinds, one run: in the table's order and once each, whatever order they were given in (found by review).
        kinds = FAULT_KINDS.filter((k) => list.includes(k));
      }
      if (v.trace && v.json) throw new CliError('CLI_BAD_ARGS', '--trace prints the event trace as text; give --trace or --json, not both');
      const one = v.seed !== undefined;
      const from = one ? intOption(v.seed, 'seed', 0, 2 ** 31 - 1, 1) : intOption(v.from, 'from', 0, 2 ** 31 - 1, 1);
      const n = one ? 1 : intOption(v.seeds, 'seeds', 1, 10_000_000, 1);
      // Every seed run must replay with --seed: the last one stays within --seed's range (found by review).
      if (from + n - 1 > 2 ** 31 - 1) throw new CliError('CLI_BAD_ARGS', `--from ${from} --seeds ${n} runs past seed ${2 ** 31 - 1}, the last one --seed takes`);
      const faultsArg = kinds === undefined ? '' : ` --faults ${kinds.length ? kinds.join(',') : 'none'}`;
      const replay = (seed: number) => `usbphone simulate --seed ${seed} --trace${faultsArg}`;
      const json = v.json === true;
      const tty = process.stderr.isTTY === true && !json;
      const failed: unknown[] = [];
      let shrunk = 0;
      const t0 = performance.now();
      const sum = await runSeeds(from, n, { kinds, trace: one && v.trace === true }, async (r, done) => {
        const s = r.seed;
        if (one && v.trace && !json) process.stdout.write(r.lines.join('\n') + '\n');
        if (!r.ok) {
          let schedule = r.plan.faults.map(describeFault);
          // Shrinking reruns the seed: the first few failures only, so a broken build still ends.
          if (!v['no-shrink'] && shrunk < 3) {
            shrunk++;
            const sh = await shrink(s, { kinds });
            schedule = sh.plan.faults.map(describeFault);
          }
          failed.push({ seed: s, violations: r.violations, faults: r.plan.faults.map(describeFault), shrunk: schedule, replay: replay(s) });
          if (!json) {
            if (tty) process.stderr.write('\r\x1b[K');
            process.stdout.write(`FAIL seed ${s}: ${r.violations.map((x) => `${x.invariant} (${x.detail})`).join('; ')}\n  faults: ${r.plan.faults.map(describeFault).join('; ') || 'none'}\n  shrunk: ${schedule.join('; ') || 'none'}\n  replay: ${replay(s)}\n`);
          }
        }
        if (tty && done % 10 === 0) process.stderr.write(`\r\x1b[K[${done}/${n}] ${failed.length} failing, ${(done / ((performance.now() - t0) / 1000)).toFixed(1)} seeds/s`);
      });
      const totals = sum.totals;
      if (tty) process.stderr.write('\r\x1b[K');
      const secs = sum.seconds;
      if (json) process.stdout.write(JSON.stringify({ seeds: n, from, kinds: kinds ?? FAULT_KINDS, failed: failed.length, seconds: Math.round(secs * 10) / 10, ...totals, results: failed }) + '\n');
      // With --trace, stdout is the trace alone (it replays byte for byte); the summary, with its real-time rate, goes to stderr.
      else (v.trace ? process.stderr : process.stdout).write(`${n} seed(s) from ${from}: ${n - failed.length} passed, ${failed.length} failed; ${totals.faultsInjected} faults injected, ${totals.invariantChecks} invariant checks, ${(n / secs).toFixed(1)} seeds/s\n`);
      if (failed.length) {
        if (!json) process.stderr.write(`usbphone simulate: ${failed.length} seed(s) broke an invariant (SIMULATE_VIOLATION)\n`);
        return 1;
      }
      return 0;
    } catch (e) {
      return reportError('simulate', e);
    }
  },
};
