// `usbphone sim`: boots virtual phones against the servers. Without options, one phone,
// verbosely (what `make sim` runs), against servers it starts, or with --gateway against a
// stack that already runs (`make serve`); --scenario runs a story (S0, S3, S4); --devices runs a
// fleet; --deterministic runs a story on the simulated HAL (virtual clock, seeded rng).
// Whatever way it ends (signal, closed pipe, error), it leaves no server process and no
// temporary state behind (sim/lifetime.ts).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from './main.ts';
import { CliError, reportError, checkStateDir } from './flash-common.ts';
import { parseOptions, intOption, refuseOptions, type Parsed } from './args.ts';
import { formatTrace } from '../sim/trace.ts';
import { setLogSink } from '../server-kit/log.ts';
import { makeTempDir, removeTempDir, exitOnSignals, quietOnClosedPipe } from '../sim/lifetime.ts';
import { BASE_PORT_SPAN, DEFAULT_GATEWAY_PORT, BANK_PAGE_PORT_OFFSET, portsForBase } from '../deploy/config.ts';
import type { DeviceOutcome } from '../firmware/device.ts';
import { PAGE_PATH } from '../biz-server/bank-page.ts';
import type { TraceEvent } from '../firmware/hal/hal.ts';
import type { StackHandle } from '../sim/world.ts';
import type { Stack } from '../deploy/stack.ts';
import { isProfileName, PROFILE_NAMES } from '../firmware/profiles.ts';
import { storeChoiceFrom } from '../server-kit/store-choice.ts';
import { maskAccount } from '../protocol/bank-messages.ts';

export const OPTIONS = {
  scenario: { type: 'string' },
  out: { type: 'string' },
  devices: { type: 'string' },
  deterministic: { type: 'boolean' },
  gateway: { type: 'string' },
  state: { type: 'string' },
  port: { type: 'string' },
  ip: { type: 'string' },
  profile: { type: 'string' },
  seed: { type: 'string' },
  concurrency: { type: 'string' },
  rounds: { type: 'string' },
  servers: { type: 'string' },
  loss: { type: 'string' },
  json: { type: 'boolean' },
  watch: { type: 'boolean' },
  'phone-only': { type: 'boolean' },
  'sim-card': { type: 'string' },
  iccid: { type: 'string' },
  imsi: { type: 'string' },
  msisdn: { type: 'string' },
  'swap-sim': { type: 'boolean' },
  bank: { type: 'string' },
  'bank-name': { type: 'string' },
  'bank-password-file': { type: 'string' },
  quiet: { type: 'boolean', short: 'q' },
  help: { type: 'boolean', short: 'h' },
} as const;

