// The admin API without its HTTP (the deterministic simulation's seam, sim/dsim-world.ts): the
// endpoint as a function of the sealed body (adminHandler) and the client's transport (post) and
// clock (now). The same sealing, window and replay cache as over HTTP (admin-rpc.test.ts).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { adminHandler, AdminClient, AdminError, type AdminPost } from './admin-rpc.ts';
import { setLogLevel } from './log.ts';

setLogLevel('error');
const key = new Uint8Array(32).fill(5);
let serverNow = 1_000_000;
const handle = adminHandler({ key, name: 'biz-sim', now: () => serverNow, ops: { echo: (a) => a } });

/** A transport that hands the body to the handler, with a hook to change it on the way. */
function transport(edit: (b: Uint8Array) => Uint8Array = (b) => b): AdminPost {
  return async (body) => {
    const r = await handle(edit(body));
    return { status: r.status, buf: r.body ?? new Uint8Array(0) };
  };
}

async function code(f: () => Promise<unknown>): Promise<string> {
  try {
    await f();
  } catch (e) {
    return e instanceof AdminError ? e.code : String(e);
  }
  return 'no error';
}

test('a call through the post seam: sealed, answered, the clock the client is given', async () => {
  const c = new AdminClient({ target: 'biz-sim', url: 'http://biz-sim.sim/admin', key, post: transport(), now: () => serverNow });
  assert.equal(await c.call('echo', [1, 'two']), [1, 'two']);
});

test('failure paths through the seam: a flipped bit is ADMIN_BAD_AUTH, a replay ADMIN_REPLAY, a skewed clock ADMIN_STALE', async () => {
  const flip = new AdminClient({ target: 'biz-sim', url: 'http://x/admin', key, post: transport((b) => { const c = Uint8Array.from(b); c[c.length - 1]! ^= 1; return c; }), now: () => serverNow });
  assert.is(await code(() => flip.call('echo', 1)), 'ADMIN_BAD_AUTH');
  // A request delivered twice (a retransmission): the second delivery's answer is the refusal.
  const twice: AdminPost = async (body) => {
    await handle(body);
    const r = await handle(body);
    return { status: r.status, buf: r.body ?? new Uint8Array(0) };
  };
  const dup = new AdminClient({ target: 'biz-sim', url: 'http://x/admin', key, post: twice, now: () => serverNow });
  assert.is(await code(() => dup.call('echo', 3)), 'ADMIN_REPLAY');
  const skewedAt = serverNow + 61_000;
  const skewed = new AdminClient({ target: 'biz-sim', url: 'http://x/admin', key, post: transport(), now: () => skewedAt });
  assert.is(await code(() => skewed.call('echo', 4)), 'ADMIN_STALE');
  serverNow += 61_000;
  assert.is(await code(() => skewed.call('echo', 5)), 'no error', 'the same skew once the server clock agrees');
  const big = await handle(new Uint8Array(64 * 1024));
  assert.is(big.status, 413);
});

test.run();
