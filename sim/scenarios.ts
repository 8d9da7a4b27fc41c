// The S0 stories, each run over real sockets against the embedded stack in a fresh state
// directory. A story passes when it ends as the patent says and the phone is not locked out
// (where the story allows a login, it logs in). The device-profile stories (S0.15) run the
// same programs in a mobile phone and in an ATM with a bank card inserted.
import { makeTempDir, removeTempDir } from './lifetime.ts';
import { startWorld, TraceHost, type World, type WorldOptions } from './world.ts';
import { startTamperProxy } from './tamper-proxy.ts';
import { listIso } from '../firmware/zones/iso9660.ts';
import { zoneOf, ZoneType } from '../firmware/zones/layout.ts';
import { UPMON_PROGRAM } from '../firmware/factory/image.ts';
import type { DeviceOutcome } from '../firmware/device.ts';
import type { Phone } from '../firmware/phone.ts';
import type { TraceEvent } from '../firmware/hal/hal.ts';
import { firstIdentifier, maskCardNumber } from '../firmware/first-identifier.ts';
import { BANK_STORIES, person } from './bank-scenarios.ts';
import { ATTACK_STORIES } from './attack-scenarios.ts';
import { dropStackSchemas } from '../deploy/stack-schemas.ts';

export interface StoryResult {
  ok: boolean;
  /** One line: what happened against what the patent says. */
  verdict: string;
  outcomes: DeviceOutcome[];
  trace: TraceEvent[];
}

export interface StoryContext {
  world: World;
  host: TraceHost;
  /** Prints a headline between boots. */
  say(line: string): void;
  /** Where a story writes what a person looks at (the S3 story's CSV and SVG): runStory's `out`, else the state directory. */
  out: string;
}

type Story = { summary: string; world?: Partial<WorldOptions>; run(c: StoryContext): Promise<Omit<StoryResult, 'trace'>> };

async function boot(c: StoryContext, p: Phone): Promise<DeviceOutcome> {
  const o = await p.device.plugIn();
  c.say(`-> ${o.ok ? `logged in to ${o.server} with gen ${o.gen} (via ${o.via})` : `${o.kind}: ${o.reason}`} in ${Math.round(o.ms)} ms`);
  return o;
}

const loggedIn = (o: DeviceOutcome, via?: 'registration' | 'saved') => o.ok && (via === undefined || o.via === via);

