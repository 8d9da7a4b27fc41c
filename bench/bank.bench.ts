// Bank benchmark (docs/benchmarks.md §"Bank"): the bank's decision on a login (S4.3 / S4.4),
// mode 1 and mode 2 side by side in one run, against a real business store (SQLite) and a
// real operator (HTTPS, TLS 1.3, OAuth2, its SQLite): what biz-server/bank.ts does between
// the sealed bankLogin and the sealed bankPage. Not the S0 login around it (bench/servers.bench.ts).
// 1. the scrypt verifier alone at OWASP's parameters (N=2^17, r=8, p=1) and at the tests' lower cost;
// 2. logins/s in mode 1 and mode 2 with OWASP's parameters (the verifier dominates), 4 in flight;
// 3. the same with the tests' lower cost (ln=10), so the operator's share shows;
// 4. the operator lookups of a mode-2 login (check-validity + retrieve-phone-number + retrieve-date) per second.
// Run: npx tsx bench/bank.bench.ts   (BENCH_QUICK=1 for a short run)
import { join } from 'node:path';
import { cpus } from 'node:os';
import { setLogLevel, createLogger } from '../server-kit/log.ts';
import { OperatorClient } from '../server-kit/operator-client.ts';
import { operatorFixture, card, T0, DAY } from '../operator-server/test-util.ts';
import { SqliteBizStore } from '../biz-server/store.ts';
import { SqliteBankStore } from '../biz-server/bank-store.ts';
import { Bank } from '../biz-server/bank.ts';
import { PasswordHasher, OWASP_SCRYPT, type ScryptParams } from '../biz-server/password-verifier.ts';
import { tempDir } from '../deploy/test-util.ts';
import type { LineIds } from '../protocol/bank-messages.ts';

setLogLevel('error');
const QUICK = !!process.env.BENCH_QUICK;
const MS = QUICK ? 2_000 : 8_000;
const IN_FLIGHT = 4;
const PW = 'bench-password-42';
const te = new TextEncoder();

const f = await operatorFixture();
const op = new OperatorClient({ url: f.server.url, ca: f.tls.caPem, clientId: f.bank.id, clientSecret: f.bank.secret, timeoutMs: 5_000 });
const t = tempDir();
const biz = new SqliteBizStore(join(t.dir, 'biz.sqlite'), new Uint8Array(32).fill(3));
const store = new SqliteBankStore(biz.db, new Uint8Array(32).fill(3));
const log = createLogger('bench');
const ids = (n: number): LineIds => ({ idKind: 'sim', iccid: card(n).iccid, imsi: card(n).imsi, msisdn: null });
const now = () => f.clock.t;
/** A password session's device (no login key: the bench measures the password mechanism only). */
const dev = { deviceUser: 'dev-bench', mech: 'password' as const, loginKey: () => null };

async function timed(name: string, one: () => Promise<unknown>, inFlight = IN_FLIGHT): Promise<number> {
  for (let i = 0; i < 3; i++) await one();
  const lat: number[] = [];
  const end = performance.now() + MS;
  let n = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: inFlight }, async () => {
    while (performance.now() < end) {
      const s = performance.now();
      await one();
      lat.push(performance.now() - s);
      n++;
    }
  }));
  const secs = (performance.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  const rate = n / secs;
  console.log(`${name.padEnd(46)} ${rate.toFixed(1).padStart(8)}/s  p50 ${lat[lat.length >> 1]!.toFixed(1)} ms  p99 ${lat[Math.floor(lat.length * 0.99)]!.toFixed(1)} ms  (${n} in ${secs.toFixed(1)} s, ${inFlight} in flight)`);
  return rate;
}

async function modes(label: string, params: ScryptParams, base: number): Promise<void> {
  const hasher = new PasswordHasher(params);
  const b1 = new Bank({ store, hasher, mode: 1, log, now });
  const b2 = new Bank({ store, hasher, mode: 2, operator: op, log, now });
  // Mode 1: a card the operator does not know; mode 2: a line of the operator's fixture.
  f.server.store.createSubscription(`+4477009${base + 2}`, card(base + 2), T0 - DAY);
  for (const [b, n, name] of [[b1, base + 1, `m1-${base}`], [b2, base + 2, `m2-${base}`]] as const) {
    const r = await b.register(dev, { name, password: PW, ids: ids(n) });
    if (r.kind !== 'registered') throw new Error(`register: ${JSON.stringify(r)}`);
  }
  const login = (b: Bank, n: number, name: string) => async () => {
    const a = await b.login(dev, { name, mech: 'password', proof: te.encode(PW), ids: ids(n) });
    if (a.kind !== 'page') throw new Error(JSON.stringify(a));
  };
  const m1 = await timed(`login mode 1 (${label})`, login(b1, base + 1, `m1-${base}`));
  const m2 = await timed(`login mode 2 (${label})`, login(b2, base + 2, `m2-${base}`));
  console.log(`  mode 2 / mode 1 throughput: ${(m2 / m1).toFixed(2)}x`);
}

console.log(`bank bench: ${cpus().length} cores, ${cpus()[0]?.model ?? '?'}, Node ${process.version}${QUICK ? ' (quick)' : ''}`);
const owasp = new PasswordHasher(OWASP_SCRYPT, 1);
const v = await owasp.hash(PW);
await timed('scrypt verify, OWASP N=2^17 r=8 p=1 (1 at once)', () => owasp.verify(PW, v), 1);
const fast = new PasswordHasher({ ln: 10, r: 8, p: 1 });
const vf = await fast.hash(PW);
await timed('scrypt verify, tests ln=10 r=8 p=1', () => fast.verify(PW, vf), 1);
await modes('OWASP verifier', OWASP_SCRYPT, 100);
await modes('tests ln=10 verifier', { ln: 10, r: 8, p: 1 }, 200);
await timed('operator lookups of one mode-2 login (3 calls)', async () => {
  const c = card(1);
  await Promise.all([op.checkValidity({ iccid: c.iccid, imsi: c.imsi }), op.phoneNumberOf({ iccid: c.iccid })]);
  await op.retrieveSimSwapDate('+447700900001');
}, 8);

op.close();
await f.stop();
biz.close();
t.remove();
