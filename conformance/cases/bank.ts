// §6.5 (the bank step of S4, server side): one bank request on the sealed channel of a
// confirmed business login, one answer, the close. The suite needs only what the target's bank
// offers any phone: the test device's business logins (from its own registrations, as the
// §6.4 cases) and a line identity it invents per case (flows.ts inventedSim), which the bank
// must bind in mode 1, directly by its ICCID (S4.3): no operator is involved, so no case
// depends on one the target may not have. The "login not allowed" notices checked are those
// mode 1 gives without an operator (unknown card, wrong password).
import { BankMessages, BANK_PASSWORD_MAX, ID_KINDS, MASKED_ACCOUNT_RE, lineIdsBody } from '../../protocol/bank-messages.ts';
import { encodeEnvelope, MsgType } from '../../protocol/messages.ts';
import type { CborValue } from '../../protocol/cbor.ts';
import { closeOf, expectRefusal, pass, fail, type Case, type CaseContext, type Outcome } from '../suite.ts';
import {
  bankSession, bankReply, bankRequest, openAccount, inventedSim, inventedName, replyText, sealBankRequest, proofOf,
  register, firstServer, BANK_TEST_PASSWORD, type BankReply, type BankSession,
} from '../flows.ts';

const M = BankMessages;
const named = (code: string) => `-> ${code} and close ${closeOf(code)}`;

/**
 * Judges a bank answer that must be the notice bankRefused `codes[0]` (another documented BANK_
 * code of the same close: non-strict), then the close with that code's close code, nothing after.
 */
function judgeRefused(r: BankReply, codes: string[]): Outcome {
  const expected = `bankRefused ${codes.join(' or ')} (sealed), then close ${closeOf(codes[0]!)}, nothing after`;
  if (r.kind === 'other') return fail(expected, r.text);
  if (r.kind !== 'refused') return fail(expected, `${replyText(r)}: the bank accepted what it must refuse`);
  if (r.after > 0) return fail(expected, `${r.after} frame(s) followed the answer (S4.7: the flow ends)`);
  if (r.closeCode === null) return fail(expected, `${r.code} was sent but the session was not closed within the timeout`);
  if (!codes.includes(r.code)) {
    if (r.code.startsWith('BANK_') && r.closeCode === closeOf(codes[0]!)) return { verdict: 'non-strict', expected, note: `refused with ${r.code} instead` };
    return fail(expected, `bankRefused ${r.code}, close ${r.closeCode}`);
  }
  if (r.closeCode !== closeOf(r.code)) return fail(expected, `${r.code} then close ${r.closeCode}, not ${closeOf(r.code)}`);
  return pass(expected);
}

/** A bank request built by `make` (which may open an account first), answered by the notice `codes`. */
function refusedRequest(what: string, codes: string[], make: (ctx: CaseContext) => Promise<Parameters<typeof sealBankRequest>[1]>): Case {
  return {
    section: '§6.5',
    title: `${what} -> bankRefused ${codes[0]} and close ${closeOf(codes[0]!)}`,
    async run(ctx) {
      const req = await make(ctx);
      return judgeRefused(await bankRequest(ctx, req), codes);
    },
  };
}

/** On a confirmed business session, one frame made by `make`, then the error frame `codes` and the close. */
function hostile(what: string, codes: string[], make: (s: BankSession, ctx: CaseContext) => Uint8Array, o: { confirm?: boolean } = {}): Case {
  return {
    section: '§6.5',
    title: `${what} ${named(codes[0]!)}`,
    async run(ctx) {
      const s = await bankSession(ctx, o);
      s.c.send(make(s, ctx));
      return expectRefusal(s.c, codes);
    },
  };
}

/** A bankRegister body of a new name and line, changed by `change` (then sealed as is). */
function registerBody(change: (b: CborValue[]) => void): CborValue {
  const b = M.bankRegister.encode({ name: inventedName(), password: BANK_TEST_PASSWORD, ids: inventedSim() }) as CborValue[];
  change(b);
  return b;
}