export const STORIES: Record<string, Story> = {
  'first-boot': {
    summary: 'a new phone registers, gets its credentials and logs in (S0.3-S0.12)',
    async run(c) {
      const { phone } = await c.world.phone(0, c.host);
      const o = await boot(c, phone);
      return { ok: loggedIn(o, 'registration'), verdict: 'first boot logs in through the registration server', outcomes: [o] };
    },
  },
  'second-boot-rotates': {
    summary: 'the second boot gets a new password and overwrites the saved copy (S0.14)',
    async run(c) {
      const { phone, ip } = await c.world.phone(0, c.host);
      const a = await boot(c, phone);
      c.say('replug');
      const b = await boot(c, c.world.replug(phone, c.host, ip));
      const ok = a.ok && b.ok && b.gen > a.gen && c.host.has('S0.14', true);
      return { ok, verdict: `password generation ${a.ok ? a.gen : '?'} -> ${b.ok ? b.gen : '?'}, change confirmed`, outcomes: [a, b] };
    },
  },
  'primary-down': {
    summary: 'the primary registration server is down: the backup serves the phone (S0.6)',
    async run(c) {
      await c.world.stack.stopReg('reg-primary');
      c.say('reg-primary stopped');
      const { phone, ip } = await c.world.phone(0, c.host);
      const a = await boot(c, phone);
      await c.world.stack.startReg('reg-primary');
      c.say('reg-primary back; replug');
      const b = await boot(c, c.world.replug(phone, c.host, ip));
      return { ok: loggedIn(a, 'registration') && loggedIn(b, 'registration') && c.host.has('S0.6', false), verdict: 'backup served the phone; rotation state agrees when the primary is back', outcomes: [a, b] };
    },
  },
  'both-down-uses-saved': {
    summary: 'no registration server answers: the main program logs in with the saved copy (S0.13)',
    async run(c) {
      const { phone, ip } = await c.world.phone(0, c.host);
      const a = await boot(c, phone);
      await c.world.stack.stopReg('reg-primary');
      await c.world.stack.stopReg('reg-backup');
      c.say('both registration servers stopped; replug');
      const b = await boot(c, c.world.replug(phone, c.host, ip));
      return { ok: loggedIn(a) && loggedIn(b, 'saved'), verdict: 'logged in from the saved copy', outcomes: [a, b] };
    },
  },
  'unknown-device': {
    summary: 'a phone the registration server does not know gets "not found"; the main program exits (S0.9)',
    async run(c) {
      // Its firmware is known (another phone of the batch was enrolled with it); this phone is not.
      await c.world.stack.enroll(c.world.enrollment(1));
      const { phone } = await c.world.phone(0, c.host, { enroll: false });
      const o = await boot(c, phone);
      const ok = !o.ok && o.kind === 'not-found' && c.host.notices.length === 1;
      return { ok, verdict: `notice shown: ${c.host.notices[0] ?? '(none)'}`, outcomes: [o] };
    },
  },
  'tampered-reply': {
    summary: 'a man in the middle alters the hello reply: the phone ends that session (S0.7) and uses the backup',
    async run(c) {
      const o = await boot(c, (await c.world.phone(0, c.host)).phone);
      const refused = c.host.events.find((e) => e.feature === 'S0.7' && !e.ok);
      return { ok: loggedIn(o, 'registration') && refused !== undefined, verdict: `tampered reply refused (${refused?.detail ?? 'not detected'}); logged in through the backup`, outcomes: [o] };
    },
  },
  'power-cut-while-saving': {
    summary: 'power is cut while the new password is being saved; after a replug the phone still logs in (S0.12, S0.14)',
    async run(c) {
      const { phone, ip } = await c.world.phone(0, c.host);
      const a = await boot(c, phone);
      let ops = 0;
      phone.chip.onOperation = () => void ops++;
      phone.chip.faults.powerCutAfterOps = 1; // the erase of the slot completes, the first program is cut
      phone.chip.faults.tornBytes = 7;
      c.say('replug with a power cut armed in the middle of the next save');
      const p2 = c.world.replug(phone, c.host, ip);
      const b = await boot(c, p2);
      phone.chip.onOperation = null;
      c.say('power back; replug');
      const d = await boot(c, c.world.replug(p2, c.host, ip));
      const ok = loggedIn(a) && !b.ok && b.kind === 'power-lost' && loggedIn(d);
      return { ok, verdict: `cut after ${ops} flash operation(s) of the save; the next boot logged in`, outcomes: [a, b, d] };
    },
  },
  'corrupt-virtual-zone': {
    summary: 'a bit of UPMon in the virtual zone rots: the boot stops with a clear status (S0.3)',
    async run(c) {
      const { phone } = await c.world.phone(0, c.host);
      const v = zoneOf(phone.table, ZoneType.VIRTUAL);
      const entries = listIso((lba, n) => phone.chip.peek(v.offset + lba * 2048, n * 2048)) ?? [];
      const upmon = entries.find((e) => e.name === UPMON_PROGRAM);
      if (!upmon) return { ok: false, verdict: 'UPMON.EXE not found in the virtual zone', outcomes: [] };
      phone.chip.flipBit(v.offset + upmon.lba * 2048 + 100, 3);
      c.say(`flipped bit 3 of UPMON.EXE byte 100 (flash 0x${(v.offset + upmon.lba * 2048 + 100).toString(16)})`);
      const o = await boot(c, phone);
      return { ok: !o.ok && o.kind === 'boot-failed' && /BOOT_HASH_MISMATCH/.test(o.reason), verdict: `boot stopped: ${o.ok ? 'no' : o.reason}`, outcomes: [o] };
    },
  },
  'phone-profile-login': {
    summary: "a mobile phone: its own OS launches UPMon (no AutoRun), it registers and logs into the business server, then opens a bank account bound to its own SIM and logs into it (S0.15, S4)",
    world: { profile: 'mobile', bankMode: 1 },
    async run(c) {
      const first = await c.world.phone(0, c.host, { person: person('register', 'mia') });
      const id = firstIdentifier(first.phone.device);
      c.say(id.ok && id.kind === 'sim' ? `the phone's own SIM: ${id.info.cardType}, ICCID ending ${id.info.iccid.slice(-4)}` : `no SIM: ${id.ok ? id.kind : id.reason}`);
      const reg = await boot(c, first.phone);
      const again = c.world.replug(first.phone, c.host, first.ip, { person: person('login', 'mia') });
      const o = await boot(c, again);
      const launched = c.host.events.some((e) => e.feature === 'S0.15' && e.step === 'launch' && e.ok);
      const autorun = c.host.events.some((e) => e.step === 'autorun');
      const page = o.ok && o.bank?.kind === 'page' ? o.bank : null;
      const ok = loggedIn(reg, 'registration') && reg.ok && reg.bank?.kind === 'registered' && page !== null && launched && !autorun && id.ok && id.kind === 'sim';
      return { ok, verdict: `launched by the phone's OS${autorun ? ' (but an AutoRun step ran)' : ''}, registered and logged in${o.ok ? ` to ${o.server}` : ': no'}; bank: ${page ? `account page ${page.account} found by its own SIM` : 'no account page'}`, outcomes: [reg, o] };
    },
  },
  'atm-card-login': {
    summary: "a bank card in an ATM: the ATM's program registers the card and logs into the business server through the card's secure controller, then into the bank account bound to the card number, its first identifier (S0.15, S4)",
    world: { profile: 'atm', bankMode: 1 },
    async run(c) {
      const first = await c.world.phone(0, c.host, { person: person('register', 'omar') });
      c.say(`card ${maskCardNumber(first.serial)} inserted`);
      const reg = await boot(c, first.phone);
      const id = firstIdentifier(first.phone.device);
      const again = c.world.replug(first.phone, c.host, first.ip, { person: person('login', 'omar') });
      const o = await boot(c, again);
      const page = o.ok && o.bank?.kind === 'page' ? o.bank : null;
      const ok = loggedIn(reg, 'registration') && reg.ok && reg.bank?.kind === 'registered' && page !== null && id.ok && id.kind === 'card' && id.cardNumber === first.serial && !c.host.events.some((e) => e.step === 'autorun');
      return { ok, verdict: `card ${maskCardNumber(first.serial)} registered and logged in${o.ok ? ` to ${o.server}` : ': no'}; first identifier: ${id.ok && id.kind === 'card' ? `the card number ${maskCardNumber(id.cardNumber)}` : 'none'}; bank: ${page ? `account page ${page.account} (mode ${page.mode})` : 'no account page'}`, outcomes: [reg, o] };
    },
  },
  // S4 (issue 11): the bank, sim/bank-scenarios.ts.
  ...BANK_STORIES,
  // S3 (issue 12): the attack table, sim/attack-scenarios.ts.
  ...ATTACK_STORIES,
};

