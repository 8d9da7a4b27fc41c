// The S3 stories (issue 12, "sim, CLI, docs"), each over real sockets against the embedded
// stack with a short period T:
// - attack-shifts-mechanism: bots on their own loopback addresses guess passwords at biz-east
//   above the gateway's limit for several periods (S3.4); the gateway reports each period
//   (S3.5), the policy server's table shows the password rate at biz-east rise to the top and
//   the site's level rise (S3.6, S3.7, S3.10); honest phones with a bank account log in every
//   period and choose their mechanism from the newest table (S3.1, S3.11). The per-period
//   rates and choices go to a CSV and an SVG chart (sim/attack-chart.ts).
// - forged-table, stale-table, expired-table: a registration server whose table source was
//   swapped for a rogue one (sim/rogue-table-source.ts) hands the phone a table signed by
//   another key, an older one recorded earlier, one past its expiry: each refused with its
//   TABLE_* code (S3.11), the held table and the choice unchanged.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { World, TraceHost } from './world.ts';
import { TraceHost as Host } from './world.ts';
import { storyCard, storyNumber, person } from './bank-scenarios.ts';
import { SimSlot } from '../firmware/hal/sim-card.ts';
import type { PersonEntry } from '../firmware/hal/person.ts';
import type { DeviceOutcome } from '../firmware/device.ts';
import type { Phone } from '../firmware/phone.ts';
import type { TraceEvent } from '../firmware/hal/hal.ts';
import { signTable, verifyTable, MECH_STRENGTH, PPM, type AttackTable } from '../protocol/attack-table.ts';
import { MECHANISMS, type Mechanism } from '../protocol/messages.ts';
import type { Stack } from '../deploy/stack.ts';
import { stateFiles } from '../deploy/config.ts';
import { readKeyFile } from '../server-kit/keyfiles.ts';
import { readPolicyKey } from '../policy-server/keys.ts';
import { attackerIp, startAttack } from './attacker.ts';
import { startRogueTableSource } from './rogue-table-source.ts';
import { writePeriodCsv, writePeriodChart, type PeriodRow } from './attack-chart.ts';

export interface AttackContext {
  world: World;
  host: TraceHost;
  say(line: string): void;
  /** Where a story writes what a person looks at (CSV, SVG). */
  out: string;
}
type Result = { ok: boolean; verdict: string; outcomes: DeviceOutcome[] };
export type AttackStory = { summary: string; world: Record<string, unknown>; run(c: AttackContext): Promise<Result> };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pct = (ppm: number) => `${(ppm / 10_000).toFixed(1)} %`;

/** The attacked site and mechanism of attack-shifts-mechanism. */
export const ATTACKED = { site: 'biz-east', mech: 'password' as Mechanism };

// ---- the honest phones ----

/** What one plug-in did: its outcome and its own trace lines. */
interface Plug { o: DeviceOutcome; events: TraceEvent[]; phone: Phone }

/** A phone with a SIM card and a bank account of its own (phone index i: even = region east, biz-east). */
interface Honest { name: string; ip: string; slot: SimSlot; phone: Phone }

function recorder(c: AttackContext): { host: Host; events: TraceEvent[] } {
  const events: TraceEvent[] = [];
  return { events, host: new Host((e) => {
    events.push(e);
    c.host.trace(e);
  }) };
}

async function run(c: AttackContext, h: Honest, phone: Phone, events: TraceEvent[], label: string): Promise<Plug> {
  h.phone = phone;
  const o = await phone.device.plugIn();
  const choice = choiceOf(events);
  const bank = o.ok ? o.bank : undefined;
  c.say(`${label} ${h.ip}: ${o.ok ? `logged in to ${o.server}` : `${o.kind}: ${o.reason}`}${bank ? `; bank: ${bank.kind}` : ''}${choice ? `; chose ${choice.mech} (${choice.why})` : ''}`);
  return { o, events, phone };
}

/** Plugs the phone in again with its owner at the keypad doing `action`. */
async function plug(c: AttackContext, h: Honest, action: PersonEntry['action'], label: string): Promise<Plug> {
  const { host, events } = recorder(c);
  return run(c, h, c.world.replug(h.phone, host, h.ip, { sim: h.slot, person: person(action, h.name) }), events, label);
}