const HELP = `usage: usbphone sim [options]

Boots virtual USB phones against the gateway, registration and business servers on
loopback, and shows them log in with nobody typing a password.

  (no options)            one phone, step by step (make sim): starts the servers
                          (gateway on 127.0.0.1:7400, the others on 7410..7450), keeping
                          their SQLite files and keys and the phone's flash image, fuses and
                          enrollment record in --state; a second run is a second boot
  --gateway URL           one phone (or a fleet with --devices) plugged into servers that
                          already run (make serve, 'usbphone serve all --state DIR'): URL is
                          their gateway (ws://127.0.0.1:7400/) and --state must be their state
                          directory (its master key builds the image, its databases enroll)
  --phone-only            with --gateway: the phone alone, for servers that are not ours (the
                          device command of 'usbphone conformance --device'): --state holds
                          only the phone and its master.key (made if missing); nothing is
                          enrolled; the phone's enrollment record is --state/phone.enrollment.json
  --scenario NAME|all     a story (S0, S3, S4), in a fresh temporary state: {SCENARIOS}
  --out DIR               with --scenario: where a story writes what a person looks at
                          (attack-shifts-mechanism: its per-period rates and choices as
                          attack-shifts-mechanism.csv and an SVG chart; default tmp/scenarios)
  --devices N             a fleet of N phones (1..1,000,000; copy-on-write over one base
                          image), each on a loopback address of its own; prints a summary with
                          memory per phone and the cost curve (CPU per login at 1,000,
                          2,000, 5,000, 10,000, ... 1,000,000 logins; each point before the
                          last also on stderr as it is reached). A million phones: make bench-scale
  --deterministic         with --scenario first-boot|both-down-uses-saved: the same story on
                          the simulated HAL (virtual clock, seeded rng, in-memory network to
                          the servers); the same --seed gives the same trace, byte for byte

options:
  --state DIR             the single phone's state directory (default: state), or with
                          --gateway the running servers' one
  --port BASE             the single phone's servers: base port (default ${DEFAULT_GATEWAY_PORT}; every
                          port moves with it, as 'serve all --port'; 0 = any free ports, but
                          then the image is rebuilt each run: a first boot every time)
  --ip ADDR               the single phone's loopback address (default 127.1.0.1, region
                          east; 127.2.x.y is region west)
  --profile usb|mobile|atm
                          the single device (S0.15): usb (default) a USB phone whose host
                          auto-runs UPMon; mobile a mobile phone whose own OS launches UPMon,
                          with a SIM card of its own; atm a bank card in an ATM, whose program
                          logs in through the card's secure controller (a card is another
                          device: its image is built anew); the scenarios phone-profile-login
                          and atm-card-login run the two others in a temporary state
  --sim-card N            the single phone's SIM: generated valid card N (1..9999; a USIM of
                          the test network 001-01 with a number; a mobile phone's own card is 1)
  --iccid ICCID           the single phone's SIM: this card (89..., with its Luhn digit), with
  --imsi IMSI             its IMSI (6..15 digits) and
  --msisdn +NUMBER        its number (E.164), when the card carries one
  --swap-sim              a new card for the same line (same number): the operator's store
                          moves the line to it now (the bank's SIM-swap check, mode 2), then it
                          goes into the phone. The card stays in the phone across runs
                          (--state/phone.sim.json); a USB phone has none until one is chosen
  --bank ACTION           the person at the phone, after the login: register (open an account
                          bound to the SIM), login (the account page) or rebind (move the
                          binding to a swapped card); exit 1 when the bank refuses
  --bank-name NAME        the person's login name at the bank (3..64 of A-Z a-z 0-9 . _ @ -)
  --bank-password-file FILE
                          the person's password: the first line of FILE; else the environment
                          variable USBPHONE_BANK_PASSWORD. Never on the command line: other
                          users of the machine can read it
  --watch                 the single phone, or a fleet, with servers of its own: after the
                          run, keep the servers and their live page (the address it prints)
                          up until Ctrl-C
  --seed S                --scenario, --devices, --deterministic: seed for fuses, serials,
                          rng (default 1)
  --concurrency N         fleet: phones plugging in at once (default 64)
  --rounds N              fleet: plug every phone in N times (default 1)
  --servers WHERE         fleet: process (default: the servers in a process of their own,
                          as deployed), inline (in this process), reg-child (only the
                          registration servers in child processes)
  --loss P                deterministic: probability a frame is lost (default 0)
  --json                  fleet: one JSON object on stdout; scenario: one JSON line each
  -q, --quiet             no trace lines
  -h, --help              this help

exit codes: 0 the phone(s) logged in / the story ended as the patent says, 1 not (or the
servers could not start), 2 bad usage; interrupted: 128 + the signal; output pipe closed:
141, quietly
`;

type Mode = 'single' | 'scenario' | 'deterministic' | 'fleet';

/** The single phone's SIM and person (sim/single-sim.ts): nowhere else. */
const PERSON_OPTIONS = ['sim-card', 'iccid', 'imsi', 'msisdn', 'swap-sim', 'bank', 'bank-name', 'bank-password-file'];

