// Shared by the policy server's tests and its bench: a temporary store file, a fake clock whose
// timers run only when the test advances it, and the patent's three sites (S3.9: 0.3 each).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Clock } from './server.ts';

export function tempDir(prefix = 'policy-'): { dir: string; file: (name: string) => string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, file: (name) => join(dir, name), remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A clock that moves only when told; set timers fire as it passes them. */
export class FakeClock implements Clock {
  #timers: { at: number; fn: () => void; live: boolean }[] = [];
  constructor(public t: number) {}
  now = (): number => this.t;
  setTimer = (fn: () => void, ms: number): (() => void) => {
    const timer = { at: this.t + ms, fn, live: true };
    this.#timers.push(timer);
    return () => void (timer.live = false);
  };
  /** Moves to `t`, firing each timer due on the way, in order. */
  advanceTo(t: number): void {
    for (;;) {
      const due = this.#timers.filter((x) => x.live && x.at <= t).sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      due.live = false;
      this.t = Math.max(this.t, due.at);
      due.fn();
    }
    this.t = t;
  }
  pending(): number {
    return this.#timers.filter((x) => x.live).length;
  }
}

/** The patent's example sites a, b, c with the initial degree 0.3 each (S3.9). */
export const PATENT_SITES = {
  sites: ['a', 'b', 'c'].map((site) => ({ site, mechanisms: ['password', 'otp', 'fingerprint'], floor: 'password', degree: 0.3 })),
};
