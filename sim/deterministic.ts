export const DETERMINISTIC_STORIES = ['first-boot', 'both-down-uses-saved'];
export async function runDeterministic(_name: string, _o: { seed: number; loss: number; trace?: (e: import('../firmware/hal/hal.ts').TraceEvent) => void; say?: (l: string) => void }): Promise<{ ok: boolean; verdict: string; trace: import('../firmware/hal/hal.ts').TraceEvent[] }> {
  throw new Error('not yet');
}
