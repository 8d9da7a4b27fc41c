// The rotation rule, checked as a model (S0.14; issue 9): whatever happens — replies lost,
// power cut before any save, finishes or acknowledgements lost, pendings expiring, an on-path
// attacker who withholds a login with the newer generation and delivers it late, or who makes
// every login with the newer generation fail — the phone always holds a secret the business
// server accepts. The model follows the code's rules:
// - the chip imports a wrapped secret, keeps it and the server's current one, never rolls back
//   (firmware/secure/element.ts IMPORT SECRET);
// - the main program tries the newest generation first, and retires the older ones only after
//   the server acknowledged the newer (pwConfirmAck), never after a fallback (main-program.ts);
// - the business server promotes a pending generation only on a completed login (the client's
//   finish verified), so a withheld login delivered late promotes nothing (biz-server);
// - the registration server re-issues an unused pending secret instead of replacing it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { mergeCredReply, afterLogin, encodeSavedLogin, decodeSavedLogin, serverOrder, type SavedLoginRecord } from './saved-login.ts';
import { ProtocolError } from '../protocol/errors.ts';
import { encode } from '../protocol/cbor.ts';
import { serverEntryBody } from '../protocol/messages.ts';

const servers = [{ name: 'biz-east', url: 'ws://127.0.0.1:7400/biz-east', region: 'east' }, { name: 'biz-west', url: 'ws://127.0.0.1:7400/biz-west', region: 'west' }];

/** The business server's view: current and pending generations. */
class BizModel {
  current = 0;
  pending: number | null = null;
  highest = 0;
  constructor(readonly promoteAtOpening = false) {}
  /** The registration server's rotation: re-issue an unused pending, else a new one. */
  install(): { gen: number; currentGen: number } {
    if (this.pending === null) this.pending = ++this.highest;
    return { gen: this.pending, currentGen: this.current };
  }
  accepts(gen: number): boolean {
    return gen !== 0 && (gen === this.current || gen === this.pending);
  }
  /** A login's opening MAC verified: loginOk goes out. */
  open(gen: number): boolean {
    if (!this.accepts(gen)) return false;
    if (this.promoteAtOpening) this.#promote(gen);
    return true;
  }
  /** The client's finish verified: the login is complete. */
  finish(gen: number): void {
    this.#promote(gen);
  }
  #promote(gen: number): void {
    if (gen === this.pending) {
      this.current = gen;
      this.pending = null;
    }
  }
  expire(): void {
    this.pending = null;
  }
}

/** The chip's business slot. */
class ChipModel {
  held = new Set<number>();
  import(gen: number, currentGen: number): void {
    if ([...this.held].some((g) => g > gen)) return; // no rollback
    const keep = this.held.has(currentGen) && currentGen !== gen;
    this.held = new Set(keep ? [gen, currentGen] : [gen]);
  }
  retireOlder(gen: number): void {
    this.held = new Set([...this.held].filter((g) => g >= gen));
  }
  newestFirst(): number[] {
    return [...this.held].sort((a, b) => b - a);
  }
}

type Step =
  | { op: 'register'; lostReply: boolean; cutBeforeImport: boolean }
  | { op: 'login'; finishLost: boolean; ackLost: boolean; withholdNewer: boolean }
  | { op: 'deliverLate' }
  | { op: 'expire' };

const step: fc.Arbitrary<Step> = fc.oneof(
  fc.record({ op: fc.constant('register' as const), lostReply: fc.boolean(), cutBeforeImport: fc.boolean() }),
  fc.record({ op: fc.constant('login' as const), finishLost: fc.boolean(), ackLost: fc.boolean(), withholdNewer: fc.boolean() }),
  fc.record({ op: fc.constant('deliverLate' as const) }),
  fc.record({ op: fc.constant('expire' as const) }),
);

