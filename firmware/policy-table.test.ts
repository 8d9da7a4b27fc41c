// firmware/policy-table.ts: which attack table the phone chooses with (S3.1, S3.11).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { acceptTable, tableForChoice, chooseAmong, withNewestTable, keepPushedTable, type PolicyConfig } from './policy-table.ts';
import { verifyTable } from '../protocol/attack-table.ts';
import { signTable, tablePublicKey, initialTable, type AttackTable } from '../protocol/attack-table.ts';
import { simRng } from './hal/sim-hal.ts';

const priv = simRng(1, 'policy')(32);
const key = tablePublicKey(priv);
const now = Date.UTC(2026, 10, 30);
const initial = initialTable({ sites: [{ site: 'biz-east', mechanisms: ['password', 'otp', 'fingerprint'], floor: 'password', degree: 0.3 }] }, 0, Number.MAX_SAFE_INTEGER);
const signed = (version: number, expiresAt: number): Uint8Array => {
  const t: AttackTable = { ...initial, version, issuedAt: now - 10, expiresAt };
  return signTable(t, priv);
};

test('the initial table only for a phone that never held a signed one; an expired signed table means none (strongest), never the initial one again', () => {
  const cfg: PolicyConfig = { key, initial };
  assert.is(tableForChoice(null, cfg, now).source, 'initial');
  const good = signed(3, now + 1000);
  const r = tableForChoice(good, cfg, now);
  assert.is(r.source, 'policy');
  assert.is(r.table?.version, 3);
  const expired = tableForChoice(good, cfg, now + 1000);
  assert.equal([expired.source, expired.table], ['none', null]);
  assert.match(expired.why, /TABLE_EXPIRED/);
  assert.is(tableForChoice(null, { key, initial: null }, now).source, 'none');
  assert.is(tableForChoice(good, { key: null, initial }, now).source, 'none', 'no key: nothing held can be trusted');
});

test('acceptTable: nothing incoming keeps the held table; a valid newer one replaces it (a copy, not the caller\'s buffer)', () => {
  const cfg: PolicyConfig = { key, initial };
  const held = signed(2, now + 1000);
  assert.equal(acceptTable(held, undefined, cfg, now), { keep: held, verdict: { kind: 'none' } });
  const newer = signed(3, now + 1000);
  const r = acceptTable(held, newer, cfg, now);
  assert.is(r.verdict.kind, 'accepted');
  assert.equal(r.keep, newer);
  assert.is.not(r.keep, newer);
  // An unreadable held table does not block a valid one.
  assert.is(acceptTable(Uint8Array.of(1, 2), newer, cfg, now).verdict.kind, 'accepted');
});

test('chooseAmong (S3.1): the least-attacked mechanism among those the device can prove, at or above the floor; else the strongest it can prove', () => {
  const t: AttackTable = {
    version: 4, issuedAt: now, expiresAt: now + 1000,
    sites: [{ site: 'biz-east', level: 2, floor: 'password', degreePpm: 300_000, mechs: [{ mech: 'password', ratePpm: 900_000 }, { mech: 'otp', ratePpm: 100_000 }, { mech: 'fingerprint', ratePpm: 0 }] }],
  };
  const rng = simRng(3, 'choice');
  assert.is(chooseAmong(t, 'biz-east', rng, ['password']), 'password');
  assert.is(chooseAmong(t, 'biz-east', rng, ['password', 'otp']), 'otp');
  assert.is(chooseAmong(t, 'biz-east', rng, ['password', 'otp', 'fingerprint']), 'fingerprint');
  const floorOtp: AttackTable = { ...t, sites: [{ ...t.sites[0]!, floor: 'otp' }] };
  assert.is(chooseAmong(floorOtp, 'biz-east', rng, ['password']), 'password', 'nothing allowed within reach: the strongest it can prove (the site refuses it)');
  assert.is(chooseAmong(null, 'biz-east', rng, ['password', 'otp']), 'otp', 'no table: the strongest');
  assert.is(chooseAmong(t, 'biz-west', rng, ['password', 'otp']), 'otp', 'a site the table does not list: the strongest');
});

