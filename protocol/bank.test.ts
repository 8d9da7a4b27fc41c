// The bank exchange's machines against each other on the channel of a real business login
// (no socket), and every bank message fed hostile values field by field (compare
// messages.test.ts): accepted exactly when the CDDL of docs/protocol.md §6.4 admits it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { LoginClient, LoginServer, type LoginServerDeps } from './login.ts';
import { BankClient, BankServer, type BankOutcome } from './bank.ts';
import {
  BankMessages, parseLineIds, parseBankLogin, parseBankPage, parseBankRegistered, parseBankRefused, maskAccount, type BankPage, type LineIds,
} from './bank-messages.ts';
import { passwordLoginKey } from './channel.ts';
import { decodeEnvelope, encodeEnvelope, MsgType, SEALED_TYPES, type Envelope } from './messages.ts';
import { encode, decode, type CborValue } from './cbor.ts';
import { ProtocolError, ImplementationError } from './errors.ts';
import { keystreamRng } from './seeded-rng.ts';

const secret = keystreamRng('bank secret')(32);
const user = 'dev-7';
const loginKey = passwordLoginKey(secret, user);
const deps: LoginServerDeps = {
  lookup: () => ({ kind: 'found', key: loginKey.slice(), active: true, pending: false }),
  assertFresh: () => {},
  promote: () => true,
  confirm: () => true,
};
const sim: LineIds = { idKind: 'sim', iccid: '89441000000000000018', imsi: '234150000000001', msisdn: '+447700900001' };
const te = new TextEncoder();
const code = (c: string) => (e: unknown) => e instanceof ProtocolError && e.code === c;

/** A login to pwConfirmAck with `bank` as the client's `then`; returns both ends and the server's bank machine. */
/** The login driven to pwConfirmAck; `started` is the client's step on that ack (where `bank` begins). */
function toConfirmAck(bank: BankClient) {
  const c = new LoginClient({ dest: 'biz-east', user, gen: 1, secret, rng: keystreamRng('c'), then: bank });
  const s = new LoginServer('biz-east', deps, keystreamRng('s'));
  const feed = (frames: Uint8Array[]) => frames.flatMap((f) => s.receive(f, decodeEnvelope(f)).send);
  const a = feed(c.start().send);
  c.receive(a[0]!);
  const fin = c.receive(a[1]!).send;
  const ack = feed([...fin, ...c.afterLogin(true).send]);
  return { c, s, started: c.receive(ack[0]!) };
}

function loggedIn(bank: BankClient) {
  const { c, s, started } = toConfirmAck(bank);
  assert.is(started.event, 'continued');
  const bs = new BankServer(s.takeChannel());
  assert.throws(() => s.takeChannel(), (e: unknown) => e instanceof ImplementationError && e.code === 'EXCHANGE_STATE');
  return { c, bs, request: started.send };
}

const page: BankPage = { account: maskAccount('620000000000123'), mode: 1, binding: { ids: sim, boundAt: 1_700_000_000_000 }, lastLogins: [{ at: 1_700_000_000_500, mode: 1 }], token: new Uint8Array(32).fill(7), ttlS: 300 };

test('login -> pwConfirmAck -> bankLogin sealed on the same channel -> bankPage: the client ends ok with the page', () => {
  const proof = te.encode('correct horse battery');
  const { c, bs, request } = loggedIn(new BankClient({ kind: 'login', name: 'alice', mech: 'password', proof, ids: sim }));
  assert.ok(proof.every((b) => b === 0), 'the proof is wiped once sealed');
  assert.is(request.length, 1);
  const env = decodeEnvelope(request[0]!);
  assert.is(env.type, MsgType.bankLogin);
  assert.ok(!new TextDecoder('latin1').decode(request[0]!).includes('correct horse'), 'the password is not in the frame in clear');
  const ev = bs.receive(env);
  assert.ok(ev.event?.kind === 'login' && ev.event.req.mech === 'password' && new TextDecoder().decode(ev.event.req.proof) === 'correct horse battery' && ev.event.req.name === 'alice' && ev.event.binding === null);
  assert.throws(() => bs.answer({ kind: 'registered', registered: { account: '620000000000123', mode: 1, boundAt: 1 } }), (e: unknown) => e instanceof ImplementationError);
  const ans = bs.answer({ kind: 'page', page });
  assert.equal(ans.done, { kind: 'page', closeCode: 1000 });
  const end = c.receive(ans.send[0]!);
  assert.equal(end.done, { kind: 'ok', confirmed: true, then: { kind: 'page', page } satisfies BankOutcome });
});

