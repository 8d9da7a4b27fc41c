// The mobile operator's state (S4.4, S4.6, SIM swap): subscriptions (a phone number and the
// card currently paired with it), every card ever issued (ICCID, IMSI, card type, status:
// active, suspended, replaced) and the OAuth2 clients allowed to call the API (the bank).
// One SQLite file (WAL, server-kit/sqlite.ts); every multi-row change in one IMMEDIATE
// transaction, so a swap either moves the line to the new card and marks the old one
// replaced, or changes nothing. Every row read back is validated (STORE_CORRUPT_ROW).
//
// "Card change" is CAMARA's "MSISDN <-> IMSI pairing change": the activation of the line on
// its first card counts, like every swap after it (docs/operator-api.md §"SIM swap").
import { openDb, corrupt, type Db } from '../server-kit/sqlite.ts';
import { ImplementationError } from '../protocol/errors.ts';
import { rowChecker, type Awaitable } from '../server-kit/store-choice.ts';
import { isE164, isIccid, isImsi, isCardType, type CardType } from '../protocol/line-ids.ts';

export type CardStatus = 'active' | 'suspended' | 'replaced';
export const CARD_STATUSES: readonly CardStatus[] = ['active', 'suspended', 'replaced'];

export interface CardInfo { iccid: string; imsi: string; cardType: CardType }

export interface Card extends CardInfo {
  /** The line the card is (or, once replaced, was last) paired with. */
  phoneNumber: string;
  status: CardStatus;
  /** ms since the epoch */
  installedAt: number;
  replacedAt: number | null;
}

export interface Subscription {
  phoneNumber: string;
  /** The card paired with the line now (never a replaced one). */
  card: Card;
  /** When the line was last paired with a card (activation or swap), ms since the epoch. */
  cardChangedAt: number;
  createdAt: number;
}

/** An OAuth2 client (RFC 6749 §2): the bank. Only a SHA-256 of its secret is kept. */
export interface OAuthClient {
  clientId: string;
  /** SHA-256 of the client secret (a machine-generated 256-bit value: no stretching needed). */
  secretSha256: Uint8Array;
  scopes: string[];
  createdAt: number;
}

/** RFC 6749 §2.2 allows any printable ASCII; ours are names, like the server names. */
export const CLIENT_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** RFC 6749 §3.3 scope-token, restricted to the names we issue (sim-swap:check ...). */
export const SCOPE_RE = /^[a-z][a-z0-9-]*(:[a-z][a-z0-9-]*)?$/;

export interface OperatorStore {
  /** Opens a line on its first card. Idempotent for the same record; OP_CONFLICT when the number or card is taken. */
  createSubscription(phoneNumber: string, card: CardInfo, now?: number): Awaitable<'created' | 'exists'>;
  /** Moves the line to a new card: the old one becomes `replaced`, the change time is `now`. */
  swapCard(phoneNumber: string, card: CardInfo, now?: number): Awaitable<Subscription>;
  /** Suspends or resumes the card a line uses now; false when no line uses that card. */
  setCardStatus(iccid: string, status: 'active' | 'suspended'): Awaitable<boolean>;
  byPhoneNumber(phoneNumber: string): Awaitable<Subscription | null>;
  /** Any card ever issued, replaced ones included. */
  cardByIccid(iccid: string): Awaitable<Card | null>;
  /** The card that holds this IMSI now, else the last replaced one that held it. */
  cardByImsi(imsi: string): Awaitable<Card | null>;
  putClient(clientId: string, secretSha256: Uint8Array, scopes: string[], now?: number): Awaitable<void>;
  getClient(clientId: string): Awaitable<OAuthClient | null>;
  counts(): Awaitable<{ subscriptions: number; cards: number }>;
  /** Problems found in the stored rows (empty when none): rows failing validation, a line whose card is missing or replaced. */
  check(): Promise<string[]>;
  close(): Awaitable<void>;
}

