// What a person looks at after attack-shifts-mechanism (sim/attack-scenarios.ts): the attack
// table of each period and the honest phones' choices, as a CSV (one row per period, site and
// mechanism) and an SVG chart rendered in Node by vega-lite + vega (no browser, no DOM: a
// declarative spec that a well-kept library renders; docs/decisions.md). Every figure in both
// is one the story measured: the policy server's published rates and levels, the attacks it
// folded for the period, the mechanisms the phones traced they chose (S3.1).
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Mechanism } from '../protocol/messages.ts';

/** One site and mechanism of one period's table, with what the honest phones did with it. */
export interface PeriodRow {
  round: number;
  phase: string;
  /** The table's version and the period it was published at (its statistics are of periodId - 1). */
  version: number;
  periodId: number;
  site: string;
  level: number;
  degreePpm: number;
  mech: Mechanism;
  /** S3.7: attacks on mech / all attacks on the site, ppm. */
  ratePpm: number;
  /** Attacks on mech at the site in the table's statistics period, as the policy server folded them. */
  attacks: number;
  /** Honest logins of this round at the site that chose mech (S3.1). */
  choices: number;
}

export const CSV_HEADER = 'round,phase,table_version,period_id,site,level,degree_ppm,mech,rate_ppm,attacks,honest_choices';

/** The rows as CSV (RFC 4180; no field needs quoting: names are [a-z0-9-]). */
export function periodCsv(rows: readonly PeriodRow[]): string {
  const lines = rows.map((r) => [r.round, r.phase, r.version, r.periodId, r.site, r.level, r.degreePpm, r.mech, r.ratePpm, r.attacks, r.choices].join(','));
  return [CSV_HEADER, ...lines].join('\r\n') + '\r\n';
}

export function writePeriodCsv(file: string, rows: readonly PeriodRow[]): void {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, periodCsv(rows));
}

const COLOURS = { domain: ['password', 'otp', 'fingerprint'], range: ['#b3261e', '#0550ae', '#116329'] };

/**
 * The vega-lite spec: three panels over the rounds (one table each) at `site`: the attack rate
 * of each mechanism (%), the attacks counted, and the honest phones' choices. Colour and a
 * point shape / dash per mechanism, so colour is not the only signal.
 */
export function periodChartSpec(rows: readonly PeriodRow[], o: { site: string; title: string }): Record<string, unknown> {
  const values = rows.filter((r) => r.site === o.site).map((r) => ({ ...r, label: `${r.round} ${r.phase}: v${r.version}, level ${r.level}`, ratePct: r.ratePpm / 10_000 }));
  const x = { field: 'label', type: 'ordinal', title: 'round, phase: table version, security level of the site', sort: { field: 'round' }, axis: { labelAngle: -25, labelLimit: 220 } };
  const colour = { field: 'mech', type: 'nominal', title: 'mechanism', scale: COLOURS };
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: o.title, fontSize: 14, anchor: 'start' },
    data: { values },
    config: { font: 'DejaVu Sans, sans-serif', axis: { labelFontSize: 11, titleFontSize: 12 }, legend: { labelFontSize: 12, titleFontSize: 12 } },
    vconcat: [
      {
        title: `Attack rate per mechanism at ${o.site} (S3.7), in the table of each period`,
        width: 520,
        height: 160,
        mark: { type: 'line', point: { size: 70, filled: true } },
        encoding: { x, y: { field: 'ratePct', type: 'quantitative', title: 'attack rate (%)', scale: { domain: [0, 100] } }, color: colour, shape: { field: 'mech', type: 'nominal' }, strokeDash: { field: 'mech', type: 'nominal' } },
      },
      {
        title: `Attacks counted at ${o.site} in the period the table states (S3.4, S3.5)`,
        width: 520,
        height: 110,
        mark: 'bar',
        encoding: { x, y: { field: 'attacks', type: 'quantitative', title: 'attacks', axis: { tickMinStep: 1 } }, color: colour },
      },
      {
        title: `Honest logins at ${o.site}: the mechanism each phone chose (S3.1)`,
        width: 520,
        height: 110,
        mark: 'bar',
        encoding: { x, y: { field: 'choices', type: 'quantitative', title: 'logins', axis: { tickMinStep: 1 } }, color: colour },
      },
    ],
  };
}

/** Renders the chart to an SVG file (vega's headless renderer). */
export async function writePeriodChart(file: string, rows: readonly PeriodRow[], o: { site: string; title: string }): Promise<void> {
  // Loaded here only: vega is large, and only this story draws.
  const vega = await import('vega');
  const vl = await import('vega-lite');
  const spec = vl.compile(periodChartSpec(rows, o) as unknown as Parameters<typeof vl.compile>[0]).spec;
  const svg = await new vega.View(vega.parse(spec), { renderer: 'none' }).toSVG();
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, svg);
}
