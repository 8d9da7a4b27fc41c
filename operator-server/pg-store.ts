// The mobile operator's store on PostgreSQL (issue 16): the same OperatorStore as
// SqliteOperatorStore (store.ts), same rows and validators. A swap locks the line's row
// (SELECT ... FOR UPDATE) so two swaps of one line queue, and the partial unique index keeps one
// live card per IMSI as on SQLite. Schema history starts here at version 1.
import { ImplementationError } from '../protocol/errors.ts';
import { openMigrated, tx, type PgPool, type PgMigration, type PgQueryable, type PgOptions } from '../server-kit/pg.ts';
import { pgOptionsOf, type StorePlace } from '../server-kit/store-choice.ts';
import {
  SqliteOperatorStore, cardFromRow, clientFromRow, subscriptionFromRows, operatorProblems, checkCard, checkNumber, checkClient,
  type OperatorStore, type CardInfo, type Card, type Subscription, type OAuthClient, type CardRow, type SubRow, type ClientRow,
} from './store.ts';

const MIGRATIONS: PgMigration[] = [
  `CREATE TABLE subscriptions (
     phone_number TEXT PRIMARY KEY,
     iccid TEXT NOT NULL UNIQUE,
     card_changed_at BIGINT NOT NULL,
     created_at BIGINT NOT NULL
   );
   CREATE TABLE cards (
     iccid TEXT PRIMARY KEY,
     imsi TEXT NOT NULL,
     card_type TEXT NOT NULL,
     phone_number TEXT NOT NULL REFERENCES subscriptions(phone_number),
     status TEXT NOT NULL,
     installed_at BIGINT NOT NULL,
     replaced_at BIGINT
   );
   CREATE UNIQUE INDEX cards_live_imsi ON cards(imsi) WHERE status != 'replaced';
   CREATE INDEX cards_imsi ON cards(imsi, installed_at);
   CREATE TABLE oauth_clients (
     client_id TEXT PRIMARY KEY,
     secret_sha256 BYTEA NOT NULL,
     scopes TEXT NOT NULL,
     created_at BIGINT NOT NULL
   );`,
];

/** The schema the operator uses unless told otherwise. */
export const OPERATOR_PG_SCHEMA = 'operator';

// The live card first; else the most recently installed replaced one (as on SQLite).
const CARD_BY_IMSI = "SELECT * FROM cards WHERE imsi = $1 ORDER BY (status = 'replaced'), installed_at DESC LIMIT 1";

export class PgOperatorStore implements OperatorStore {
  private constructor(readonly pool: PgPool, readonly schema: string) {}

  static async open(url: string, schema = OPERATOR_PG_SCHEMA, o: Omit<PgOptions, 'schema'> = {}): Promise<PgOperatorStore> {
    return new PgOperatorStore(await openMigrated(url, { ...o, schema }, MIGRATIONS), schema);
  }