test("withNewestTable (S3.11 with S0.12): the record's write keeps the higher version of the table it read and the one held now, expired or not; a held table that does not verify, or a failed read, changes nothing", () => {
  const cfg: PolicyConfig = { key, initial };
  const version = (t: Uint8Array | null) => (t ? (verifyTable(t, key, 0, null) as { ok: true; table: AttackTable }).table.version : null);
  const storeHolding = (table: Uint8Array | null, ok = true) => ({ storage: { loadLogin: () => (ok ? { ok: true as const, value: { user: 'u', servers: [], lastServer: null, table } } : { ok: false as const, status: 'ERR_AUTH' }) } }) as never;
  const rec = (table: Uint8Array | null) => ({ user: 'u', servers: [], lastServer: 'biz-east', table });
  const v7 = signed(7, now + 60_000);
  // Pushed during the login: v8 held now, read v7 before: v8 is written.
  assert.is(version(withNewestTable(storeHolding(signed(8, now + 60_000)), cfg, rec(v7)).table), 8);
  // v8 has expired meanwhile: still v8 (v7 would be a rollback the phone refuses as TABLE_STALE).
  assert.is(version(withNewestTable(storeHolding(signed(8, now - 1)), cfg, rec(v7)).table), 8);
  // An older one held: the record's own stays.
  assert.is(version(withNewestTable(storeHolding(signed(6, now + 60_000)), cfg, rec(v7)).table), 7);
  // A held table under another key (forged), or a failed read: nothing changes.
  const forged = signTable({ ...initial, version: 99, issuedAt: now - 10, expiresAt: now + 60_000 }, simRng(2, 'other')(32));
  assert.is(version(withNewestTable(storeHolding(forged), cfg, rec(v7)).table), 7);
  assert.is(version(withNewestTable(storeHolding(signed(8, now + 60_000), false), cfg, rec(v7)).table), 7);
  // No table read before: the held one.
  assert.is(version(withNewestTable(storeHolding(signed(8, now + 60_000)), cfg, rec(null)).table), 8);
});

test('keepPushedTable (S3.11): a valid newer push is written once; the table held already, or a refused one, writes nothing; a failed save keeps nothing', () => {
  const cfg: PolicyConfig = { key, initial };
  let record = { user: 'u', servers: [], lastServer: 'biz-east', table: signed(7, now + 60_000) as Uint8Array | null };
  let writes = 0;
  let failSave = false;
  const traces: string[] = [];
  const dev = {
    storage: {
      loadLogin: () => ({ ok: true as const, value: record }),
      saveLogin: (l: typeof record) => (failSave ? { ok: false as const, status: 'ERR_WORN' } : (writes++, (record = l), { ok: true as const, value: undefined })),
    },
    clock: { epochMs: () => now },
    trace: (_f: string, _s: string, detail: string) => void traces.push(detail),
  } as never;
  const v8 = signed(8, now + 60_000);
  assert.is(keepPushedTable(dev, cfg, v8).kind, 'accepted');
  assert.is(writes, 1);
  // The same table pushed again (the gateway's newest, to every held connection): no write.
  assert.is(keepPushedTable(dev, cfg, Uint8Array.from(v8)).kind, 'held');
  assert.is(writes, 1, 'the table held already is not written again');
  // An older one, a forged one: refused, no write.
  assert.is(keepPushedTable(dev, cfg, signed(6, now + 60_000)).kind, 'refused');
  assert.is(writes, 1);
  // A newer one the flash refuses to save: nothing kept, said so.
  failSave = true;
  assert.is(keepPushedTable(dev, cfg, signed(9, now + 60_000)).kind, 'none');
  assert.ok(traces.some((t) => /flash refused the save/.test(t)), traces.join('\n'));
  assert.equal(record.table, v8);
});

test.run();