test('a fingerprint login: the prover gets this session\'s channel binding, the server\'s event carries its own end\'s, equal; an otp login gets none', () => {
  let seen: Uint8Array | null = null;
  const sig = new Uint8Array(64).fill(5);
  const { c, bs, request } = loggedIn(new BankClient({ kind: 'prove', name: 'alice', mech: 'fingerprint', ids: sim, prove: (b) => ((seen = b && Uint8Array.from(b)), { ok: true, proof: { mech: 'fingerprint', signature: sig } }) }));
  assert.ok(seen !== null && (seen as Uint8Array).length === 32);
  const ev = bs.receive(decodeEnvelope(request[0]!));
  assert.ok(ev.event?.kind === 'login' && ev.event.req.mech === 'fingerprint');
  assert.equal(ev.event.kind === 'login' && ev.event.binding, seen, 'both ends export the same binding');
  assert.equal(ev.event.kind === 'login' && ev.event.req.proof, sig);
  const ans = bs.answer({ kind: 'refused', code: 'PERSON_PROOF_FAILED', reason: 'no' });
  assert.equal(ans.done, { kind: 'refused', code: 'PERSON_PROOF_FAILED', closeCode: 1008 });
  assert.equal(c.receive(ans.send[0]!).done, { kind: 'ok', confirmed: true, then: { kind: 'refused', code: 'PERSON_PROOF_FAILED', reason: 'no' } });

  let otpBinding: Uint8Array | null | undefined;
  const o = loggedIn(new BankClient({ kind: 'prove', name: 'alice', mech: 'otp', ids: sim, password: 'alice-password-1', prove: (b) => ((otpBinding = b), { ok: true, proof: { mech: 'otp', code: '123456' } }) }));
  assert.is(otpBinding, null);
  const oe = o.bs.receive(decodeEnvelope(o.request[0]!));
  assert.ok(oe.event?.kind === 'login' && oe.event.req.mech === 'otp' && oe.event.req.proof === '123456' && oe.event.binding === null);
});

test('a proof the phone cannot make (another finger): nothing is sent, the client ends with no-proof and the device-local code', () => {
  const { started: end } = toConfirmAck(new BankClient({ kind: 'prove', name: 'alice', mech: 'fingerprint', ids: sim, prove: () => ({ ok: false, code: 'PERSON_FP_NO_MATCH', detail: 'another finger' }) }));
  assert.equal(end.send, []);
  assert.equal(end.done, { kind: 'ok', confirmed: true, then: { kind: 'no-proof', code: 'PERSON_FP_NO_MATCH', reason: 'another finger' } });
});

test('register -> bankRegistered; a refusal is bankRefused with the code and its close code; the flow ends', () => {
  const r = loggedIn(new BankClient({ kind: 'register', name: 'alice', password: 'correct horse battery', ids: sim }));
  const ev = r.bs.receive(decodeEnvelope(r.request[0]!));
  assert.ok(ev.event?.kind === 'register' && ev.event.req.password === 'correct horse battery');
  const ok = r.bs.answer({ kind: 'registered', registered: { account: '620000000000123', mode: 2, boundAt: 5 } });
  assert.equal(r.c.receive(ok.send[0]!).done, { kind: 'ok', confirmed: true, then: { kind: 'registered', registered: { account: '620000000000123', mode: 2, boundAt: 5 } } });
  assert.throws(() => r.bs.answer({ kind: 'refused', code: 'BANK_NOT_BOUND', reason: 'x' }), (e: unknown) => e instanceof ImplementationError);

  const f = loggedIn(new BankClient({ kind: 'rebind', name: 'alice', password: 'pw-pw-pw-pw', ids: sim }));
  assert.is(f.bs.receive(decodeEnvelope(f.request[0]!)).event?.kind, 'rebind');
  const no = f.bs.answer({ kind: 'refused', code: 'BANK_OPERATOR_UNAVAILABLE', reason: 'the operator did not answer' });
  assert.equal(no.done, { kind: 'refused', code: 'BANK_OPERATOR_UNAVAILABLE', closeCode: 1013 });
  assert.equal(f.c.receive(no.send[0]!).done, { kind: 'ok', confirmed: true, then: { kind: 'refused', code: 'BANK_OPERATOR_UNAVAILABLE', reason: 'the operator did not answer' } });
});

