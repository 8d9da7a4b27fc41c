// Runs cases one after another, each on its own connections and within its own time bound,
// and records for each what it sent, what it expected, what came back and the verdict.
// Sequential on purpose: the business cases change the test device's generations (§10), and
// each starts from a registration of its own, so their order does not matter but their
// interleaving would.
import { caseName, type Case, type CaseContext, type Outcome, type Target, type Verdict } from './suite.ts';
import { Conn, type Line } from './wire.ts';

export interface CaseResult {
  name: string;
  section: string;
  verdict: Verdict;
  expected: string;
  note?: string;
  /** What was sent and received, in order. */
  log: Line[];
  /** --device: what the device command printed (stdout and stderr of each run, their tails). */
  output?: string;
  ms: number;
}

export interface RunSummary {
  target: string;
  results: CaseResult[];
  counts: Record<Verdict, number>;
  ms: number;
}

/** Cases whose name contains `pattern` (case-insensitive), or all. */
export function selectCases<C extends { section: string; title: string }>(cases: readonly C[], pattern?: string): C[] {
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
  const conns: Conn[] = [];
  if (c.needs === 'master-key' && !target.master) {
    return { name: caseName(c), section: c.section, log: [], verdict: 'skipped', expected: '(needs --master-key)', note: 'only the master key lets the suite make a genuine token for an unenrolled serial', ms: 0 };
  }
  if (c.needs === 'policy-key' && !target.policyKey) {
    return { name: caseName(c), section: c.section, log: [], verdict: 'skipped', expected: '(needs --policy-key)', note: "only the policy server's public key lets the suite check the table's signature", ms: 0 };
  }
  return runBounded(c, target.timeoutMs * CASE_BUDGET_WAITS + target.stepTimeoutMs, (log) => {
    const ctx: CaseContext = {
      target,
      log,
      async connect(url = target.url) {
        const conn = await Conn.open(url, log, target.timeoutMs);
        conns.push(conn);
        return conn;
      },
    };
    return c.run(ctx);
  }, () => {
    for (const conn of conns) conn.close();
    return undefined;
  });
}

/**
 * One case of either half of the suite: `run` bounded by `budgetMs` whatever the peer does (a
 * throw or the budget is a fail: the case could not reach its check), then `cleanup` always;
 * what cleanup returns (the device's output, --device) is kept in the record.
 */
export async function runBounded(c: { section: string; title: string }, budgetMs: number, run: (log: Line[]) => Promise<Outcome>, cleanup: () => Promise<string | undefined> | string | undefined): Promise<CaseResult> {
  const log: Line[] = [];
  const started = Date.now();
  const base = { name: caseName(c), section: c.section, log };
  let timer: NodeJS.Timeout | undefined;
  let r: CaseResult;
  try {
    const o = await Promise.race([
      run(log),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`the case did not end within ${budgetMs} ms`)), budgetMs);
      }),
    ]);
    r = { ...base, ...o, ms: 0 };
  } catch (e) {
    r = { ...base, verdict: 'fail', expected: '(the case could not reach its check)', note: (e as Error).message, ms: 0 };
  } finally {
    clearTimeout(timer);
  }
  const output = await cleanup();
  if (output) r.output = output;
  r.ms = Date.now() - started;
  return r;
}

export async function runCases(cases: readonly Case[], target: Target, onResult: (r: CaseResult, i: number, n: number) => void = () => {}): Promise<RunSummary> {
  return runSequence(cases, target.url, (c) => runCase(c, target), onResult);
}

/** Cases one after another (either half), each result reported as it comes, then the counts. */
export async function runSequence<C>(cases: readonly C[], target: string, one: (c: C) => Promise<CaseResult>, onResult: (r: CaseResult, i: number, n: number) => void = () => {}): Promise<RunSummary> {
  const started = Date.now();
  const results: CaseResult[] = [];
  for (const [i, c] of cases.entries()) {
    const r = await one(c);
    results.push(r);
    onResult(r, i + 1, cases.length);
  }
  const counts: Record<Verdict, number> = { pass: 0, fail: 0, 'non-strict': 0, informational: 0, skipped: 0 };
  for (const r of results) counts[r.verdict]++;
  return { target, results, counts, ms: Date.now() - started };
}
