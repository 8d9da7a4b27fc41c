// The bank and the operator in the deterministic simulation (S4, issue 14): each business server
// is the bank over its real store, asking the real operator server (its handler without HTTPS)
// through the real OperatorClient over the simulated network. A person registers (mode 2: the
// operator checks the card and gives its number), logs in, the line moves to a new card and the
// bank refuses it until the owner re-binds (whatever the operator's clock says: its dates are
// compared with its own); the operator crashed or cut off from the bank gives a retryable
// refusal in bounded time; each S4 invariant is broken on purpose by a bank mutant and
// reported with a seed that replays; the stores' checks cover the bank's and the operator's rows.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { runSeed, planFor, type Plan, type RunOptions, type Fault } from './dsim.ts';
import { World, OPERATOR } from './dsim-world.ts';
import { Invariants } from './dsim-invariants.ts';
import Database from 'better-sqlite3';
import { tmpdir } from 'node:os';
import { startOperatorServer } from '../operator-server/server.ts';
import { join } from 'node:path';

/** One phone, three phase-1 plug-ins at 0, 4 s and 8 s, the banks in `mode`, its line's card changed at `swapAt`. */
function story(seed: number, o: { mode?: 1 | 2; swapAt?: number | null; faults?: Fault[] } = {}): Plan {
  const swapAt = o.swapAt === undefined ? 6_000 : o.swapAt;
  return { ...planFor(seed, []), phones: 1, logins: [3], starts: [[0, 4_000, 8_000]], faults: o.faults ?? [], bank: { mode: o.mode ?? 2, swaps: swapAt === null ? [] : [{ phone: 0, at: swapAt }] } };
}

