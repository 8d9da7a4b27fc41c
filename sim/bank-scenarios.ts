// The bank stories of S4 (issue 11), each over real sockets against the embedded stack: a
// phone with a SIM card (firmware/hal/sim-card.ts) and a person at its keypad
// (firmware/hal/person.ts) logs into the business server, then registers at or logs into
// the bank on the same sealed channel. A story passes when it ends as S4 says.
import type { World } from './world.ts';
import type { TraceHost } from './world.ts';
import { SimSlot, type SimCardSpec } from '../firmware/hal/sim-card.ts';
import type { PersonEntry, PersonInput } from '../firmware/hal/person.ts';
import type { DeviceOutcome } from '../firmware/device.ts';
import type { BankStepOutcome } from '../firmware/main-program.ts';
import type { Phone } from '../firmware/phone.ts';
import { withLuhn } from '../protocol/line-ids.ts';
import type { Stack } from '../deploy/stack.ts';

/** Card n of the stories: a USIM with a valid ICCID and IMSI, and the number on it when `msisdn`. */
export function storyCard(n: number, msisdn?: string): SimCardSpec {
  const c: SimCardSpec = { iccid: withLuhn(`8944200000000${String(n).padStart(6, '0')}`), imsi: `23420000${String(n).padStart(7, '0')}`, cardType: 'USIM' };
  return msisdn ? { ...c, msisdn } : c;
}
export const storyNumber = (n: number) => `+4477009${String(n).padStart(5, '0')}`;
/** The person of the stories. Never printed, never traced (sim/capture.test.ts searches for it). */
export const STORY_PASSWORD = 'vivid-otter-27-lantern';

/** The person at the keypad; `mechanisms`: what they agree to use this time (default whatever the phone can prove, S3.1). */
export const person = (action: PersonEntry['action'], name = 'alice', password = STORY_PASSWORD, mechanisms?: PersonEntry['mechanisms']): PersonInput => ({ bankEntry: () => ({ action, name, password, ...(mechanisms ? { mechanisms } : {}) }) });

export interface BankContext {
  world: World;
  host: TraceHost;
  say(line: string): void;
}

type Result = { ok: boolean; verdict: string; outcomes: DeviceOutcome[] };

const bankOf = (o: DeviceOutcome): BankStepOutcome | undefined => (o.ok ? o.bank : undefined);
const describe = (b: BankStepOutcome | undefined) =>
  !b ? 'no bank step' : b.kind === 'refused' ? `refused ${b.code}` : b.kind === 'no-proof' ? `no proof ${b.code}` : b.kind === 'failed' ? `failed: ${b.reason}` : b.kind === 'page' ? `account page ${b.account} (mode ${b.mode}, ${b.mech})` : `registered (mode ${b.mode})`;
const refusedWith = (o: DeviceOutcome, code: string) => bankOf(o)?.kind === 'refused' && (bankOf(o) as { code: string }).code === code;
const is = (o: DeviceOutcome, kind: BankStepOutcome['kind'], mode?: 1 | 2) => bankOf(o)?.kind === kind && (mode === undefined || (bankOf(o) as { mode: number }).mode === mode);

async function plug(c: BankContext, p: Phone, label: string): Promise<DeviceOutcome> {
  const o = await p.device.plugIn();
  c.say(`${label}: ${o.ok ? `logged in to ${o.server}; bank: ${describe(o.bank)}` : `${o.kind}: ${o.reason}`} in ${Math.round(o.ms)} ms`);
  return o;
}

/** Phone i with `slot` and `who` at its keypad; replug() plugs it in again with another person (and the same slot). */
async function phoneWith(c: BankContext, i: number, slot: SimSlot, who: PersonInput) {
  const { phone, ip } = await c.world.phone(i, c.host, { sim: slot, person: who });
  return { phone, again: (p: Phone, next: PersonInput) => c.world.replug(p, c.host, ip, { sim: slot, person: next }) };
}

const operator = (c: BankContext) => (c.world.stack as Stack).operator()!.store;

export type BankStory = { summary: string; world: { bankMode: 1 | 2 }; run(c: BankContext): Promise<Result> };

