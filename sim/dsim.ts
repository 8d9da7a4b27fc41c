// The whole system in one deterministic simulation (issue 14): one seed decides the run's
// phones and logins, its fault schedule and every random draw of the network; the parties
// (dsim-world.ts) run on one virtual scheduler, and named invariants (dsim-invariants.ts) are
// checked while it runs. The same seed replays the same run, event for event: its trace lines
// are identical (sim/dsim.test.ts checks it). A failing seed's schedule can be shrunk.
//
// A run: phase 1, each phone plugs in 1-3 times while the faults of the schedule come and go;
// then every fault heals (crashed servers restart, partitions and stalls end, the network is
// clean, clocks agree); phase 2, after HEAL_SETTLE_MS, each phone plugs in again and must log in.
import { simRng } from '../firmware/hal/sim-hal.ts';
import type { DeviceOutcome } from '../firmware/device.ts';
import type { DeviceMutant } from '../firmware/mutant.ts';
import type { Mutant } from '../server-kit/mutant.ts';
import type { Rng } from '../firmware/hal/hal.ts';
import { setLogSink } from '../server-kit/log.ts';
import { ROTATION_STEPS, type RotationStep } from '../reg-server/rotation.ts';
import { systemRng } from '../protocol/rng.ts';
import nodeCrypto from 'node:crypto';
import { syncBuiltinESMExports } from 'node:module';
import type { BankMode } from '../protocol/bank-messages.ts';
import type { BankStepOutcome } from '../firmware/main-program.ts';
import { World, SERVERS, ALL_SERVERS, REGS, BIZ, GATEWAY, MAX_PHONES, SIM_PENDING_TTL_MS, type SimPhone, type StoreMutant, type BankMutant, type S3Mutant, type PhoneMutant } from './dsim-world.ts';
import { attackerIp } from './attacker.ts';
import { Invariants, type Violation } from './dsim-invariants.ts';
import type { NetFaultRates } from './dsim-net.ts';

export const FAULT_KINDS = ['loss', 'delay', 'dup', 'reorder', 'corrupt', 'partition', 'crash', 'crash-in-tx', 'crash-at-step', 'power-cut', 'skew', 'stall', 'gateway-crash'] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

/** Virtual ms within which the schedule's faults begin. */
export const FAULT_WINDOW_MS = 12_000;
/**
 * After the heal, the phones wait this long before phase 2: two health polls, and past the
 * pending passwords' lifetime, so phase 2 meets the expired ones too.
 */
export const HEAL_SETTLE_MS = SIM_PENDING_TTL_MS + 1_000;
/** liveness: each phone's first plug-in after the settle logs in within this (virtual ms). */
export const LIVENESS_BOUND_MS = 30_000;
/** no-lockout: some plug-in out of this many, after the heal, logs in. */
export const LOCKOUT_TRIES = 3;
/** A plug-in that has not ended after this long (virtual ms) counts as hung. */
const PLUG_CAP_MS = 120_000;
/** Most scheduler events of one run (a loop that never ends is a failure, not a hang). */
const MAX_EVENTS = 2_000_000;

/** The network rates a window of each kind sets (docs/simulation.md's table states them). */
export const FAULT_RATES: Partial<Record<FaultKind, Partial<NetFaultRates>>> = {
  loss: { loss: 0.08 },
  delay: { jitterMs: 400 },
  dup: { dup: 0.25 },
  reorder: { reorder: 0.25 },
  corrupt: { corrupt: 0.1 },
};

export type Fault =
  | { kind: 'loss' | 'delay' | 'dup' | 'reorder' | 'corrupt'; at: number; ms: number }
  /** The gateway process killed at `at` (every device connection and link lost), started again `ms` later. */
  | { kind: 'gateway-crash'; at: number; ms: number }
  | { kind: 'partition'; at: number; ms: number; a: string; b: string }
  | { kind: 'crash' | 'crash-in-tx'; at: number; ms: number; party: string }
  | { kind: 'crash-at-step'; at: number; ms: number; party: string; step: RotationStep }
  | { kind: 'power-cut'; phone: number; login: number; afterOps: number }
  | { kind: 'skew'; at: number; ms: number; party: string; skewMs: number }
  | { kind: 'stall'; at: number; ms: number; party: string; stallMs: number };