const bankSteps = (lines: string[]) => lines.filter((l) => / phone-0 (login \d|saved route|after heal \d): /.test(l)).map((l) => /bank: ([^(]+?) \(/.exec(l)?.[1] ?? /: (\S+: .*)$/.exec(l)?.[1] ?? l);

test('S4 in the simulation: register (mode 2, the operator asked), log in, a SIM swap refused until the re-binding; the run replays byte for byte', async () => {
  const plan = story(7);
  const a = await runSeed(7, { plan, trace: true });
  assert.ok(a.ok, JSON.stringify(a.violations));
  const steps = bankSteps(a.lines);
  assert.equal(steps.slice(0, 3), ['registered mode 2', 'page mode 2', 'refused BANK_SIM_SWAPPED'], steps.join(' | '));
  assert.ok(steps.slice(3).includes('registered mode 2'), `the owner re-binds from the bound phone: ${steps.join(' | ')}`);
  assert.is(steps.at(-1), 'page mode 2', 'then the new card logs in');
  // The operator's real handler answered the bank's real client: a token, the validity check, the lookup, the swap date.
  for (const path of ['/oauth2/token', '/card-info/v0/check-validity', '/card-info/v0/retrieve-phone-number', '/sim-swap/v2/retrieve-date']) {
    assert.ok(a.lines.some((l) => l.includes(`${OPERATOR} ${path} -> 200`)), `${path} answered`);
  }
  assert.ok(a.lines.some((l) => /operator SIM SWAP: phone-0/.test(l)));
  const b = await runSeed(7, { plan, trace: true });
  assert.equal(b.lines, a.lines, 'the same trace, line for line');
  // Mode 1: the bank finds the binding by the card (S4.3) and never asks the operator; the new card is not bound until the re-binding.
  const m1 = await runSeed(7, { plan: story(7, { mode: 1 }), trace: true });
  assert.ok(m1.ok, JSON.stringify(m1.violations));
  assert.equal(bankSteps(m1.lines).slice(0, 3), ['registered mode 1', 'page mode 1', 'refused BANK_NOT_BOUND']);
  assert.not.ok(m1.lines.some((l) => l.includes(`${OPERATOR} /card-info`)), 'mode 1 does not ask the operator');
});

test("a SIM swap the operator dates before the binding (its clock 10 s behind at the swap): the changed card is refused by the account's bound card (BANK_SIM_SWAPPED), the owner re-binds, every invariant holds (seed 1717's finding)", async () => {
  const plan = story(7, { faults: [{ kind: 'skew', at: 5_000, ms: 2_000, party: OPERATOR, skewMs: -10_000 }] });
  const r = await runSeed(7, { plan, trace: true });
  // On a bank that only compares the operator's swap date with its binding time, login 2 is a page: bank-swap-confirmed.
  assert.ok(r.ok, JSON.stringify(r.violations));
  const steps = bankSteps(r.lines);
  assert.equal(steps.slice(0, 3), ['registered mode 2', 'page mode 2', 'refused BANK_SIM_SWAPPED'], steps.join(' | '));
  assert.ok(steps.slice(3).includes('registered mode 2'), `the owner re-binds from the bound phone: ${steps.join(' | ')}`);
  assert.is(steps.at(-1), 'page mode 2');
});

test("a SIM swap the operator dates a minute ahead (its clock 60 s ahead at the swap): the owner who re-binds from the bound phone logs in at the next login (its date against the operator's own answer at the re-binding), every invariant holds", async () => {
  const plan = story(7, { faults: [{ kind: 'skew', at: 5_000, ms: 20_000, party: OPERATOR, skewMs: 60_000 }] });
  const r = await runSeed(7, { plan, trace: true });
  assert.ok(r.ok, JSON.stringify(r.violations));
  const steps = bankSteps(r.lines);
  // The swap is dated 66 s; the re-binding is at ~28 s by the bank's clock. A bank comparing the
  // operator's date with its own binding time refuses the last login too (BANK_SIM_SWAPPED).
  assert.equal(steps, ['registered mode 2', 'page mode 2', 'refused BANK_SIM_SWAPPED', 'registered mode 2', 'page mode 2'], steps.join(' | '));
});

test('failure path: the operator crashed, or cut off from the bank, during a login: BANK_OPERATOR_UNAVAILABLE within the client deadline; every invariant holds; healed, the bank works', async () => {
  for (const f of [
    { kind: 'crash', at: 3_000, ms: 2_000, party: OPERATOR },
    { kind: 'partition', at: 3_000, ms: 2_000, a: 'biz-east', b: OPERATOR },
  ] as Fault[]) {
    const r = await runSeed(7, { plan: story(7, { swapAt: null, faults: [f] }), trace: true });
    assert.ok(r.ok, JSON.stringify(r.violations));
    const steps = bankSteps(r.lines);
    assert.is(steps[0], 'registered mode 2');
    assert.is(steps[1], 'refused BANK_OPERATOR_UNAVAILABLE', `${f.kind}: ${steps.join(' | ')}`);
    assert.ok(steps.slice(2).every((s) => s === 'page mode 2'), steps.join(' | '));
    const login1 = r.lines.find((l) => / phone-0 login 1: /.test(l))!;
    assert.ok(Number(/\((\d+) ms,/.exec(login1)![1]) < 6_000, `bounded: ${login1}`);
    if (f.kind === 'crash') assert.ok(r.lines.some((l) => / operator RESTART/.test(l)));
  }
});

async function assertReplays(seed: number, o: RunOptions, invariant: string): Promise<void> {
  const a = await runSeed(seed, { ...o, trace: true });
  const b = await runSeed(seed, { ...o, trace: true });
  assert.ok(a.violations.some((v) => v.invariant === invariant), `${invariant} reported: ${JSON.stringify(a.violations)}`);
  assert.equal(a.lines, b.lines, 'the failing run replays line for line');
  assert.ok(a.lines.some((l) => l.includes(`VIOLATION ${invariant}`)));
}

test("bank-swap-confirmed: a bank that trusts the operator's stale SIM-swap answer (stale-swap-date) lets the changed card in: reported, and replays", async () => {
  const plan = story(7);
  const r = await runSeed(7, { plan, bankMutant: 'stale-swap-date' });
  const v = r.violations.find((x) => x.invariant === 'bank-swap-confirmed');
  assert.ok(v, JSON.stringify(r.violations));
  assert.match(v!.detail, /let a mode-2 login into person0\.dsim's account while the line's card .* is not the card bound to it/);
  await assertReplays(7, { plan, bankMutant: 'stale-swap-date' }, 'bank-swap-confirmed');
});

test("bank-swap-confirmed judges the line's card when the operator answered: a stalled operator's answers given before a SIM swap and delivered after it let the old card in, no violation (seed 6360's false alarm); the changed card is refused at the next login", async () => {
  // The login of 4 s: the operator answers the card check at ~4 s and the swap date at ~5.5 s,
  // each delivered 1.5 s late; the line moves to the new card at 6 s, before the last answer
  // reaches the bank. The bank acted on answers that were true when given.
  const plan = story(7, { faults: [{ kind: 'stall', at: 3_000, ms: 4_000, party: OPERATOR, stallMs: 1_500 }] });
  const r = await runSeed(7, { plan, trace: true });
  assert.ok(r.ok, JSON.stringify(r.violations));
  const steps = bankSteps(r.lines);
  assert.equal(steps.slice(0, 3), ['registered mode 2', 'page mode 2', 'refused BANK_SIM_SWAPPED'], steps.join(' | '));
  const at = (re: RegExp) => Number(/^\s*(\d+) /.exec(r.lines.find((l) => re.test(l))!)![1]);
  const swap = at(/operator SIM SWAP/);
  assert.ok(at(/ phone-0 login 1: /) > swap, 'the page came after the swap');
  assert.ok(r.lines.filter((l) => / operator \/(card-info|sim-swap)\//.test(l)).slice(2, 5).every((l) => Number(/^\s*(\d+) /.exec(l)![1]) < swap), 'the answers it used were given before the swap');
  // The same story with the bank that trusts a stale swap date and does not see its bound card: reported.
  const m = await runSeed(7, { plan, bankMutant: 'stale-swap-date' });
  assert.ok(m.violations.some((v) => v.invariant === 'bank-swap-confirmed'), JSON.stringify(m.violations));
});

test('bank-one-identity: a re-binding that keeps the old card (rebind-keeps-old) binds the account to two cards: reported, and replays', async () => {
  const plan = story(7);
  const r = await runSeed(7, { plan, bankMutant: 'rebind-keeps-old' });
  const v = r.violations.find((x) => x.invariant === 'bank-one-identity');
  assert.ok(v, JSON.stringify(r.violations));
  assert.match(v!.detail, /2 ICCID\(s\)/);
  await assertReplays(7, { plan, bankMutant: 'rebind-keeps-old' }, 'bank-one-identity');
});

test("store-integrity covers the bank's and the operator's rows", async () => {
  const w = await World.create({ seed: 1, phones: 1, log: null });
  try {
    const inv = new Invariants(w);
    inv.storeIntegrity('clean');
    assert.equal(inv.violations, []);
    const biz = new Database(join(w.dir, 'biz.sqlite'));
    biz.prepare("INSERT INTO bank_accounts (account_no, name, verifier, mode, created_at) VALUES ('6200000000000001', 'mallory', 'not a verifier', 7, 1)").run();
    biz.close();
    const op = new Database(join(w.dir, 'operator.sqlite'));
    op.prepare("UPDATE cards SET status = 'lost'").run();
    op.close();
    inv.storeIntegrity('after damage');
    assert.ok(inv.violations.some((v) => v.invariant === 'store-integrity' && /biz\.sqlite after damage: bank: /.test(v.detail)), JSON.stringify(inv.violations));
    assert.ok(inv.violations.some((v) => v.invariant === 'store-integrity' && /operator\.sqlite after damage: /.test(v.detail)), JSON.stringify(inv.violations));
  } finally {
    w.close();
  }
});

test('the operator seam: a server without a port serves through handle only; a port without TLS is refused (CFG_INVALID)', async () => {
  const dbFile = join(tmpdir(), `dsim-bank-op-${process.pid}.sqlite`);
  const o = await startOperatorServer({ host: 'operator.sim', port: null, tls: null, dbFile, tokenKey: new Uint8Array(32).fill(4) });
  try {
    assert.is(o.port, 0);
    assert.type(o.handle, 'function');
  } finally {
    await o.close();
  }
  try {
    await startOperatorServer({ host: '127.0.0.1', port: 0, tls: null, dbFile, tokenKey: new Uint8Array(32).fill(4) });
    assert.unreachable('a listening operator without TLS');
  } catch (e) {
    assert.is((e as { code?: string }).code, 'CFG_INVALID');
  }
  const { rmSync } = await import('node:fs');
  for (const f of [dbFile, `${dbFile}-wal`, `${dbFile}-shm`]) rmSync(f, { force: true });
});

test.run();
