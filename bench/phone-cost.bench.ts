// The phone side of a fleet login (issue 15: <= 0.8 ms of phone CPU per login, >= 1,000
// logins/s for a fleet of 1,000 on 2 cores, 0 failures, p99 < 500 ms), this tree against an
// earlier one, side by side: rounds alternate the two trees' `usbphone sim --devices N --json`
// (servers in their own process, so the fleet's process is the phones and their driver), and
// each round gives the ratio new / old. The machine is shared: compare the per-round ratios,
// not absolute figures from different moments.
//
// Phone CPU per login: the fleet's own cost curve (sim/fleet.ts), CPU of the phones' process
// over the last window of logins (PHONE_WINDOW, default all of them: it then includes the
// warm-up of the first logins, the same for both trees).
//
// Run:  npx tsx bench/phone-cost.bench.ts
// Env:  PHONE_DEVICES (1000), PHONE_ROUNDS (3), PHONE_BASELINE=<dir> an extracted earlier tree
//       (default: `git archive ${PHONE_BASELINE_REV:-main}` into a temporary directory, with
//       node_modules linked to this tree's).
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync, existsSync } from 'node:fs';
import { tmpdir, cpus, loadavg } from 'node:os';
import { join, resolve } from 'node:path';

const here = resolve(import.meta.dirname, '..');
const devices = Number(process.env.PHONE_DEVICES ?? 1000);
const rounds = Number(process.env.PHONE_ROUNDS ?? 3);
let base = process.env.PHONE_BASELINE;
let made: string | null = null;
const rev = process.env.PHONE_BASELINE_REV ?? 'main';
if (!base) {
  made = base = mkdtempSync(join(tmpdir(), 'usbphone-phone-baseline-'));
  execFileSync('sh', ['-c', `git -C '${here}' archive '${rev}' | tar -x -C '${base}'`]);
  symlinkSync(join(here, 'node_modules'), join(base, 'node_modules'));
}
if (!existsSync(join(base, 'bin', 'usbphone.js'))) throw new Error(`${base}: not a tree of this project`);
const baseRev = process.env.PHONE_BASELINE ? base : `${rev} (${execFileSync('git', ['-C', here, 'rev-parse', '--short', rev], { encoding: 'utf8' }).trim()})`;

interface Run { phoneCpuMs: number; loginsPerSecond: number; p99Ms: number; failed: number; ok: number; serverCpuMs: number | null; engine: string }
function fleet(tree: string): Run {
  const r = spawnSync('nice', ['-n', '10', process.execPath, join(tree, 'bin', 'usbphone.js'), 'sim', '--devices', String(devices), '--json'], { cwd: tree, encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`${tree}: exit ${r.status}\n${r.stderr}`);
  const s = JSON.parse(r.stdout.trim().split('\n').pop()!) as { ok: number; failed: number; loginsPerSecond: number; p99Ms: number; chipCrypto?: string; curve: { phoneCpuMs: number; serverCpuMs: number | null }[] };
  const last = s.curve[s.curve.length - 1]!;
  return { phoneCpuMs: last.phoneCpuMs, serverCpuMs: last.serverCpuMs, loginsPerSecond: s.loginsPerSecond, p99Ms: s.p99Ms, failed: s.failed, ok: s.ok, engine: s.chipCrypto ?? 'noble (before the chip engine)' };
}
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const f = (x: number, d = 2) => x.toFixed(d);

console.log(`phone cost bench: fleet of ${devices}, ${rounds} rounds alternating; new = ${here}, old = ${baseRev}; node ${process.version}, ${cpus().length} x ${cpus()[0]?.model}; load ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);
const runs: { old: Run; new: Run }[] = [];
try {
  for (let i = 0; i < rounds; i++) {
    // Alternate which goes first, so a load that rises or falls through a round weighs on both.
    const order = i % 2 ? (['new', 'old'] as const) : (['old', 'new'] as const);
    const got: Partial<Record<'old' | 'new', Run>> = {};
    for (const which of order) got[which] = fleet(which === 'new' ? here : base);
    const o = got.old!, n = got.new!;
    runs.push({ old: o, new: n });
    console.log(
      `round ${i + 1}: phone CPU/login old ${f(o.phoneCpuMs)} ms, new ${f(n.phoneCpuMs)} ms (new/old ${f(n.phoneCpuMs / o.phoneCpuMs)}x); ` +
        `logins/s old ${f(o.loginsPerSecond, 1)}, new ${f(n.loginsPerSecond, 1)} (${f(n.loginsPerSecond / o.loginsPerSecond)}x); ` +
        `p99 old ${f(o.p99Ms, 0)} ms, new ${f(n.p99Ms, 0)} ms; failed old ${o.failed}, new ${n.failed}; server CPU/login old ${o.serverCpuMs ?? '-'} ms, new ${n.serverCpuMs ?? '-'} ms; load ${loadavg()[0]!.toFixed(1)}`,
    );
  }
} finally {
  if (made) rmSync(made, { recursive: true, force: true });
}
const col = (w: 'old' | 'new', k: 'phoneCpuMs' | 'loginsPerSecond' | 'p99Ms') => median(runs.map((r) => r[w][k]));
console.log(`engines: old ${runs[0]!.old.engine}, new ${runs[0]!.new.engine}`);
console.log(`median phone CPU/login: old ${f(col('old', 'phoneCpuMs'))} ms, new ${f(col('new', 'phoneCpuMs'))} ms; per-round new/old ${runs.map((r) => f(r.new.phoneCpuMs / r.old.phoneCpuMs)).join(' ')}`);
console.log(`median logins/s: old ${f(col('old', 'loginsPerSecond'), 1)}, new ${f(col('new', 'loginsPerSecond'), 1)}; per-round new/old ${runs.map((r) => f(r.new.loginsPerSecond / r.old.loginsPerSecond)).join(' ')}`);
console.log(`median p99: old ${f(col('old', 'p99Ms'), 0)} ms, new ${f(col('new', 'p99Ms'), 0)} ms; failures old ${runs.reduce((a, r) => a + r.old.failed, 0)}, new ${runs.reduce((a, r) => a + r.new.failed, 0)}`);
console.log(`targets: phone CPU <= 0.8 ms/login ${col('new', 'phoneCpuMs') <= 0.8 ? 'met' : 'NOT met'}; >= 1,000 logins/s ${col('new', 'loginsPerSecond') >= 1000 ? 'met' : 'NOT met'}; p99 < 500 ms ${col('new', 'p99Ms') < 500 ? 'met' : 'NOT met'}; 0 failures ${runs.every((r) => r.new.failed === 0) ? 'met' : 'NOT met'}`);
