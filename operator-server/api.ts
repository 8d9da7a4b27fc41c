// The operator API's operations, free of HTTP: each takes the parsed JSON body, validates
// every field first and either returns the answer or throws ApiError with a CAMARA code
// (server-kit/operator-api.ts). server.ts does the transport, authentication and limits.
// Nothing here writes: every operation is a read of the store.
import { isE164, isIccid, isImsi } from '../protocol/line-ids.ts';
import { MAX_AGE, OperatorErrors, type OperatorErrorCode, type CheckSimSwapInfo, type SimSwapInfo, type PhoneNumberInfo, type CardInfoResponse, type CardValidity } from '../server-kit/operator-api.ts';
import type { OperatorStore, Card } from './store.ts';

export class ApiError extends Error {
  override readonly name = 'ApiError';
  readonly status: number;
  constructor(readonly code: OperatorErrorCode, message: string) {
    super(message);
    this.status = OperatorErrors[code];
  }
}

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

type Body = Record<string, unknown>;

/** Refuses properties the operation does not define: nothing is silently ignored. */
function onlyFields(body: Body, allowed: readonly string[]): void {
  for (const k of Object.keys(body)) {
    if (!allowed.includes(k)) throw new ApiError('INVALID_ARGUMENT', `unknown property '${k.slice(0, 32)}'; this operation takes ${allowed.join(', ')}`);
  }
}

/**
 * The phone number of a 2-legged request (client credentials: the token names no line, so
 * the body must). CAMARA: absent -> 422 MISSING_IDENTIFIER; malformed -> 400 INVALID_ARGUMENT.
 */
function phoneNumber(body: Body, required: true): string;
function phoneNumber(body: Body, required: false): string | undefined;
function phoneNumber(body: Body, required: boolean): string | undefined {
  const v = body.phoneNumber;
  if (v === undefined) {
    if (required) throw new ApiError('MISSING_IDENTIFIER', 'The device cannot be identified: phoneNumber is required.');
    return undefined;
  }
  if (!isE164(v)) throw new ApiError('INVALID_ARGUMENT', 'phoneNumber must be E.164 with a leading + (^\\+[1-9][0-9]{4,14}$)');
  return v;
}

function cardIds(body: Body): { iccid?: string; imsi?: string } {
  const { iccid, imsi } = body;
  if (iccid !== undefined && !isIccid(iccid)) throw new ApiError('INVALID_ARGUMENT', 'iccid must be 19-20 digits starting 89 with a valid Luhn check digit');
  if (imsi !== undefined && !isImsi(imsi)) throw new ApiError('INVALID_ARGUMENT', 'imsi must be 6-15 digits');
  return { iccid: iccid as string | undefined, imsi: imsi as string | undefined };
}

export interface ApiContext {
  store: OperatorStore;
  now: () => number;
  /** Days of card-change history the operator answers for; null = all of it. */
  monitoredPeriodDays: number | null;
}

async function line(ctx: ApiContext, n: string) {
  const s = await ctx.store.byPhoneNumber(n);
  if (!s) throw new ApiError('IDENTIFIER_NOT_FOUND', 'Device identifier not found.');
  return s;
}

/** CAMARA SIM Swap v2 `POST /check`: was the line paired with a card within maxAge hours? */
export async function checkSimSwap(ctx: ApiContext, body: Body): Promise<CheckSimSwapInfo> {
  onlyFields(body, ['phoneNumber', 'maxAge']);
  const n = phoneNumber(body, true);
  const maxAge = body.maxAge ?? MAX_AGE.default;
  if (typeof maxAge !== 'number' || !Number.isInteger(maxAge)) throw new ApiError('INVALID_ARGUMENT', 'maxAge must be a whole number of hours');
  if (maxAge < MAX_AGE.min || maxAge > MAX_AGE.max) throw new ApiError('OUT_OF_RANGE', `maxAge must be ${MAX_AGE.min}..${MAX_AGE.max} hours`);
  if (ctx.monitoredPeriodDays !== null && maxAge * HOUR > ctx.monitoredPeriodDays * DAY) {
    throw new ApiError('OUT_OF_RANGE', `maxAge exceeds the monitored period of ${ctx.monitoredPeriodDays} days`);
  }
  const s = await line(ctx, n);
  return { swapped: s.cardChangedAt >= ctx.now() - maxAge * HOUR };
}

