// Runs cases one after another, each on its own connections and within its own time bound,
// and records for each what it sent, what it expected, what came back and the verdict.
// Sequential on purpose: the business cases change the test device's generations (§10), and
// each starts from a registration of its own, so their order does not matter but their
// interleaving would.
import { caseName, type Case, type CaseContext, type Target, type Verdict } from './suite.ts';
import { Conn, type Line } from './wire.ts';

export interface CaseResult {
  name: string;
  section: string;
  verdict: Verdict;
  expected: string;
  note?: string;
  /** What was sent and received, in order. */
  log: Line[];
  ms: number;
}

export interface RunSummary {
  target: string;
  results: CaseResult[];
  counts: Record<Verdict, number>;
  ms: number;
}

/** Cases whose name contains `pattern` (case-insensitive), or all. */
export function selectCases(cases: readonly Case[], pattern?: string): Case[] {
  if (!pattern) return [...cases];
  const p = pattern.toLowerCase();
  return cases.filter((c) => caseName(c).toLowerCase().includes(p));
}

/**
 * A case may use at most this many waits of `timeoutMs` in a row; the whole case is bounded by
 * it (plus the step timeout for the TIMEOUT case), whatever the target does.
 */
export const CASE_BUDGET_WAITS = 12;

export async function runCase(c: Case, target: Target): Promise<CaseResult> {
  const log: Line[] = [];
  const started = Date.now();
  const conns: Conn[] = [];
  const ctx: CaseContext = {
    target,
    log,
    async connect(url = target.url) {
      const conn = await Conn.open(url, log, target.timeoutMs);
      conns.push(conn);
      return conn;
    },
  };
  const base = { name: caseName(c), section: c.section, log };
  if (c.needs === 'master-key' && !target.master) {
    return { ...base, verdict: 'skipped', expected: '(needs --master-key)', note: 'only the master key lets the suite make a genuine token for an unenrolled serial', ms: 0 };
  }
  const budget = target.timeoutMs * CASE_BUDGET_WAITS + target.stepTimeoutMs;
  let timer: NodeJS.Timeout | undefined;
  try {
    const o = await Promise.race([
      c.run(ctx),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`the case did not end within ${budget} ms`)), budget);
      }),
    ]);
    return { ...base, ...o, ms: Date.now() - started };
  } catch (e) {
    return { ...base, verdict: 'fail', expected: '(the case could not reach its check)', note: (e as Error).message, ms: Date.now() - started };
  } finally {
    clearTimeout(timer);
    for (const conn of conns) conn.close();
  }
}

export async function runCases(cases: readonly Case[], target: Target, onResult: (r: CaseResult, i: number, n: number) => void = () => {}): Promise<RunSummary> {
  const started = Date.now();
  const results: CaseResult[] = [];
  for (const [i, c] of cases.entries()) {
    const r = await runCase(c, target);
    results.push(r);
    onResult(r, i + 1, cases.length);
  }
  const counts: Record<Verdict, number> = { pass: 0, fail: 0, 'non-strict': 0, informational: 0, skipped: 0 };
  for (const r of results) counts[r.verdict]++;
  return { target: target.url, results, counts, ms: Date.now() - started };
}
