// The bank exchange's messages (S4.1-S4.8; docs/protocol.md §6.4 gives the CDDL). All of them
// are sealed inner messages: they travel only inside the channel of a completed business
// login (S4.5), after pwConfirm/pwConfirmAck. Each parser returns a typed value or throws
// ProtocolError MSG_BAD_SHAPE / MSG_BAD_FIELD; byte strings it returns are copies.
//
// Three layers meet here (issue 11): the device is the business login around these messages
// (S0), the line is `ids` (what the phone read from its SIM itself, S4.2, or a bank card's
// identity), the person is the login name and the proof: the password (S4), a one-time code
// or a fingerprint signature (S3.3, docs/protocol.md §17), provisioned at the registration
// (bankRegister's fingerprint key, bankRegistered's wrapped TOTP seed).
import type { CborValue } from './cbor.ts';
import { ProtocolError, type ErrorCode } from './errors.ts';
import { array, bytes, text, uint, MECHANISMS, MsgType, type Mechanism, type MessageCodec } from './messages.ts';
import { isE164, isIccid, isImsi } from './line-ids.ts';
import { parsePersonProof, FP_PUBLIC_KEY_BYTES, FP_ATTEST_BYTES, WRAPPED_SEED_MIN, WRAPPED_SEED_MAX } from './person.ts';

/** A person's login name at the bank: 3..64 ASCII letters, digits and . _ @ - (not the device's S0 user). */
export const BANK_NAME_RE = /^[A-Za-z0-9._@-]{3,64}$/;
/** A bank card's identity (the ATM profile, idKind 'card'): 8..32 letters, digits, '-'. */
export const CARD_ID_RE = /^[A-Za-z0-9-]{8,32}$/;
/** Most UTF-8 bytes of a password on the wire (NIST SP 800-63B §3.1.1.2 asks for at least 64 characters). */
export const BANK_PASSWORD_MAX = 256;
/** Most bytes of a password proof (its UTF-8); a one-time code is 6..8 digits, a fingerprint signature 64 bytes. */
export const BANK_PROOF_MAX = 256;
/** Most last logins a bankPage lists. */
export const BANK_LAST_LOGINS_MAX = 8;
/** Bytes of an account-page session token. */
export const PAGE_TOKEN_BYTES = 32;
/** Times on the bank's messages: ms since the epoch, within what a CBOR uint of this profile holds. */
const TIME_MAX = Number.MAX_SAFE_INTEGER;

/**
 * The line identity the phone read itself (S4.2): a SIM's card info (ICCID, IMSI, the number
 * when the card holds one), or, for a device with no SIM, a bank card's identity (idKind 'card').
 */
export type LineIds =
  | { idKind: 'sim'; iccid: string; imsi: string; msisdn: string | null }
  | { idKind: 'card'; cardId: string };
export const ID_KINDS = ['sim', 'card'] as const;

function bad(code: ErrorCode, message: string): never {
  throw new ProtocolError(code, message);
}

/** ids = ["sim", iccid, imsi, msisdn / null] / ["card", card-id] */
export function parseLineIds(v: unknown, name = 'ids'): LineIds {
  if (!Array.isArray(v) || v.length === 0) bad('MSG_BAD_SHAPE', `${name} must be a non-empty array`);
  const kind = text(v[0], `${name}.idKind`, 8);
  if (kind === 'sim') {
    const a = array(v, name, 4);
    const iccid = text(a[1], `${name}.iccid`, 20);
    if (!isIccid(iccid)) bad('MSG_BAD_FIELD', `${name}.iccid is not an ICCID (89, 19-20 digits, Luhn)`);
    const imsi = text(a[2], `${name}.imsi`, 15);
    if (!isImsi(imsi)) bad('MSG_BAD_FIELD', `${name}.imsi is not an IMSI (6-15 digits)`);
    let msisdn: string | null = null;
    if (a[3] !== null) {
      msisdn = text(a[3], `${name}.msisdn`, 16);
      if (!isE164(msisdn)) bad('MSG_BAD_FIELD', `${name}.msisdn is not an E.164 number`);
    }
    return { idKind: 'sim', iccid, imsi, msisdn };
  }
  if (kind === 'card') {
    const a = array(v, name, 2);
    return { idKind: 'card', cardId: text(a[1], `${name}.cardId`, 32, CARD_ID_RE) };
  }
  bad('MSG_BAD_FIELD', `${name}.idKind must be one of ${ID_KINDS.join(', ')}`);
}
export function lineIdsBody(ids: LineIds): CborValue {
  return ids.idKind === 'sim' ? ['sim', ids.iccid, ids.imsi, ids.msisdn] : ['card', ids.cardId];
}

const name_ = (v: unknown, n: string) => text(v, n, 64, BANK_NAME_RE);
const time = (v: unknown, n: string) => uint(v, n, TIME_MAX);