test('out-of-state frames: a second request, a bankPage to a registration, a pwConfirm to the bank: MSG_UNEXPECTED', () => {
  const r = loggedIn(new BankClient({ kind: 'register', name: 'alice', password: 'correct horse battery', ids: sim }));
  const env = decodeEnvelope(r.request[0]!);
  r.bs.receive(env);
  assert.throws(() => r.bs.receive(env), code('MSG_UNEXPECTED'));
  // The client was registering: a bankPage is not its answer (an error frame, the end).
  const l = loggedIn(new BankClient({ kind: 'login', name: 'alice', mech: 'password', proof: new Uint8Array([1]), ids: sim }));
  const bogus = encodeEnvelope(MsgType.bankRegistered, 2, 'biz-east', new Uint8Array(20));
  const end = l.c.receive(bogus);
  assert.ok(end.done && 'code' in end.done && end.done.code === 'MSG_UNEXPECTED');
  const b2 = loggedIn(new BankClient({ kind: 'login', name: 'alice', mech: 'password', proof: new Uint8Array([1]), ids: sim }));
  assert.throws(() => b2.bs.receive({ version: 1, type: MsgType.pwConfirm, seq: 3, dest: 'biz-east', body: new Uint8Array(20) } as Envelope), code('MSG_UNEXPECTED'));
});

test('every bank type is sealed; a registration message forged in clear is refused by the channel (CHAN_BAD_TAG)', () => {
  for (const t of [40, 41, 42, 43, 44, 45]) assert.ok(SEALED_TYPES.has(t), `type ${t} sealed`);
  const r = loggedIn(new BankClient({ kind: 'register', name: 'alice', password: 'correct horse battery', ids: sim }));
  const forged = encodeEnvelope(MsgType.bankRegister, 3, 'biz-east', encode(BankMessages.bankRegister.encode({ name: 'mallory', password: 'x'.repeat(12), ids: sim })));
  assert.throws(() => r.bs.receive(decodeEnvelope(forged)), code('CHAN_BAD_TAG'));
});

