// The phone's attack statistics table (S3.1, S3.11, docs/protocol.md "Attack statistics
// table"): which table it keeps and which one its main program chooses a mechanism with.
//
// The phone ships with two things from the factory, both in UPMON.CFG and so covered by the
// vendor-signed boot manifest: the policy server's Ed25519 public key and the configured
// initial table (S3.10). Newer tables arrive in credential replies (protocol/messages.ts
// credReply.table) and are kept only when signed by that key, newer than the one held and not
// expired (protocol/attack-table.ts verifyTable) — against downgrade, a phone never goes back.
// The table it keeps lives in the chip-sealed saved-login record, so a host cannot roll it
// back either. The initial table serves only a phone that never had a signed one: once it
// had, an expired table means "no valid table" (the strongest mechanism), not the initial
// one, or blocking updates until expiry would bring back the all-zero, random choice.
import { equalBytes } from '@noble/ciphers/utils.js';
import { verifyTable, chooseMechanism, strongest, MECH_STRENGTH, type AttackTable, type TableRefusal } from '../protocol/attack-table.ts';
import type { Mechanism } from '../protocol/messages.ts';
import type { Rng } from './hal/hal.ts';
import type { Board } from './board.ts';

/** What the factory gave the phone (UPMON.CFG). */
export interface PolicyConfig {
  /** The policy server's Ed25519 public key (32 bytes), or null: no table can be trusted. */
  key: Uint8Array | null;
  /** The configured initial table (version 0, rates 0), or null. */
  initial: AttackTable | null;
}

/** What UPMon did with a credential reply's table. */
export type TableVerdict =
  | { kind: 'none' }
  /** The very table the phone holds, again (every registration hands on the latest): nothing to do. */
  | { kind: 'held' }
  | { kind: 'accepted'; table: AttackTable }
  | { kind: 'refused'; code: TableRefusal; reason: string };

/** The version of the table the phone holds, or null (none, or unreadable: then any valid table replaces it). */
function heldVersion(held: Uint8Array | null, key: Uint8Array): number | null {
  if (!held) return null;
  // The held table was verified when it was kept; its expiry does not matter for its version.
  const r = verifyTable(held, key, 0, null);
  return r.ok ? r.table.version : null;
}

/**
 * UPMon, on a credential reply (S3.11): the table to keep (`keep`: the incoming one when it
 * passes, else the held one, unchanged) and what happened, for the trace. Never throws.
 * `nowEpochMs`: the phone's date (Clock.epochMs).
 */
export function acceptTable(held: Uint8Array | null, incoming: Uint8Array | undefined, cfg: PolicyConfig, nowEpochMs: number): { keep: Uint8Array | null; verdict: TableVerdict } {
  if (!incoming) return { keep: held, verdict: { kind: 'none' } };
  if (held && equalBytes(held, incoming)) return { keep: held, verdict: { kind: 'held' } };
  if (!cfg.key) return { keep: held, verdict: { kind: 'refused', code: 'TABLE_BAD_SIGNATURE', reason: 'this phone has no policy server key: no table can be trusted' } };
  const r = verifyTable(incoming, cfg.key, nowEpochMs, heldVersion(held, cfg.key));
  if (!r.ok) return { keep: held, verdict: { kind: 'refused', code: r.code, reason: r.reason } };
  return { keep: Uint8Array.from(incoming), verdict: { kind: 'accepted', table: r.table } };
}

/**
 * The table the main program chooses with (S3.1): the held signed table while it is valid;
 * the initial table if the phone never held one; otherwise null (no valid table: the caller
 * takes the strongest mechanism the site offers, protocol/attack-table.ts chooseMechanism).
 */
export function tableForChoice(held: Uint8Array | null, cfg: PolicyConfig, nowEpochMs: number): { table: AttackTable | null; source: 'policy' | 'initial' | 'none'; why: string } {
  if (!held) return cfg.initial ? { table: cfg.initial, source: 'initial', why: 'the initial table from the factory' } : { table: null, source: 'none', why: 'no table' };
  if (!cfg.key) return { table: null, source: 'none', why: 'no policy server key' };
  const r = verifyTable(held, cfg.key, nowEpochMs, null);
  if (!r.ok) return { table: null, source: 'none', why: `the held table is no longer valid (${r.code})` };
  return { table: r.table, source: 'policy', why: `table v${r.table.version}` };
}

