// The PostgreSQL schemas of an embedded stack on PG (issue 16): one prefix per state directory,
// made once and kept in DIR/pg-schema, so a restart on the same directory finds its stores and
// two stacks (two test runs, two sessions on one database) never share one. Each role's store
// lives in <prefix>_reg, <prefix>_biz, <prefix>_operator, <prefix>_policy. checkStores() runs every store's
// integrity check on them (the stack-level crash tests and a cluster harness after its faults).
import { existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import pg from 'pg';
import { pgUrl, dumpSchema } from '../server-kit/pg.ts';
import { ImplementationError } from '../protocol/errors.ts';
import type { StoreChoice } from '../server-kit/store-choice.ts';
import { PgRegStore } from '../reg-server/pg-store.ts';
import { PgBizStore } from '../biz-server/pg-store.ts';
import { PgOperatorStore } from '../operator-server/pg-store.ts';
import { PgPolicyStore } from '../policy-server/pg-store.ts';

const PREFIX_RE = /^s_[0-9a-f]{12}$/;

/** The schema prefix of the stack in `stateDir`, made on first use. */
export function stackSchemaPrefix(stateDir: string): string {
  const file = join(stateDir, 'pg-schema');
  if (existsSync(file)) {
    const p = readFileSync(file, 'utf8').trim();
    if (!PREFIX_RE.test(p)) throw new ImplementationError('CFG_INVALID', `${file}: not a schema prefix (${PREFIX_RE.source})`);
    return p;
  }
  mkdirSync(stateDir, { recursive: true });
  const p = `s_${randomBytes(6).toString('hex')}`;
  writeFileSync(file, p + '\n', { mode: 0o600 });
  return p;
}

/** The SQLite store files of a stack's state directory (deploy/config.ts stateFiles; the policy store's is not one of them). */
const SQLITE_STORE_FILES = ['reg.sqlite', 'biz-accounts.sqlite', 'operator.sqlite'];

/**
 * Refuses (STACK_STORE_MISMATCH) a state directory whose stores are on the other back end than
 * `choice`: SQLite store files and no pg-schema under PostgreSQL, or a pg-schema under SQLite.
 * Else a STORE_URL set (or forgotten) in the shell makes new, empty stores beside the
 * directory's own, and the stack (or `usbphone enroll`) works on them: two stores that diverge.
 * An explicit schema is not the directory's: nothing to check. Call it before stackSchemaPrefix.
 */
export function checkStateStores(stateDir: string, choice: StoreChoice): void {
  if (choice.kind === 'postgres' && choice.schema) return;
  const pgFile = join(stateDir, 'pg-schema');
  if (choice.kind === 'postgres') {
    const sqlite = SQLITE_STORE_FILES.filter((f) => existsSync(join(stateDir, f)));
    if (sqlite.length && !existsSync(pgFile)) {
      throw new ImplementationError('STACK_STORE_MISMATCH', `${stateDir} holds SQLite stores (${sqlite.join(', ')}) but STORE_URL chooses PostgreSQL: unset STORE_URL to use them, or give a new state directory for a stack on PostgreSQL`);
    }
  } else if (existsSync(pgFile)) {
    const prefix = readFileSync(pgFile, 'utf8').trim();
    throw new ImplementationError('STACK_STORE_MISMATCH', `${stateDir} holds PostgreSQL stores (schemas ${prefix}_*, named in ${pgFile}) but the store chosen is SQLite (no STORE_URL=postgres://...): set STORE_URL to their database to use them, or give a new state directory for a stack on SQLite`);
  }
}

/** The schema of each role's store under `prefix`. */
export const stackSchemas = (prefix: string) => ({ reg: `${prefix}_reg`, biz: `${prefix}_biz`, operator: `${prefix}_operator`, policy: `${prefix}_policy` });

/** Drops the schemas of a stack's stores (tests clean up the shared database with it). */
export async function dropStackSchemas(url: string, prefix: string): Promise<void> {
  if (!/^[a-z_][a-z0-9_]{0,50}$/.test(prefix)) throw new ImplementationError('CFG_INVALID', `schema prefix '${prefix}'`);
  const c = new pg.Client({ connectionString: pgUrl(url) });
  await c.connect();
  try {
    for (const s of Object.values(stackSchemas(prefix))) await c.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
  } finally {
    await c.end();
  }
}

/** Every row of every table of `schema` (tests that search a stack's stores for secrets, or read a column). */
export async function schemaRows(url: string, schema: string): Promise<Record<string, Record<string, unknown>[]>> {
  const c = new pg.Client({ connectionString: pgUrl(url) });
  await c.connect();
  try {
    return await dumpSchema(c, schema);
  } finally {
    await c.end();
  }
}

/** The rows of `schema` as one text (bytea as latin1): what a search for a secret in a SQLite file's bytes reads on PostgreSQL. */
export async function schemaText(url: string, schema: string): Promise<string> {
  const out: string[] = [];
  for (const [t, rows] of Object.entries(await schemaRows(url, schema))) {
    for (const r of rows) out.push(`${t}: ${Object.values(r).map((v) => (v instanceof Uint8Array ? Buffer.from(v).toString('latin1') : String(v))).join(' | ')}`);
  }
  return out.join('\n');
}

/**
 * The integrity check of every store of a deployment on PostgreSQL, each opened afresh: the
 * registration, operator, policy (when named) and, with the storage key, the business and bank
 * stores. Empty = whole.
 */
export async function checkStores(url: string, schemas: { reg: string; biz: string; operator: string; policy?: string }, storageKey?: Uint8Array): Promise<string[]> {
  const out: string[] = [];
  if (schemas.policy) {
    const policy = await PgPolicyStore.open(url, schemas.policy);
    try {
      out.push(...(await policy.check()).map((p) => `policy: ${p}`));
    } finally {
      await policy.close();
    }
  }
  const reg = await PgRegStore.open(url, schemas.reg);
  try {
    out.push(...(await reg.check()).map((p) => `reg: ${p}`));
  } finally {
    await reg.close();
  }
  const op = await PgOperatorStore.open(url, schemas.operator);
  try {
    out.push(...(await op.check()).map((p) => `operator: ${p}`));
  } finally {
    await op.close();
  }
  if (storageKey) {
    const biz = await PgBizStore.open(url, storageKey, schemas.biz);
    try {
      out.push(...(await biz.check()).map((p) => `biz: ${p}`), ...(await biz.bankStore().check()).map((p) => `bank: ${p}`));
    } finally {
      await biz.close();
    }
  }
  return out;
}