export const bankCases: Case[] = [
  {
    section: '§6.5',
    title: 'bank registration accepted: after pwConfirmAck, bankRegister of a new name and line -> bankRegistered (an account of 12..19 digits), then close 1000',
    async run(ctx) {
      const expected = 'bankRegistered [account, mode, boundAt] sealed, then close 1000, nothing after';
      const r = await bankRequest(ctx, { kind: 'register', name: inventedName(), password: BANK_TEST_PASSWORD, ids: inventedSim() });
      if (r.kind !== 'registered') return fail(expected, `${replyText(r)}${r.kind === 'refused' && r.code === 'BANK_CARD_INVALID' ? ' (a bank in mode 2 asks an operator, which does not know the invented card: the suite needs mode 1)' : ''}`);
      if (r.after > 0) return fail(expected, `${r.after} frame(s) followed bankRegistered`);
      return r.closeCode === 1000 ? pass(expected) : fail(expected, `close ${r.closeCode ?? 'none within the timeout'} after bankRegistered`);
    },
  },
  {
    section: '§6.5',
    title: 'bank login accepted: bankLogin (password) of the registered line -> bankPage (the account masked to its last four digits, the bound ICCID, a 32-byte token), then close 1000',
    async run(ctx) {
      const expected = 'bankPage sealed: account masked with the registered account\'s last four digits, binding ids = the line, then close 1000';
      const a = await openAccount(ctx);
      const r = await bankRequest(ctx, { kind: 'login', name: a.name, mech: 'password', proof: proofOf(BANK_TEST_PASSWORD), ids: a.ids });
      if (r.kind !== 'page') return fail(expected, replyText(r));
      const p = r.page;
      if (!MASKED_ACCOUNT_RE.test(p.account) || p.account.slice(-4) !== a.account.slice(-4)) return fail(expected, `the page shows account ${p.account}, registered ${a.account.length} digits ending ${a.account.slice(-4)}`);
      if (p.account.replace(/\*/g, '').length !== 4) return fail(expected, 'more than four digits of the account shown');
      const ids = p.binding.ids;
      if (ids.idKind !== 'sim' || a.ids.idKind !== 'sim' || ids.iccid !== a.ids.iccid) return fail(expected, 'the page names another line than the one bound');
      if (r.after > 0) return fail(expected, `${r.after} frame(s) followed bankPage`);
      return r.closeCode === 1000 ? pass(expected) : fail(expected, `close ${r.closeCode ?? 'none within the timeout'} after bankPage`);
    },
  },
  refusedRequest('a bankLogin with the wrong password', ['BANK_BAD_CREDENTIALS'], async (ctx) => {
    const a = await openAccount(ctx);
    return { kind: 'login', name: a.name, mech: 'password', proof: proofOf(`${BANK_TEST_PASSWORD}x`), ids: a.ids };
  }),
  refusedRequest('a bankLogin from a card no account is bound to (unknown card)', ['BANK_NOT_BOUND'], async () => ({ kind: 'login', name: inventedName(), mech: 'password', proof: proofOf(BANK_TEST_PASSWORD), ids: inventedSim() })),
  refusedRequest('a bankRegister of a line already bound to an account', ['BANK_ID_BOUND'], async (ctx) => {
    const a = await openAccount(ctx);
    return { kind: 'register', name: inventedName(), password: BANK_TEST_PASSWORD, ids: a.ids };
  }),
  refusedRequest('a bankRegister of a login name already taken', ['BANK_NAME_TAKEN'], async (ctx) => {
    const a = await openAccount(ctx);
    return { kind: 'register', name: a.name, password: BANK_TEST_PASSWORD, ids: inventedSim() };
  }),
  refusedRequest('a bankRegister with a 3-character password', ['BANK_PASSWORD_WEAK'], async () => ({ kind: 'register', name: inventedName(), password: 'a1!', ids: inventedSim() })),
  {
    section: '§6.5',
    title: 'an unknown login name and a wrong password on a bound line get the same bankRefused (code and reason)',
    async run(ctx) {
      const expected = 'identical bankRefused bodies: which login names exist is not told (docs/protocol.md §6.5 step 3)';
      const a = await openAccount(ctx);
      const wrong = await bankRequest(ctx, { kind: 'login', name: a.name, mech: 'password', proof: proofOf(`${BANK_TEST_PASSWORD}x`), ids: a.ids });
      const nobody = await bankRequest(ctx, { kind: 'login', name: inventedName(), mech: 'password', proof: proofOf(BANK_TEST_PASSWORD), ids: a.ids });
      if (wrong.kind !== 'refused' || nobody.kind !== 'refused') return fail(expected, `wrong password: ${replyText(wrong)}; unknown name: ${replyText(nobody)}`);
      if (wrong.code !== nobody.code || wrong.reason !== nobody.reason) return fail(expected, `'${wrong.code}: ${wrong.reason}' against '${nobody.code}: ${nobody.reason}'`);
      return pass(expected);
    },
  },
  hostile('a bankRegister before pwConfirm (after the finish)', ['MSG_UNEXPECTED'], (s) => sealBankRequest(s.channel, { kind: 'register', name: inventedName(), password: BANK_TEST_PASSWORD, ids: inventedSim() }), { confirm: false }),
  {
    section: '§6.5',
    title: `a bankRegister as the first frame of a business session ${named('MSG_UNEXPECTED')}`,
    async run(ctx) {
      const r = await register(ctx);
      if (r.kind !== 'cred') return fail('MSG_UNEXPECTED', `registration: ${r.kind === 'other' ? r.text : 'notFound'}`);
      const server = firstServer(r.cred);
      const c = await ctx.connect(server.url);
      c.send(encodeEnvelope(MsgType.bankRegister, 0, server.name, new Uint8Array(64)));
      return expectRefusal(c, ['MSG_UNEXPECTED']);
    },
  },
  hostile('a bankRegister of two items (malformed)', ['MSG_BAD_SHAPE'], (s) => s.channel.seal(M.bankRegister.type, registerBody((b) => b.pop()))),
  hostile("a bankRegister whose ids name an unknown idKind ('esim')", ['MSG_BAD_FIELD'], (s) => s.channel.seal(M.bankRegister.type, registerBody((b) => ((b[2] as CborValue[])[0] = 'esim')))),
  hostile(`a bankRegister whose password is BANK_PASSWORD_MAX + 1 = ${BANK_PASSWORD_MAX + 1} bytes (oversize)`, ['MSG_BAD_FIELD'], (s) => s.channel.seal(M.bankRegister.type, registerBody((b) => (b[1] = 'p'.repeat(BANK_PASSWORD_MAX + 1))))),
  hostile('a bankLogin whose ICCID fails its Luhn check', ['MSG_BAD_FIELD'], (s) => {
    const ids = inventedSim();
    const last = Number(ids.iccid.at(-1));
    const bad = { ...ids, iccid: ids.iccid.slice(0, -1) + String((last + 1) % 10) };
    return s.channel.seal(M.bankLogin.type, [inventedName(), 'password', proofOf(BANK_TEST_PASSWORD), lineIdsBody(bad)]);
  }),
  // A server-only type from a device: the bank's state refuses it; a gateway refuses its direction.
  hostile('a bankPage sent by the device', ['MSG_UNEXPECTED', 'GW_BAD_DIRECTION'], (s) => s.channel.seal(M.bankPage.type, ['*********1234', 1, [lineIdsBody(inventedSim()), 0], [], new Uint8Array(32), 60])),
  {
    section: '§6.5',
    title: 'a second bank request on the same channel -> one answer, then the close: the second is never answered',
    async run(ctx) {
      const expected = `one sealed answer, then the close (1000, or the notice's close code), no second answer; or the second refused (MSG_UNEXPECTED, close ${closeOf('MSG_UNEXPECTED')}) before any answer`;
      const s = await bankSession(ctx);
      const req = () => sealBankRequest(s.channel, { kind: 'register', name: inventedName(), password: BANK_TEST_PASSWORD, ids: inventedSim() });
      s.c.send(req());
      s.c.send(req(), 'a second request, right behind the first');
      const r = await bankReply(s);
      if (r.kind === 'other') {
        // A server that reads the second request before it answers the first refuses it.
        return /^error frame MSG_UNEXPECTED$/.test(r.text) ? pass(expected, 'the second request was refused before any answer') : fail(expected, r.text);
      }
      if (r.after > 0) return fail(expected, `${replyText(r)}, then ${r.after} more frame(s): the channel stayed open for another request (S4.7: the flow ends after the answer)`);
      const want = r.kind === 'refused' ? closeOf(r.code) : 1000;
      return r.closeCode === want ? pass(expected) : fail(expected, `${replyText(r)}, then close ${r.closeCode ?? 'none within the timeout'}`);
    },
  },
];

// ID_KINDS is what the hostile idKind case must stay outside of.
if ((ID_KINDS as readonly string[]).includes('esim')) throw new Error("conformance/cases/bank.ts: 'esim' became an idKind; pick another unknown one");