/**
 * The fingerprint key the phone's chip made for the site (S3.3, §17): the Ed25519 public key
 * and its attestation, a MAC under the session's login key (protocol/person.ts
 * fingerprintKeyAttestation) that only the chip holding the business secret can make.
 */
export interface FingerprintKey { publicKey: Uint8Array; attestation: Uint8Array }
function parseFingerprintKey(v: unknown, n: string): FingerprintKey {
  const a = array(v, n, 2);
  return { publicKey: bytes(a[0], `${n}.publicKey`, FP_PUBLIC_KEY_BYTES), attestation: bytes(a[1], `${n}.attestation`, FP_ATTEST_BYTES) };
}

/**
 * bankRegister [name, password, ids, ? fpKey] / bankRebind [name, password, ids]: open an
 * account bound to this line and device (with the person's fingerprint key for the site when
 * the phone has one), or move a binding to a new card.
 */
export interface BankEnrol { name: string; password: string; ids: LineIds; fingerprint?: FingerprintKey }
function parseEnrol(v: CborValue, m: string, withKey: boolean): BankEnrol {
  const a = array(v, m, 3, withKey ? 4 : 3);
  const r: BankEnrol = { name: name_(a[0], `${m}.name`), password: text(a[1], `${m}.password`, BANK_PASSWORD_MAX), ids: parseLineIds(a[2], `${m}.ids`) };
  if (a.length === 4) r.fingerprint = parseFingerprintKey(a[3], `${m}.fpKey`);
  return r;
}
function enrolBody(r: BankEnrol, withKey: boolean): CborValue {
  const body: CborValue[] = [r.name, r.password, lineIdsBody(r.ids)];
  if (withKey && r.fingerprint) body.push([r.fingerprint.publicKey, r.fingerprint.attestation]);
  return body;
}

/**
 * The person's proof in a bankLogin, by mechanism (S3.3): the password's UTF-8 (1..256
 * bytes); "password-verification (one-time code)": the one-time code (6..8 ASCII digits, a
 * text string) AND the password (`password`, 1..256 bytes), both checked — a code alone would
 * make the person layer the mere possession of the phone; or the fingerprint signature over
 * the session's channel binding (64 bytes; the finger matched on the chip).
 */
export type BankProof = { mech: 'password'; proof: Uint8Array } | { mech: 'otp'; proof: string; password: Uint8Array } | { mech: 'fingerprint'; proof: Uint8Array };

/**
 * bankLogin [name, mech, proof, ids, ? password] (S4.2): the person's login information plus
 * the line's first identifier; the fifth item, the password, with mech 'otp' only (and then
 * required).
 */
export type BankLogin = { name: string; ids: LineIds } & BankProof;
export function parseBankLogin(v: CborValue): BankLogin {
  const n = Array.isArray(v) && v[1] === 'otp' ? 5 : 4;
  const a = array(v, 'bankLogin', n);
  const name = name_(a[0], 'bankLogin.name');
  const mech = text(a[1], 'bankLogin.mech', 16);
  if (!(MECHANISMS as readonly string[]).includes(mech)) bad('MSG_BAD_FIELD', `bankLogin.mech '${mech}' is not one of ${MECHANISMS.join(', ')}`);
  const ids = parseLineIds(a[3], 'bankLogin.ids');
  if (mech === 'password') return { name, mech, proof: bytes(a[2], 'bankLogin.proof', 1, BANK_PROOF_MAX), ids };
  // The person layer's own parser (§17 person-proof): a 64-byte signature, or 6..8 digits.
  const p = parsePersonProof([mech, a[2] as CborValue]);
  return p.mech === 'otp' ? { name, mech: 'otp', proof: p.code, password: bytes(a[4], 'bankLogin.password', 1, BANK_PROOF_MAX), ids } : { name, mech: 'fingerprint', proof: p.signature, ids };
}
/** How the bank found the binding: 1 directly by the first identifier (S4.3), 2 through the operator's second identifier (S4.4). */
export type BankMode = 1 | 2;
const mode = (v: unknown, n: string): BankMode => {
  const m = uint(v, n, 2);
  if (m !== 1 && m !== 2) bad('MSG_BAD_FIELD', `${n} must be 1 or 2`);
  return m;
};

/**
 * bankRegistered [account, mode, boundAt, ? otpSeed, ? fpKept]: the account number in full
 * (S4.8: the binding supplies it), sealed. After a registration that provisioned the person
 * layer (S3.3) two more fields: the site's TOTP seed wrapped for the chip (protocol/person.ts
 * wrapOtpSeed: its RFC 6238 parameters travel inside the wrap, bound with the seed), or null
 * when the site offers no one-time code; and whether the bank kept the fingerprint key the
 * registration carried (false: none sent, the site offers no fingerprint, or its attestation
 * failed).
 */