/** Phone i (even: region east, so biz-east) with its own SIM, registered at the bank. */
async function honestPhone(c: AttackContext, i: number): Promise<{ h: Honest; reg: Plug }> {
  const name = `owner${i}`;
  const slot = new SimSlot(storyCard(40 + i, storyNumber(40 + i)));
  const { host, events } = recorder(c);
  const made = await c.world.phone(i, host, { sim: slot, person: person('register', name) });
  const h: Honest = { name, ip: made.ip, slot, phone: made.phone };
  return { h, reg: await run(c, h, made.phone, events, 'bank registration') };
}

/** The S3.1 choice of a plug-in, as the phone traced it: the mechanism, the table it used, the rates it saw, what it can prove. */
export interface Choice { site: string; mech: Mechanism; version: number | null; rates: Partial<Record<Mechanism, number>>; capable: Mechanism[]; why: string }

export function choiceOf(events: readonly TraceEvent[]): Choice | null {
  const e = events.find((x) => x.feature === 'S3.1');
  if (!e) return null;
  const m = /^(\w+) \((.*); this device proves ([a-z, ]+)\)$/.exec(e.detail);
  if (!m || !(MECHANISMS as readonly string[]).includes(m[1]!)) return null;
  const rates: Partial<Record<Mechanism, number>> = {};
  for (const r of m[2]!.matchAll(/(password|otp|fingerprint) ([0-9.]+) %/g)) rates[r[1] as Mechanism] = Math.round(Number(r[2]) * 10_000);
  const v = /table v(\d+)/.exec(m[2]!);
  return { site: e.step.replace(/^mechanism for /, ''), mech: m[1] as Mechanism, version: v ? Number(v[1]) : null, rates, capable: m[3]!.split(', ') as Mechanism[], why: m[2]!.split(':')[0]! };
}

/**
 * THE CHOICE CHECK (S3.1), the one place that says what an honest phone's choice must be
 * under attack. The phone must move away from the most attacked mechanism as far as what it
 * can prove allows: when one of its mechanisms, at or above the site's floor, has a lower rate
 * than the attacked one in the table it chose with, it must not choose the attacked one; when
 * none has (a phone that proves the password only: no one-time code or fingerprint provisioned
 * at that site, or the code of this time step already used), the choice cannot move and must
 * stay. What a phone proves is its chip's word, traced with each choice ("this device proves
 * password, otp, fingerprint").
 */
export function choiceCheck(ch: Choice, attacked: Mechanism, floor: Mechanism = 'password'): { ok: boolean; canMove: boolean; why: string } {
  const top = ch.rates[attacked] ?? 0;
  const better = ch.capable.filter((m) => m !== attacked && MECH_STRENGTH[m] >= MECH_STRENGTH[floor] && (ch.rates[m] ?? 0) < top);
  if (better.length > 0) {
    return ch.mech !== attacked ? { ok: true, canMove: true, why: `moved to ${ch.mech}` } : { ok: false, canMove: true, why: `stayed on ${attacked} though it proves ${better.join(', ')} at a lower rate` };
  }
  const why = ch.capable.length <= 1 ? 'no other mechanism provisioned: the choice cannot move' : `no mechanism it proves is less attacked than ${attacked}`;
  return ch.mech === attacked || ch.capable.every((m) => m === attacked) ? { ok: true, canMove: false, why } : { ok: true, canMove: false, why: `${why} (chose ${ch.mech})` };
}


// ---- the table as the policy server published it ----

async function describeTable(stack: Stack, t: AttackTable, periodId: number): Promise<string> {
  const out: string[] = [];
  for (const s of t.sites) {
    const c = await stack.policy.store.sitePeriod(s.site, periodId - 1);
    out.push(`${s.site} level ${s.level}, degree ${pct(s.degreePpm)}: ${s.mechs.map((m) => `${m.mech} ${pct(m.ratePpm)}`).join(', ')} (${c?.total ?? 0} attack(s) in period ${periodId - 1})`);
  }
  return out.join(' | ');
}