/**
 * CAMARA SIM Swap v2 `POST /retrieve-date`: the last card change (RFC 3339, UTC 'Z'); null
 * with `monitoredPeriod` when it lies before the period the operator monitors.
 */
export async function retrieveSimSwapDate(ctx: ApiContext, body: Body): Promise<SimSwapInfo> {
  onlyFields(body, ['phoneNumber']);
  const s = await line(ctx, phoneNumber(body, true));
  if (ctx.monitoredPeriodDays !== null && s.cardChangedAt < ctx.now() - ctx.monitoredPeriodDays * DAY) {
    return { latestSimChange: null, monitoredPeriod: ctx.monitoredPeriodDays };
  }
  return { latestSimChange: new Date(s.cardChangedAt).toISOString() };
}

/** The card named by exactly one of iccid / imsi (400 for both, 422 for neither, 404 unknown). */
async function oneCard(ctx: ApiContext, body: Body): Promise<Card> {
  const { iccid, imsi } = cardIds(body);
  if (iccid === undefined && imsi === undefined) throw new ApiError('MISSING_IDENTIFIER', 'The card cannot be identified: give iccid or imsi.');
  if (iccid !== undefined && imsi !== undefined) throw new ApiError('INVALID_ARGUMENT', 'give iccid or imsi, not both');
  const c = await (iccid !== undefined ? ctx.store.cardByIccid(iccid) : ctx.store.cardByImsi(imsi!));
  if (!c) throw new ApiError('IDENTIFIER_NOT_FOUND', 'Card identifier not found.');
  return c;
}

/** S4.4, card info -> phone number: the line the card is (or, replaced, was last) paired with. */
export async function retrievePhoneNumber(ctx: ApiContext, body: Body): Promise<PhoneNumberInfo> {
  onlyFields(body, ['iccid', 'imsi']);
  const c = await oneCard(ctx, body);
  return { phoneNumber: c.phoneNumber, cardStatus: c.status };
}

/** S4.4, phone number -> card info: the card the line uses now. */
export async function retrieveCard(ctx: ApiContext, body: Body): Promise<CardInfoResponse> {
  onlyFields(body, ['phoneNumber']);
  const s = await line(ctx, phoneNumber(body, true));
  return { iccid: s.card.iccid, imsi: s.card.imsi, cardType: s.card.cardType, cardStatus: s.card.status };
}

/**
 * S4.6: is this card info valid? Valid = a card the operator issued, active, matching every
 * identifier given (iccid and imsi of one card; the line's number when given). An invalid
 * card is an answer (200, valid false, a reason), not an error: the bank tells the phone.
 */
export async function checkValidity(ctx: ApiContext, body: Body): Promise<CardValidity> {
  onlyFields(body, ['iccid', 'imsi', 'phoneNumber']);
  const { iccid, imsi } = cardIds(body);
  const n = phoneNumber(body, false);
  if (iccid === undefined && imsi === undefined) throw new ApiError('MISSING_IDENTIFIER', 'The card cannot be identified: give iccid or imsi.');
  const c = await (iccid !== undefined ? ctx.store.cardByIccid(iccid) : ctx.store.cardByImsi(imsi!));
  if (!c) return { valid: false, reason: 'UNKNOWN_CARD' };
  if (imsi !== undefined && c.imsi !== imsi) return { valid: false, reason: 'IDENTIFIERS_MISMATCH' };
  if (c.status === 'replaced') return { valid: false, reason: 'CARD_REPLACED' };
  if (c.status === 'suspended') return { valid: false, reason: 'CARD_SUSPENDED' };
  if (n !== undefined && c.phoneNumber !== n) return { valid: false, reason: 'NUMBER_MISMATCH' };
  return { valid: true };
}