/** The SIM choice and the person of the single phone, checked before any server starts. */
async function simAndPerson(a: Parsed['values'], profile: string, phoneOnly: boolean) {
  const { givenCard, bankPerson } = await import('../sim/single-sim.ts');
  const given = ['iccid', 'imsi', 'msisdn'].some((k) => a[k] !== undefined);
  const ways = [given && '--iccid/--imsi/--msisdn', a['sim-card'] !== undefined && '--sim-card', a['swap-sim'] && '--swap-sim'].filter(Boolean);
  if (ways.length && profile === 'atm') throw new CliError('CLI_BAD_ARGS', `${ways[0]} does not apply to --profile atm: a bank card in an ATM has no SIM slot (its card number is its identity)`);
  if (ways.length > 1) throw new CliError('CLI_BAD_ARGS', `give one of ${ways.join(', ')}: each chooses the phone's SIM`);
  if (a['swap-sim'] && phoneOnly) throw new CliError('CLI_BAD_ARGS', "--swap-sim does not apply to --phone-only: the servers' operator cannot be told of the new card");
  const choice: import('../sim/single-sim.ts').SimChoice = given
    ? { kind: 'given', card: givenCard(a.iccid as string | undefined, a.imsi as string | undefined, a.msisdn as string | undefined) }
    : a['sim-card'] !== undefined ? { kind: 'generated', n: intOption(a['sim-card'], 'sim-card', 1, 9999, 1) }
    : a['swap-sim'] ? { kind: 'swap' } : { kind: 'kept' };
  if (a.bank === undefined) {
    for (const k of ['bank-name', 'bank-password-file']) if (a[k] !== undefined) throw new CliError('CLI_BAD_ARGS', `--${k} goes with --bank register|login|rebind`);
    return { choice, person: undefined };
  }
  const person = bankPerson(a.bank as string, a['bank-name'] as string | undefined, a['bank-password-file'] as string | undefined, process.env);
  // Read once: nothing this process starts inherits it.
  delete process.env.USBPHONE_BANK_PASSWORD;
  return { choice, person };
}

/** Which options each way of running takes; any other given is refused with the reason. */
function checkApplies(v: Parsed['values']): Mode {
  if (v.deterministic) {
    refuseOptions(v, ['deterministic', 'scenario', 'seed', 'loss', 'json', 'quiet'], '--deterministic', 'it runs a story on the simulated HAL, in a temporary state');
    return 'deterministic';
  }
  if (v.scenario !== undefined) {
    refuseOptions(v, ['scenario', 'out', 'seed', 'json', 'quiet'], '--scenario', 'a story starts and stops servers of its own, in a temporary state');
    return 'scenario';
  }
  if (v.devices !== undefined) {
    if (v.gateway !== undefined) refuseOptions(v, ['devices', 'gateway', 'state', 'seed', 'concurrency', 'rounds', 'json', 'quiet'], 'a fleet with --gateway', 'the running servers are used');
    else refuseOptions(v, ['devices', 'seed', 'concurrency', 'rounds', 'servers', 'watch', 'json', 'quiet'], 'a fleet', 'a fleet runs in a temporary state (or give --gateway and --state of running servers)');
    return 'fleet';
  }
  if (v['phone-only'] && v.gateway === undefined) throw new CliError('CLI_BAD_ARGS', "--phone-only goes with --gateway URL: the servers the phone is plugged into; see 'usbphone sim --help'");
  if (v.gateway !== undefined) refuseOptions(v, ['gateway', 'state', 'ip', 'profile', 'quiet', 'phone-only', ...PERSON_OPTIONS], 'the single phone with --gateway', 'the running servers have their ports (and their live page)');
  else refuseOptions(v, ['state', 'port', 'ip', 'profile', 'watch', 'quiet', ...PERSON_OPTIONS], 'the single phone', '--seed, --json and the fleet options go with --scenario, --devices or --deterministic');
  return 'single';
}

/**
 * The operator's store of the servers `s` (its own, when the stack runs in this process; the one
 * of running servers, opened for the call on the back end they run on: their state directory's
 * PostgreSQL schema under STORE_URL, else its SQLite file), handed to `f`. A swap with no
 * operator store is refused (SIM_LINE_CONFLICT would be wrong: CLI_NO_STATE).
 */
async function withOperator(s: StackHandle, state: string, swap: boolean, f: (store: import('../operator-server/store.ts').OperatorStore | undefined) => Promise<void>): Promise<void> {
  const own = 'operator' in s ? (s as Stack).operator()?.store : undefined;
  if (own) return f(own);
  const { openAttachedOperatorStore } = await import('../sim/external-stack.ts');
  const store = await openAttachedOperatorStore(state);
  if (!store) {
    if (swap) throw new CliError('CLI_NO_STATE', `--swap-sim: ${state} has no operator store (operator.sqlite, or pg-schema under STORE_URL): the operator of the servers cannot be told of the new card`);
    return f(undefined);
  }
  try {
    await f(store);
  } finally {
    await store.close();
  }
}

