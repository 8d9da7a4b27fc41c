// The admin message table: each operation's arguments and result encode and decode back to
// the same value, the wire shapes are the documented arrays, and a hostile table of values is
// refused with ADMIN_BAD_ARGS (server side) / ADMIN_BAD_RESPONSE (caller side).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TableLimits } from '../protocol/attack-table.ts';
import { ADMIN_MESSAGES, SEALED_SECRET_MIN, SEALED_SECRET_MAX, MAX_ATTACK_COUNT, MAX_PERIOD_MS, adminCall, adminOps, type AdminOps, type AdminOpName } from './admin-messages.ts';
import { AdminError } from './admin-rpc.ts';
import { encode, decode, type CborValue } from '../protocol/cbor.ts';

const b = (n: number, fill = 1) => new Uint8Array(n).fill(fill);
const samples: { [K in AdminOpName]: { args: AdminOps[K]['args']; wireArgs: CborValue; result: AdminOps[K]['result']; wireResult: CborValue } } = {
  installPending: {
    args: { user: 'u-SN-1', loginKey: b(32, 2), sealed: b(SEALED_SECRET_MIN, 3), expiresAt: 1_900_000_000_000, rotationId: b(16, 4) },
    wireArgs: ['u-SN-1', b(32, 2), b(SEALED_SECRET_MIN, 3), 1_900_000_000_000, b(16, 4)],
    result: { currentGen: 1, pendingGen: 2, installed: true, sealed: b(SEALED_SECRET_MIN, 3), rotationId: b(16, 4) },
    wireResult: [1, 2, true, b(SEALED_SECRET_MIN, 3), b(16, 4)],
  },
  status: { args: {}, wireArgs: [], result: { healthy: true, sessions: 7, region: 'east' }, wireResult: [true, 7, 'east'] },
  enrollAccount: { args: { account: 'acct-SN-1', user: 'u-SN-1' }, wireArgs: ['acct-SN-1', 'u-SN-1'], result: 'exists', wireResult: 'exists' },
  reportAttacks: {
    args: { gateway: 'gateway', periodId: 29_000_000, periodMs: 60_000, sites: [{ site: 'biz-east', total: 12, perMech: { password: 10, otp: 1 } }, { site: 'biz-west', total: 0, perMech: {} }] },
    wireArgs: ['gateway', 29_000_000, 60_000, [['biz-east', 12, new Map([['password', 10], ['otp', 1]])], ['biz-west', 0, new Map()]]],
    result: { accepted: true, duplicate: false }, wireResult: [true, false],
  },
  latestTable: { args: {}, wireArgs: [], result: b(100, 9), wireResult: b(100, 9) },
};

/** Reports a gateway must never get counted: wrong types, negative or huge counts, unknown mechanisms, too many sites. */
function hostileReports(): CborValue[] {
  const site = (s: CborValue, total: CborValue, per: CborValue): CborValue => [s, total, per];
  const ok = site('biz-east', 5, new Map([['password', 5]]));
  const r = (sites: CborValue, gateway: CborValue = 'gateway', periodId: CborValue = 1, periodMs: CborValue = 60_000): CborValue => [gateway, periodId, periodMs, sites];
  return [
    null, 'report', [], ['gateway', 1, 60_000], ['gateway', 1, 60_000, [ok], 'x'],
    r([ok], 'bad gateway!'), r([ok], 7), r([ok], 'g', -1), r([ok], 'g', 1.5 as unknown as CborValue), r([ok], 'g', '1'), r([ok], 'g', 2n ** 60n),
    r([ok], 'g', 1, 0), r([ok], 'g', 1, 999), r([ok], 'g', 1, MAX_PERIOD_MS + 1), r([ok], 'g', 1, '60000'),
    r('sites'), r([ok, ok]), r([site('Biz East', 1, new Map())]), r([site(7, 1, new Map())]), r([site('b'.repeat(33), 1, new Map())]),
    r([site('biz-east', -1, new Map())]), r([site('biz-east', MAX_ATTACK_COUNT + 1, new Map())]), r([site('biz-east', '5', new Map())]),
    r([site('biz-east', 5, new Map([['password', -1]]))]), r([site('biz-east', 5, new Map([['sms', 1]]))]), r([site('biz-east', 5, new Map([[1, 1]]))]),
    r([site('biz-east', 5, new Map([['password', 3], ['otp', 3]]))]), r([site('biz-east', 5, [['password', 1]])]), r([site('biz-east', 5, new Map([['otp', '1']]))]),
    r(Array.from({ length: TableLimits.maxSites + 1 }, (_, i) => site(`s${i}`, 0, new Map()))),
  ];
}

const code = (c: string) => (e: unknown) => e instanceof AdminError && e.code === c;

