// The readable trace of a phone's story: one line per step with its feature id, e.g.
//   +   3 ms  S0.5   hello -> reg-primary          mutual authentication ok   ok (3 ms)
// Deterministic for a deterministic run: it prints only virtual-clock times and facts that
// do not depend on randomness (never a secret, a nonce or a key).
import type { TraceEvent } from '../firmware/hal/hal.ts';

export function formatTrace(e: TraceEvent, round = true): string {
  const t = round ? Math.round(e.t) : e.t;
  const ms = e.ms === undefined ? '' : ` (${round ? Math.round(e.ms) : e.ms} ms)`;
  // A detail that already ends in "ok" is not followed by a second "ok".
  const detail = e.ok ? e.detail.replace(/,? ok$/, '') : e.detail;
  return `+${String(t).padStart(5)} ms  ${e.feature.padEnd(6)} ${e.step.padEnd(30)} ${detail}  ${e.ok ? 'ok' : 'FAILED'}${ms}`;
}

/** A progress bar on stderr for long runs (only when stderr is a terminal, or forced). */
export class Progress {
  #last = 0;
  constructor(
    private readonly total: number,
    private readonly label: string,
    private readonly out: NodeJS.WriteStream = process.stderr,
    private readonly enabled = out.isTTY === true,
  ) {}

  update(done: number, extra = ''): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (done < this.total && now - this.#last < 100) return;
    this.#last = now;
    const width = 30;
    const filled = Math.round((done / this.total) * width);
    this.out.write(`\r${this.label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${this.total} ${extra}`.padEnd(90));
    if (done >= this.total) this.out.write('\n');
  }
}

/** p-th percentile (0..100) of a list of numbers, nearest-rank. */
export function percentile(xs: number[], p: number): number {
  if (!xs.length) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}
