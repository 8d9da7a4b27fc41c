// The suite's three outputs: human text grouped by section, JSON, and JUnit XML for a CI
// (the elements conformance/fixtures/junit.xsd describes: testsuites > testsuite > testcase,
// with failure / skipped / system-out).
import { SECTION_TITLES, sectionOrder } from './cases.ts';
import type { CaseResult, RunSummary } from './runner.ts';
import { caseName, type Verdict } from './suite.ts';

const MARK: Record<Verdict, string> = { pass: 'pass', fail: 'FAIL', 'non-strict': 'non-strict', informational: 'info', skipped: 'skipped' };

const sectionTitle = (s: string) => `${s} ${SECTION_TITLES[s] ?? ''}`.trim();

function bySection(results: CaseResult[]): [string, CaseResult[]][] {
  const m = new Map<string, CaseResult[]>();
  for (const r of results) m.set(r.section, [...(m.get(r.section) ?? []), r]);
  return [...m.entries()].sort(([a], [b]) => sectionOrder(a, b));
}

export function summaryLine(s: RunSummary): string {
  const c = s.counts;
  return `${s.results.length} cases: ${c.pass} pass, ${c.fail} fail, ${c['non-strict']} non-strict, ${c.informational} informational, ${c.skipped} skipped (${(s.ms / 1000).toFixed(1)} s)`;
}

/** Human text: by section; each case's verdict, and for any case not passed what it sent, expected and got. */
export function textReport(s: RunSummary): string {
  const out: string[] = [`conformance of ${s.target}`, ''];
  for (const [section, rs] of bySection(s.results)) {
    out.push(sectionTitle(section));
    for (const r of rs) {
      out.push(`  ${MARK[r.verdict].padEnd(10)} ${r.name}`);
      if (r.verdict === 'pass') continue;
      out.push(`             expected: ${r.expected}`);
      if (r.note) out.push(`             ${r.verdict === 'skipped' ? 'why' : 'got'}: ${r.note}`);
      for (const l of r.log) out.push(`             ${l.dir === 'sent' ? '>' : '<'} ${l.text}`);
      if (r.output) for (const l of r.output.split('\n')) out.push(`             | ${l}`);
    }
    out.push('');
  }
  out.push(summaryLine(s), '');
  return out.join('\n');
}

export function jsonReport(s: RunSummary): string {
  return JSON.stringify({ target: s.target, counts: s.counts, ms: s.ms, cases: s.results.map((r) => ({ name: r.name, section: r.section, verdict: r.verdict, expected: r.expected, note: r.note, log: r.log, output: r.output, ms: r.ms })) }) + '\n';
}

const xml = (s: string) => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]!)
  // XML 1.0 has no place for most control characters.
  .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/g, '');

/**
 * JUnit XML: one testsuite per spec section, one testcase per case. fail -> <failure>;
 * skipped -> <skipped>; non-strict and informational pass for a CI, their verdict and record in
 * <system-out>.
 */
export function junitReport(s: RunSummary): string {
  const out = ['<?xml version="1.0" encoding="UTF-8"?>'];
  const c = s.counts;
  out.push(`<testsuites name="usbphone conformance" tests="${s.results.length}" failures="${c.fail}" errors="0" skipped="${c.skipped}" time="${(s.ms / 1000).toFixed(3)}">`);
  for (const [section, rs] of bySection(s.results)) {
    const t = rs.reduce((a, r) => a + r.ms, 0) / 1000;
    out.push(`  <testsuite name="${xml(sectionTitle(section))}" tests="${rs.length}" failures="${rs.filter((r) => r.verdict === 'fail').length}" errors="0" skipped="${rs.filter((r) => r.verdict === 'skipped').length}" time="${t.toFixed(3)}">`);
    for (const r of rs) {
      out.push(`    <testcase name="${xml(r.name)}" classname="${xml(`conformance.${section}`)}" time="${(r.ms / 1000).toFixed(3)}">`);
      const record = [`verdict: ${r.verdict}`, `expected: ${r.expected}`, ...(r.note ? [`note: ${r.note}`] : []), ...r.log.map((l) => `${l.dir === 'sent' ? '>' : '<'} ${l.text}`)].join('\n');
      if (r.verdict === 'fail') out.push(`      <failure message="${xml(r.note ?? 'failed')}" type="conformance">${xml(record)}</failure>`);
      if (r.verdict === 'skipped') out.push(`      <skipped message="${xml(r.note ?? 'skipped')}"/>`);
      out.push(`      <system-out>${xml(record)}</system-out>`);
      if (r.output) out.push(`      <system-err>${xml(r.output)}</system-err>`);
      out.push('    </testcase>');
    }
    out.push('  </testsuite>');
  }
  out.push('</testsuites>', '');
  return out.join('\n');
}

/** The case list by section: what `--list` prints and docs/conformance.md holds. */
export function listText(cases: readonly { section: string; title: string }[]): string {
  const m = new Map<string, string[]>();
  for (const c of cases) m.set(c.section, [...(m.get(c.section) ?? []), caseName(c)]);
  const out: string[] = [];
  for (const [section, names] of [...m.entries()].sort(([a], [b]) => sectionOrder(a, b))) {
    out.push(`${sectionTitle(section)}`);
    for (const n of names) out.push(`- ${n}`);
    out.push('');
  }
  return out.join('\n');
}
