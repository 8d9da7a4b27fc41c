// The mobile operator's HTTP API as both ends see it (docs/operator-api.yaml is the normative
// OpenAPI 3 document; operator-server/server.test.ts validates real responses against it):
// paths, OAuth2 scopes, the CAMARA error codes with their HTTP status, and the request and
// response shapes. It lives in server-kit because the operator server (operator-server/)
// and its caller, the bank (biz-server/, through server-kit/operator-client.ts), are role
// folders that may not import each other.
//
// SIM Swap is CAMARA's `sim-swap` v2 (paths, fields, scopes, error codes). The card-info
// lookups (S4.4) and the card-validity check (S4.6) have no public standard: they follow
// the same conventions under `card-info/v0` (v0: CAMARA's version for an API not yet stable).
import type { CardType } from '../protocol/line-ids.ts';

export const OperatorPaths = {
  token: '/oauth2/token',
  simSwapCheck: '/sim-swap/v2/check',
  simSwapRetrieveDate: '/sim-swap/v2/retrieve-date',
  cardToNumber: '/card-info/v0/retrieve-phone-number',
  numberToCard: '/card-info/v0/retrieve-card',
  checkValidity: '/card-info/v0/check-validity',
  healthz: '/healthz',
} as const;

/** The scope a bearer token needs for each API path (CAMARA names for SIM Swap). */
export const OperatorScopes = {
  [OperatorPaths.simSwapCheck]: 'sim-swap:check',
  [OperatorPaths.simSwapRetrieveDate]: 'sim-swap:retrieve-date',
  [OperatorPaths.cardToNumber]: 'card-info:retrieve-phone-number',
  [OperatorPaths.numberToCard]: 'card-info:retrieve-card',
  [OperatorPaths.checkValidity]: 'card-info:check-validity',
} as const;
export type OperatorApiPath = keyof typeof OperatorScopes;
/** Every scope the operator issues. */
export const ALL_OPERATOR_SCOPES: readonly string[] = Object.values(OperatorScopes);

/**
 * CAMARA's error codes (Commonalities `CAMARA_common.yaml`) that this API answers, with their
 * HTTP status. The body is always `{status, code, message}` (docs/errors.md §"Operator API").
 */
export const OperatorErrors = {
  INVALID_ARGUMENT: 400,
  OUT_OF_RANGE: 400,
  UNAUTHENTICATED: 401,
  PERMISSION_DENIED: 403,
  NOT_FOUND: 404,
  IDENTIFIER_NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  MISSING_IDENTIFIER: 422,
  INTERNAL: 500,
} as const;
export type OperatorErrorCode = keyof typeof OperatorErrors;

/** CAMARA's `XCorrelator` pattern (Commonalities 0.5+): what may be echoed. */
export const X_CORRELATOR_RE = /^[a-zA-Z0-9-_:;./<>{}]{0,256}$/;

/** CAMARA SIM Swap: `maxAge` hours, 1..2400, default 240. */
export const MAX_AGE = { min: 1, max: 2400, default: 240 } as const;

export type CardStatus = 'active' | 'suspended' | 'replaced';
/** Why a card is not valid (check-validity); docs/operator-api.yaml `InvalidReason`. */
export type InvalidReason = 'UNKNOWN_CARD' | 'CARD_SUSPENDED' | 'CARD_REPLACED' | 'IDENTIFIERS_MISMATCH' | 'NUMBER_MISMATCH';

export interface CheckSimSwapRequest { phoneNumber: string; maxAge?: number }
export interface CheckSimSwapInfo { swapped: boolean }
export interface CreateSimSwapDate { phoneNumber: string }
export interface SimSwapInfo { latestSimChange: string | null; monitoredPeriod?: number }
/** Exactly one of iccid / imsi. */
export interface CardIdentifier { iccid?: string; imsi?: string }
export interface PhoneNumberInfo { phoneNumber: string; cardStatus: CardStatus }
export interface PhoneNumberRequest { phoneNumber: string }
export interface CardInfoResponse { iccid: string; imsi: string; cardType: CardType; cardStatus: CardStatus }
/** At least one of iccid / imsi; phoneNumber when the caller also knows the line. */
export interface CheckValidityRequest { iccid?: string; imsi?: string; phoneNumber?: string }
export interface CardValidity { valid: boolean; reason?: InvalidReason }
export interface TokenResponse { access_token: string; token_type: 'Bearer'; expires_in: number; scope: string }
export interface ErrorInfo { status: number; code: string; message: string }