/** Runs the steps; returns the first lockout found, or null. */
function run(steps: Step[], biz: BizModel, device: { keepOnlyUsed?: boolean } = {}): string | null {
  const chip = new ChipModel();
  const withheld: number[] = [];
  // Enrollment, a first clean registration and login: the phone holds a working secret.
  const first = biz.install();
  chip.import(first.gen, first.currentGen);
  biz.open(first.gen);
  biz.finish(first.gen);
  for (const s of steps) {
    if (s.op === 'register') {
      const r = biz.install();
      if (!s.lostReply && !s.cutBeforeImport) chip.import(r.gen, r.currentGen);
    } else if (s.op === 'login') {
      const gens = chip.newestFirst();
      let used: number | null = null;
      let blocked = false;
      for (const gen of gens) {
        // The attacker withholds the login with the newer generation: the phone sees no answer.
        if (s.withholdNewer && gen === gens[0] && gens.length > 1) {
          withheld.push(gen);
          blocked = true;
          continue;
        }
        if (!biz.open(gen)) continue;
        used = gen;
        if (!s.finishLost) biz.finish(gen);
        // pwConfirm travels after the finish; its acknowledgement lets the chip retire the older.
        if (gen === gens[0] && gens.length > 1 && !s.finishLost && !s.ackLost) chip.retireOlder(gen);
        // The old firmware kept only the generation that worked, newer ones included.
        if (device.keepOnlyUsed) chip.held = new Set([gen]);
        break;
      }
      // An attacker who withholds logins can deny this one (no protocol stops that); it must not
      // lock the phone out for good: the invariant below is the lockout check.
      if (used === null && !blocked) return `locked out: chip holds ${JSON.stringify(gens)}, server current ${biz.current} pending ${biz.pending}`;
    } else if (s.op === 'deliverLate') {
      // The withheld logins reach the server now; the attacker cannot finish them.
      for (const gen of withheld.splice(0)) biz.open(gen);
    } else biz.expire();
    if (!chip.newestFirst().some((g) => biz.accepts(g))) return `no held secret accepted after ${s.op}: chip ${JSON.stringify(chip.newestFirst())}, server ${biz.current}/${biz.pending}`;
  }
  return null;
}

test('no sequence of lost replies, cuts, lost finishes or acks, withheld-then-late logins, forced fallbacks or expiries locks the phone out', () => {
  fc.assert(fc.property(fc.array(step, { minLength: 1, maxLength: 40 }), (steps) => {
    const r = run(steps, new BizModel());
    assert.is(r, null);
  }), { numRuns: 1000 });
});

test('the model finds the lockout of issue 9 under the old rules (promotion at the opening, the phone keeping only what worked)', () => {
  // Withhold the login with the newer generation, fall back to the older, deliver the withheld
  // login late: the old server promoted it, the old phone had dropped it.
  const attack: Step[] = [
    { op: 'register', lostReply: false, cutBeforeImport: false },
    { op: 'login', finishLost: false, ackLost: false, withholdNewer: true },
    { op: 'deliverLate' },
  ];
  assert.ok(run(attack, new BizModel(true), { keepOnlyUsed: true }), 'old server + old phone: locked out');
  assert.is(run(attack, new BizModel(false), { keepOnlyUsed: false }), null, 'both fixes: no lockout');
  // Either fix alone already closes this attack; the search finds a lockout of the old pair by itself.
  const found = fc.check(fc.property(fc.array(step, { minLength: 1, maxLength: 40 }), (steps) => run(steps, new BizModel(true), { keepOnlyUsed: true }) === null), { numRuns: 2000, seed: 9 });
  assert.ok(found.failed, 'the random search finds it too');
});

test('the saved-login record round trip (no secret in it), and corrupt records are refused with a code', () => {
  const s: SavedLoginRecord = { user: 'u-sn-1', servers, lastServer: 'biz-west', table: null };
  assert.equal(decodeSavedLogin(encodeSavedLogin(s)), s);
  assert.equal(serverOrder(s).map((x) => x.name), ['biz-west', 'biz-east']);
  assert.equal(afterLogin(s, 'biz-east').lastServer, 'biz-east');
  const merged = mergeCredReply(s, { user: 'u-sn-1', wrapped: new Uint8Array(72), gen: 4, currentGen: 3, servers: servers.slice(0, 1) });
  assert.equal(merged, { user: 'u-sn-1', servers: servers.slice(0, 1), lastServer: 'biz-west', table: null });
  // Version 3 keeps the attack table (S3.11) through merges and logins; a version 2 record reads with none.
  const withTable: SavedLoginRecord = { ...s, table: Uint8Array.of(1, 2, 3) };
  assert.equal(decodeSavedLogin(encodeSavedLogin(withTable)), withTable);
  assert.equal(afterLogin(withTable, 'biz-east').table, withTable.table);
  assert.equal(mergeCredReply(withTable, { user: 'u-sn-1', wrapped: new Uint8Array(72), gen: 4, currentGen: 3, servers }).table, withTable.table);
  assert.equal(decodeSavedLogin(encode([2, s.user, servers.map(serverEntryBody), 'biz-west'])), s);
  assert.throws(() => decodeSavedLogin(encode([4, s.user, servers.map(serverEntryBody), 'biz-west', null])), (e: unknown) => e instanceof ProtocolError && e.code === 'SAVED_VERSION');
  assert.throws(() => decodeSavedLogin(encode([3, s.user, servers.map(serverEntryBody), 'biz-west', new Uint8Array(1537)])), (e: unknown) => e instanceof ProtocolError && e.code === 'MSG_BAD_FIELD');
  const bytes = encodeSavedLogin(s);
  for (const bad of [bytes.subarray(0, bytes.length - 1), Uint8Array.of(0x80), new Uint8Array([...bytes, 0])]) {
    assert.throws(() => decodeSavedLogin(bad), (e: unknown) => e instanceof ProtocolError);
  }
});

test.run();