test('every operation: the documented wire arrays, decoded back to the same values through CBOR', () => {
  for (const op of Object.keys(ADMIN_MESSAGES) as AdminOpName[]) {
    const codec = ADMIN_MESSAGES[op] as (typeof ADMIN_MESSAGES)['status'] & Record<string, (v: unknown) => unknown>;
    const s = samples[op] as { args: unknown; wireArgs: CborValue; result: unknown; wireResult: CborValue };
    assert.equal(codec.encodeArgs(s.args as never), s.wireArgs, `${op} args`);
    assert.equal(codec.decodeArgs(decode(encode(s.wireArgs))), s.args, `${op} args decoded`);
    assert.equal(codec.encodeResult(s.result as never), s.wireResult, `${op} result`);
    assert.equal(codec.decodeResult(decode(encode(s.wireResult))), s.result, `${op} result decoded`);
  }
});

test('hostile arguments are ADMIN_BAD_ARGS, hostile results ADMIN_BAD_RESPONSE', () => {
  const ip = samples.installPending.wireArgs as CborValue[];
  const with_ = (a: CborValue[], i: number, v: CborValue) => a.map((x, j) => (j === i ? v : x));
  const badArgs: [AdminOpName, CborValue][] = [
    ['installPending', null], ['installPending', 'x'], ['installPending', ip.slice(0, 4)], ['installPending', [...ip, 0]],
    ['installPending', with_(ip, 0, 'bad user!')], ['installPending', with_(ip, 0, 'x'.repeat(65))], ['installPending', with_(ip, 0, 1)],
    ['installPending', with_(ip, 1, b(31))], ['installPending', with_(ip, 1, 'k')],
    ['installPending', with_(ip, 2, b(SEALED_SECRET_MIN - 1))], ['installPending', with_(ip, 2, b(SEALED_SECRET_MAX + 1))],
    ['installPending', with_(ip, 3, -1)], ['installPending', with_(ip, 3, 2n ** 64n)], ['installPending', with_(ip, 3, '1')],
    ['installPending', with_(ip, 4, b(15))], ['installPending', with_(ip, 4, b(17))],
    ['status', [1]], ['status', null],
    ['enrollAccount', []], ['enrollAccount', ['acct', 'u', 'x']], ['enrollAccount', ['', 'u']], ['enrollAccount', ['a'.repeat(129), 'u']],
    ['enrollAccount', ['acct', 'bad user']], ['enrollAccount', [1, 'u']], ['enrollAccount', { account: 'a', user: 'u' } as unknown as CborValue],
    ...hostileReports().map((r): [AdminOpName, CborValue] => ['reportAttacks', r]),
    ['latestTable', [1]], ['latestTable', null],
  ];
  for (const [op, v] of badArgs) assert.throws(() => ADMIN_MESSAGES[op].decodeArgs(v), code('ADMIN_BAD_ARGS'), `${op} ${String(v)}`);
  const ir = samples.installPending.wireResult as CborValue[];
  const badResults: [AdminOpName, CborValue][] = [
    ['installPending', null], ['installPending', ir.slice(0, 4)], ['installPending', with_(ir, 1, 1)], ['installPending', with_(ir, 0, -1)],
    ['installPending', with_(ir, 2, 1)], ['installPending', with_(ir, 3, b(8))], ['installPending', with_(ir, 4, b(8))],
    ['status', [true, 1]], ['status', ['yes', 1, 'east']], ['status', [true, -1, 'east']], ['status', [true, 1, 2]],
    ['enrollAccount', 'made'], ['enrollAccount', null], ['enrollAccount', ['created']],
    ['reportAttacks', [true]], ['reportAttacks', [1, 0]], ['latestTable', 'x'], ['latestTable', b(0)], ['latestTable', b(TableLimits.maxTableBytes + 1)],
  ];
  for (const [op, v] of badResults) assert.throws(() => ADMIN_MESSAGES[op].decodeResult(v), code('ADMIN_BAD_RESPONSE'), `${op} ${String(v)}`);
});

test('adminCall and adminOps: typed both ends, a handler never sees unvalidated arguments', async () => {
  let seen: unknown = null;
  const ops = adminOps({ enrollAccount: (a) => ((seen = a), 'created') });
  assert.equal(Object.keys(ops), ['enrollAccount']);
  const loop = { call: async (op: string, args: CborValue) => ops[op]!(decode(encode(args))) };
  assert.is(await adminCall(loop, 'enrollAccount', { account: 'acct-1', user: 'u-1' }), 'created');
  assert.equal(seen, { account: 'acct-1', user: 'u-1' });
  seen = null;
  try {
    await ops.enrollAccount!(['acct-1', 'not a user']);
    assert.unreachable('accepted');
  } catch (e) {
    assert.ok(code('ADMIN_BAD_ARGS')(e), String(e));
  }
  assert.is(seen, null);
});

test.run();