export interface Plan {
  seed: number;
  phones: number;
  logins: number[];
  /** When each phone's phase-1 plug-ins begin (virtual ms, within the fault window): the faults meet them. */
  starts: number[][];
  faults: Fault[];
  /**
   * The bank (S4): the business servers' mode, and the SIM swaps of the run: at `at` (virtual
   * ms) the operator moves phone `phone`'s line to a new card and the card goes into the phone.
   * Drawn from a stream of their own, so a seed's fault schedule does not depend on them.
   */
  bank: { mode: BankMode; swaps: { phone: number; at: number }[] };
  /**
   * A password-guessing bot (S3.4), or none: from `at` (virtual ms) it sends `n` login openings
   * to `site` from one address, one after the other (World.guess): more than the gateway's limit
   * (10 within its window) is one attack, counted, reported and folded into the next table.
   */
  attack: { at: number; site: string; n: number } | null;
}

const pick = <T>(r: () => number, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;

function uniform(rng: Rng): () => number {
  return () => {
    const b = rng(4);
    return (((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0) / 2 ** 32;
  };
}

/** The run a seed stands for: its phones, their logins and its fault schedule (only `kinds`). */
export function planFor(seed: number, kinds: readonly FaultKind[] = FAULT_KINDS): Plan {
  const r = uniform(simRng(seed, 'dsim plan'));
  const phones = 1 + Math.floor(r() * MAX_PHONES);
  const logins = Array.from({ length: phones }, () => 1 + Math.floor(r() * 3));
  const starts = logins.map((n) => Array.from({ length: n }, () => Math.floor(r() * FAULT_WINDOW_MS)).sort((a, b) => a - b));
  const n = kinds.length ? Math.floor(r() * 6) : 0;
  const parties = [GATEWAY, ...ALL_SERVERS];
  const faults: Fault[] = [];
  for (let k = 0; k < n; k++) {
    const kind = pick(r, kinds);
    const at = Math.floor(r() * FAULT_WINDOW_MS);
    const ms = 300 + Math.floor(r() * 5_000);
    if (kind === 'partition') {
      // Any two parties: a phone and the gateway, the gateway and a server, a registration and a business server.
      const all = [...parties, ...Array.from({ length: phones }, (_, i) => `phone-${i}`)];
      const a = pick(r, all);
      const b = pick(r, all.filter((x) => x !== a));
      faults.push({ kind, at, ms, a, b });
    } else if (kind === 'crash') faults.push({ kind, at, ms, party: pick(r, ALL_SERVERS) });
    else if (kind === 'crash-in-tx') faults.push({ kind, at, ms, party: pick(r, SERVERS) });
    else if (kind === 'crash-at-step') faults.push({ kind, at, ms, party: pick(r, REGS), step: pick(r, ROTATION_STEPS) });
    else if (kind === 'power-cut') {
      const phone = Math.floor(r() * phones);
      faults.push({ kind, phone, login: Math.floor(r() * logins[phone]!), afterOps: Math.floor(r() * 8) });
    } else if (kind === 'skew') faults.push({ kind, at, ms, party: pick(r, [...ALL_SERVERS, ...Array.from({ length: phones }, (_, i) => `phone-${i}`)]), skewMs: Math.round((r() * 2 - 1) * 90_000) });
    else if (kind === 'stall') faults.push({ kind, at, ms, party: pick(r, ALL_SERVERS), stallMs: 500 + Math.floor(r() * 4_000) });
    else faults.push({ kind, at, ms });
  }
  const rb = uniform(simRng(seed, 'dsim plan S4'));
  const mode: BankMode = rb() < 0.25 ? 1 : 2;
  const swaps: { phone: number; at: number }[] = [];
  for (let i = 0; i < phones; i++) {
    const at = Math.floor(rb() * FAULT_WINDOW_MS);
    if (rb() < 0.5) swaps.push({ phone: i, at });
  }
  const ra = uniform(simRng(seed, 'dsim plan S3'));
  const attack = ra() < 0.3 ? { at: Math.floor(ra() * FAULT_WINDOW_MS), site: pick(ra, BIZ), n: 12 + Math.floor(ra() * 9) } : null;
  return { seed, phones, logins, starts, faults, bank: { mode, swaps }, attack };
}

export function describeFault(f: Fault): string {
  switch (f.kind) {
    case 'partition': return `partition ${f.a}|${f.b} at ${f.at} for ${f.ms} ms`;
    case 'crash': case 'crash-in-tx': return `${f.kind} ${f.party} at ${f.at}, down ${f.ms} ms`;
    case 'crash-at-step': return `crash ${f.party} at rotation step ${f.step} (armed at ${f.at} for ${f.ms} ms)`;
    case 'power-cut': return `power-cut phone-${f.phone} login ${f.login} after ${f.afterOps} flash ops`;
    case 'skew': return `skew ${f.party} ${f.skewMs} ms at ${f.at} for ${f.ms} ms`;
    case 'stall': return `stall ${f.party} +${f.stallMs} ms at ${f.at} for ${f.ms} ms`;
    case 'gateway-crash': return `gateway-crash at ${f.at}, down ${f.ms} ms`;
    default: return `${f.kind} at ${f.at} for ${f.ms} ms`;
  }
}

export interface RunOptions {
  /** The plan to run (default planFor(seed, kinds)): a shrunk schedule is run this way. */
  plan?: Plan;
  kinds?: readonly FaultKind[];
  mutant?: Mutant;
  deviceMutant?: DeviceMutant;
  storeMutant?: StoreMutant;
  /** TEST ONLY: the banks break this rule (dsim-world.ts BankMutant). */
  bankMutant?: BankMutant;
  /** TEST ONLY: the gateway's period report breaks this rule (dsim-world.ts S3Mutant). */
  s3Mutant?: S3Mutant;
  /** TEST ONLY: every phone breaks this rule (dsim-world.ts PhoneMutant). */
  phoneMutant?: PhoneMutant;
  /** TEST ONLY: the gateway pushes its newest table after every frame a phone sends (dsim-world.ts WorldOptions.pushEveryFrame). */
  pushEveryFrame?: boolean;
  /** Keep the full event trace (replay). */
  trace?: boolean;
}

export interface RunResult {
  seed: number;
  ok: boolean;
  violations: Violation[];
  plan: Plan;
  /** The event trace (when asked for): identical for one seed. */
  lines: string[];
  stats: { events: number; virtualMs: number; frames: number; faultsInjected: number; invariantChecks: number; logins: number; crashes: number; bankAnswers: number; swaps: number; attacks: number };
  /** no-half-validated-frame: frames a phone sent on a connection after it refused a corrupted table push there whole (allowed). */
  framesAfterRefusedPush: number;
}

type Outcome = DeviceOutcome | { ok: false; kind: 'hung'; reason: string; ms: number };

/** Runs one seed. */
export async function runSeed(seed: number, o: RunOptions = {}): Promise<RunResult> {
  const plan = o.plan ?? planFor(seed, o.kinds);
  const lines: string[] = [];
  await World.prepare();
  const restoreRandom = seedPlatformRandom(seed);
  // The servers' process-wide log lines (the admin endpoint's own logger) go into the trace, without their wall-clock time.
  let world: World | null = null;
  const prevSink = setLogSink((l) => world?.log(`${l.svc} ${l.level} ${l.msg}${l.code ? ` ${String(l.code)}` : ''}`));
  try {
    world = await World.create({ seed, phones: plan.phones, mutant: o.mutant, deviceMutant: o.deviceMutant, storeMutant: o.storeMutant, bankMode: plan.bank.mode, bankMutant: o.bankMutant, s3Mutant: o.s3Mutant, phoneMutant: o.phoneMutant, pushEveryFrame: o.pushEveryFrame, log: o.trace ? (l) => lines.push(l) : null });
  } catch (e) {
    setLogSink(prevSink);
    restoreRandom();
    throw e;
  }
  const { sched, net } = world;
  const inv = new Invariants(world);
  // Every clock a server reads without a seam (the stores' default `now`, log times) is the virtual one.
  const realNow = Date.now;
  Date.now = () => sched.epochAtStartMs + sched.now();
  let faultsInjected = 0;
  let logins = 0;
  let bankAnswers = 0;
  let events = 0;
  try {
    world.log(`seed ${seed}: ${plan.phones} phone(s), logins ${plan.logins.join(',')}; faults: ${plan.faults.map(describeFault).join('; ') || 'none'}`);
    world.log(`bank mode ${plan.bank.mode}; SIM swaps: ${plan.bank.swaps.map((w) => `phone-${w.phone} at ${w.at}`).join(', ') || 'none'}`);
    for (const w of plan.bank.swaps) sched.at(w.at, () => world.swapCard(world.phones[w.phone]!));
    const bot = plan.attack;
    if (bot) {
      world.log(`attacker: ${bot.n} password guesses at ${bot.site} from ${attackerIp(0)} at ${bot.at}`);
      sched.at(bot.at, () => void world.guess(attackerIp(0), bot.site, 'password', bot.n).then((answered) => world.log(`attacker: ${answered} of ${bot.n} guesses answered`)));
    }
    // The schedule: each windowed fault starts and ends on the scheduler; heal() ends them all.
    const active = new Set<Fault>();
    const timers: { dead: boolean }[] = [];
    const applyRates = () => {
      const r: NetFaultRates = { loss: 0, dup: 0, reorder: 0, corrupt: 0, jitterMs: 0 };
      for (const f of active) {
        const add = FAULT_RATES[f.kind];
        if (!add) continue;
        for (const k of Object.keys(add) as (keyof NetFaultRates)[]) r[k] = Math.max(r[k], add[k]!);
      }
      net.rates = r;
    };
    const begin = (f: Fault) => {
      faultsInjected++;
      active.add(f);
      world.log(`FAULT ${describeFault(f)}`);
      if (f.kind === 'partition') net.partition(f.a, f.b, true);
      else if (f.kind === 'crash') world.crash(f.party);
      else if (f.kind === 'crash-in-tx') world.armCrashInTx(f.party);
      else if (f.kind === 'crash-at-step') world.crashAtStep.set(f.party, f.step);
      else if (f.kind === 'skew') world.skew.set(f.party, f.skewMs);
      else if (f.kind === 'stall') net.stalled.set(f.party, f.stallMs);
      else if (f.kind === 'gateway-crash') world.crashGateway();
      applyRates();
    };
    const end = (f: Fault) => {
      if (!active.delete(f)) return;
      world.log(`END ${describeFault(f)}`);
      if (f.kind === 'partition') net.partition(f.a, f.b, false);
      else if (f.kind === 'crash' || f.kind === 'crash-in-tx' || f.kind === 'crash-at-step') {
        world.crashInTx.delete(f.party);
        world.crashAtStep.delete(f.party);
        if (world.isDown(f.party)) world.start(f.party);
      } else if (f.kind === 'skew') world.skew.delete(f.party);
      else if (f.kind === 'stall') net.stalled.delete(f.party);
      else if (f.kind === 'gateway-crash' && world.isDown(GATEWAY)) void world.restartGateway();
      applyRates();
    };
    for (const f of plan.faults) {
      if (f.kind === 'power-cut') continue;
      timers.push(sched.at(f.at, () => begin(f)));
      timers.push(sched.at(f.at + f.ms, () => end(f)));
    }
    const heal = () => {
      for (const t of timers) t.dead = true;
      for (const f of [...active]) end(f);
      net.healAll();
      world.skew.clear();
      world.crashInTx.clear();
      world.crashAtStep.clear();
      for (const s of ALL_SERVERS) if (world.isDown(s)) world.start(s);
      if (world.isDown(GATEWAY)) void world.restartGateway();
      world.log('HEAL: every fault ended');
    };
    const sleep = (ms: number) => new Promise<void>((r) => sched.at(ms, r));
    const plug = async (p: SimPhone, what: string): Promise<Outcome> => {
      const t0 = sched.now();
      const st = p.phone.chip.stats;
      const ops0 = st.programs + st.sectorErases + st.blockErases;
      const hung = new Promise<Outcome>((res) => sched.at(PLUG_CAP_MS, () => res({ ok: false, kind: 'hung', reason: `no outcome within ${PLUG_CAP_MS} ms`, ms: PLUG_CAP_MS })));
      const out = await Promise.race([p.phone.device.plugIn() as Promise<Outcome>, hung]);
      logins++;
      world.log(`${p.party} ${what}: ${out.ok ? `logged in to ${out.server} gen ${out.gen} via ${out.via}; bank: ${describeBank(out.bank)}` : `${out.kind}: ${out.reason}`} (${sched.now() - t0} ms, ${st.programs + st.sectorErases + st.blockErases - ops0} flash ops)`);
      if (out.ok && out.bank) personAfter(p, out.bank);
      if (out.ok && (out.bank?.kind === 'registered' || out.bank?.kind === 'page' || out.bank?.kind === 'refused')) bankAnswers++;
      world.replug(p);
      inv.afterPlug();
      return out;
    };
    const phase1 = async (p: SimPhone) => {
      for (let j = 0; j < plan.logins[p.index]!; j++) {
        const cut = plan.faults.find((f) => f.kind === 'power-cut' && f.phone === p.index && f.login === j);
        if (cut && cut.kind === 'power-cut') {
          faultsInjected++;
          world.log(`FAULT ${describeFault(cut)}`);
          p.phone.chip.faults.powerCutAfterOps = cut.afterOps;
        }
        const wait = plan.starts[p.index]![j]! - sched.now();
        if (wait > 0) await sleep(wait);
        await plug(p, `login ${j}`);
      }
    };
    const story = (async () => {
      await Promise.all(world.phones.map(phase1));
      if (sched.now() < FAULT_WINDOW_MS) await sleep(FAULT_WINDOW_MS - sched.now());
      heal();
      inv.afterHeal();
      await sleep(HEAL_SETTLE_MS);
      // The saved route (no-lockout): with both registration servers unreachable, a phone that
      // saved a login in phase 1 logs in from it (docs/protocol.md §10: no lost reply, crash or
      // power cut locks the device out).
      // liveness: each phone's first plug-in after the settle (the saved route for a phone that
      // saved a login, else its first registration) logs in within the bound.
      const checked = new Set<SimPhone>();
      const settledAt = sched.now();
      for (const reg of REGS) net.partition(GATEWAY, reg, true);
      world.log('both registration servers unreachable: the saved route');
      await Promise.all(world.phones.map(async (p) => {
        if (!p.host.has('S0.12', true)) return;
        const out = await plug(p, 'saved route');
        inv.savedRoute(p, out.ok);
        inv.liveness(p, out.ok, sched.now() - settledAt, LIVENESS_BOUND_MS);
        checked.add(p);
      }));
      for (const reg of REGS) net.partition(GATEWAY, reg, false);
      world.log('registration servers reachable again');
      const reachableAt = sched.now();
      // The real gateway relinks first (within the liveness bound, which counts from here).
      world.log(`gateway links to the registration servers ${(await world.linksUp(REGS, LIVENESS_BOUND_MS)) ? 'up' : 'still down'}`);
      await Promise.all(world.phones.map(async (p) => {
        for (let k = 0; k < LOCKOUT_TRIES; k++) {
          const out = await plug(p, `after heal ${k}`);
          if (k === 0 && !checked.has(p)) inv.liveness(p, out.ok, sched.now() - reachableAt, LIVENESS_BOUND_MS);
          if (out.ok) return;
          await sleep(1_000);
        }
        inv.lockout(p, LOCKOUT_TRIES);
      }));
      inv.atEnd();
    })();
    let finished = false;
    let failure: unknown = null;
    story.then(() => (finished = true), (e) => {
      finished = true;
      failure = e;
    });
    const checkEvery = 2_500;
    const periodic = () => {
      if (finished) return;
      inv.periodic();
      sched.at(checkEvery, periodic);
    };
    sched.at(checkEvery, periodic);
    while (!finished) {
      // Everything the last event set off (promise chains: sessions, rotation, the firmware) runs
      // to its next wait on the scheduler before virtual time moves on.
      await new Promise((res) => setImmediate(res));
      if (finished) break;
      if (sched.run(Infinity, 1) === 0) {
        inv.report('progress', 'nothing left to run but the story did not end (a wait that can never end)');
        break;
      }
      if (++events > MAX_EVENTS) {
        inv.report('progress', `more than ${MAX_EVENTS} events`);
        break;
      }
    }
    if (failure) inv.report('no-crash', `the simulation threw: ${(failure as Error)?.stack ?? String(failure)}`);
    for (const v of inv.violations) world.log(`VIOLATION ${v.invariant}: ${v.detail}`);
    return {
      seed, ok: inv.violations.length === 0, violations: inv.violations, plan, lines,
      stats: { events, virtualMs: sched.now(), frames: net.counts.frames, faultsInjected, invariantChecks: inv.checks, logins, crashes: world.crashes, bankAnswers, swaps: plan.bank.swaps.length, attacks: plan.attack ? 1 : 0 },
      framesAfterRefusedPush: inv.framesAfterRefusedPush,
    };
  } finally {
    Date.now = realNow;
    setLogSink(prevSink);
    world.close();
    restoreRandom();
  }
}

function describeBank(b: BankStepOutcome | undefined): string {
  if (!b) return 'none';
  if (b.kind === 'refused' || b.kind === 'no-proof') return `${b.kind} ${b.code}`;
  if (b.kind === 'failed') return `failed (${b.reason})`;
  return `${b.kind} mode ${b.mode}`;
}

/**
 * What the person asks of the bank at the next plug-in (S4): register until the account is
 * open (a name or line already taken is their own account whose answer was lost), log in, and
 * re-bind from this phone once the bank refuses the line for its new card (a SIM swap).
 */
function personAfter(p: SimPhone, b: BankStepOutcome): void {
  if (b.kind === 'registered') p.bank = 'bound';
  else if (b.kind !== 'refused') return;
  else if (b.code === 'BANK_NAME_TAKEN' || b.code === 'BANK_ID_BOUND') p.bank = p.bank === 'new' ? 'bound' : p.bank;
  else if (b.code === 'BANK_SIM_SWAPPED' || (b.code === 'BANK_NOT_BOUND' && p.swappedAt !== null)) p.bank = 'rebind';
  else if (b.code === 'BANK_NOT_BOUND') p.bank = 'new';
}

/**
 * The servers' randomness from the seed for the length of one run: the platform CSPRNG that
 * protocol/rng.ts systemRng (and every library) reads is replaced by the seed's stream, so the
 * servers' nonces, ids and secrets, and with them every byte on the wire, replay too. systemRng's
 * 4 KiB block is drained first, so what a previous run left in it does not leak into this one.
 * Returns the function that puts the platform's back.
 */
function seedPlatformRandom(seed: number): () => void {
  const c = globalThis.crypto;
  const own = Object.getOwnPropertyDescriptor(c, 'getRandomValues');
  const stream = simRng(seed, 'platform csprng');
  let fetched = false;
  Object.defineProperty(c, 'getRandomValues', {
    configurable: true,
    writable: true,
    value: <T extends ArrayBufferView | null>(a: T): T => {
      if (a) {
        new Uint8Array(a.buffer, a.byteOffset, a.byteLength).set(stream(a.byteLength));
        if (a.byteLength >= 4096) fetched = true;
      }
      return a;
    },
  });
  for (let i = 0; i < 32 && !fetched; i++) systemRng(256);
  // node:crypto's own generator too (the bank's account numbers, page tokens, its dummy keys):
  // the module's functions replaced and its ESM exports synced, so every importer sees them.
  const nc = nodeCrypto as unknown as Record<string, unknown>;
  const orig = { randomBytes: nc.randomBytes, randomInt: nc.randomInt };
  const u48 = () => {
    const b = stream(6);
    return (((b[0]! * 256 + b[1]!) * 256 + b[2]!) * 16_777_216 + ((b[3]! << 16) | (b[4]! << 8) | b[5]!)) / 2 ** 48;
  };
  nc.randomBytes = (n: number, cb?: (e: Error | null, b: Buffer) => void) => {
    const b = Buffer.from(stream(n));
    if (typeof cb !== 'function') return b;
    process.nextTick(cb, null, b);
  };
  nc.randomInt = (a: number, b?: number | ((e: Error | null, n: number) => void), cb?: (e: Error | null, n: number) => void) => {
    const [min, max] = typeof b === 'number' ? [a, b] : [0, a];
    const fn = typeof b === 'function' ? b : cb;
    const n = min + Math.floor(u48() * (max - min));
    if (typeof fn !== 'function') return n;
    process.nextTick(fn, null, n);
  };
  syncBuiltinESMExports();
  return () => {
    if (own) Object.defineProperty(c, 'getRandomValues', own);
    else delete (c as { getRandomValues?: unknown }).getRandomValues;
    nc.randomBytes = orig.randomBytes;
    nc.randomInt = orig.randomInt;
    syncBuiltinESMExports();
  };
}

/**
 * A shorter schedule that still breaks the same invariant: drops faults one at a time (keeping
 * each drop that still fails), then fewer logins. Returns the smallest plan found.
 */
export async function shrink(seed: number, o: RunOptions & { budget?: number } = {}): Promise<{ plan: Plan; result: RunResult; runs: number }> {
  let best = await runSeed(seed, { ...o, trace: false });
  if (best.ok) return { plan: best.plan, result: best, runs: 1 };
  const target = best.violations[0]!.invariant;
  const stillFails = (r: RunResult) => r.violations.some((v) => v.invariant === target);
  let runs = 1;
  const budget = o.budget ?? 60;
  let progress = true;
  while (progress && runs < budget) {
    progress = false;
    for (let i = 0; i < best.plan.faults.length && runs < budget; i++) {
      const plan = { ...best.plan, faults: best.plan.faults.filter((_, k) => k !== i) };
      const r = await runSeed(seed, { ...o, plan, trace: false });
      runs++;
      if (stillFails(r)) {
        best = r;
        progress = true;
        i--;
      }
    }
    for (let p = 0; p < best.plan.logins.length && runs < budget; p++) {
      if (best.plan.logins[p]! <= 1) continue;
      const logins = best.plan.logins.map((n, k) => (k === p ? n - 1 : n));
      const starts = best.plan.starts.map((xs, k) => (k === p ? xs.slice(0, -1) : xs));
      const plan = { ...best.plan, logins, starts, faults: best.plan.faults.filter((f) => f.kind !== 'power-cut' || f.phone !== p || f.login < logins[p]!) };
      const r = await runSeed(seed, { ...o, plan, trace: false });
      runs++;
      if (stillFails(r)) {
        best = r;
        progress = true;
        p--;
      }
    }
  }
  return { plan: best.plan, result: best, runs };
}

export interface RangeSummary {
  from: number;
  seeds: number;
  failed: RunResult[];
  seconds: number;
  totals: { faultsInjected: number; invariantChecks: number; events: number; logins: number; frames: number; crashes: number; virtualMs: number; bankAnswers: number; swaps: number; attacks: number };
}

/** Runs seeds from .. from+n-1, telling `onSeed` of each; the figures of the whole range. */
export async function runSeeds(from: number, n: number, o: RunOptions = {}, onSeed: (r: RunResult, done: number) => void | Promise<void> = () => {}): Promise<RangeSummary> {
  const t0 = performance.now();
  const failed: RunResult[] = [];
  const totals = { faultsInjected: 0, invariantChecks: 0, events: 0, logins: 0, frames: 0, crashes: 0, virtualMs: 0, bankAnswers: 0, swaps: 0, attacks: 0 };
  for (let s = from; s < from + n; s++) {
    const r = await runSeed(s, o);
    totals.faultsInjected += r.stats.faultsInjected;
    totals.invariantChecks += r.stats.invariantChecks;
    totals.events += r.stats.events;
    totals.logins += r.stats.logins;
    totals.bankAnswers += r.stats.bankAnswers;
    totals.swaps += r.stats.swaps;
    totals.attacks += r.stats.attacks;
    totals.frames += r.stats.frames;
    totals.crashes += r.stats.crashes;
    totals.virtualMs += r.stats.virtualMs;
    if (!r.ok) failed.push(r);
    await onSeed(r, s - from + 1);
  }
  return { from, seeds: n, failed, seconds: (performance.now() - t0) / 1000, totals };
}
