// The real gateway in the deterministic simulation (sim/dsim-gateway.ts): gateway/gateway.ts and
// its authenticated links route a phone's login over the simulated network on the virtual clock;
// a password-guessing bot's openings are counted as attacks, reported to the policy server, and
// the table that follows is pushed to a connected phone (S3.4, S3.5, S3.11); a gateway holding the
// wrong link key gets no link up and refuses the phone (GW_UPSTREAM_UNAVAILABLE); a seed with
// faults replays byte for byte with the real gateway; the gateway process killed in the middle of
// a login (the fault kind gateway-crash) loses every device connection and link, refuses phones
// while down, and once restarted relinks and routes again, with nothing else lost; a seeded
// run with the bot (Plan.attack) counts its attack, reports it, and the policy's next table
// states it (attack-in-table), which a report naming the wrong mechanism breaks.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { World, GATEWAY } from './dsim-world.ts';
import { runSeed, planFor, type Plan } from './dsim.ts';
import { decode } from '../protocol/cbor.ts';
import { peekTablePush } from '../protocol/messages.ts';
import { decodeTableBody, type AttackTable } from '../protocol/attack-table.ts';
import { attackerIp } from './attacker.ts';
import { setLogSink } from '../server-kit/log.ts';
import type { DeviceOutcome } from '../firmware/device.ts';

/** Runs the world's scheduler until `p` settles (as sim/dsim.ts's loop does); virtual Date.now meanwhile. */
async function drive<T>(w: World, p: Promise<T>, capMs = 120_000): Promise<T> {
  let done = false;
  let out: { v?: T; e?: unknown } = {};
  p.then((v) => ((done = true), (out = { v })), (e) => ((done = true), (out = { e })));
  const realNow = Date.now;
  Date.now = () => w.sched.epochAtStartMs + w.sched.now();
  try {
    while (!done) {
      await new Promise((r) => setImmediate(r));
      if (done) break;
      if (w.sched.now() > capMs || w.sched.run(Infinity, 1) === 0) throw new Error(`stuck at ${w.sched.now()} ms`);
    }
  } finally {
    Date.now = realNow;
  }
  if ('e' in out && out.e !== undefined) throw out.e;
  return out.v as T;
}

const sleep = (w: World, ms: number) => new Promise<void>((r) => w.sched.at(ms, r));

let w0: World | null = null;
// The servers' process-wide log lines (the gateway's among them) into the running world's trace, as sim/dsim.ts does.
setLogSink((l) => w0?.log(`${l.svc} ${l.level} ${l.msg}${l.code ? ` ${String(l.code)}` : ''}`));

async function world(seed: number, lines: string[], o: { linkKeyMismatch?: boolean } = {}): Promise<World> {
  w0 = await World.create({ seed, phones: 1, log: (l) => lines.push(l), ...o });
  return w0;
}

function passwordRate(t: AttackTable, site: string): number {
  return t.sites.find((s) => s.site === site)?.mechs.find((m) => m.mech === 'password')?.ratePpm ?? -1;
}

test('the real gateway routes a phone login over its authenticated links in the simulation', async () => {
  const lines: string[] = [];
  const w = await world(21, lines);
  try {
    const gw = w.gateway!;
    assert.ok(gw, 'the world runs the real gateway');
    const p = w.phones[0]!;
    const out = (await drive(w, p.phone.device.plugIn())) as DeviceOutcome;
    assert.ok(out.ok, JSON.stringify(out));
    if (process.env.SHOW) console.log(lines.join('\n'));
    // Every link authenticated (CHALLENGE, AUTH, AUTH_OK) on the virtual clock.
    for (const s of ['reg-primary', 'reg-backup', 'biz-east', 'biz-west']) assert.ok(gw.upstream(s)?.up, `${s} linked`);
    const metrics = await gw.metrics.registry.metrics();
    assert.match(metrics, /usbphone_gateway_frames_in_total\{type="login"\} [1-9]/);
    assert.ok(lines.some((l) => /gateway\/biz-east info link up/.test(l)));
    // The server saw the address the gateway observed on the device's connection (the link's OPEN).
    assert.ok(lines.some((l) => l.includes('login ok') && l.includes(`"ip":"${p.ip}"`)), 'the observed IP travelled in the link OPEN');
  } finally {
    w.close();
  }
});

test('failure path: a gateway without the right link key gets no link up and refuses the phone', async () => {
  const lines: string[] = [];
  const w = await world(22, lines, { linkKeyMismatch: true });
  try {
    const out = (await drive(w, w.phones[0]!.phone.device.plugIn())) as DeviceOutcome;
    assert.not.ok(out.ok, 'no login through a gateway the servers do not authenticate');
    assert.ok(lines.some((l) => /LINK_AUTH_FAILED/.test(l)), 'the servers refused the link');
    assert.ok(lines.some((l) => /GW_UPSTREAM_UNAVAILABLE/.test(l)), 'the gateway refused the phone');
    assert.not.ok(lines.some((l) => /credentials issued|login ok/.test(l)), 'no session reached a server');
  } finally {
    w.close();
  }
});

