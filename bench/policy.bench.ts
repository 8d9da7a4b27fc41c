// Policy server benchmark (docs/benchmarks.md §"Policy server"): the period update for 1,000
// sites (S3.6-S3.10) on the real SQLite store: 3 gateways report every site each period (3,000
// rows of work), then one update folds them, computes levels, rates and degrees, signs the
// table and stores it. Also: taking one 1,000-site report, and signing / verifying the
// 1,000-site table alone (Ed25519 over ~45 KB). Figures are medians over the periods run.
// Run: npx tsx bench/policy.bench.ts   (BENCH_QUICK=1 for a short run)
import { cpus } from 'node:os';
import { sha256 } from '@noble/hashes/sha2.js';
import { setLogLevel } from '../server-kit/log.ts';
import { signTable, verifyTable, tablePublicKey } from '../protocol/attack-table.ts';
import type { AttackReport } from '../server-kit/admin-messages.ts';
import { startPolicyServer } from '../policy-server/server.ts';
import { tempDir, FakeClock } from '../policy-server/test-util.ts';

setLogLevel('error');
const QUICK = !!process.env.BENCH_QUICK;
const SITES = 1_000;
const GATEWAYS = 3;
const PERIODS = QUICK ? 5 : 20;
const T = 60_000;
const T0 = 1_800_000_000_000;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const tmp = tempDir('policy-bench-');
const clock = new FakeClock(T0 + 1_000);
const names = Array.from({ length: SITES }, (_, i) => `biz-${String(i).padStart(4, '0')}`);
const privateKey = sha256(new TextEncoder().encode('bench policy key'));
const s = await startPolicyServer({
  host: '127.0.0.1', adminPort: 0, adminKey: new Uint8Array(32).fill(1), dbFile: tmp.file('policy.db'), privateKey, periodMs: T, clock, timer: false,
  initialTable: { sites: names.map((site) => ({ site, mechanisms: ['password', 'otp', 'fingerprint'], floor: 'password', degree: 1 / SITES })) },
});
let seed = 1;
const rand = (n: number) => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) % n);
const reportOf = (gateway: string, periodId: number): AttackReport => ({
  gateway, periodId, periodMs: T,
  sites: names.map((site) => {
    const p = rand(8_000), o = rand(3_000), f = rand(1_000);
    return { site, total: p + o + f + rand(100), perMech: { password: p, otp: o, fingerprint: f } };
  }),
});

const reportMs: number[] = [];
const updateMs: number[] = [];
let rows = 0;
for (let k = 0; k < PERIODS; k++) {
  const P = Math.floor(clock.now() / T);
  for (let g = 0; g < GATEWAYS; g++) {
    const r = reportOf(`gw-${g}`, P);
    const t0 = performance.now();
    await s.report(r);
    reportMs.push(performance.now() - t0);
  }
  clock.advanceTo((P + 1) * T + 1_000);
  const t0 = performance.now();
  const u = (await s.tick())!;
  updateMs.push(performance.now() - t0);
  for (const w of u.work.values()) rows += w.folded;
}
const { table, signed } = s.latest();
const signMs: number[] = [];
const verifyMs: number[] = [];
const pk = tablePublicKey(privateKey);
for (let i = 0; i < (QUICK ? 10 : 50); i++) {
  let t0 = performance.now();
  signTable(table, privateKey);
  signMs.push(performance.now() - t0);
  t0 = performance.now();
  if (!verifyTable(signed, pk, clock.now(), null).ok) throw new Error('the table does not verify');
  verifyMs.push(performance.now() - t0);
}
await s.close();
tmp.remove();

console.log(`policy server, ${SITES} sites, ${GATEWAYS} gateways, ${PERIODS} periods (${cpus().length} cores, Node ${process.versions.node})`);
console.log(`  take one report of ${SITES} sites     ${median(reportMs).toFixed(2)} ms (median)`);
console.log(`  period update (${GATEWAYS * SITES} rows)       ${median(updateMs).toFixed(2)} ms (median), rows folded ${rows}/${PERIODS * GATEWAYS * SITES}`);
console.log(`  sign the table (${signed.length} bytes)  ${median(signMs).toFixed(2)} ms (median)`);
console.log(`  verify the table (phone side)    ${median(verifyMs).toFixed(2)} ms (median)`);