/** The bank step's outcome, in a line (the account number masked; the password never). */
function bankLine(b: import('../firmware/main-program.ts').BankStepOutcome | undefined, action: string): string {
  if (!b) return 'bank: no bank step (the phone did not log in, or the main program did not reach it)';
  if (b.kind === 'registered') return `bank: account ${maskAccount(b.account)} ${action === 'rebind' ? 'bound to this SIM now (re-bound)' : 'opened, bound to this SIM and this phone'} (mode ${b.mode})`;
  if (b.kind === 'page') return `bank: logged in: account page of ${b.account} (mode ${b.mode}, ${b.lastLogins} last login(s) listed)`;
  if (b.kind === 'refused') {
    // What the person can do next (found by review: after --swap-sim the refusal said nothing of re-binding).
    const next =
      b.code === 'BANK_SIM_SWAPPED' || b.code === 'BANK_NOT_BOUND'
        ? "; if this phone's SIM was swapped, move the binding to the new card from this phone: usbphone sim --bank rebind --bank-name NAME"
        : b.code === 'BANK_BUSY' || b.code === 'BANK_OPERATOR_UNAVAILABLE'
          ? '; try again later'
          : '';
    return `bank: login not allowed: ${b.code}: ${b.reason}${next}`;
  }
  return `bank: failed: ${b.reason}`;
}

/** 'ws://host:port/' (a missing final '/' is added); anything else is refused. */
function gatewayUrl(v: string): string {
  const u = v.endsWith('/') ? v : v + '/';
  if (!/^wss?:\/\/[^/\s?#]+\/$/.test(u)) throw new CliError('CLI_BAD_ARGS', `--gateway must be the servers' gateway as ws://host:port/, not '${v}'`);
  return u;
}

/**
 * The gateway accepts a WebSocket on its device port, or SIM_NO_GATEWAY. (Its /healthz is on
 * the operator port, which the device-facing URL does not name.)
 */
async function checkGateway(url: string, state: string): Promise<void> {
  try {
    const { WebSocket } = await import('ws');
    await new Promise<void>((resolve, reject) => {
      const ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: 3_000 });
      ws.once('open', () => {
        ws.close(1000);
        resolve();
      });
      ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
      ws.once('error', reject);
    });
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code ?? (e as Error & { cause?: { code?: string } }).cause?.code ?? (e as Error).message;
    throw new CliError('SIM_NO_GATEWAY', `no gateway answers at ${url} (${why}); start the servers first: make serve (usbphone serve all --state ${state})`);
  }
}

/** The state directory of running servers: exists, and holds their keys and databases. */
function checkServerState(state: string, url: string): void {
  const hint = `--state must be the state directory of the servers at ${url} (make serve uses state)`;
  checkStateDir(state, { hint });
  // Its keys, and its SQLite files or (on PostgreSQL by STORE_URL) its schema prefix (sim/external-stack.ts attachFiles).
  const stores = storeChoiceFrom(undefined).kind === 'postgres' ? ['pg-schema'] : ['reg.sqlite', 'biz-accounts.sqlite'];
  const missing = ['master.key', 'store.key', ...stores].filter((f) => !existsSync(join(state, f)));
  if (missing.length) throw new CliError('CLI_NO_STATE', `${state} has no ${missing.join(', ')}: ${hint}`);
}

