// The site's one-time-code verifier (S3.3): RFC 6238 Appendix B's own test vectors
// (SHA1, SHA256, SHA512, 8 digits), the bounded clock skew, the replay rule, and hostile codes.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { utf8ToBytes } from '@noble/hashes/utils.js';
import { verifyTotp, totpCode, totpStep } from './totp.ts';
import { ImplementationError } from '../../protocol/errors.ts';
import type { TotpParams } from '../../protocol/person.ts';

// RFC 6238 Appendix B: the seeds are the ASCII strings "1234567890..." of 20, 32 and 64 bytes.
const SEEDS = {
  SHA1: utf8ToBytes('12345678901234567890'),
  SHA256: utf8ToBytes('12345678901234567890123456789012'),
  SHA512: utf8ToBytes('1234567890123456789012345678901234567890123456789012345678901234'),
} as const;
// [time (s), T (hex), SHA1, SHA256, SHA512]
const APPENDIX_B: [number, string, string, string, string][] = [
  [59, '0000000000000001', '94287082', '46119246', '90693936'],
  [1111111109, '00000000023523EC', '07081804', '68084774', '25091201'],
  [1111111111, '00000000023523ED', '14050471', '67062674', '99943326'],
  [1234567890, '000000000273EF07', '89005924', '91819424', '93441116'],
  [2000000000, '0000000003F940AA', '69279037', '90698825', '38618901'],
  [20000000000, '0000000027BC86AA', '65353130', '77737706', '47863826'],
];

test('RFC 6238 Appendix B: every vector (SHA1, SHA256, SHA512, 8 digits), by the code function and accepted by the verifier', () => {
  let n = 0;
  for (const [t, T, ...codes] of APPENDIX_B) {
    for (const [i, algorithm] of (['SHA1', 'SHA256', 'SHA512'] as const).entries()) {
      const p: TotpParams = { algorithm, digits: 8, period: 30 };
      const step = totpStep(t * 1000, 30);
      assert.is(step, parseInt(T, 16), `T at ${t}`);
      assert.is(totpCode(SEEDS[algorithm], p, step), codes[i], `${algorithm} at ${t}`);
      assert.equal(verifyTotp(SEEDS[algorithm], p, codes[i]!, t * 1000, null), { ok: true, step });
      n++;
    }
  }
  assert.is(n, 18);
});

const P: TotpParams = { algorithm: 'SHA1', digits: 6, period: 30 };
const SEED = SEEDS.SHA1;
const T0 = 1_700_000_010_000; // mid-step
const S0 = totpStep(T0, 30);
const code = (step: number, p = P) => totpCode(SEED, p, step);

test('clock skew: a code of the step before or after is accepted (±1 by default), two steps off is PERSON_OTP_SKEW, configurable', () => {
  assert.equal(verifyTotp(SEED, P, code(S0 - 1), T0, null), { ok: true, step: S0 - 1 });
  assert.equal(verifyTotp(SEED, P, code(S0 + 1), T0, null), { ok: true, step: S0 + 1 });
  assert.equal(verifyTotp(SEED, P, code(S0 - 2), T0, null), { ok: false, code: 'PERSON_OTP_SKEW' });
  assert.equal(verifyTotp(SEED, P, code(S0 + 2), T0, null), { ok: false, code: 'PERSON_OTP_SKEW' });
  assert.equal(verifyTotp(SEED, P, code(S0 - 2), T0, null, { skew: 2 }), { ok: true, step: S0 - 2 });
  assert.equal(verifyTotp(SEED, P, code(S0 - 1), T0, null, { skew: 0 }), { ok: false, code: 'PERSON_OTP_SKEW' });
  // Far off (beyond the diagnosis window): just wrong.
  assert.equal(verifyTotp(SEED, P, code(S0 - 40), T0, null), { ok: false, code: 'PERSON_PROOF_FAILED' });
  // The edges of a step: its first and last millisecond.
  assert.equal(verifyTotp(SEED, P, code(S0), S0 * 30_000, null), { ok: true, step: S0 });
  assert.equal(verifyTotp(SEED, P, code(S0), S0 * 30_000 + 29_999, null), { ok: true, step: S0 });
  // A 60 s period, 8 digits, SHA256.
  const p2: TotpParams = { algorithm: 'SHA256', digits: 8, period: 60 };
  const s2 = totpStep(T0, 60);
  assert.equal(verifyTotp(SEEDS.SHA256, p2, totpCode(SEEDS.SHA256, p2, s2), T0, null), { ok: true, step: s2 });
});

