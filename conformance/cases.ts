// Every case of the suite, in the order they run and are listed (docs/conformance.md is
// generated from this list: `usbphone conformance --list`).
import type { Case } from './suite.ts';
import { cborCases, envelopeCases } from './cases/cbor.ts';
import { registrationCases, channelCases, refusalCases, securityCases } from './cases/registration.ts';
import { loginCases, rotationCases } from './cases/login.ts';
import { bankCases } from './cases/bank.ts';
import { tableCases } from './cases/table.ts';
import { sessionCases } from './cases/sessions.ts';

export const ALL_CASES: readonly Case[] = [
  ...cborCases,
  ...envelopeCases,
  ...sessionCases,
  ...registrationCases,
  ...channelCases,
  ...refusalCases,
  ...loginCases,
  ...rotationCases,
  ...securityCases,
  ...bankCases,
  ...tableCases,
];

/** The spec sections the report groups cases under, in document order. */
export const SECTION_TITLES: Record<string, string> = {
  '§2': 'Transport and sessions',
  '§3': 'The CBOR profile',
  '§4.1': 'The envelope',
  '§4.2': 'Handshake messages',
  '§5.3': 'Sealed frames',
  '§6': 'State machines: common rules',
  '§6.1': 'Registration session, device side',
  '§6.2': 'Registration session, server side',
  '§6.3': 'Business session, device side',
  '§6.4': 'Business session, server side',
  '§6.5': 'The bank step (S4)',
  '§7': 'Refusal and errors (S0.7)',
  '§8': 'Replay rules',
  '§9': 'Limits',
  '§10': 'Password rotation (S0.14)',
  '§12': 'Security properties',
  '§16': 'Attack statistics table (S3.11)',
};

/** Sections in document order (§2 < §3 < §4.1 < ... < §10). */
export function sectionOrder(a: string, b: string): number {
  const n = (s: string) => s.slice(1).split('.').map(Number);
  const [x, y] = [n(a), n(b)];
  for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] ?? -1) !== (y[i] ?? -1)) return (x[i] ?? -1) - (y[i] ?? -1);
  return 0;
}