const MIGRATIONS = [
  `CREATE TABLE subscriptions (
     phone_number TEXT PRIMARY KEY,
     iccid TEXT NOT NULL UNIQUE,
     card_changed_at INTEGER NOT NULL,
     created_at INTEGER NOT NULL
   );
   CREATE TABLE cards (
     iccid TEXT PRIMARY KEY,
     imsi TEXT NOT NULL,
     card_type TEXT NOT NULL,
     phone_number TEXT NOT NULL REFERENCES subscriptions(phone_number),
     status TEXT NOT NULL,
     installed_at INTEGER NOT NULL,
     replaced_at INTEGER
   );
   -- An IMSI names one subscriber at a time; a replaced card's IMSI may be issued again.
   CREATE UNIQUE INDEX cards_live_imsi ON cards(imsi) WHERE status != 'replaced';
   CREATE INDEX cards_imsi ON cards(imsi, installed_at);
   CREATE TABLE oauth_clients (
     client_id TEXT PRIMARY KEY,
     secret_sha256 BLOB NOT NULL,
     scopes TEXT NOT NULL,
     created_at INTEGER NOT NULL
   );`,
];

const isTime = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

export interface CardRow { iccid: unknown; imsi: unknown; card_type: unknown; phone_number: unknown; status: unknown; installed_at: unknown; replaced_at: unknown }
export interface SubRow { phone_number: unknown; iccid: unknown; card_changed_at: unknown; created_at: unknown }
export interface ClientRow { client_id: unknown; secret_sha256: unknown; scopes: unknown; created_at: unknown }

export function cardFromRow(r: CardRow): Card {
  const what = `card row ${typeof r.iccid === 'string' ? r.iccid.slice(0, 22) : '?'}`;
  if (!isIccid(r.iccid)) corrupt(what, 'bad ICCID');
  if (!isImsi(r.imsi)) corrupt(what, 'bad IMSI');
  if (!isCardType(r.card_type)) corrupt(what, 'bad card type');
  if (!isE164(r.phone_number)) corrupt(what, 'bad phone number');
  if (!(CARD_STATUSES as readonly unknown[]).includes(r.status)) corrupt(what, 'bad status');
  if (!isTime(r.installed_at)) corrupt(what, 'bad install time');
  if (r.status === 'replaced' ? !isTime(r.replaced_at) : r.replaced_at !== null) corrupt(what, 'replacement time does not match the status');
  return {
    iccid: r.iccid, imsi: r.imsi, cardType: r.card_type, phoneNumber: r.phone_number, status: r.status as CardStatus,
    installedAt: r.installed_at, replacedAt: r.replaced_at as number | null,
  };
}

export function clientFromRow(r: ClientRow): OAuthClient {
  const what = `oauth client row ${typeof r.client_id === 'string' ? r.client_id.slice(0, 64) : '?'}`;
  if (typeof r.client_id !== 'string' || !CLIENT_ID_RE.test(r.client_id)) corrupt(what, 'bad client id');
  if (!(r.secret_sha256 instanceof Uint8Array) || r.secret_sha256.length !== 32) corrupt(what, 'bad secret hash');
  if (typeof r.scopes !== 'string') corrupt(what, 'bad scopes');
  const scopes = r.scopes === '' ? [] : r.scopes.split(' ');
  if (!scopes.every((s) => SCOPE_RE.test(s))) corrupt(what, 'bad scopes');
  if (!isTime(r.created_at)) corrupt(what, 'bad creation time');
  return { clientId: r.client_id, secretSha256: new Uint8Array(r.secret_sha256), scopes, createdAt: r.created_at };
}

export function checkCard(c: CardInfo): void {
  if (!isIccid(c.iccid)) throw new ImplementationError('OP_BAD_RECORD', `ICCID '${String(c.iccid).slice(0, 24)}' is not 19-20 digits starting 89 with a valid Luhn digit`);
  if (!isImsi(c.imsi)) throw new ImplementationError('OP_BAD_RECORD', `IMSI '${String(c.imsi).slice(0, 24)}' is not 6-15 digits`);
  if (!isCardType(c.cardType)) throw new ImplementationError('OP_BAD_RECORD', `card type '${String(c.cardType).slice(0, 16)}' is not SIM, USIM, R-UIM or CSIM`);
}
export function checkNumber(n: string): void {
  if (!isE164(n)) throw new ImplementationError('OP_BAD_RECORD', `phone number '${String(n).slice(0, 24)}' is not E.164 (+ and 5-15 digits)`);
}