test('replay: a code is accepted once; the same code again, or an older step\'s code after a newer one, is PERSON_OTP_REPLAYED', () => {
  const first = verifyTotp(SEED, P, code(S0), T0, null);
  assert.equal(first, { ok: true, step: S0 });
  assert.equal(verifyTotp(SEED, P, code(S0), T0 + 5_000, S0), { ok: false, code: 'PERSON_OTP_REPLAYED' });
  // The previous step's code is still inside the skew, but older than the one accepted.
  assert.equal(verifyTotp(SEED, P, code(S0 - 1), T0, S0), { ok: false, code: 'PERSON_OTP_REPLAYED' });
  // The next step's code is fresh.
  assert.equal(verifyTotp(SEED, P, code(S0 + 1), T0 + 30_000, S0), { ok: true, step: S0 + 1 });
  // A code of the next step used early (clock ahead), then the current step's: refused, it is older.
  assert.equal(verifyTotp(SEED, P, code(S0), T0, S0 + 1), { ok: false, code: 'PERSON_OTP_REPLAYED' });
});

test('hostile codes: wrong digits, wrong length, non-digits, another seed\'s code: PERSON_PROOF_FAILED, never an exception', () => {
  const good = code(S0);
  const other = totpCode(new Uint8Array(20).fill(9), P, S0);
  const bad = [
    '', '0', good.slice(1), good + '0', ' ' + good.slice(1), good.slice(0, 5) + 'a', '-' + good.slice(1), '１２３４５６', `${good}\n`,
    String((Number(good) + 1) % 1_000_000).padStart(6, '0'), other === good ? '000000' : other, 12345 as unknown as string, null as unknown as string,
  ];
  for (const c of bad) assert.equal(verifyTotp(SEED, P, c, T0, null), { ok: false, code: 'PERSON_PROOF_FAILED' }, JSON.stringify(c));
  // Random guesses: about 3 in 10^6 per guess over the three steps of the window; none of 2,000 here.
  let hits = 0;
  for (let i = 0; i < 2000; i++) if (verifyTotp(SEED, P, String((i * 7919) % 1_000_000).padStart(6, '0'), T0, null).ok) hits++;
  assert.ok(hits <= 1, `${hits} guesses accepted`);
});

test('misuse by the bank: a bad seed, parameters, time, last step or skew is ImplementationError PERSON_BAD_ARGS', () => {
  const cases: (() => unknown)[] = [
    () => verifyTotp(new Uint8Array(15), P, '123456', T0, null),
    () => verifyTotp(new Uint8Array(65), P, '123456', T0, null),
    () => verifyTotp(SEED, { ...P, digits: 5 }, '12345', T0, null),
    () => verifyTotp(SEED, { ...P, period: 45 }, '123456', T0, null),
    () => verifyTotp(SEED, { ...P, algorithm: 'MD5' as 'SHA1' }, '123456', T0, null),
    () => verifyTotp(SEED, P, '123456', NaN, null),
    () => verifyTotp(SEED, P, '123456', -1, null),
    () => verifyTotp(SEED, P, '123456', T0, 1.5),
    () => verifyTotp(SEED, P, '123456', T0, null, { skew: -1 }),
    () => verifyTotp(SEED, P, '123456', T0, null, { skew: 11 }),
  ];
  for (const [i, f] of cases.entries()) {
    try {
      f();
      assert.unreachable(`case ${i}`);
    } catch (e) {
      assert.ok(e instanceof ImplementationError && e.code === 'PERSON_BAD_ARGS', `case ${i}: ${String(e)}`);
    }
  }
});

test.run();