/** Waits (bounded) for the policy server to publish a table with version > `after`. */
async function nextTable(stack: Stack, after: number, deadlineMs: number): Promise<{ table: AttackTable; periodId: number } | null> {
  const until = Date.now() + deadlineMs;
  while (Date.now() < until) {
    const l = stack.policy.latest();
    if (l.table.version > after) return { table: l.table, periodId: l.periodId };
    await sleep(25);
  }
  return null;
}

// ---- attack-shifts-mechanism ----

/** The story's world: T = 1.5 s, the gateway's limit 4 openings per 1 s window, levels at 3 and 30 attacks per period. */
const SHIFT_WORLD = {
  bankMode: 1 as const,
  policyPeriodMs: 1_500,
  attackLimits: { windowMs: 1_000, limit: 4 },
  policyThresholds: [3, 30],
  tablePollMs: 100,
};
const BOTS = 5;
const CALM_ROUNDS = 1;
const ATTACK_ROUNDS = 3;
const AFTER_ROUNDS = 1;

async function attackShiftsMechanism(c: AttackContext): Promise<Result> {
  const stack = c.world.stack as Stack;
  const T = SHIFT_WORLD.policyPeriodMs;
  const a = await honestPhone(c, 0);
  const b = await honestPhone(c, 2);
  const phones = [a.h, b.h];
  const outcomes: DeviceOutcome[] = [a.reg.o, b.reg.o];
  if (!phones.every((_, i) => [a, b][i]!.reg.o.ok)) return { ok: false, verdict: 'an honest phone did not register at the bank', outcomes };
  // What the phones can prove is the chip's word (GET DATA person status, firmware/person-proof.ts
  // personMechanisms), traced with each S3.1 choice; the first choice tells it for the story.
  let capable: Mechanism[] | null = null;

  const rows: PeriodRow[] = [];
  const problems: string[] = [];
  const choices: { round: number; phase: string; choice: Choice; check: ReturnType<typeof choiceCheck> }[] = [];
  let version = stack.policy.latest().table.version;
  let attack: ReturnType<typeof startAttack> | null = null;
  let attackFrom = Infinity;
  let calmFrom = -Infinity;
  const rounds = CALM_ROUNDS + ATTACK_ROUNDS + AFTER_ROUNDS;
  try {
    for (let round = 0; round < rounds; round++) {
      const phase = round < CALM_ROUNDS ? 'calm' : round < CALM_ROUNDS + ATTACK_ROUNDS ? 'attack' : 'after';
      if (phase === 'attack' && !attack) {
        const bots = Array.from({ length: BOTS }, (_, i) => attackerIp(i));
        attack = startAttack(stack.gatewayUrl, bots, ATTACKED.site, ATTACKED.mech, SHIFT_WORLD.attackLimits.limit + 2, 400);
        attackFrom = Math.floor(Date.now() / T);
        c.say(`${BOTS} bots (${bots[0]} .. ${bots.at(-1)}) start guessing ${ATTACKED.mech}s at ${ATTACKED.site}, ${SHIFT_WORLD.attackLimits.limit + 2} openings per burst, a burst every 400 ms each`);
      }
      if (phase === 'after' && attack) {
        await attack.stop();
        c.say(`the bots stop after ${attack.sent} guesses`);
        attack = null;
        calmFrom = Math.floor(Date.now() / T) + 1;
      }
      // The table of a period wholly in this phase: its statistics are of the period before it.
      let t = await nextTable(stack, version, 4 * T);
      while (t && ((phase === 'attack' && t.periodId - 1 <= attackFrom) || (phase === 'after' && t.periodId - 1 < calmFrom))) t = await nextTable(stack, t.table.version, 4 * T);
      if (!t) {
        problems.push(`round ${round}: no new table within ${4 * T} ms`);
        break;
      }
      version = t.table.version;
      c.say(`[round ${round}, ${phase}] table v${version} (period ${t.periodId}): ${await describeTable(stack, t.table, t.periodId)}`);
      // The registration servers poll every tablePollMs: give them three polls to have it.
      await sleep(3 * SHIFT_WORLD.tablePollMs);
      const counts = new Map<string, number>();
      for (const h of phones) {
        const p = await plug(c, h, 'login', `  [round ${round}] login`);
        outcomes.push(p.o);
        const ch = choiceOf(p.events);
        if (!p.o.ok || !p.o.bank || p.o.bank.kind !== 'page') problems.push(`round ${round}: ${h.ip} did not reach its account page`);
        if (!ch) {
          problems.push(`round ${round}: ${h.ip} traced no S3.1 choice`);
          continue;
        }
        counts.set(`${ch.site}/${ch.mech}`, (counts.get(`${ch.site}/${ch.mech}`) ?? 0) + 1);
        const check = choiceCheck(ch, ATTACKED.mech);
        choices.push({ round, phase, choice: ch, check });
        if (!capable) {
          capable = ch.capable;
          c.say(`the honest phones prove: ${capable.join(', ')} (their chips' person status)`);
        }
        // What a phone proves may change from one login to the next (a one-time code gives one
        // code per 30-s step: used, it is no candidate until the next): the check takes each choice's own.
      }
      const last = choices.filter((x) => x.round === round);
      if (last.length) c.say(`  [round ${round}] choices: ${last.map((x) => `${x.choice.mech} (table v${x.choice.version ?? '-'}, ${x.check.why})`).join('; ')}`);
      for (const s of t.table.sites) {
        const cnt = await stack.policy.store.sitePeriod(s.site, t.periodId - 1);
        for (const m of s.mechs) {
          rows.push({ round, phase, version, periodId: t.periodId, site: s.site, level: s.level, degreePpm: s.degreePpm, mech: m.mech, ratePpm: m.ratePpm, attacks: cnt ? cnt[m.mech] : 0, choices: counts.get(`${s.site}/${m.mech}`) ?? 0 });
        }
      }
    }
  } finally {
    await attack?.stop();
  }

  // What a person looks at.
  const csv = join(c.out, 'attack-shifts-mechanism.csv');
  const svg = join(c.out, 'attack-shifts-mechanism.svg');
  writePeriodCsv(csv, rows);
  await writePeriodChart(svg, rows, { site: ATTACKED.site, title: `Bots guess ${ATTACKED.mech}s at ${ATTACKED.site}: the table and the choices, per period` });
  c.say(`per-period rates and choices: ${csv}; chart: ${svg}`);

  // The verdict: the table shift, then the choice (choiceCheck).
  const at = (phase: string, site: string, mech: Mechanism) => rows.filter((r) => r.phase === phase && r.site === site && r.mech === mech);
  const attacked = at('attack', ATTACKED.site, ATTACKED.mech);
  const topped = attacked.filter((r) => r.ratePpm === PPM);
  const others = rows.filter((r) => r.phase === 'attack' && r.mech !== ATTACKED.mech && r.ratePpm > 0);
  const calm = rows.filter((r) => r.phase === 'calm' && r.ratePpm > 0);
  const levelUp = attacked.some((r) => r.level > 1);
  const west = rows.filter((r) => r.site !== ATTACKED.site && r.ratePpm > 0);
  if (calm.length) problems.push('a rate above 0 before any attack');
  if (!topped.length) problems.push(`no table showed the ${ATTACKED.mech} rate at ${ATTACKED.site} at the top`);
  if (others.length) problems.push(`another mechanism showed attacks: ${others.map((r) => `${r.site}/${r.mech}`).join(', ')}`);
  if (west.length) problems.push('a site nobody attacked showed attacks');
  if (!levelUp) problems.push(`${ATTACKED.site}'s level did not rise`);
  const underAttack = choices.filter((x) => (x.choice.rates[ATTACKED.mech] ?? 0) > 0);
  if (!underAttack.length) problems.push('no honest login chose with a table showing the attack');
  for (const x of choices.filter((y) => !y.check.ok)) problems.push(`round ${x.round}: ${x.check.why}`);
  const canMove = underAttack.some((x) => x.check.canMove);
  const choiceLine = canMove ? `the honest phones moved to ${[...new Set(underAttack.map((x) => x.choice.mech))].join(', ')}` : `the honest phones stayed on ${ATTACKED.mech}: ${underAttack[0]?.check.why ?? 'no choice under attack'}`;
  const verdict = problems.length
    ? problems.join('; ')
    : `${ATTACKED.mech} at ${ATTACKED.site} rose to ${pct(PPM)} in ${topped.length} of ${attacked.length} attacked period(s), level up to ${Math.max(...attacked.map((r) => r.level))}; ${choiceLine}`;
  return { ok: problems.length === 0, verdict, outcomes };
}

