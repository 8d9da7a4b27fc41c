// The bank's tables on PostgreSQL (issue 16): the same BankStore as SqliteBankStore
// (bank-store.ts), in the business store's schema (created by pg-store.ts's migration). Same
// row validators; TOTP seeds sealed under the storage key as on SQLite; page tokens kept only
// as hashes. A login's row id is a bigserial (SQLite's rowid) so the trim keeps the newest.
import { LAST_LOGINS_KEPT, accountFromRow, bindingFromRow, personFromRow, loginFromRow, pageTokenFromRow, bankProblems, checkRegistration, checkSimChange, simChangeColumns, sealOtpSeed, tokenHash, type BankStore, type BankAccount, type Binding, type LineId, type PersonKeys, type Registration, type SimChange } from './bank-store.ts';
import { tx, type PgPool } from '../server-kit/pg.ts';
import type { BankMode } from '../protocol/bank-messages.ts';

/** The bank's tables (SQLite's schemas 4 and 5), run by the business store's first migration. */
export const PG_BANK_SCHEMA = `
  CREATE TABLE bank_accounts (
    account_no TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    verifier TEXT NOT NULL,
    mode INTEGER,
    created_at BIGINT NOT NULL
  );
  CREATE TABLE bank_bindings (
    id_kind TEXT NOT NULL,
    id_value TEXT NOT NULL,
    account_no TEXT NOT NULL REFERENCES bank_accounts(account_no),
    device_user TEXT NOT NULL,
    bound_at BIGINT NOT NULL,
    PRIMARY KEY (id_kind, id_value)
  );
  CREATE INDEX bank_bindings_account ON bank_bindings(account_no);
  CREATE TABLE bank_logins (
    id BIGSERIAL PRIMARY KEY,
    account_no TEXT NOT NULL REFERENCES bank_accounts(account_no),
    at BIGINT NOT NULL,
    mode INTEGER NOT NULL,
    device_user TEXT NOT NULL
  );
  CREATE INDEX bank_logins_account ON bank_logins(account_no, at);
  CREATE TABLE bank_page_tokens (
    token_sha256 BYTEA PRIMARY KEY,
    account_no TEXT NOT NULL REFERENCES bank_accounts(account_no),
    expires_at BIGINT NOT NULL
  );
  CREATE TABLE bank_person (
    account_no TEXT NOT NULL REFERENCES bank_accounts(account_no),
    site TEXT NOT NULL,
    fp_public_key BYTEA,
    otp_seed BYTEA,
    otp_last_step BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (account_no, site)
  );`;

/**
 * The business store's second migration (SQLite's schema 6, bank-store.ts
 * BANK_SIM_CHANGE_SCHEMA): the operator's SIM-change record of each binding; existing rows are
 * "not asked" (0, NULL).
 */
export const PG_BANK_SIM_CHANGE_SCHEMA = `
  ALTER TABLE bank_bindings ADD COLUMN sim_change_asked INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE bank_bindings ADD COLUMN sim_change_at BIGINT;`;

const INS_BINDING = 'INSERT INTO bank_bindings (id_kind, id_value, account_no, device_user, bound_at, sim_change_asked, sim_change_at) VALUES ($1, $2, $3, $4, $5, $6, $7)';

type R = Record<string, unknown>;

export class PgBankStore implements BankStore {
  constructor(private readonly pool: PgPool, private readonly storageKey: Uint8Array) {}

  async register(a: Registration): Promise<'ok' | 'name-taken' | 'id-bound' | 'number-taken'> {
    checkRegistration(a);
    return tx(this.pool, async (c) => {
      if ((await c.query('SELECT 1 FROM bank_accounts WHERE name = $1', [a.name])).rowCount) return 'name-taken' as const;
      for (const i of a.ids) if ((await c.query('SELECT 1 FROM bank_bindings WHERE id_kind = $1 AND id_value = $2', [i.kind, i.value])).rowCount) return 'id-bound' as const;
      if ((await c.query('SELECT 1 FROM bank_accounts WHERE account_no = $1', [a.accountNo])).rowCount) return 'number-taken' as const;
      await c.query('INSERT INTO bank_accounts (account_no, name, verifier, mode, created_at) VALUES ($1, $2, $3, NULL, $4)', [a.accountNo, a.name, a.verifier, a.now]);
      for (const i of a.ids) await c.query(INS_BINDING, [i.kind, i.value, a.accountNo, a.deviceUser, a.now, ...simChangeColumns(a.simChange)]);
      const pp = a.person;
      if (pp && (pp.fpPublicKey || pp.otp)) {
        await c.query(
          'INSERT INTO bank_person (account_no, site, fp_public_key, otp_seed, otp_last_step, created_at) VALUES ($1, $2, $3, $4, NULL, $5)',
          [a.accountNo, pp.site, pp.fpPublicKey, pp.otp ? sealOtpSeed(this.storageKey, a.accountNo, pp.site, pp.otp) : null, a.now],
        );
      }
      return 'ok' as const;
    });
  }