  async #subscription(q: PgQueryable, r: SubRow): Promise<Subscription> {
    const c = typeof r.iccid === 'string' ? (await q.query<CardRow>('SELECT * FROM cards WHERE iccid = $1', [r.iccid])).rows[0] : undefined;
    return subscriptionFromRows(r, () => c);
  }

  async #refuseTaken(q: PgQueryable, card: CardInfo): Promise<void> {
    if ((await q.query('SELECT 1 FROM cards WHERE iccid = $1', [card.iccid])).rowCount) throw new ImplementationError('OP_CONFLICT', `card ${card.iccid} was already issued`);
    const byImsi = (await q.query<CardRow>(CARD_BY_IMSI, [card.imsi])).rows[0];
    if (byImsi && byImsi.status !== 'replaced') throw new ImplementationError('OP_CONFLICT', `IMSI ${card.imsi} is held by another card`);
  }

  async createSubscription(phoneNumber: string, card: CardInfo, now = Date.now()): Promise<'created' | 'exists'> {
    checkNumber(phoneNumber);
    checkCard(card);
    return tx(this.pool, async (c) => {
      const have = (await c.query<SubRow>('SELECT * FROM subscriptions WHERE phone_number = $1', [phoneNumber])).rows[0];
      if (have) {
        const s = await this.#subscription(c, have);
        if (s.card.iccid === card.iccid && s.card.imsi === card.imsi && s.card.cardType === card.cardType) return 'exists' as const;
        throw new ImplementationError('OP_CONFLICT', `${phoneNumber} already has a subscription on another card (swap the card instead)`);
      }
      await this.#refuseTaken(c, card);
      await c.query('INSERT INTO subscriptions (phone_number, iccid, card_changed_at, created_at) VALUES ($1, $2, $3, $3)', [phoneNumber, card.iccid, now]);
      await c.query("INSERT INTO cards (iccid, imsi, card_type, phone_number, status, installed_at) VALUES ($1, $2, $3, $4, 'active', $5)", [card.iccid, card.imsi, card.cardType, phoneNumber, now]);
      return 'created' as const;
    });
  }

  async swapCard(phoneNumber: string, card: CardInfo, now = Date.now()): Promise<Subscription> {
    checkNumber(phoneNumber);
    checkCard(card);
    return tx(this.pool, async (c) => {
      const have = (await c.query<SubRow>('SELECT * FROM subscriptions WHERE phone_number = $1 FOR UPDATE', [phoneNumber])).rows[0];
      if (!have) throw new ImplementationError('OP_UNKNOWN_LINE', `no subscription for ${phoneNumber}`);
      const old = await this.#subscription(c, have);
      if (now < old.cardChangedAt) throw new ImplementationError('OP_BAD_RECORD', 'a card change cannot predate the previous one');
      await this.#refuseTaken(c, card);
      await c.query("UPDATE cards SET status = 'replaced', replaced_at = $1 WHERE iccid = $2", [now, old.card.iccid]);
      await c.query("INSERT INTO cards (iccid, imsi, card_type, phone_number, status, installed_at) VALUES ($1, $2, $3, $4, 'active', $5)", [card.iccid, card.imsi, card.cardType, phoneNumber, now]);
      await c.query('UPDATE subscriptions SET iccid = $1, card_changed_at = $2 WHERE phone_number = $3', [card.iccid, now, phoneNumber]);
      return this.#subscription(c, (await c.query<SubRow>('SELECT * FROM subscriptions WHERE phone_number = $1', [phoneNumber])).rows[0]!);
    });
  }

  async setCardStatus(iccid: string, status: 'active' | 'suspended'): Promise<boolean> {
    if (status !== 'active' && status !== 'suspended') throw new ImplementationError('OP_BAD_RECORD', `a card can be set active or suspended, not '${String(status).slice(0, 16)}'`);
    return (await this.pool.query("UPDATE cards SET status = $1 WHERE iccid = $2 AND status != 'replaced'", [status, iccid])).rowCount === 1;
  }

  async byPhoneNumber(phoneNumber: string): Promise<Subscription | null> {
    // One snapshot for the line and its card.
    return tx(this.pool, async (c) => {
      const r = (await c.query<SubRow>('SELECT * FROM subscriptions WHERE phone_number = $1', [phoneNumber])).rows[0];
      return r ? this.#subscription(c, r) : null;
    }, { isolation: 'repeatable read' });
  }

  async cardByIccid(iccid: string): Promise<Card | null> {
    const r = (await this.pool.query<CardRow>('SELECT * FROM cards WHERE iccid = $1', [iccid])).rows[0];
    return r ? cardFromRow(r) : null;
  }

  async cardByImsi(imsi: string): Promise<Card | null> {
    const r = (await this.pool.query<CardRow>(CARD_BY_IMSI, [imsi])).rows[0];
    return r ? cardFromRow(r) : null;
  }

  async putClient(clientId: string, secretSha256: Uint8Array, scopes: string[], now = Date.now()): Promise<void> {
    checkClient(clientId, secretSha256, scopes);
    await this.pool.query(
      'INSERT INTO oauth_clients (client_id, secret_sha256, scopes, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (client_id) DO UPDATE SET secret_sha256 = excluded.secret_sha256, scopes = excluded.scopes',
      [clientId, secretSha256, scopes.join(' '), now],
    );
  }

  async getClient(clientId: string): Promise<OAuthClient | null> {
    const r = (await this.pool.query<ClientRow>('SELECT * FROM oauth_clients WHERE client_id = $1', [clientId])).rows[0];
    return r ? clientFromRow(r) : null;
  }

  async counts(): Promise<{ subscriptions: number; cards: number }> {
    const { rows } = await this.pool.query<{ s: number; c: number }>('SELECT (SELECT COUNT(*) FROM subscriptions)::int AS s, (SELECT COUNT(*) FROM cards)::int AS c');
    return { subscriptions: rows[0]!.s, cards: rows[0]!.c };
  }

  async check(): Promise<string[]> {
    return tx(this.pool, async (c) => {
      const all = async <R extends object>(t: string) => (await c.query<R>(`SELECT * FROM ${t}`)).rows;
      return operatorProblems({ subs: await all<SubRow>('subscriptions'), cards: await all<CardRow>('cards'), clients: await all<ClientRow>('oauth_clients') });
    }, { isolation: 'repeatable read' });
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

/** The operator's store at `place`: a SQLite file, or PostgreSQL. */
export async function openOperatorStore(place: StorePlace): Promise<OperatorStore> {
  return place.kind === 'sqlite' ? new SqliteOperatorStore(place.file) : PgOperatorStore.open(place.url, place.schema, pgOptionsOf(place));
}
