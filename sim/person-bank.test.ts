// The person layer at the bank (S3.2, S3.3) end to end over real sockets, against the embedded
// stack: a phone with a SIM, a fingerprint sensor paired with its chip and its person's finger
// registers at the bank (the finger enrolled in the chip at first use, the chip's attested key
// sent, the TOTP seed imported wrapped), then logs in with a one-time code and with the finger:
// the account page. Refusals: another finger gives no proof (PERSON_FP_NO_MATCH on the phone,
// nothing sent); a hostile program on the phone's host drives the chip for the device login
// but sends a wrong code, a forged signature, a replayed code or a signature made for another
// session: the bank refuses each with its code. A site that does not offer a mechanism or puts
// its floor above it refuses it. And S3.1 end to end: once the policy server's table says the
// password is the most attacked, the provisioned phone logs in with the code or the finger.
import { test } from 'uvu';
import { STORY_PASSWORD } from './bank-scenarios.ts';
import * as assert from 'uvu/assert';
import { startWorld, TraceHost, fingerOf, type World } from './world.ts';
import { makeTempDir, removeTempDir } from './lifetime.ts';
import { person, storyCard } from './bank-scenarios.ts';
import { SimSlot } from '../firmware/hal/sim-card.ts';
import { fingerFromSeed } from '../firmware/hal/fingerprint.ts';
import { SeClient } from '../firmware/secure/client.ts';
import { personProof } from '../firmware/person-proof.ts';
import type { Phone } from '../firmware/phone.ts';
import type { DeviceOutcome } from '../firmware/device.ts';
import type { BankStepOutcome } from '../firmware/main-program.ts';
import { LoginClient, type LoginOutcome } from '../protocol/login.ts';
import { BankClient, type BankOutcome, type BankRequest } from '../protocol/bank.ts';
import type { LineIds } from '../protocol/bank-messages.ts';
import { verifyTable } from '../protocol/attack-table.ts';
import { FrameSocket } from '../server-kit/test-device.ts';
import { setLogSink } from '../server-kit/log.ts';
import type { StackOptions } from '../deploy/stack.ts';
import { storeRows } from '../server-kit/store-backends.ts';

setLogSink(() => {});
/** Lower scrypt cost for speed; biz-server/bank.test.ts runs OWASP's real parameters. */
const FAST = { bankScrypt: { ln: 12, r: 8, p: 1 } };

async function withWorld(name: string, opts: Partial<StackOptions>, f: (w: World) => Promise<void>): Promise<void> {
  const dir = makeTempDir(`person-bank-${name}-`);
  const world = await startWorld({ stateDir: dir, gatewayPort: 0, ...FAST, ...opts });
  try {
    await f(world);
  } finally {
    await world.stop();
    removeTempDir(dir);
  }
}

const bankOf = (o: DeviceOutcome): BankStepOutcome | undefined => (o.ok ? o.bank : undefined);
const show = (o: DeviceOutcome) => JSON.stringify(o.ok ? { server: o.server, bank: o.bank && { ...o.bank, token: undefined } } : o);
const traceOf = (h: TraceHost) => h.events.map((e) => `${e.feature} ${e.step}: ${e.detail} ${e.ok ? '' : '(failed)'}`).join('\n');

/** Phone i with its SIM (story card n) registers as `name`; returns it, its address, the server and the chip's host interface. */
async function registered(w: World, i: number, n: number, name: string) {
  const host = new TraceHost();
  const ids = storyCard(n, `+4477009${String(n).padStart(5, '0')}`);
  const slot = new SimSlot(ids);
  const { phone, ip } = await w.phone(i, host, { sim: slot, person: person('register', name) });
  const o = await phone.device.plugIn();
  const b = bankOf(o);
  assert.ok(o.ok && b?.kind === 'registered', `${show(o)}\n${traceOf(host)}`);
  const se = new SeClient((apdu) => phone.bus.se.transmit(apdu));
  const line: LineIds = { idKind: 'sim', iccid: ids.iccid, imsi: ids.imsi, msisdn: ids.msisdn ?? null };
  return { phone, ip, slot, server: o.ok ? o.server : '', se, host, line, reg: b as Extract<BankStepOutcome, { kind: 'registered' }> };
}