export const BANK_STORIES: Record<string, BankStory> = {
  'bank-register-and-login': {
    summary: 'mode 1: the phone registers its SIM at the bank, then logs in: the account page, found by the ICCID (S4.1-S4.3, S4.7, S4.8)',
    world: { bankMode: 1 },
    async run(c) {
      const slot = new SimSlot(storyCard(1, storyNumber(1)));
      const { phone, again } = await phoneWith(c, 0, slot, person('register'));
      const a = await plug(c, phone, 'register');
      const b = await plug(c, again(phone, person('login')), 'login');
      return { ok: is(a, 'registered', 1) && is(b, 'page', 1), verdict: `registration ${describe(bankOf(a))}; login ${describe(bankOf(b))}`, outcomes: [a, b] };
    },
  },
  'bank-login-via-operator': {
    summary: 'mode 2: the bank asks the operator for the number of the card (which has none written on it) and finds the binding by it (S4.4, S4.6)',
    world: { bankMode: 2 },
    async run(c) {
      await operator(c).createSubscription(storyNumber(2), storyCard(2), Date.now() - 86_400_000);
      const slot = new SimSlot(storyCard(2));
      const { phone, again } = await phoneWith(c, 0, slot, person('register'));
      const a = await plug(c, phone, 'register');
      const b = await plug(c, again(phone, person('login')), 'login');
      return { ok: is(a, 'registered', 2) && is(b, 'page', 2), verdict: `registration ${describe(bankOf(a))}; login ${describe(bankOf(b))}`, outcomes: [a, b] };
    },
  },
  'bank-wrong-password': {
    summary: 'the person types a wrong password: "login not allowed" (BANK_BAD_CREDENTIALS), the flow ends (S4.7)',
    world: { bankMode: 1 },
    async run(c) {
      const { phone, again } = await phoneWith(c, 0, new SimSlot(storyCard(3)), person('register'));
      const a = await plug(c, phone, 'register');
      // The person types the password (not the fingerprint or a code the phone could prove instead).
      const b = await plug(c, again(phone, person('login', 'alice', 'not-the-password-9', ['password'])), 'login with a wrong password');
      return { ok: is(a, 'registered') && refusedWith(b, 'BANK_BAD_CREDENTIALS'), verdict: `login ${describe(bankOf(b))}`, outcomes: [a, b] };
    },
  },
  'bank-unknown-card': {
    summary: 'a phone whose card was never registered logs in: "login not allowed" (BANK_NOT_BOUND, S4.7)',
    world: { bankMode: 1 },
    async run(c) {
      const { phone } = await phoneWith(c, 0, new SimSlot(storyCard(4)), person('login'));
      const a = await plug(c, phone, 'login');
      return { ok: refusedWith(a, 'BANK_NOT_BOUND'), verdict: `login ${describe(bankOf(a))}`, outcomes: [a] };
    },
  },
  'bank-invalid-card': {
    summary: 'mode 2: the operator suspends the card; it says the card is invalid and the phone gets a clear notice (BANK_CARD_INVALID, S4.6)',
    world: { bankMode: 2 },
    async run(c) {
      await operator(c).createSubscription(storyNumber(5), storyCard(5), Date.now() - 86_400_000);
      const { phone, again } = await phoneWith(c, 0, new SimSlot(storyCard(5)), person('register'));
      const a = await plug(c, phone, 'register');
      await operator(c).setCardStatus(storyCard(5).iccid, 'suspended');
      c.say('the operator suspends the card');
      const b = await plug(c, again(phone, person('login')), 'login');
      const notice = c.host.notices.at(-1) ?? '';
      return { ok: is(a, 'registered', 2) && refusedWith(b, 'BANK_CARD_INVALID') && /CARD_SUSPENDED/.test(notice), verdict: `login ${describe(bankOf(b))}; notice: ${notice}`, outcomes: [a, b] };
    },
  },
  'bank-sim-swapped': {
    summary: 'mode 2: the line moves to a new card after the binding: refused (BANK_SIM_SWAPPED) until the owner re-binds from the bound phone, then allowed',
    world: { bankMode: 2 },
    async run(c) {
      await operator(c).createSubscription(storyNumber(6), storyCard(6), Date.now() - 86_400_000);
      const slot = new SimSlot(storyCard(6));
      const { phone, again } = await phoneWith(c, 0, slot, person('register'));
      const a = await plug(c, phone, 'register');
      await new Promise((r) => setTimeout(r, 5)); // the swap is strictly after the binding (ms clock)
      await operator(c).swapCard(storyNumber(6), storyCard(7));
      slot.swap(storyCard(7));
      c.say('the operator moves the line to a new card; the new card goes into the phone');
      const p2 = again(phone, person('login'));
      const b = await plug(c, p2, 'login');
      const p3 = again(p2, person('rebind'));
      const d = await plug(c, p3, 're-bind');
      const e = await plug(c, again(p3, person('login')), 'login');
      const ok = is(a, 'registered', 2) && refusedWith(b, 'BANK_SIM_SWAPPED') && is(d, 'registered', 2) && is(e, 'page', 2);
      return { ok, verdict: `after the swap: ${describe(bankOf(b))}; re-bind: ${describe(bankOf(d))}; then: ${describe(bankOf(e))}`, outcomes: [a, b, d, e] };
    },
  },
  'bank-cloned-identifiers': {
    summary: "a second phone copies the first one's card info and number, and knows the password: refused (BANK_DEVICE_MISMATCH): the binding names the device",
    world: { bankMode: 1 },
    async run(c) {
      const spec = storyCard(8, storyNumber(8));
      const first = await phoneWith(c, 0, new SimSlot(spec), person('register'));
      const a = await plug(c, first.phone, 'first phone registers');
      const second = await phoneWith(c, 2, new SimSlot({ ...spec }), person('login'));
      const b = await plug(c, second.phone, 'second phone, same ICCID/IMSI/number, logs in');
      const d = await plug(c, first.again(first.phone, person('login')), 'first phone logs in');
      return { ok: is(a, 'registered') && refusedWith(b, 'BANK_DEVICE_MISMATCH') && is(d, 'page'), verdict: `clone: ${describe(bankOf(b))}; owner: ${describe(bankOf(d))}`, outcomes: [a, b, d] };
    },
  },
  'bank-operator-down': {
    summary: 'mode 2 with the operator down: a clear retryable refusal in bounded time (BANK_OPERATOR_UNAVAILABLE); a mode-1 account keeps logging in; back up, mode 2 works again',
    world: { bankMode: 2 },
    async run(c) {
      const stack = c.world.stack as Stack;
      await operator(c).createSubscription(storyNumber(9), storyCard(9), Date.now() - 86_400_000);
      const two = await phoneWith(c, 0, new SimSlot(storyCard(9)), person('register', 'bob'));
      const a = await plug(c, two.phone, 'mode-2 account registers');
      await operator(c).createSubscription(storyNumber(10), storyCard(10), Date.now() - 86_400_000);
      const one = await phoneWith(c, 2, new SimSlot(storyCard(10)), person('register', 'carol'));
      const b = await plug(c, one.phone, 'second account registers');
      await stack.biz('biz-east')!.bank!.store.setMode('carol', 1);
      c.say("carol's account is set to mode 1; the operator stops");
      await stack.stopOperator();
      const t0 = Date.now();
      const p2 = two.again(two.phone, person('login', 'bob'));
      const d = await plug(c, p2, 'mode-2 login, operator down');
      const ms = Date.now() - t0;
      const p1 = one.again(one.phone, person('login', 'carol'));
      const e = await plug(c, p1, 'mode-1 login, operator down');
      await stack.startOperator();
      c.say('the operator is back');
      const g = await plug(c, two.again(p2, person('login', 'bob')), 'mode-2 login');
      const ok = is(a, 'registered', 2) && is(b, 'registered', 2) && refusedWith(d, 'BANK_OPERATOR_UNAVAILABLE') && ms < 8_000 && is(e, 'page', 1) && is(g, 'page', 2);
      return { ok, verdict: `operator down: ${describe(bankOf(d))} after ${ms} ms (whole plug-in); mode 1: ${describe(bankOf(e))}; back up: ${describe(bankOf(g))}`, outcomes: [a, b, d, e, g] };
    },
  },
};
