// The bank's client of the mobile operator's API (docs/operator-api.yaml): HTTPS (TLS 1.3)
// trusting only the deployment's CA (server-kit/tls-ca.ts), OAuth2 client credentials with
// the token cached until shortly before it lapses, one keep-alive pool, and one deadline per
// call that covers everything (token fetch, request, a retry after a token the server no
// longer accepts). Every failure is an OperatorError with a stable code and whether the same
// call may succeed later:
//   a CAMARA code from the server (INVALID_ARGUMENT, IDENTIFIER_NOT_FOUND, ...; retryable for
//     a 5xx or 429 status)
//   OPERATOR_UNAVAILABLE  the token endpoint answered 5xx                   retryable
//   OPERATOR_UNREACHABLE  no connection (refused, reset, closed mid-answer)  retryable
//   OPERATOR_TIMEOUT      no whole answer within the deadline               retryable
//   OPERATOR_TLS          the server's certificate is not one of our CA's    not retryable
//   OPERATOR_AUTH         the token endpoint refused our credentials         not retryable
//   OPERATOR_BAD_RESPONSE an answer that is not what the API defines         not retryable
// Secrets (client secret, token) never appear in an error message.
import { Agent } from 'node:https';
import { boundedPost, BoundedPostError } from './bounded-post.ts';
import { isE164, isIccid, isImsi, isCardType } from '../protocol/line-ids.ts';
import { ImplementationError } from '../protocol/errors.ts';
import { OperatorPaths, MAX_AGE, type CheckValidityRequest, type CardValidity, type PhoneNumberInfo, type CardInfoResponse, type SimSwapInfo, type InvalidReason, type CardStatus } from './operator-api.ts';

export class OperatorError extends Error {
  override readonly name = 'OperatorError';
  constructor(readonly code: string, message: string, readonly retryable: boolean, readonly status: number | null = null) {
    super(`${code}: ${message}`);
  }
}

export interface OperatorClientOptions {
  /** The operator's base URL, https://host:port. */
  url: string;
  /** The CA certificate (PEM) the operator's certificate must chain to; nothing else is trusted. */
  ca: string;
  clientId: string;
  clientSecret: string;
  /** Deadline of one call, everything included, ms (default 2000). */
  timeoutMs?: number;
  /**
   * The transport of one POST (default server-kit/bounded-post.ts over HTTPS): what the
   * deterministic simulation replaces (sim/dsim-world.ts). Fails with a BoundedPostError.
   */
  post?: (req: { path: string; headers: Record<string, string>; body: string; timeoutMs: number; maxBytes: number }) => Promise<{ status: number; body: Uint8Array }>;
}

const MAX_RESPONSE = 16 * 1024;
/** A cached token is renewed this long before it lapses, so it never expires in flight. */
const TOKEN_MARGIN_MS = 30_000;
const IDLE_SOCKET_MS = 4_000;
const STATUSES: readonly CardStatus[] = ['active', 'suspended', 'replaced'];
const REASONS: readonly InvalidReason[] = ['UNKNOWN_CARD', 'CARD_SUSPENDED', 'CARD_REPLACED', 'IDENTIFIERS_MISMATCH', 'NUMBER_MISMATCH'];
const TLS_CODE = /CERT|SIGNATURE|SELF_SIGNED|TLS|SSL|ALTNAME|ISSUER/;

type Json = Record<string, unknown>;
const bad = (what: string) => new OperatorError('OPERATOR_BAD_RESPONSE', what, false);