/**
 * S3.1 on a device that can prove only some mechanisms (`capable`, non-empty): the table's
 * choice among the site's mechanisms this device can prove, at or above the site's floor
 * (protocol/attack-table.ts chooseMechanism: lowest rate, random among equals). A site whose
 * every allowed mechanism is out of reach, or no table: the strongest the device can prove (the
 * site then refuses it if it is below its floor, with its own code).
 */
export function chooseAmong(table: AttackTable | null, site: string, rng: Rng, capable: readonly Mechanism[]): Mechanism {
  const entry = table?.sites.find((s) => s.site === site);
  if (!table || !entry) return strongest(capable);
  const mechs = entry.mechs.filter((m) => capable.includes(m.mech));
  if (!mechs.some((m) => MECH_STRENGTH[m.mech] >= MECH_STRENGTH[entry.floor])) return strongest(capable);
  return chooseMechanism({ ...table, sites: [{ ...entry, mechs }] }, site, rng);
}

/**
 * S3.11, a table the gateway pushed into a session: kept in the saved record when it passes
 * acceptTable (signed by the factory key, newer than the held one, not expired), else refused;
 * traced either way. A phone with no saved record yet keeps nothing (its registration brings a
 * table). Never throws; a save that fails leaves the held table.
 */
export function keepPushedTable(dev: Pick<Board, 'storage' | 'clock' | 'trace'>, cfg: PolicyConfig, table: Uint8Array): TableVerdict {
  const rec = dev.storage.loadLogin();
  if (!rec.ok || !rec.value) {
    dev.trace('S3.11', 'attack table pushed', `not kept: no saved login to keep it with (${rec.ok ? 'none yet' : rec.status})`, false);
    return { kind: 'none' };
  }
  const r = acceptTable(rec.value.table, table, cfg, dev.clock.epochMs());
  if (r.verdict.kind === 'refused') {
    dev.trace('S3.11', 'attack table pushed', `refused (${r.verdict.code}: ${r.verdict.reason}); the held table stays`, false);
    return r.verdict;
  }
  // The table it holds already (the gateway pushes its newest to every held connection, again
  // after a restart): nothing to write, and no flash wear for it (found in issue 15's profile).
  if (r.verdict.kind !== 'accepted') return r.verdict;
  const saved = dev.storage.saveLogin({ ...rec.value, table: r.keep });
  if (!saved.ok) {
    dev.trace('S3.11', 'attack table pushed', `not kept: flash refused the save (${saved.status})`, false);
    return { kind: 'none' };
  }
  if (r.verdict.kind === 'accepted') dev.trace('S3.11', 'attack table pushed', `table v${r.verdict.table.version} from the gateway accepted (${r.verdict.table.sites.length} site(s))`);
  return r.verdict;
}

/**
 * S3.11 with S0.12: a record read earlier (`next`), about to be written back, with the newer of
 * its table and the one the saved record holds now: a table the gateway pushed and
 * keepPushedTable kept after `next` was read is not rolled back by the write. Newer by version
 * only, as the anti-rollback rule (heldVersion) judges: an expired newer table still outranks an
 * older valid one, which the phone would refuse as TABLE_STALE (found by review). The held table
 * counts only if it verifies under the factory key. Costs one record read; a read that fails
 * leaves `next` as it is. The main program calls it only when a table was pushed to the board
 * since it read its login (Board.tablesPushed; decision 140): no other write changes the table.
 */
export function withNewestTable<T extends { table: Uint8Array | null }>(dev: Pick<Board, 'storage'>, cfg: PolicyConfig, next: T): T {
  const cur = dev.storage.loadLogin();
  const held = cur.ok ? cur.value?.table ?? null : null;
  if (!held || !cfg.key || (next.table && equalBytes(held, next.table))) return next;
  const h = heldVersion(held, cfg.key);
  if (h === null) return next;
  const n = heldVersion(next.table, cfg.key);
  return n === null || h > n ? { ...next, table: held } : next;
}