export function checkClient(clientId: string, secretSha256: Uint8Array, scopes: string[]): void {
  if (!CLIENT_ID_RE.test(clientId)) throw new ImplementationError('OP_BAD_RECORD', `client id '${clientId.slice(0, 64)}' is outside ${CLIENT_ID_RE.source}`);
  if (!(secretSha256 instanceof Uint8Array) || secretSha256.length !== 32) throw new ImplementationError('OP_BAD_RECORD', 'a client secret hash is 32 bytes');
  if (!scopes.every((s) => SCOPE_RE.test(s))) throw new ImplementationError('OP_BAD_RECORD', 'a scope is a name like sim-swap:check');
}

/** A subscription row with its card (looked up by `cardOf`), validated: STORE_CORRUPT_ROW otherwise. */
export function subscriptionFromRows(r: SubRow, cardOf: (iccid: string) => CardRow | undefined): Subscription {
  const what = `subscription row ${typeof r.phone_number === 'string' ? r.phone_number.slice(0, 16) : '?'}`;
  if (!isE164(r.phone_number)) corrupt(what, 'bad phone number');
  if (!isIccid(r.iccid)) corrupt(what, 'bad ICCID');
  if (!isTime(r.card_changed_at) || !isTime(r.created_at)) corrupt(what, 'bad time');
  const c = cardOf(r.iccid);
  if (!c) corrupt(what, 'its card is missing');
  const card = cardFromRow(c);
  if (card.phoneNumber !== r.phone_number || card.status === 'replaced') corrupt(what, 'its card belongs to another line or was replaced');
  return { phoneNumber: r.phone_number, card, cardChangedAt: r.card_changed_at, createdAt: r.created_at };
}

/** The integrity check of an operator store (both back ends): every row, every line with its live card, one live card per IMSI. */
export function operatorProblems(t: { subs: SubRow[]; cards: CardRow[]; clients: ClientRow[] }): string[] {
  const { each, problems: out } = rowChecker();
  const byIccid = new Map(t.cards.map((c) => [c.iccid, c]));
  each(t.cards, cardFromRow);
  each(t.subs, (r) => subscriptionFromRows(r, (i) => byIccid.get(i)));
  each(t.clients, clientFromRow);
  const live = new Map<unknown, number>();
  for (const c of t.cards) if (c.status !== 'replaced') live.set(c.imsi, (live.get(c.imsi) ?? 0) + 1);
  for (const [imsi, n] of live) if (n > 1) out.push(`IMSI ${String(imsi)} is live on ${n} cards`);
  return out;
}

