// The rotation rule, checked as a model (S0.14): whatever happens — replies lost, power cut
// before or after any save, confirmations lost, pendings expiring — the phone always holds a
// secret the business server accepts.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { mergeCredReply, afterLogin, encodeSavedLogin, decodeSavedLogin, serverOrder, type SavedLogin } from './saved-login.ts';
import { ProtocolError } from '../protocol/errors.ts';
import type { CredReply } from '../protocol/messages.ts';

const servers = [{ name: 'biz-east', url: 'ws://127.0.0.1:7400/biz-east', region: 'east' }, { name: 'biz-west', url: 'ws://127.0.0.1:7400/biz-west', region: 'west' }];
const secretOf = (gen: number) => new Uint8Array(32).fill(gen & 0xff);

/** The business server's view: current and pending generations (the server side's rule). */
class BizModel {
  current = 0;
  pending: number | null = null;
  highest = 0;
  install(): { gen: number; currentGen: number } {
    this.pending = ++this.highest;
    return { gen: this.pending, currentGen: this.current };
  }
  accepts(gen: number): boolean {
    return gen === this.current || gen === this.pending;
  }
  login(gen: number): boolean {
    if (!this.accepts(gen) || gen === 0) return false;
    if (gen === this.pending) {
      this.current = gen;
      this.pending = null;
    }
    return true;
  }
  expire(): void {
    this.pending = null;
  }
}

type Step =
  | { op: 'register'; lostReply: boolean; cutBeforeSave: boolean }
  | { op: 'login'; cutBeforeSave: boolean }
  | { op: 'expire' };

const step: fc.Arbitrary<Step> = fc.oneof(
  fc.record({ op: fc.constant('register' as const), lostReply: fc.boolean(), cutBeforeSave: fc.boolean() }),
  fc.record({ op: fc.constant('login' as const), cutBeforeSave: fc.boolean() }),
  fc.record({ op: fc.constant('expire' as const) }),
);

test('no sequence of lost replies, power cuts and expiries locks the phone out', () => {
  fc.assert(
    fc.property(fc.array(step, { minLength: 1, maxLength: 40 }), (steps) => {
      const biz = new BizModel();
      // Enrollment then a first clean registration + login: the phone holds a working secret.
      const first = biz.install();
      let saved: SavedLogin | null = mergeCredReply(null, { user: 'u', secret: secretOf(first.gen), gen: first.gen, currentGen: first.currentGen, servers });
      assert.ok(biz.login(first.gen));
      saved = afterLogin(saved, saved.secrets[0]!, 'biz-east');
      for (const s of steps) {
        if (s.op === 'register') {
          const r = biz.install();
          if (s.lostReply) continue;
          const cred: CredReply = { user: 'u', secret: secretOf(r.gen), gen: r.gen, currentGen: r.currentGen, servers };
          const next = mergeCredReply(saved, cred);
          if (!s.cutBeforeSave) saved = decodeSavedLogin(encodeSavedLogin(next));
        } else if (s.op === 'login') {
          // The main program tries the newest saved secret first, then the older.
          const order = [...saved!.secrets].sort((a, b) => b.gen - a.gen);
          const used = order.find((x) => biz.login(x.gen));
          assert.ok(used, `locked out: saved ${JSON.stringify(saved!.secrets.map((x) => x.gen))}, biz current ${biz.current} pending ${biz.pending}`);
          if (!s.cutBeforeSave) saved = afterLogin(saved!, used!, 'biz-east');
        } else biz.expire();
        assert.ok(saved!.secrets.some((x) => biz.accepts(x.gen)), `no saved secret accepted: saved ${JSON.stringify(saved!.secrets.map((x) => x.gen))}, biz ${biz.current}/${biz.pending}`);
      }
    }),
    { numRuns: 500 },
  );
});

test('saved login round trip, and corrupt records are refused with a code', () => {
  const s: SavedLogin = { user: 'u-sn-1', secrets: [{ gen: 3, secret: secretOf(3) }, { gen: 2, secret: secretOf(2) }], servers, lastServer: 'biz-west' };
  assert.equal(decodeSavedLogin(encodeSavedLogin(s)), s);
  assert.equal(serverOrder(s).map((x) => x.name), ['biz-west', 'biz-east']);
  const bytes = encodeSavedLogin(s);
  for (const bad of [bytes.subarray(0, bytes.length - 1), Uint8Array.of(0x80), new Uint8Array([...bytes, 0])]) {
    assert.throws(() => decodeSavedLogin(bad), (e: unknown) => e instanceof ProtocolError);
  }
});

test.run();