export const command: Command = {
  summary: 'boot virtual phones and watch them log in (one phone, an S0 scenario, or a fleet)',
  async run(argv) {
    const { STORIES } = await import('../sim/scenarios.ts');
    const help = HELP.replace('{SCENARIOS}', Object.keys(STORIES).join(', '));
    const out = (s: string) => process.stdout.write(s + '\n');
    try {
      // A password in argv is visible to every user of the machine (ps, /proc): not an option.
      if (argv.some((x) => x === '--bank-password' || x.startsWith('--bank-password='))) {
        throw new CliError('CLI_BAD_ARGS', '--bank-password is not an option: a command line is visible to other users; set USBPHONE_BANK_PASSWORD or give --bank-password-file FILE');
      }
      const a = parseOptions('sim', argv, OPTIONS).values;
      if (a.help) {
        process.stdout.write(help);
        return 0;
      }
      const mode = checkApplies(a);
      const seed = intOption(a.seed, 'seed', 0, 2 ** 31, 1);
      const trace = a.quiet ? undefined : (e: TraceEvent) => out(formatTrace(e));
      quietOnClosedPipe();

      if (mode === 'deterministic' || mode === 'scenario') {
        const name = (a.scenario as string | undefined) ?? 'first-boot';
        const names = name === 'all' && mode === 'scenario' ? Object.keys(STORIES) : [name];
        for (const n of names) if (!STORIES[n]) throw new CliError('CLI_UNKNOWN_SCENARIO', `unknown scenario '${n}'; one of: ${Object.keys(STORIES).join(', ')}${mode === 'scenario' ? ', all' : ''}`);
        exitOnSignals((sig) => void process.stderr.write(`\nusbphone sim: interrupted (${sig}); temporary state removed\n`));
        setLogSink(() => {});
        if (mode === 'deterministic') {
          const { runDeterministic, DETERMINISTIC_STORIES } = await import('../sim/deterministic.ts');
          if (!DETERMINISTIC_STORIES.includes(name)) throw new CliError('CLI_BAD_ARGS', `--deterministic runs ${DETERMINISTIC_STORIES.join(' or ')}, not ${name}`);
          const loss = a.loss === undefined ? 0 : Number(a.loss);
          if (!/^\d*\.?\d+$/.test(String(a.loss ?? '0')) || !(loss >= 0 && loss < 1)) throw new CliError('CLI_BAD_ARGS', `--loss must be a probability in [0, 1), not '${a.loss}'`);
          const r = await runDeterministic(name, { seed, loss, trace, say: a.quiet ? undefined : (l) => out(`   ${l}`) });
          if (a.json) out(JSON.stringify({ scenario: name, seed, ok: r.ok, verdict: r.verdict, trace: r.trace }));
          else out(`${r.ok ? 'PASS' : 'FAIL'} ${name} (deterministic, seed ${seed}): ${r.verdict}`);
          return r.ok ? 0 : 1;
        }
        const { runStory } = await import('../sim/scenarios.ts');
        let failed = 0;
        for (const n of names) {
          if (!a.json) out(`== ${n}: ${STORIES[n]!.summary}`);
          const r = await runStory(n, { seed, trace: a.json ? undefined : trace, print: a.quiet || a.json ? undefined : (l) => out(`   ${l}`), out: (a.out as string | undefined) ?? join('tmp', 'scenarios') });
          if (!r.ok) failed++;
          if (a.json) out(JSON.stringify({ scenario: n, ok: r.ok, verdict: r.verdict, outcomes: r.outcomes }));
          else out(`${r.ok ? 'PASS' : 'FAIL'} ${n}: ${r.verdict}\n`);
        }
        return failed ? 1 : 0;
      }

      if (mode === 'fleet') {
        const devices = intOption(a.devices, 'devices', 1, 1_000_000, 1);
        const concurrency = intOption(a.concurrency, 'concurrency', 1, 10_000, 64);
        const rounds = intOption(a.rounds, 'rounds', 1, 100, 1);
        const gateway = a.gateway === undefined ? undefined : gatewayUrl(a.gateway as string);
        const servers = gateway ? 'attached' : ((a.servers as string | undefined) ?? 'process');
        if (!['inline', 'reg-child', 'process', 'attached'].includes(servers)) throw new CliError('CLI_BAD_ARGS', `--servers must be process, inline or reg-child, not '${servers}'`);
        let stateDir: string;
        if (gateway) {
          stateDir = (a.state as string | undefined) ?? 'state';
          checkServerState(stateDir, gateway);
          await checkGateway(gateway, stateDir);
        } else stateDir = makeTempDir('usbphone-fleet-');
        const removeSignals = exitOnSignals((sig) => void process.stderr.write(`\nusbphone sim: interrupted (${sig}); servers stopped, temporary state removed\n`));
        const { runFleet } = await import('../sim/fleet.ts');
        setLogSink(() => {}, 'warn');
        // The live page (issue 17): its address before the first phone plugs in; with --json on
        // stderr, stdout keeping its one JSON object.
        const say = (l: string) => (a.json ? process.stderr.write(l + '\n') : out(l));
        const onPage = (url: string) => say(`live page: ${url} (its fleet charts follow the run${a.watch ? '; --watch keeps the servers up after it, until Ctrl-C' : "; 'usbphone sim --devices N --watch' keeps the servers up after it"})`);
        if (gateway) {
          const u = new URL(gateway);
          say(`live page: on the operator port of the servers at ${gateway}, which their start printed (make serve: http://${u.hostname}:${Number(u.port) + 1}/)`);
        }
        let printed = false;
        const print = (s: import('../sim/fleet.ts').FleetSummary) => {
          if (printed) return;
          printed = true;
          if (a.json) out(JSON.stringify(s));
          else {
            out(`fleet of ${s.devices} phones x ${s.rounds} round(s), ${s.concurrency} at a time, seed ${s.seed}, servers ${s.servers}${gateway ? ` (${gateway})` : ''}`);
            out(`  per server      ${Object.entries(s.byServer).map(([k, v]) => `${k} ${v}`).join(', ')}`);
            out(`  logins ok       ${s.ok}`);
            out(`  failed          ${s.failed}${s.failed ? ` (${Object.entries(s.failedByReason).map(([k, v]) => `${k}: ${v}`).join(', ')})` : ''}`);
            out(`  logins/s        ${s.loginsPerSecond}  (${s.wallMs} ms wall)`);
            out(`  plug-in->login  p50 ${s.p50Ms} ms, p99 ${s.p99Ms} ms, max ${s.maxMs} ms`);
            out(`  memory          peak RSS ${(s.peakRssBytes / 1048576).toFixed(1)} MiB; per phone ${(s.memPerDeviceBytes / 1024).toFixed(2)} KiB live (heap + buffers), ${(s.rssPerDeviceBytes / 1024).toFixed(2)} KiB RSS, of which ${(s.privateFlashBytesPerDevice / 1024).toFixed(2)} KiB private flash pages${s.serverRssBytes === null ? '' : `; server process RSS ${(s.serverRssBytes / 1048576).toFixed(1)} MiB`}`);
            for (const p of s.curve) out(`  ${costLine(p)}`);
          }
        };
        // --watch: the summary now, then the servers and their page stay up until a signal, which ends the run normally.
        const hold = a.watch
          ? (s: import('../sim/fleet.ts').FleetSummary) => {
              print(s);
              removeSignals();
              say("the fleet's run is over; the servers and the live page stay up: Ctrl-C stops them");
              return new Promise<void>((resolve) => {
                for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.once(sig, () => resolve());
              });
            }
          : undefined;
        try {
          // Each point of the cost curve before the last on stderr as the run reaches it: a long
          // run's figures before its end (the last is in the summary; a short run prints none).
          const onCost = (p: import('../sim/fleet.ts').CostPoint) => {
            if (p.logins < devices * rounds) process.stderr.write(`${costLine(p)}\n`);
          };
          const s = await runFleet({ devices, seed, stateDir, concurrency, rounds, servers: servers as 'process', gateway, onPage, hold, onCost });
          print(s);
          return s.failed ? 1 : 0;
        } finally {
          if (!gateway) removeTempDir(stateDir);
        }
      }

      // The single phone.
      const profile = (a.profile as string | undefined) ?? 'usb';
      if (!isProfileName(profile)) throw new CliError('CLI_BAD_ARGS', `--profile must be ${PROFILE_NAMES.join(', ')}, not '${profile.slice(0, 32)}'`);
      const ip = (a.ip as string | undefined) ?? '127.1.0.1';
      if (!/^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.test(ip) || ip.split('.').some((x) => Number(x) > 255)) throw new CliError('CLI_BAD_ARGS', `--ip must be a loopback address 127.x.y.z, not '${ip}'`);
      const state = (a.state as string | undefined) ?? 'state';
      const gateway = a.gateway === undefined ? undefined : gatewayUrl(a.gateway as string);
      const port = intOption(a.port, 'port', 0, 65535 - BASE_PORT_SPAN, DEFAULT_GATEWAY_PORT);
      const phoneOnly = a['phone-only'] === true;
      const { choice, person } = await simAndPerson(a, profile, phoneOnly);
      if (phoneOnly) checkStateDir(state, { create: true });
      else if (gateway) {
        checkServerState(state, gateway);
        await checkGateway(gateway, state);
      } else checkStateDir(state, { create: true });
      const { runSinglePhone } = await import('../sim/single.ts');
      const single = await import('../sim/single-sim.ts');
      const plan = profile === 'atm' ? { card: undefined } : single.planSim(state, choice, profile === 'mobile');
      const card = plan.card ?? (profile === 'mobile' ? single.generatedCard(1) : undefined);
      if (person && profile !== 'atm' && !card) throw new CliError('CLI_BAD_ARGS', "the bank step needs the phone's SIM (its first identifier, S4.2): a USB phone has none until one is chosen: --sim-card N or --iccid/--imsi");
      if (card) out(`SIM: ${card.cardType} card ${single.maskIccid(card.iccid)}${card.msisdn ? `, line ${card.msisdn}` : ', no number on it'}${plan.swappedFrom ? ` (a new card for the line; the old one was ${single.maskIccid(plan.swappedFrom.iccid)})` : ''}`);
      // The card stays in the phone: saved now, or once the operator has taken the swap.
      const tell = async (store: import('../operator-server/store.ts').OperatorStore | undefined) => {
        if (!card) return;
        if (store) out(`operator: ${await single.tellOperator(store, { card, ...(plan.swappedFrom ? { swappedFrom: plan.swappedFrom } : {}) })}`);
        single.saveSim(state, card);
      };
      if (phoneOnly) await tell(undefined);
      let stack: StackHandle | null = null;
      const removeSignals = exitOnSignals(async () => {
        process.stderr.write(gateway ? '\ninterrupted\n' : '\ninterrupted: stopping the servers\n');
        await stack?.stop();
      });
      // The password change (S0.14) is confirmed while the login is being confirmed: its line
      // is shown after the login line it belongs to.
      const held: TraceEvent[] = [];
      // The phone's steps also go to the live page's feed, when the servers run in this process.
      let feed: Stack['feed'] | undefined;
      const show = (e: TraceEvent) => {
        feed?.phoneStep(ip, e);
        if (!trace) return;
        if (e.feature === 'S0.14' && e.ok) return void held.push(e);
        trace(e);
        if (e.feature === 'S0.11' && held.length) for (const h of held.splice(0)) trace(h);
      };
      // The account page's address for a login's token: the in-process bank's, or, with --gateway,
      // the page port of 'serve all' (the business server's device port + BANK_PAGE_PORT_OFFSET).
      const pageLink = (o: DeviceOutcome): string | null => {
        if (!o.ok || o.bank?.kind !== 'page') return null;
        const token = Buffer.from(o.bank.token).toString('base64url');
        const own = stack && 'biz' in stack ? (stack as Stack).biz(o.server)?.bank?.pageUrl : undefined;
        if (own) return `${own}${token} (valid ${o.bank.ttlS} s)`;
        if (!gateway) return null;
        const u = new URL(gateway);
        const dev = portsForBase(Number(u.port))[o.server]?.device;
        return dev ? `http://${u.hostname}:${dev + BANK_PAGE_PORT_OFFSET}${PAGE_PATH}${token} (valid ${o.bank.ttlS} s; the 'serve all' layout)` : null;
      };
      const onStack = async (s: StackHandle) => {
        stack = s;
        // The operator's store is opened only for a phone with a card (nothing to tell otherwise).
        if (!phoneOnly && card) await withOperator(s, state, plan.swappedFrom !== undefined, tell);
        if ('feed' in s && 'pageUrl' in s) {
          feed = (s as Stack).feed;
          out(`live page: ${(s as Stack).pageUrl} (while the servers run${a.watch ? '; --watch keeps them up after the phone, until Ctrl-C' : "; 'usbphone sim --watch' keeps them up after the phone"})`);
        } else if (gateway) {
          const u = new URL(gateway);
          out(`live page: on the operator port of the servers at ${gateway}, which their start printed (make serve: http://${u.hostname}:${Number(u.port) + 1}/)`);
        }
      };
      // --watch: after the phone's run the servers stay up until a signal, which then ends the run normally.
      const hold = a.watch
        ? (o: DeviceOutcome) => {
            removeSignals();
            const link = pageLink(o);
            if (link) out(`account page: ${link}`);
            out("the phone's run is over; the servers and the live page stay up: Ctrl-C stops them");
            return new Promise<void>((resolve) => {
              for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.once(sig, () => resolve());
            });
          }
        : undefined;
      try {
        const r = await runSinglePhone({ stateDir: state, gatewayPort: port, gateway, enroll: !phoneOnly, ip, profile, trace: show, say: (l) => out(l), onStack, hold, ...(card ? { sim: card } : {}), ...(person ? { person } : {}) });
        if (trace) for (const h of held.splice(0)) trace(h);
        const o = r.outcome;
        out('');
        out(o.ok ? `LOGGED IN to ${o.server} with password generation ${o.gen} (via ${o.via}) in ${Math.round(o.ms)} ms` : `NOT LOGGED IN: ${o.kind}: ${o.reason}`);
        if (r.saved) {
          const s = r.saved;
          const last = s.servers.find((x) => x.name === s.lastServer);
          out(`saved login (record sealed by the secure element; secrets in its slot): user ${s.user}, password generation(s) ${s.gens.join(', ')}, last server ${s.lastServer ?? 'none'}${last ? ` at ${last.url}` : ''}`);
        } else out('saved login: none');
        const bank = o.ok ? o.bank : undefined;
        if (person) out(bankLine(bank, a.bank as string));
        // The account page in a browser (S4.8), for the token of this login, while the servers run.
        if (person && bank?.kind === 'page' && gateway) {
          const link = pageLink(o);
          if (link) out(`account page: ${link}`);
        } else if (person && bank?.kind === 'page' && !a.watch) out("account page: the servers stopped with the run; 'usbphone sim --watch' keeps them up and prints its address");
        if (o.ok) out(`run the same command again for a second boot (a password change, S0.14); 'make clean' (or deleting ${state}) starts over`);
        else if (phoneOnly) out(`do the servers at ${gateway} know this phone (its enrollment record is in ${state})? the trace above says where the login stopped`);
        else if (gateway) out(`is ${state} the state directory of the servers at ${gateway}? the trace above says where the login stopped`);
        else out(`the trace above says where the login stopped; the server logs are in ${join(state, 'servers.log')}; 'make clean' starts over`);
        return o.ok && (!person || bank?.kind === 'registered' || bank?.kind === 'page') ? 0 : 1;
      } finally {
        removeSignals();
      }
    } catch (e) {
      if ((e as NodeJS.ErrnoException)?.code === 'EADDRINUSE') {
        return reportError('sim', new CliError('SIM_PORT_IN_USE', `${(e as Error).message}: another server holds these ports; if it is a running 'make serve', plug the phone into it: usbphone sim --gateway ws://127.0.0.1:${DEFAULT_GATEWAY_PORT}/ --state state (make sim GATEWAY=ws://127.0.0.1:${DEFAULT_GATEWAY_PORT}/); else stop it, or give another --port base`));
      }
      if ((e as { code?: string })?.code === 'SIM_NOT_STACK_STATE') return reportError('sim', new CliError('CLI_NO_STATE', (e as Error).message.replace(/^[A-Z_]+: /, '')));
      return reportError('sim', e);
    }
  },
};

/** One point of a fleet's cost curve, as the summary and stderr print it. */
function costLine(p: import('../sim/fleet.ts').CostPoint): string {
  const server = p.serverCpuMs === null ? 'server CPU not measured' : `server ${p.serverCpuMs.toFixed(3)} ms CPU`;
  return `cost at ${String(p.logins.toLocaleString('en-US')).padStart(9)} logins  phones ${p.phoneCpuMs.toFixed(3)} ms CPU, ${server} per login (the last ${p.window}), ${p.loginsPerSecond} logins/s; ${(p.memPerDeviceBytes / 1024).toFixed(2)} KiB live memory per phone`;
}
