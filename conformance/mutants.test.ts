// The suite is tested by breaking servers on purpose (issue 13): the project's own servers,
// each with one rule broken behind a test-only switch (server-kit/mutant.ts), must each be
// caught by the named case that checks that rule, while conformance.test.ts shows the same
// cases pass against the real servers. A mutant that survives is a bug in the suite.
// The target is the registration server's direct device port: a gateway in front would refuse
// some of these frames itself (the downgraded version) and hide the server's mistake.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { SCRIPTED_FIRMWARE } from '../server-kit/test-device.ts';
import { testStack } from '../deploy/test-util.ts';
import { deriveDeviceKey, makeSerialToken } from '../protocol/keys.ts';
import { MUTANTS, type Mutant } from '../server-kit/mutant.ts';
import { ALL_CASES } from './cases.ts';
import { runCases } from './runner.ts';
import { caseName } from './suite.ts';

/** The bank's scrypt, lowered for speed (biz-server/bank.test.ts runs OWASP's parameters). */
const FAST_SCRYPT = { ln: 12, r: 8, p: 1 };

/** Each mutant and the cases (exact names) that must fail against it. */
const CAUGHT_BY: Record<Mutant, string[]> = {
  'skip-replay-cache': ['§8 a hello replayed on a new connection -> HS_REPLAY and close 1008', '§8 a login replayed on a new connection -> loginAck, then HS_REPLAY and close 1008'],
  'ignore-old-seq': ["§8 a credRequest reusing the finish's seq 1 -> CHAN_REPLAY and close 1008", '§6.2 a finish with seq 0 (repeated) -> CHAN_REPLAY and close 1008'],
  'no-close-after-refusal': ['§3 a hello followed by one more byte -> CBOR_TRAILING_BYTES and close 1002', '§6.2 a hello whose MAC is altered -> HS_BAD_CLIENT_PROOF and close 1008'],
  'promote-at-opening': ['§6.4 a login opening verified but never finished promotes nothing: the current generation still logs in'],
  'accept-version-0': ['§4.1 a hello of envelope version 0 (downgrade) -> MSG_VERSION and close 1002'],
  'answer-device-error': ['§7 an error frame from the device in WAIT_FINISH -> the server ends the session without answering'],
  'lenient-cbor': ['§3 a hello whose version is in a non-shortest head (18 01) -> CBOR_NOT_DETERMINISTIC and close 1002'],
  'wrong-server-proof': ['§6.2 registration accepted: helloReply, then credReply whose secret opens with the device key, then close 1000'],
  'accept-after-error': ['§7 a valid hello right behind a refused frame -> one error frame, close, and no helloReply'],
  'explain-bad-hello': ['§6.2 before authentication one answer: a hello whose token is altered, one naming key version 0 and one whose MAC is altered get the same error frame (code and reason) and close'],
  'keep-old-password': ['§10 after a login with the new generation and its confirmation the old secret is refused (BIZ_AUTH_FAILED)'],
  'leak-serial': ["§12 a registration, then a refused credRequest: no frame the server sends and no close reason holds the device's serial in clear"],
  'altered-table': ["§16 a credReply's table, when present, verifies under the policy server's public key (else the phone refuses it: TABLE_BAD_SIGNATURE)"],
  'bank-before-confirm': ['§6.5 a bankRegister before pwConfirm (after the finish) -> MSG_UNEXPECTED and close 1002'],
  'bank-name-oracle': ['§6.5 an unknown login name and a wrong password on a bound line get the same bankRefused (code and reason)'],
  'bank-no-close': ['§6.5 a second bank request on the same channel -> one answer, then the close: the second is never answered', '§6.5 bank registration accepted: after pwConfirmAck, bankRegister of a new name and line -> bankRegistered (an account of 12..19 digits), then close 1000'],
};

test('every mutant switch has its catching cases, and each named case exists', () => {
  assert.equal(Object.keys(CAUGHT_BY).sort(), [...MUTANTS].sort());
  const names = new Set(ALL_CASES.map(caseName));
  for (const n of Object.values(CAUGHT_BY).flat()) assert.ok(names.has(n), `no case named '${n}'`);
});

for (const mutant of MUTANTS) {
  test(`mutant '${mutant}' is caught by ${CAUGHT_BY[mutant].length === 1 ? 'its named case' : 'each of its named cases'}`, async () => {
    // 'keep-old-password' wraps the SQLite business store (biz-server/server.ts: MUTANT_UNSUPPORTED
    // on PostgreSQL), so that one stack stays on SQLite whatever STORE_URL says.
    const stack = await testStack({ mutant, bankScrypt: FAST_SCRYPT, ...(mutant === 'keep-old-password' ? { store: { kind: 'sqlite' as const } } : {}) });
    try {
      const serial = 'CONF-MUTANT';
      await stack.enroll({ serial, keyVersion: stack.ring.current });
      const m = stack.ring.key(stack.ring.current);
      const cases = ALL_CASES.filter((c) => CAUGHT_BY[mutant].includes(caseName(c)));
      const s = await runCases(cases, {
        url: stack.directUrl('reg-primary')!, regDest: 'reg-primary', timeoutMs: 1_500, stepTimeoutMs: 10_000, policyKey: stack.factoryPolicy.key,
        device: { serial, key: deriveDeviceKey(m, serial), token: makeSerialToken(m, stack.ring.current, serial), measurement: SCRIPTED_FIRMWARE },
      });
      for (const r of s.results) {
        assert.is(r.verdict, 'fail', `${r.name} did not catch '${mutant}': ${r.verdict}`);
        // Caught by the case's own check, not by a case that could not reach it.
        assert.is.not(r.expected, '(the case could not reach its check)', `${r.name} against '${mutant}': ${r.note}`);
        if (process.env.CONFORMANCE_MUTANT_NOTES) console.log(`${mutant}: ${r.name}: ${r.note}`);
      }
    } finally {
      await stack.stop();
    }
  });
}

test.run();