export interface BankRegistered { account: string; mode: BankMode; boundAt: number; otpSeed?: Uint8Array | null; fpKept?: boolean }
export const ACCOUNT_RE = /^[0-9]{12,19}$/;
export function parseBankRegistered(v: CborValue): BankRegistered {
  const a = array(v, 'bankRegistered', 3, 5);
  if (a.length === 4) bad('MSG_BAD_SHAPE', 'bankRegistered must have 3 or 5 items, got 4');
  const r: BankRegistered = { account: text(a[0], 'bankRegistered.account', 19, ACCOUNT_RE), mode: mode(a[1], 'bankRegistered.mode'), boundAt: time(a[2], 'bankRegistered.boundAt') };
  if (a.length === 5) {
    r.otpSeed = a[3] === null ? null : bytes(a[3], 'bankRegistered.otpSeed', WRAPPED_SEED_MIN, WRAPPED_SEED_MAX);
    if (typeof a[4] !== 'boolean') bad('MSG_BAD_FIELD', 'bankRegistered.fpKept must be a boolean');
    r.fpKept = a[4];
  }
  return r;
}
function registeredBody(r: BankRegistered): CborValue {
  const body: CborValue[] = [r.account, r.mode, r.boundAt];
  if (r.otpSeed !== undefined || r.fpKept !== undefined) body.push(r.otpSeed ?? null, r.fpKept ?? false);
  return body;
}

/** A masked account number: '*' for every digit but the last four. */
export const MASKED_ACCOUNT_RE = /^\*{8,15}[0-9]{4}$/;
export function maskAccount(account: string): string {
  return '*'.repeat(Math.max(8, account.length - 4)) + account.slice(-4);
}

/**
 * bankPage [account-masked, mode, [ids, boundAt], [* [at, mode]], token, ttl-s] (S4.7): the
 * account summary and a short-lived token for the same page in a browser.
 */
export interface BankPage {
  account: string;
  mode: BankMode;
  binding: { ids: LineIds; boundAt: number };
  lastLogins: { at: number; mode: BankMode }[];
  token: Uint8Array;
  /** Seconds the token stays valid. */
  ttlS: number;
}
export function parseBankPage(v: CborValue): BankPage {
  const a = array(v, 'bankPage', 6);
  const b = array(a[2], 'bankPage.binding', 2);
  const logins = array(a[3], 'bankPage.lastLogins', 0, BANK_LAST_LOGINS_MAX).map((e, i) => {
    const l = array(e, `bankPage.lastLogins[${i}]`, 2);
    return { at: time(l[0], `bankPage.lastLogins[${i}].at`), mode: mode(l[1], `bankPage.lastLogins[${i}].mode`) };
  });
  return {
    account: text(a[0], 'bankPage.account', 19, MASKED_ACCOUNT_RE),
    mode: mode(a[1], 'bankPage.mode'),
    binding: { ids: parseLineIds(b[0], 'bankPage.binding.ids'), boundAt: time(b[1], 'bankPage.binding.boundAt') },
    lastLogins: logins,
    token: bytes(a[4], 'bankPage.token', PAGE_TOKEN_BYTES),
    ttlS: uint(a[5], 'bankPage.ttl', 86_400),
  };
}

/** bankRefused [code, reason]: the "login not allowed" notice (S4.7) or a registration refusal; the flow ends. */
export interface BankRefused { code: string; reason: string }
export function parseBankRefused(v: CborValue): BankRefused {
  const a = array(v, 'bankRefused', 2);
  return { code: text(a[0], 'bankRefused.code', 64, /^[A-Z][A-Z0-9_]*$/), reason: text(a[1], 'bankRefused.reason', 256) };
}

/** Every message of the bank exchange: encoder paired with decoder. */
export const BankMessages = {
  bankRegister: { type: MsgType.bankRegister, encode: (r) => enrolBody(r, true), decode: (b) => parseEnrol(b, 'bankRegister', true) } satisfies MessageCodec<BankEnrol>,
  bankRebind: { type: MsgType.bankRebind, encode: (r) => enrolBody(r, false), decode: (b) => parseEnrol(b, 'bankRebind', false) } satisfies MessageCodec<BankEnrol>,
  bankLogin: { type: MsgType.bankLogin, encode: (l) => (l.mech === 'otp' ? [l.name, l.mech, l.proof, lineIdsBody(l.ids), l.password] : [l.name, l.mech, l.proof, lineIdsBody(l.ids)]), decode: parseBankLogin } satisfies MessageCodec<BankLogin>,
  bankRegistered: { type: MsgType.bankRegistered, encode: registeredBody, decode: parseBankRegistered } satisfies MessageCodec<BankRegistered>,
  bankPage: {
    type: MsgType.bankPage,
    encode: (p) => [p.account, p.mode, [lineIdsBody(p.binding.ids), p.binding.boundAt], p.lastLogins.map((l) => [l.at, l.mode]), p.token, p.ttlS],
    decode: parseBankPage,
  } satisfies MessageCodec<BankPage>,
  bankRefused: { type: MsgType.bankRefused, encode: (r) => [r.code, r.reason], decode: parseBankRefused } satisfies MessageCodec<BankRefused>,
} as const;