/** Runs one story in a fresh state directory (removed afterwards unless keepState, and at exit in any case: sim/lifetime.ts). */
export async function runStory(name: string, opts: { print?: (line: string) => void; trace?: (e: TraceEvent) => void; keepState?: boolean; seed?: number; world?: Partial<WorldOptions>; out?: string } = {}): Promise<StoryResult> {
  const story = STORIES[name];
  if (!story) throw new Error(`unknown scenario ${name}`);
  const stateDir = makeTempDir(`usbphone-${name}-`);
  let proxy: Awaited<ReturnType<typeof startTamperProxy>> | null = null;
  let world: World | null = null;
  try {
    const wopts: WorldOptions = { stateDir, gatewayPort: 0, seed: opts.seed ?? 1, ...story.world, ...opts.world };
    if (name === 'tampered-reply') {
      // The image's primary endpoint goes through the tampering proxy; the backup does not.
      let target = '';
      proxy = await startTamperProxy(() => target);
      world = await startWorld({ ...wopts, regPrimary: `${proxy.url}reg-primary` });
      target = world.stack.gatewayUrl;
    } else world = await startWorld(wopts);
    const host = new TraceHost(opts.trace);
    const r = await story.run({ world, host, say: (l) => opts.print?.(l), out: opts.out ?? stateDir });
    return { ...r, trace: host.events };
  } finally {
    await proxy?.close();
    await world?.stop();
    if (!opts.keepState) {
      // On PostgreSQL by STORE_URL (issue 16) the stores' schemas, named from the state
      // directory, go with it; schemas the caller named are the caller's.
      const st = world?.stack.store;
      if (st?.choice.kind === 'postgres' && st.choice.schema === undefined && st.prefix) await dropStackSchemas(st.choice.url, st.prefix);
      removeTempDir(stateDir);
    }
  }
}
