// The S3 stories (sim/attack-scenarios.ts) over real sockets, each in a fresh state directory
// and within bounded time: the attack shifts the table (and the choice, as far as the phones
// can prove another mechanism); forged, stale and expired tables are refused with their codes.
// Then the checks that make the verdicts able to fail: the CSV and SVG hold what was measured,
// and the choice check refuses a phone that could move and did not.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { runStory, STORIES } from './scenarios.ts';
import { ATTACK_STORIES, choiceCheck, choiceOf, ATTACKED, type Choice } from './attack-scenarios.ts';
import { CSV_HEADER, periodCsv, periodChartSpec } from './attack-chart.ts';
import { makeTempDir, removeTempDir } from './lifetime.ts';
import { setLogSink } from '../server-kit/log.ts';
import { PPM } from '../protocol/attack-table.ts';

setLogSink(() => {});
/** Lower scrypt cost for the stories' speed; biz-server/bank.test.ts runs OWASP's real parameters. */
const FAST = { bankScrypt: { ln: 12, r: 8, p: 1 } };
/** Each story's bound: the attack story runs about 5 periods of 1.5 s plus its logins. */
const BOUND_MS: Record<string, number> = { 'attack-shifts-mechanism': 60_000, 'forged-table': 20_000, 'stale-table': 20_000, 'expired-table': 20_000 };

const within = <T>(p: Promise<T>, ms: number, what: string) =>
  Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what} took more than ${ms} ms`)), ms).unref())]);

for (const name of Object.keys(ATTACK_STORIES)) {
  test(`scenario ${name}`, async () => {
    assert.ok(STORIES[name], 'listed with the other stories (usbphone sim --scenario)');
    const out = makeTempDir(`s3-${name}-`);
    try {
      const lines: string[] = [];
      const t0 = Date.now();
      const r = await within(runStory(name, { print: (l) => lines.push(l), world: FAST, out }), BOUND_MS[name]!, name);
      assert.ok(r.ok, `${name}: ${r.verdict}\n${lines.join('\n')}`);
      lines.push(`(${Date.now() - t0} ms)`);
      if (name === 'attack-shifts-mechanism') {
        // The table shift: what the test asserts today and after the merge alike.
        const csv = readFileSync(join(out, 'attack-shifts-mechanism.csv'), 'utf8').trim().split('\r\n');
        assert.is(csv[0], CSV_HEADER);
        const rows = csv.slice(1).map((l) => l.split(','));
        const attacked = rows.filter((c) => c[1] === 'attack' && c[4] === ATTACKED.site && c[7] === ATTACKED.mech);
        assert.ok(attacked.some((c) => Number(c[8]) === PPM && Number(c[9]) > 0 && Number(c[5]) >= 2), `the password rate at biz-east at the top, counted and levelled in the CSV:\n${csv.join('\n')}`);
        assert.ok(rows.filter((c) => c[1] === 'calm').every((c) => c[8] === '0'), 'nothing attacked before the bots');
        // The choice (S3.1 end to end): the honest phones prove the one-time code and the fingerprint
        // too (provisioned at their bank registration), so under attack none logs in with the password.
        const chose = rows.filter((c) => c[1] === 'attack' && c[4] === ATTACKED.site && Number(c[10]) > 0).map((c) => c[7]);
        assert.ok(chose.length > 0, 'the honest phones logged in during the attack');
        assert.not.ok(chose.includes(ATTACKED.mech), `an honest phone still chose ${ATTACKED.mech} under attack: ${chose.join(', ')}`);
        const svg = readFileSync(join(out, 'attack-shifts-mechanism.svg'), 'utf8');
        assert.ok(svg.startsWith('<svg') && svg.includes('Attack rate per mechanism at biz-east') && svg.includes('Honest logins at biz-east'), 'the SVG chart has its panels');
      } else {
        const code = { 'forged-table': 'TABLE_BAD_SIGNATURE', 'stale-table': 'TABLE_STALE', 'expired-table': 'TABLE_EXPIRED' }[name]!;
        const refused = r.trace.filter((e) => e.feature === 'S3.11' && !e.ok);
        assert.ok(refused.some((e) => e.detail.startsWith(`refused (${code}:`)), refused.map((e) => e.detail).join('\n'));
        assert.not.ok(existsSync(join(out, 'attack-shifts-mechanism.csv')));
      }
    } finally {
      removeTempDir(out);
    }
  });
}

const choice = (mech: Choice['mech'], capable: Choice['mech'][], rates: Choice['rates']): Choice => ({ site: 'biz-east', mech, version: 7, rates, capable, why: 'table v7' });

test('the choice check: a phone that proves a less attacked mechanism must move to it; one that proves only the attacked one cannot', () => {
  const attacked = { password: PPM, otp: 0, fingerprint: 0 };
  assert.equal(choiceCheck(choice('password', ['password'], attacked), 'password'), { ok: true, canMove: false, why: 'no other mechanism provisioned: the choice cannot move' });
  assert.equal(choiceCheck(choice('otp', ['password', 'otp'], attacked), 'password'), { ok: true, canMove: true, why: 'moved to otp' });
  const stuck = choiceCheck(choice('password', ['password', 'otp', 'fingerprint'], attacked), 'password');
  assert.is(stuck.ok, false, 'staying on the attacked mechanism with others at hand fails the story');
  assert.match(stuck.why, 'otp, fingerprint');
  // All equally attacked: nothing to move to.
  assert.is(choiceCheck(choice('password', ['password', 'otp'], { password: PPM / 2, otp: PPM / 2 }), 'password').canMove, false);
  // Below the floor does not count as somewhere to go.
  assert.is(choiceCheck(choice('password', ['password', 'otp'], attacked), 'password', 'fingerprint').canMove, false);
});

test('the S3.1 trace line is read back: mechanism, table version, rates, capability', () => {
  const c = choiceOf([{ t: 1, feature: 'S3.1', step: 'mechanism for biz-east', detail: 'password (table v4: password 100.0 %, fingerprint 0.0 %, otp 0.0 %; this device proves password)', ok: true }]);
  assert.equal(c, { site: 'biz-east', mech: 'password', version: 4, rates: { password: PPM, fingerprint: 0, otp: 0 }, capable: ['password'], why: 'table v4' });
  assert.is(choiceOf([{ t: 1, feature: 'S3.11', step: 'attack table', detail: 'x', ok: true }]), null);
  assert.is(choiceOf([{ t: 1, feature: 'S3.1', step: 'mechanism for biz-east', detail: 'garbage', ok: true }]), null);
});

test('the CSV and the chart spec carry the rows as measured', () => {
  const row = { round: 1, phase: 'attack', version: 4, periodId: 9, site: 'biz-east', level: 2, degreePpm: 402_000, mech: 'password' as const, ratePpm: PPM, attacks: 5, choices: 2 };
  assert.is(periodCsv([row]), `${CSV_HEADER}\r\n1,attack,4,9,biz-east,2,402000,password,1000000,5,2\r\n`);
  const spec = periodChartSpec([row, { ...row, site: 'biz-west' }], { site: 'biz-east', title: 't' }) as { data: { values: { site: string; ratePct: number }[] } };
  assert.equal(spec.data.values.map((v) => [v.site, v.ratePct]), [['biz-east', 100]]);
});

test.run();