test("an attacker's wrong logins: the gateway counts an attack, reports it, and the changed table is pushed to a connected phone", async () => {
  const lines: string[] = [];
  const w = await world(23, lines);
  try {
    const gw = w.gateway!;
    const p = w.phones[0]!;
    const out = (await drive(w, p.phone.device.plugIn())) as DeviceOutcome;
    assert.ok(out.ok, JSON.stringify(out));
    // The phone's session has ended; a connection of it stays open to the gateway (as the main
    // program's would) and hands each pushed frame to the phone, as its client session does
    // (firmware/client-session.ts peekTablePush).
    const held = w.net.connect(p.party, GATEWAY, p.ip, () => {});
    let frames = 0;
    held.onMessage = (f) => {
      frames++;
      const t = peekTablePush(f);
      if (t) p.phone.device.tablePush(t);
    };
    const answered = await drive(w, w.guess(attackerIp(0), 'biz-east', 'password', 15));
    assert.is(answered, 15, 'every guess was answered or closed');
    let m = await gw.metrics.registry.metrics();
    assert.match(m, /usbphone_gateway_attacks_detected_total\{site="biz-east",mech="password"\} 1/, 'one attack: more than 10 openings from one address within the window');
    assert.ok(lines.some((l) => /gateway info attack detected/.test(l)));
    // Two policy periods (10 s each in the simulation) and a table poll: the report is sent, the
    // policy server's next table counts the attack, the gateway pushes it to the phone.
    await drive(w, sleep(w, 30_000));
    m = await gw.metrics.registry.metrics();
    assert.match(m, /usbphone_gateway_attack_reports_total\{outcome="sent"\} [1-9]/, 'a period report reached the policy server');
    const pushed = w.tablePushes.filter((t) => t.devices > 0).map((t) => decodeTableBody((decode(t.table) as [Uint8Array, Uint8Array])[0]));
    assert.ok(pushed.length > 0, `a table was pushed to a connected phone: ${JSON.stringify(w.tablePushes.map((t) => [t.version, t.devices]))}`);
    // Rates are per period: the table of the period after the attack counts it.
    const counted = pushed.find((t) => passwordRate(t, 'biz-east') > 0);
    assert.ok(counted, `a pushed table counts the attack on biz-east's passwords: ${JSON.stringify(pushed.map((t) => t.sites))}`);
    assert.is(passwordRate(counted!, 'biz-east'), 1_000_000, 'every attack on biz-east in that period was on passwords');
    assert.is(passwordRate(counted!, 'biz-west'), 0, 'biz-west was not attacked');
    assert.ok(lines.some((l) => l.includes(`phone-0 ok   S3.11 attack table pushed: table v${counted!.version} from the gateway accepted`)), 'the phone checked and kept the pushed table');
    assert.ok(lines.some((l) => l.includes(GATEWAY + ' pushed table v')));
    assert.ok(frames >= 1);
    held.close(1000, 'bye');
  } finally {
    w.close();
  }
});

test('gateway-crash: killed in the middle of a login, the phone fails and retries; restarted, the gateway relinks and routes; the run replays', async () => {
  const plan: Plan = { ...planFor(7, []), phones: 2, logins: [3, 2], starts: [[0, 4_000, 8_000], [3_000, 5_000]], faults: [{ kind: 'gateway-crash', at: 4_010, ms: 1_500 }], bank: { mode: 2, swaps: [] } };
  const a = await runSeed(7, { plan, trace: true });
  assert.ok(a.ok, JSON.stringify(a.violations));
  const line = (re: RegExp) => a.lines.find((l) => re.test(l)) ?? '';
  assert.match(line(/gateway CRASH/), /every device connection and link lost/);
  // phone-0's login 1 began at 4000 and was cut at 4010: its connection died with the gateway.
  assert.match(line(/phone-0 login 1: /), /login-failed/);
  // phone-1 dials while the gateway is down: refused.
  assert.match(line(/phone-1 login 1: /), /login-failed: .*connection refused/);
  assert.ok(line(/gateway RESTART \(incarnation 2\)/), 'restarted after its window');
  // Relinked: the next plug-ins route again, to the same accounts (nothing else was lost).
  assert.match(line(/phone-0 login 2: /), /logged in to biz-/);
  assert.ok(a.stats.crashes >= 1);
  const b = await runSeed(7, { plan, trace: true });
  assert.equal(b.lines, a.lines, 'replays line for line');
});

test('an attacker in a seeded run: the attack is counted, reported, and the next table states its rate (attack-in-table); a report under the wrong mechanism is reported, and replays', async () => {
  const plan: Plan = { ...planFor(7, []), phones: 1, logins: [2], starts: [[0, 4_000]], faults: [], bank: { mode: 2, swaps: [] }, attack: { at: 2_000, site: 'biz-east', n: 15 } };
  const a = await runSeed(7, { plan, trace: true });
  assert.ok(a.ok, JSON.stringify(a.violations));
  assert.ok(a.lines.some((l) => /gateway info attack detected/.test(l)), 'counted (S3.4)');
  assert.ok(a.lines.some((l) => /policy info report taken/.test(l)), 'reported (S3.5)');
  assert.ok(a.lines.some((l) => /gateway pushed table v2/.test(l)), 'the table stating it reached the gateway, which pushes it (S3.11)');
  const bad = await runSeed(7, { plan, s3Mutant: 'report-wrong-mech', trace: true });
  const v = bad.violations.find((x) => x.invariant === 'attack-in-table');
  assert.ok(v, JSON.stringify(bad.violations));
  assert.match(v!.detail, /1 attack\(s\) on biz-east's password in period \d+ .* table v2 states a password rate of 0 ppm/);
  const again = await runSeed(7, { plan, s3Mutant: 'report-wrong-mech', trace: true });
  assert.equal(again.lines, bad.lines, 'the failing run replays line for line');
  // Seeds draw the bot: some of the first 20 plans have one.
  const withBot = Array.from({ length: 20 }, (_, i) => planFor(i + 1)).filter((p) => p.attack);
  assert.ok(withBot.length >= 2 && withBot.length <= 14, `${withBot.length} of 20 seeds attack`);
});

test.run();