// ---- forged-table, stale-table, expired-table ----

/** The three stories' world: T = 1 s so a newer table comes soon, tables valid for a minute (the held one stays valid through the story). */
const TABLE_WORLD = { bankMode: 1 as const, policyPeriodMs: 1_000, policyTableLifetimeMs: 60_000, tablePollMs: 100 };

type Bad = 'forged' | 'stale' | 'expired';
const CODE: Record<Bad, string> = { forged: 'TABLE_BAD_SIGNATURE', stale: 'TABLE_STALE', expired: 'TABLE_EXPIRED' };

function held(phone: Phone): Uint8Array | null {
  const r = phone.device.storage.loadLogin();
  return r.ok && r.value?.table ? Uint8Array.from(r.value.table) : null;
}
const same = (a: Uint8Array | null, b: Uint8Array | null) => a !== null && b !== null && a.length === b.length && a.every((x, i) => x === b[i]);

async function badTable(c: AttackContext, kind: Bad): Promise<Result> {
  const stack = c.world.stack as Stack;
  const files = stateFiles(stack.stateDir);
  const key = stack.factoryPolicy.key!;
  // The stale story replays a table the policy server really signed: the first one, recorded now.
  const recorded = stack.policy.latest().signed;
  if (kind === 'stale') {
    const t = await nextTable(stack, stack.policy.latest().table.version, 5_000);
    if (!t) return { ok: false, verdict: 'the policy server published no second table', outcomes: [] };
    await sleep(3 * TABLE_WORLD.tablePollMs);
  }
  const { h, reg } = await honestPhone(c, 0);
  const before = await plug(c, h, 'login', 'login with the good table');
  const heldBefore = held(before.phone);
  const hv = heldBefore ? verifyTable(heldBefore, key, 0, null) : null;
  const heldVersion = hv?.ok ? hv.table.version : null;
  const choiceBefore = choiceOf(before.events);
  if (!reg.o.ok || !before.o.ok || heldVersion === null || !choiceBefore) return { ok: false, verdict: `the phone did not get a good table first (held ${heldVersion ?? 'none'})`, outcomes: [reg.o, before.o] };
  c.say(`the phone holds table v${heldVersion}; it chose ${choiceBefore.mech} (${choiceBefore.why})`);

  // The bad table: made as the attacker would.
  const now = Date.now();
  const live = stack.policy.latest().table;
  // What an attacker wants a phone to believe: the weakest mechanism is the safe one.
  const downgrade = (t: AttackTable): AttackTable => ({ ...t, sites: t.sites.map((s) => ({ ...s, mechs: s.mechs.map((m) => ({ ...m, ratePpm: m.mech === 'password' ? 0 : Math.floor(PPM / (s.mechs.length - 1)) })) })) });
  let bytes: Uint8Array;
  let what: string;
  if (kind === 'forged') {
    // Signed by a key of its own, with a version far ahead so that only the signature is wrong.
    bytes = signTable(downgrade({ ...live, version: heldVersion + 100, issuedAt: now, expiresAt: now + 60_000 }), randomBytes(32));
    what = `table v${heldVersion + 100} rating the password safest, signed by another key`;
  } else if (kind === 'stale') {
    bytes = recorded;
    const v = verifyTable(recorded, key, 0, null);
    what = `table v${v.ok ? v.table.version : '?'}, really signed by the policy server, recorded earlier and replayed`;
  } else {
    // A table the policy server signed a while ago (its own key), newer than the one held: a
    // source cut off from the policy server for longer than a table lives still hands it on.
    const priv = readPolicyKey(files.policyKey).privateKey;
    // Its version far ahead, as in the forged story, so that only its expiry is wrong (a genuine
    // push of the next version meanwhile must not make it merely stale).
    bytes = signTable(downgrade({ ...live, version: heldVersion + 100, issuedAt: now - 120_000, expiresAt: now - 60_000 }), priv);
    what = `table v${heldVersion + 100}, signed by the policy server, expired a minute ago`;
  }
  const rogue = await startRogueTableSource(readKeyFile(files.adminKey, 'admin key'), () => bytes);
  try {
    await stack.stopReg('reg-primary');
    await stack.startReg('reg-primary', { policy: rogue.ref });
    c.say(`reg-primary's table source swapped: it now hands on a ${what}`);
    const after = await plug(c, h, 'login', 'login with the bad table');
    const refused = after.events.find((e) => e.feature === 'S3.11' && !e.ok);
    const heldAfter = held(after.phone);
    const choiceAfter = choiceOf(after.events);
    const problems: string[] = [];
    if (rogue.polls() === 0) problems.push('the rogue source was never polled');
    if (!refused || !refused.detail.includes(`(${CODE[kind]}:`)) problems.push(`not refused with ${CODE[kind]} (${refused?.detail ?? 'no refusal traced'})`);
    // The gateway may push the policy server's genuine next table into the same session (T = 1 s
    // here): that one may be kept. The bad one never: the held table is the one before or a
    // genuine newer one, and the choice is made with the held table.
    const genuine = heldAfter ? verifyTable(heldAfter, key, Date.now(), null) : null;
    if (same(heldAfter, bytes)) problems.push('the bad table is held');
    else if (!same(heldBefore, heldAfter) && !(genuine?.ok && genuine.table.version > heldVersion)) problems.push('the held table changed to one that is not a genuine newer one');
    const heldNow = genuine?.ok ? genuine.table.version : null;
    // Chosen with the table held at that moment: the one before, or a genuine newer one pushed
    // before the choice (a push after it changes the held table, not the choice); never the bad one.
    if (!choiceAfter || (choiceAfter.version !== heldVersion && choiceAfter.version !== heldNow)) problems.push(`the choice was not made with a table the phone held: v${choiceAfter?.version ?? 'none'}, held v${heldVersion} then v${heldNow ?? 'none'}`);
    if (!after.o.ok || after.o.bank?.kind !== 'page') problems.push('the login did not go on to the account page');
    const ok = problems.length === 0;
    return {
      ok,
      verdict: ok ? `${CODE[kind]}: ${refused!.detail}; holds v${heldNow}${heldNow === heldVersion ? ' still' : ' (a genuine newer table pushed meanwhile)'}, chooses ${choiceAfter!.mech} with it` : problems.join('; '),
      outcomes: [reg.o, before.o, after.o],
    };
  } finally {
    await rogue.close();
  }
}

export const ATTACK_STORIES: Record<string, AttackStory> = {
  'attack-shifts-mechanism': {
    summary: 'bots guess passwords at biz-east above the gateway limit for several periods: the table shows the password rate there rise to the top; honest phones choose away from it as far as they can prove another mechanism (S3.1-S3.11); CSV and SVG chart in --out',
    world: SHIFT_WORLD,
    run: attackShiftsMechanism,
  },
  'forged-table': {
    summary: 'a registration server hands on a table signed by another key: refused (TABLE_BAD_SIGNATURE), the held table and the choice unchanged (S3.11)',
    world: TABLE_WORLD,
    run: (c) => badTable(c, 'forged'),
  },
  'stale-table': {
    summary: 'a registration server replays an older table the policy server signed: refused (TABLE_STALE), the held table and the choice unchanged (S3.11)',
    world: TABLE_WORLD,
    run: (c) => badTable(c, 'stale'),
  },
  'expired-table': {
    summary: 'a registration server hands on a newer table whose expiry has passed: refused (TABLE_EXPIRED), the held table and the choice unchanged (S3.11)',
    world: TABLE_WORLD,
    run: (c) => badTable(c, 'expired'),
  },
};