// ---- hostile inputs, field by field ----
const common: CborValue[] = [0, 1, 2, 3, -1, 2 ** 53 - 1, '', 'a', 'x'.repeat(300), new Uint8Array(0), new Uint8Array(32), new Uint8Array(257), null, true, [], ['sim'], new Map()];
interface Case { name: string; parse: (v: CborValue) => unknown; valid: CborValue[]; fields: { i: number; ok: CborValue[]; bad: CborValue[] }[] }
const simBody = ['sim', sim.iccid, (sim as { imsi: string }).imsi, '+447700900001'];
const cases: Case[] = [
  {
    name: 'ids(sim)', parse: (v) => parseLineIds(v), valid: simBody,
    fields: [
      { i: 0, ok: ['sim'], bad: ['SIM', 'card', 'phone'] },
      { i: 1, ok: [sim.iccid], bad: ['89441000000000000019', '1234567890123456789', '8944100000000000000X'] },
      { i: 2, ok: ['234150000000001', '123456'], bad: ['12345', '1234567890123456', '23415000000000a'] },
      { i: 3, ok: ['+447700900001', null], bad: ['447700900001', '+0447700900001', '+1234'] },
    ],
  },
  { name: 'ids(card)', parse: (v) => parseLineIds(v), valid: ['card', 'CARD-0001'], fields: [{ i: 1, ok: ['CARD-0001', 'A'.repeat(32)], bad: ['short', 'A'.repeat(33), 'card 0001!'] }] },
  {
    name: 'bankRegister', parse: BankMessages.bankRegister.decode, valid: ['alice', 'correct horse', simBody],
    fields: [
      { i: 0, ok: ['alice', 'a.b@c-d_e', 'x'.repeat(64)], bad: ['al', 'x'.repeat(65), 'al ice', 'ålice'] },
      { i: 1, ok: ['p', 'å'.repeat(128)], bad: ['å'.repeat(129)] },
      { i: 2, ok: [['card', 'CARD-0001']], bad: [['sim', sim.iccid], ['card']] },
    ],
  },
  {
    name: 'bankRegister+fpKey', parse: BankMessages.bankRegister.decode, valid: ['alice', 'correct horse', simBody, [new Uint8Array(32), new Uint8Array(32)]],
    fields: [{ i: 3, ok: [[new Uint8Array(32).fill(9), new Uint8Array(32).fill(8)]], bad: [[new Uint8Array(31), new Uint8Array(32)], [new Uint8Array(32), new Uint8Array(33)], [new Uint8Array(32)], [new Uint8Array(32), new Uint8Array(32), new Uint8Array(32)], ['k', 'a']] }],
  },
  {
    name: 'bankLogin', parse: parseBankLogin, valid: ['alice', 'password', new Uint8Array(8), simBody],
    fields: [
      // Another mechanism with a password's proof is a wrong proof for it.
      { i: 1, ok: ['password'], bad: ['pin', 'Password', 'otp', 'fingerprint'] },
      { i: 2, ok: [new Uint8Array(1), new Uint8Array(256)], bad: ['password-as-text'] },
    ],
  },
  {
    // Password-verification (S3.3): the code and the person's password (the fifth item).
    name: 'bankLogin(otp)', parse: parseBankLogin, valid: ['alice', 'otp', '123456', simBody, new Uint8Array(8)],
    fields: [
      { i: 1, ok: ['otp'], bad: ['password', 'fingerprint', 'OTP'] },
      { i: 2, ok: ['000000', '1234567', '12345678'], bad: ['12345', '123456789', '12345a', ' 123456', '１２３４５６', new Uint8Array(6)] },
      { i: 4, ok: [new Uint8Array(1), new Uint8Array(256)], bad: [new Uint8Array(0), new Uint8Array(257), 'password-as-text'] },
    ],
  },
  {
    name: 'bankLogin(fingerprint)', parse: parseBankLogin, valid: ['alice', 'fingerprint', new Uint8Array(64), simBody],
    fields: [
      { i: 1, ok: ['fingerprint', 'password'], bad: ['otp'] },
      { i: 2, ok: [new Uint8Array(64).fill(255)], bad: [new Uint8Array(63), new Uint8Array(65), 'sig'] },
    ],
  },
  {
    name: 'bankRegistered', parse: parseBankRegistered, valid: ['620000000000123', 1, 5],
    fields: [
      { i: 0, ok: ['123456789012', '1234567890123456789'], bad: ['12345678901', '12345678901234567890', '6200-0000'] },
      { i: 1, ok: [1, 2], bad: [0, 3] },
      { i: 2, ok: [0, 2 ** 53 - 1], bad: [] },
    ],
  },
  {
    name: 'bankRegistered+person', parse: parseBankRegistered, valid: ['620000000000123', 1, 5, new Uint8Array(66), true],
    fields: [
      { i: 3, ok: [null, new Uint8Array(66), new Uint8Array(117)], bad: [new Uint8Array(65), new Uint8Array(118)] },
      { i: 4, ok: [true, false], bad: [] },
    ],
  },
  {
    name: 'bankPage', parse: parseBankPage, valid: BankMessages.bankPage.encode(page) as CborValue[],
    fields: [
      { i: 0, ok: ['********1234', '***********0123'], bad: ['620000000000123', '****1234', '********12345'] },
      { i: 3, ok: [[], [[1, 1], [2, 2]]], bad: [[[1, 3]], [[1]], Array.from({ length: 9 }, () => [1, 1])] },
      { i: 4, ok: [new Uint8Array(32)], bad: [new Uint8Array(31), new Uint8Array(33)] },
      { i: 5, ok: [0, 86_400], bad: [86_401] },
    ],
  },
  { name: 'bankRefused', parse: parseBankRefused, valid: ['BANK_NOT_BOUND', 'no binding'], fields: [{ i: 0, ok: ['X', 'BANK_SIM_SWAPPED'], bad: ['bank', 'BANK-X', '1X'] }] },
];