/** The same phone plugged in again with the person asking to log in with `mechs` only. */
async function loginWith(w: World, p: { phone: Phone; ip: string; slot: SimSlot }, name: string, mechs: ('password' | 'otp' | 'fingerprint')[]) {
  const host = new TraceHost();
  const phone = w.replug(p.phone, host, p.ip, { sim: p.slot, person: person('login', name, undefined, mechs) });
  p.phone = phone;
  const o = await phone.device.plugIn();
  return { o, host, bank: bankOf(o) };
}

/**
 * A hostile program on the phone's host: it drives the chip for the device's business login (the
 * chip makes the MAC, as for any host program) and then sends a bank request of its own making.
 */
async function hostile(w: World, p: { ip: string; se: SeClient; server: string }, req: BankRequest): Promise<LoginOutcome<BankOutcome> | { kind: 'closed'; code: number }> {
  const held = p.se.secrets();
  assert.ok(held.ok && held.value, 'the chip holds the business secret');
  const { user, gens } = held.ok ? held.value! : { user: '', gens: [0] };
  const s = await FrameSocket.connect(w.stack.urlFor(p.server), { localAddress: p.ip });
  try {
    const mech = req.kind === 'login' || req.kind === 'prove' ? req.mech : 'password';
    const m = new LoginClient<BankOutcome>({ dest: p.server, user, gen: gens[0]!, secret: p.se.loginKeyOps(), mech, then: new BankClient(req) });
    let step = m.start();
    for (;;) {
      for (const f of step.send) s.send(f);
      if (step.event === 'logged-in') {
        step = m.afterLogin(true);
        continue;
      }
      if (step.done) return step.done as LoginOutcome<BankOutcome>;
      const i = await s.next(10_000);
      if ('closed' in i) return { kind: 'closed', code: i.closed };
      step = m.receive(i.frame);
    }
  } finally {
    s.close();
  }
}
const answer = (r: Awaited<ReturnType<typeof hostile>>): string => (r.kind === 'ok' && r.then ? (r.then.kind === 'refused' || r.then.kind === 'no-proof' ? r.then.code : r.then.kind) : JSON.stringify(r));

test("one-time code: the registration imports the site's seed into the chip; a login with the code gets the account page; a wrong code, and the same code twice, are refused by the bank (PERSON_PROOF_FAILED, PERSON_OTP_REPLAYED)", async () => {
  await withWorld('otp', {}, async (w) => {
    const p = await registered(w, 0, 41, 'olga');
    assert.ok(p.reg.otp && p.reg.fingerprint, JSON.stringify(p.reg));
    assert.ok(p.host.has('S3.3', true) && p.host.events.some((e) => e.step === 'one-time code seed' && e.ok), traceOf(p.host));
    const st = p.se.personStatus();
    assert.ok(st.ok && st.value.otpSites.includes(p.server) && st.value.clock, JSON.stringify(st));

    const l = await loginWith(w, p, 'olga', ['otp']);
    assert.ok(l.bank?.kind === 'page' && l.bank.mech === 'otp', `${show(l.o)}\n${traceOf(l.host)}`);
    // The account page in a browser, for the token the login gave.
    const res = await fetch(w.stack.biz(p.server)!.bank!.pageUrl + Buffer.from(l.bank.kind === 'page' ? l.bank.token : new Uint8Array()).toString('base64url'));
    assert.is(res.status, 200);

    // One code per time step: the chip gives a hostile host no second code of the step the honest
    // login used, and says the site's code is not ready (the phone would choose another mechanism).
    assert.not.ok(p.se.otpCode(p.server).ok, 'no second code in the same step');
    const st2 = p.se.personStatus();
    assert.ok(st2.ok && !st2.value.otpSites.includes(p.server), JSON.stringify(st2));
    // The next step (at most 30 s): a hostile host takes the chip's code once and sends it twice; then a wrong code.
    await new Promise((r) => setTimeout(r, 30_000 - (Date.now() % 30_000) + 250));
    const c = p.se.otpCode(p.server);
    assert.ok(c.ok);
    const code = c.ok ? c.value : '';
    const prove = (proof: string, password = STORY_PASSWORD): BankRequest => ({ kind: 'login', name: 'olga', mech: 'otp', proof, password: new TextEncoder().encode(password), ids: p.line });
    // Password-verification (S3.3): the code without the person's password is worth nothing to
    // the host that holds the phone; it is not used up either.
    assert.is(answer(await hostile(w, p, prove(code, 'a-guessed-password-1'))), 'PERSON_PROOF_FAILED');
    assert.is(answer(await hostile(w, p, prove(code))), 'page');
    assert.is(answer(await hostile(w, p, prove(code))), 'PERSON_OTP_REPLAYED');
    const wrong = code.split('').map((d, i) => (i === 0 ? String((Number(d) + 5) % 10) : d)).join('');
    assert.is(answer(await hostile(w, p, prove(wrong))), 'PERSON_PROOF_FAILED');
  });
});