  async person(accountNo: string, site: string): Promise<PersonKeys | null> {
    const { rows } = await this.pool.query<R>('SELECT * FROM bank_person WHERE account_no = $1 AND site = $2', [accountNo, site]);
    return rows[0] ? personFromRow(rows[0], this.storageKey, accountNo, site) : null;
  }

  async accountByName(name: string): Promise<BankAccount | null> {
    const { rows } = await this.pool.query<R>('SELECT * FROM bank_accounts WHERE name = $1', [name]);
    return rows[0] ? accountFromRow(rows[0]) : null;
  }

  async accountByNumber(accountNo: string): Promise<BankAccount | null> {
    const { rows } = await this.pool.query<R>('SELECT * FROM bank_accounts WHERE account_no = $1', [accountNo]);
    return rows[0] ? accountFromRow(rows[0]) : null;
  }

  async binding(id: LineId): Promise<Binding | null> {
    const { rows } = await this.pool.query<R>('SELECT * FROM bank_bindings WHERE id_kind = $1 AND id_value = $2', [id.kind, id.value]);
    return rows[0] ? bindingFromRow(rows[0]) : null;
  }

  async bindingsOf(accountNo: string): Promise<Binding[]> {
    return (await this.pool.query<R>('SELECT * FROM bank_bindings WHERE account_no = $1 ORDER BY id_kind', [accountNo])).rows.map(bindingFromRow);
  }

  async rebind(accountNo: string, ids: LineId[], deviceUser: string, now: number, simChange: SimChange | null = null): Promise<'ok' | 'id-bound'> {
    checkSimChange(simChange);
    return tx(this.pool, async (c) => {
      for (const i of ids) {
        const { rows } = await c.query<R>('SELECT * FROM bank_bindings WHERE id_kind = $1 AND id_value = $2', [i.kind, i.value]);
        if (rows[0] && bindingFromRow(rows[0]).accountNo !== accountNo) return 'id-bound' as const;
      }
      await c.query('DELETE FROM bank_bindings WHERE account_no = $1', [accountNo]);
      for (const i of ids) await c.query(INS_BINDING, [i.kind, i.value, accountNo, deviceUser, now, ...simChangeColumns(simChange)]);
      return 'ok' as const;
    });
  }

  async recordLogin(accountNo: string, at: number, mode: BankMode, deviceUser: string, otp: { site: string; step: number } | null = null): Promise<boolean> {
    return tx(this.pool, async (c) => {
      // RFC 6238 §5.2 at the store: a compare-and-set; the row lock makes a second session with
      // the same step wait and then find the step used.
      if (otp) {
        const r = await c.query(
          'UPDATE bank_person SET otp_last_step = $1 WHERE account_no = $2 AND site = $3 AND otp_seed IS NOT NULL AND (otp_last_step IS NULL OR otp_last_step < $1)',
          [otp.step, accountNo, otp.site],
        );
        if (r.rowCount !== 1) return false;
      }
      await c.query('INSERT INTO bank_logins (account_no, at, mode, device_user) VALUES ($1, $2, $3, $4)', [accountNo, at, mode, deviceUser]);
      await c.query(`DELETE FROM bank_logins WHERE account_no = $1 AND id NOT IN (SELECT id FROM bank_logins WHERE account_no = $1 ORDER BY at DESC, id DESC LIMIT ${LAST_LOGINS_KEPT})`, [accountNo]);
      return true;
    }, { isolation: 'read committed' });
  }

  async lastLogins(accountNo: string, n = LAST_LOGINS_KEPT): Promise<{ at: number; mode: BankMode }[]> {
    return (await this.pool.query<R>('SELECT at, mode FROM bank_logins WHERE account_no = $1 ORDER BY at DESC, id DESC LIMIT $2', [accountNo, n])).rows.map(loginFromRow);
  }

  async setMode(name: string, mode: BankMode | null): Promise<boolean> {
    return (await this.pool.query('UPDATE bank_accounts SET mode = $1 WHERE name = $2', [mode, name])).rowCount === 1;
  }

  async putPageToken(token: Uint8Array, accountNo: string, expiresAt: number, now: number): Promise<void> {
    await this.pool.query('DELETE FROM bank_page_tokens WHERE expires_at < $1', [now]);
    await this.pool.query('INSERT INTO bank_page_tokens (token_sha256, account_no, expires_at) VALUES ($1, $2, $3)', [tokenHash(token), accountNo, expiresAt]);
  }

  async pageToken(token: Uint8Array, now: number): Promise<{ accountNo: string } | 'expired' | null> {
    const { rows } = await this.pool.query<R>('SELECT account_no, expires_at FROM bank_page_tokens WHERE token_sha256 = $1', [tokenHash(token)]);
    return pageTokenFromRow(rows[0], now);
  }

  async check(): Promise<string[]> {
    return tx(this.pool, async (c) => {
      const all = async (t: string) => (await c.query<R>(`SELECT * FROM ${t}`)).rows;
      return bankProblems({ accounts: await all('bank_accounts'), bindings: await all('bank_bindings'), logins: await all('bank_logins'), person: await all('bank_person'), tokens: await all('bank_page_tokens') }, this.storageKey);
    }, { isolation: 'repeatable read' });
  }
}