export class OperatorClient {
  readonly url: string;
  readonly #base: URL;
  readonly #agent: Agent;
  readonly #basic: string;
  readonly #timeoutMs: number;
  readonly #postSeam: OperatorClientOptions['post'];
  #token: { value: string; until: number } | null = null;
  constructor(opts: OperatorClientOptions) {
    this.#base = new URL(opts.url);
    if (this.#base.protocol !== 'https:') throw new ImplementationError('OPERATOR_BAD_URL', `the operator's URL must be https:// (S4.6), not ${this.#base.protocol}`);
    this.url = opts.url.replace(/\/$/, '');
    this.#timeoutMs = opts.timeoutMs ?? 2_000;
    this.#postSeam = opts.post;
    // RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding.
    const enc = (s: string) => encodeURIComponent(s).replace(/%20/g, '+');
    this.#basic = 'Basic ' + Buffer.from(`${enc(opts.clientId)}:${enc(opts.clientSecret)}`).toString('base64');
    this.#agent = new Agent({ keepAlive: true, timeout: IDLE_SOCKET_MS, scheduling: 'lifo', ca: opts.ca, minVersion: 'TLSv1.3', maxSockets: 16 });
  }

  /** CAMARA SIM Swap `check`: was the line's card changed within `maxAge` hours (1..2400, default 240)? */
  async checkSimSwap(phoneNumber: string, maxAge?: number): Promise<boolean> {
    if (maxAge !== undefined && (!Number.isInteger(maxAge) || maxAge < MAX_AGE.min || maxAge > MAX_AGE.max)) throw new RangeError('maxAge must be 1..2400 hours');
    const r = await this.#call(OperatorPaths.simSwapCheck, maxAge === undefined ? { phoneNumber } : { phoneNumber, maxAge });
    if (typeof r.swapped !== 'boolean') throw bad('check: swapped is not a boolean');
    return r.swapped;
  }

  /** CAMARA SIM Swap `retrieve-date`: the last card change, or null (outside the monitored period, in days). */
  async retrieveSimSwapDate(phoneNumber: string): Promise<{ latestSimChange: Date | null; monitoredPeriod?: number }> {
    const r = (await this.#call(OperatorPaths.simSwapRetrieveDate, { phoneNumber })) as Partial<SimSwapInfo>;
    if (r.monitoredPeriod !== undefined && (!Number.isInteger(r.monitoredPeriod) || r.monitoredPeriod < 1)) throw bad('retrieve-date: monitoredPeriod is not a number of days');
    if (r.latestSimChange === null) return r.monitoredPeriod === undefined ? { latestSimChange: null } : { latestSimChange: null, monitoredPeriod: r.monitoredPeriod };
    // RFC 3339 §5.6 with its time zone (Z or ±hh:mm), as CAMARA requires.
    if (typeof r.latestSimChange !== 'string' || !/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/i.test(r.latestSimChange) || Number.isNaN(Date.parse(r.latestSimChange))) {
      throw bad('retrieve-date: latestSimChange is not an RFC 3339 date-time with a time zone');
    }
    return { latestSimChange: new Date(r.latestSimChange) };
  }

  /** S4.4 card info -> phone number (the line the card is, or was last, paired with). */
  async phoneNumberOf(card: { iccid: string } | { imsi: string }): Promise<PhoneNumberInfo> {
    const r = await this.#call(OperatorPaths.cardToNumber, card);
    if (!isE164(r.phoneNumber) || !STATUSES.includes(r.cardStatus as CardStatus)) throw bad('retrieve-phone-number: malformed answer');
    return { phoneNumber: r.phoneNumber, cardStatus: r.cardStatus as CardStatus };
  }

  /** S4.4 phone number -> card info (the card the line uses now). */
  async cardOf(phoneNumber: string): Promise<CardInfoResponse> {
    const r = await this.#call(OperatorPaths.numberToCard, { phoneNumber });
    if (!isIccid(r.iccid) || !isImsi(r.imsi) || !isCardType(r.cardType) || !STATUSES.includes(r.cardStatus as CardStatus)) throw bad('retrieve-card: malformed answer');
    return { iccid: r.iccid, imsi: r.imsi, cardType: r.cardType, cardStatus: r.cardStatus as CardStatus };
  }

  /** S4.6: is this card info valid (known, active, matching)? An invalid card is an answer, not an error. */
  async checkValidity(q: CheckValidityRequest): Promise<CardValidity> {
    const r = await this.#call(OperatorPaths.checkValidity, q as Json);
    if (r.valid === true) return { valid: true };
    if (r.valid !== false || !REASONS.includes(r.reason as InvalidReason)) throw bad('check-validity: malformed answer');
    return { valid: false, reason: r.reason as InvalidReason };
  }

  /** Closes the idle connections (a later call opens new ones). */
  close(): void {
    this.#agent.destroy();
  }

  async #call(path: string, body: Json): Promise<Json> {
    const deadline = Date.now() + this.#timeoutMs;
    for (let attempt = 0; ; attempt++) {
      const token = await this.#bearer(deadline);
      const r = await this.#post(path, 'application/json', JSON.stringify(body), { authorization: `Bearer ${token}` }, deadline);
      // A token the server no longer takes (its key changed, a restart with a new one): fetch another, once.
      if (r.status === 401 && attempt === 0) {
        this.#token = null;
        continue;
      }
      if (r.status === 200) return r.json;
      const code = typeof r.json.code === 'string' && /^[A-Z][A-Z_]{1,40}$/.test(r.json.code) ? r.json.code : 'OPERATOR_BAD_RESPONSE';
      const msg = typeof r.json.message === 'string' ? r.json.message.slice(0, 200) : `HTTP ${r.status}`;
      throw new OperatorError(code, `${path}: ${msg}`, r.status >= 500 || r.status === 429, r.status);
    }
  }

  async #bearer(deadline: number): Promise<string> {
    if (this.#token && this.#token.until > Date.now()) return this.#token.value;
    const r = await this.#post(OperatorPaths.token, 'application/x-www-form-urlencoded', 'grant_type=client_credentials', { authorization: this.#basic }, deadline);
    if (r.status !== 200) {
      const err = typeof r.json.error === 'string' ? r.json.error.slice(0, 40) : `HTTP ${r.status}`;
      throw new OperatorError(r.status >= 500 ? 'OPERATOR_UNAVAILABLE' : 'OPERATOR_AUTH', `token endpoint refused: ${err}`, r.status >= 500, r.status);
    }
    const { access_token: value, token_type: type, expires_in: ttl } = r.json;
    if (typeof value !== 'string' || typeof type !== 'string' || type.toLowerCase() !== 'bearer' || typeof ttl !== 'number' || !(ttl > 0)) throw bad('token: malformed answer');
    this.#token = { value, until: Date.now() + Math.max(0, ttl * 1000 - TOKEN_MARGIN_MS) };
    return value;
  }

  /** One POST whose whole answer must arrive before `deadline` (server-kit/bounded-post.ts); a JSON object. */
  async #post(path: string, type: string, body: string, headers: Record<string, string>, deadline: number): Promise<{ status: number; json: Json }> {
    let r: { status: number; body: Uint8Array };
    try {
      const h = { 'content-type': type, accept: 'application/json', ...headers };
      r = this.#postSeam
        ? await this.#postSeam({ path, headers: h, body, timeoutMs: deadline - Date.now(), maxBytes: MAX_RESPONSE })
        : await boundedPost({ url: this.#base, path, agent: this.#agent, headers: h, body, timeoutMs: deadline - Date.now(), maxBytes: MAX_RESPONSE });
    } catch (e) {
      if (!(e instanceof BoundedPostError)) throw e;
      if (e.kind === 'timeout') throw new OperatorError('OPERATOR_TIMEOUT', `${path}: no answer within ${this.#timeoutMs} ms`, true);
      if (e.kind === 'too-large') throw bad(`${path}: answer larger than ${MAX_RESPONSE} bytes`);
      if (e.kind === 'network' && TLS_CODE.test(e.code ?? '')) throw new OperatorError('OPERATOR_TLS', `${path}: the operator's certificate is not trusted (${e.code})`, false);
      if (e.kind === 'lost') throw new OperatorError('OPERATOR_UNREACHABLE', `${path}: connection lost mid-answer`, true);
      throw new OperatorError('OPERATOR_UNREACHABLE', `${path} at ${this.url}: ${e.message}`, true);
    }
    let json: unknown;
    try {
      json = JSON.parse(new TextDecoder().decode(r.body));
    } catch {
      throw bad(`${path}: HTTP ${r.status}, body is not JSON`);
    }
    if (typeof json !== 'object' || json === null || Array.isArray(json)) throw bad(`${path}: body is not a JSON object`);
    return { status: r.status, json: json as Json };
  }
}