test("fingerprint: the finger enrolled at the registration, the attested key kept; a login with the finger gets the page; another finger gives no proof (PERSON_FP_NO_MATCH on the phone, nothing sent); a forged signature, or one made for another session, is refused by the bank (PERSON_PROOF_FAILED)", async () => {
  await withWorld('fp', {}, async (w) => {
    const p = await registered(w, 0, 42, 'fred');
    assert.ok(p.reg.fingerprint, JSON.stringify(p.reg));
    assert.ok(p.host.events.some((e) => e.step === 'enrol finger' && e.ok), traceOf(p.host));
    const st = p.se.personStatus();
    assert.ok(st.ok && st.value.finger === 'set' && st.value.fpSites.includes(p.server), JSON.stringify(st));

    const l = await loginWith(w, p, 'fred', ['fingerprint']);
    assert.ok(l.bank?.kind === 'page' && l.bank.mech === 'fingerprint', `${show(l.o)}\n${traceOf(l.host)}`);
    // The bank's login records, on whichever back end the stack's store is (STORE_URL).
    const bankLogins = async () => Number((await storeRows<{ n: number | string }>(w.stack.bizStore, 'SELECT COUNT(*) AS n FROM bank_logins'))[0]!.n);
    const logins = { n: await bankLogins() };

    // Another finger on the sensor: the chip signs nothing; the phone sends no bank request.
    p.phone.sensor!.place(fingerFromSeed('somebody else'));
    const other = await loginWith(w, p, 'fred', ['fingerprint']);
    assert.ok(other.bank?.kind === 'no-proof' && other.bank.code === 'PERSON_FP_NO_MATCH', `${show(other.o)}\n${traceOf(other.host)}`);
    assert.not.ok(other.host.events.some((e) => e.feature === 'S4.5'), 'no bank request was sealed');
    assert.is(await bankLogins(), logins.n, 'the bank recorded nothing');
    p.phone.sensor!.place(fingerOf(w.seed, 0));

    // A hostile host: a real proof made for session A (the person's finger, the chip), sent again in session B.
    let madeForA: Uint8Array | null = null;
    const a = await hostile(w, p, {
      kind: 'prove', name: 'fred', mech: 'fingerprint', ids: p.line,
      prove: (binding) => {
        const r = personProof(p.se, p.phone.sensor, 'fingerprint', p.server, binding!);
        if (r.ok && r.proof.mech === 'fingerprint') madeForA = Uint8Array.from(r.proof.signature);
        return r;
      },
    });
    assert.is(answer(a), 'page', 'the proof in its own session');
    assert.ok(madeForA, 'the chip signed');
    assert.is(answer(await hostile(w, p, { kind: 'login', name: 'fred', mech: 'fingerprint', proof: Uint8Array.from(madeForA!), ids: p.line })), 'PERSON_PROOF_FAILED', 'replayed into another session');
    const forged = Uint8Array.from(madeForA!);
    forged[0]! ^= 0x80;
    assert.is(answer(await hostile(w, p, { kind: 'login', name: 'fred', mech: 'fingerprint', proof: forged, ids: p.line })), 'PERSON_PROOF_FAILED', 'forged');
  });
});