function outcome(f: () => unknown): string {
  try {
    f();
    return 'ok';
  } catch (e) {
    if (e instanceof ProtocolError) return e.code;
    throw e;
  }
}

test('hostile inputs: every field of every bank message, fed every type and its edge values: accepted or MSG_BAD_FIELD/MSG_BAD_SHAPE, nothing else thrown', () => {
  for (const c of cases) {
    assert.is(outcome(() => c.parse(c.valid)), 'ok', `${c.name} valid`);
    // Through the codec too: what parses after a round trip of the wire encoding.
    assert.is(outcome(() => c.parse(decode(encode(c.valid)))), 'ok', `${c.name} valid via the wire`);
    for (const f of c.fields) {
      for (const v of f.ok) assert.is(outcome(() => c.parse(c.valid.map((x, i) => (i === f.i ? v : x)))), 'ok', `${c.name}[${f.i}] = ${String(v)}`);
      for (const v of [...f.bad, ...common.filter((x) => !f.ok.some((o) => encode(o).join() === encode(x).join()))]) {
        const got = outcome(() => c.parse(c.valid.map((x, i) => (i === f.i ? v : x))));
        if (c.name === 'bankRegister' && f.i === 1 && typeof v === 'string' && v.length > 0 && v.length <= 256 && new TextEncoder().encode(v).length <= 256) continue;
        if (c.name === 'bankLogin' && f.i === 2 && v instanceof Uint8Array && v.length >= 1 && v.length <= 256) continue;
        if (c.name === 'bankLogin(otp)' && f.i === 4 && v instanceof Uint8Array && v.length >= 1 && v.length <= 256) continue;
        if (c.name === 'bankRegister+fpKey' && f.i === 1 && typeof v === 'string' && v.length > 0 && new TextEncoder().encode(v).length <= 256) continue;
        if (c.name === 'bankRegistered' && f.i === 2 && typeof v === 'number' && Number.isInteger(v) && v >= 0) continue;
        if (c.name === 'bankPage' && f.i === 5 && typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 86_400) continue;
        if (c.name === 'bankRefused' && f.i === 0 && typeof v === 'string' && /^[A-Z][A-Z0-9_]*$/.test(v)) continue;
        assert.ok(got === 'MSG_BAD_FIELD' || got === 'MSG_BAD_SHAPE', `${c.name}[${f.i}] = ${JSON.stringify(v instanceof Uint8Array ? `bytes(${v.length})` : v)}: ${got}`);
      }
    }
    // The fingerprint key is optional: without it, a plain bankRegister.
    for (const body of [null, 'x', ...(c.name === 'bankRegister+fpKey' ? [] : [c.valid.slice(0, -1)]), [...c.valid, 0], new Map()]) {
      const got = outcome(() => c.parse(body as CborValue));
      assert.ok(got === 'MSG_BAD_SHAPE' || got === 'MSG_BAD_FIELD', `${c.name} body ${JSON.stringify(body)}: ${got}`);
    }
  }
});

test('maskAccount keeps the last four digits only', () => {
  assert.is(maskAccount('620000000000123'), '***********0123');
  assert.is(maskAccount('123456789012'), '********9012');
});

test.run();