export class SqliteOperatorStore implements OperatorStore {
  readonly db: Db;
  readonly #sub;
  readonly #card;
  readonly #cardByImsi;
  readonly #insertSub;
  readonly #insertCard;
  readonly #replaceCard;
  readonly #repointSub;
  readonly #setStatus;
  readonly #client;
  readonly #putClient;
  constructor(file: string) {
    this.db = openDb(file, MIGRATIONS);
    this.#sub = this.db.prepare('SELECT * FROM subscriptions WHERE phone_number = ?');
    this.#card = this.db.prepare('SELECT * FROM cards WHERE iccid = ?');
    // The live card first; else the most recently installed replaced one.
    this.#cardByImsi = this.db.prepare("SELECT * FROM cards WHERE imsi = ? ORDER BY status = 'replaced', installed_at DESC LIMIT 1");
    this.#insertSub = this.db.prepare('INSERT INTO subscriptions (phone_number, iccid, card_changed_at, created_at) VALUES (?, ?, ?, ?)');
    this.#insertCard = this.db.prepare("INSERT INTO cards (iccid, imsi, card_type, phone_number, status, installed_at) VALUES (?, ?, ?, ?, 'active', ?)");
    this.#replaceCard = this.db.prepare("UPDATE cards SET status = 'replaced', replaced_at = ? WHERE iccid = ?");
    this.#repointSub = this.db.prepare('UPDATE subscriptions SET iccid = ?, card_changed_at = ? WHERE phone_number = ?');
    this.#setStatus = this.db.prepare("UPDATE cards SET status = ? WHERE iccid = ? AND status != 'replaced'");
    this.#client = this.db.prepare('SELECT * FROM oauth_clients WHERE client_id = ?');
    this.#putClient = this.db.prepare(
      'INSERT INTO oauth_clients (client_id, secret_sha256, scopes, created_at) VALUES (?, ?, ?, ?) ON CONFLICT(client_id) DO UPDATE SET secret_sha256 = excluded.secret_sha256, scopes = excluded.scopes',
    );
  }

  #subscription(r: SubRow): Subscription {
    return subscriptionFromRows(r, (iccid) => this.#card.get(iccid) as CardRow | undefined);
  }

  createSubscription(phoneNumber: string, card: CardInfo, now = Date.now()): 'created' | 'exists' {
    checkNumber(phoneNumber);
    checkCard(card);
    return this.db.transaction(() => {
      const have = this.#sub.get(phoneNumber) as SubRow | undefined;
      if (have) {
        const s = this.#subscription(have);
        if (s.card.iccid === card.iccid && s.card.imsi === card.imsi && s.card.cardType === card.cardType) return 'exists' as const;
        throw new ImplementationError('OP_CONFLICT', `${phoneNumber} already has a subscription on another card (swap the card instead)`);
      }
      this.#refuseTaken(card);
      this.#insertSub.run(phoneNumber, card.iccid, now, now);
      this.#insertCard.run(card.iccid, card.imsi, card.cardType, phoneNumber, now);
      return 'created' as const;
    }).immediate();
  }

  #refuseTaken(card: CardInfo): void {
    if (this.#card.get(card.iccid)) throw new ImplementationError('OP_CONFLICT', `card ${card.iccid} was already issued`);
    const byImsi = this.#cardByImsi.get(card.imsi) as CardRow | undefined;
    if (byImsi && byImsi.status !== 'replaced') throw new ImplementationError('OP_CONFLICT', `IMSI ${card.imsi} is held by another card`);
  }

  swapCard(phoneNumber: string, card: CardInfo, now = Date.now()): Subscription {
    checkNumber(phoneNumber);
    checkCard(card);
    return this.db.transaction(() => {
      const have = this.#sub.get(phoneNumber) as SubRow | undefined;
      if (!have) throw new ImplementationError('OP_UNKNOWN_LINE', `no subscription for ${phoneNumber}`);
      const old = this.#subscription(have);
      if (now < old.cardChangedAt) throw new ImplementationError('OP_BAD_RECORD', 'a card change cannot predate the previous one');
      this.#refuseTaken(card);
      this.#replaceCard.run(now, old.card.iccid);
      this.#insertCard.run(card.iccid, card.imsi, card.cardType, phoneNumber, now);
      this.#repointSub.run(card.iccid, now, phoneNumber);
      return this.#subscription(this.#sub.get(phoneNumber) as SubRow);
    }).immediate();
  }

  setCardStatus(iccid: string, status: 'active' | 'suspended'): boolean {
    if (status !== 'active' && status !== 'suspended') throw new ImplementationError('OP_BAD_RECORD', `a card can be set active or suspended, not '${String(status).slice(0, 16)}'`);
    return this.#setStatus.run(status, iccid).changes === 1;
  }

  byPhoneNumber(phoneNumber: string): Subscription | null {
    const r = this.#sub.get(phoneNumber) as SubRow | undefined;
    return r ? this.#subscription(r) : null;
  }

  cardByIccid(iccid: string): Card | null {
    const r = this.#card.get(iccid) as CardRow | undefined;
    return r ? cardFromRow(r) : null;
  }

  cardByImsi(imsi: string): Card | null {
    const r = this.#cardByImsi.get(imsi) as CardRow | undefined;
    return r ? cardFromRow(r) : null;
  }

  putClient(clientId: string, secretSha256: Uint8Array, scopes: string[], now = Date.now()): void {
    checkClient(clientId, secretSha256, scopes);
    this.#putClient.run(clientId, secretSha256, scopes.join(' '), now);
  }

  getClient(clientId: string): OAuthClient | null {
    const r = this.#client.get(clientId) as ClientRow | undefined;
    return r ? clientFromRow(r) : null;
  }

  counts(): { subscriptions: number; cards: number } {
    const s = this.db.prepare('SELECT COUNT(*) AS n FROM subscriptions').get() as { n: number };
    const c = this.db.prepare('SELECT COUNT(*) AS n FROM cards').get() as { n: number };
    return { subscriptions: s.n, cards: c.n };
  }

  async check(): Promise<string[]> {
    const all = <R>(t: string) => this.db.prepare(`SELECT * FROM ${t}`).all() as R[];
    return operatorProblems({ subs: all('subscriptions'), cards: all('cards'), clients: all('oauth_clients') });
  }

  close(): void {
    this.db.close();
  }
}