test("a site that does not offer the fingerprint and has otp as its floor: a fingerprint login is refused at the opening (BIZ_MECH_UNSUPPORTED), a password login at the bank (BANK_MECH_BELOW_FLOOR); the code is served", async () => {
  await withWorld('floor', { bizMechanisms: ['password', 'otp'], bizFloor: 'otp' }, async (w) => {
    const p = await registered(w, 0, 43, 'gina');
    assert.ok(p.reg.otp && !p.reg.fingerprint, JSON.stringify(p.reg));
    // The chip made a key for the site at the registration (the phone does not know the offer then); the site did not keep it.
    const st = p.se.personStatus();
    assert.ok(st.ok && st.value.fpSites.includes(p.server), JSON.stringify(st));
    const fp = await loginWith(w, p, 'gina', ['fingerprint']);
    assert.ok(!fp.o.ok && /BIZ_MECH_UNSUPPORTED/.test(fp.o.reason), show(fp.o));
    const pw = await loginWith(w, p, 'gina', ['password']);
    assert.ok(pw.bank?.kind === 'refused' && pw.bank.code === 'BANK_MECH_BELOW_FLOOR', show(pw.o));
    const otp = await loginWith(w, p, 'gina', ['otp']);
    assert.ok(otp.bank?.kind === 'page' && otp.bank.mech === 'otp', show(otp.o));
  });
});

test("S3.1 end to end: once the policy server's table says the password is the most attacked at the site, the provisioned phone logs into the bank with the one-time code or the finger", async () => {
  const T = 1_000;
  await withWorld('choice', { policyPeriodMs: T, tablePollMs: 100 }, async (w) => {
    const p = await registered(w, 0, 44, 'hana');
    const v0 = w.stack.policy.latest().table.version;
    // The gateway's report of each period: the password of the site hammered, nothing else. Each
    // period again until a table states it (on a loaded machine a report can reach the policy
    // server after the update that would have folded its period: then the next one does).
    const deadline = Date.now() + 10_000;
    const rateOf = () => w.stack.policy.latest().table.sites.find((s) => s.site === p.server)?.mechs.find((m) => m.mech === 'password')?.ratePpm ?? 0;
    let reported = -1;
    while ((w.stack.policy.latest().table.version === v0 || rateOf() === 0) && Date.now() < deadline) {
      const P = Math.floor(Date.now() / T);
      if (P !== reported) await w.stack.policy.report({ gateway: 'gateway', periodId: (reported = P), periodMs: T, sites: [{ site: p.server, total: 900, perMech: { password: 900 } }] });
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.is(rateOf(), 1_000_000, 'the password is all the attacks');
    await new Promise((r) => setTimeout(r, 300)); // the registration servers polled the table
    const l = await loginWith(w, p, 'hana', ['password', 'otp', 'fingerprint']);
    assert.ok(l.o.ok && l.bank?.kind === 'page' && (l.bank.mech === 'otp' || l.bank.mech === 'fingerprint'), `${show(l.o)}\n${traceOf(l.host)}`);
    const held = p.phone.device.storage.loadLogin();
    const t = held.ok && held.value?.table ? verifyTable(held.value.table, w.stack.factoryPolicy.key!, Date.now(), null) : null;
    assert.ok(t?.ok && t.table.sites.find((s) => s.site === p.server)!.mechs.find((m) => m.mech === 'password')!.ratePpm === 1_000_000, 'the phone chose with the new table');
    assert.ok(l.host.events.some((e) => e.feature === 'S3.1' && /this device proves password, otp, fingerprint/.test(e.detail)), traceOf(l.host));
  });
});

test.run();
