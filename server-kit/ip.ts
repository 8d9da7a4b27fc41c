// IP addresses as the servers see them: the address a socket observed (never one a peer
// states), normalized, and matched against CIDR blocks for region placement (S0.8).
import { isIP } from 'node:net';
import { ImplementationError } from '../protocol/errors.ts';

/** '::ffff:127.1.0.5' -> '127.1.0.5'; other addresses unchanged; undefined -> '0.0.0.0'. */
export function normalizeIp(addr: string | undefined): string {
  if (!addr) return '0.0.0.0';
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(addr);
  return m ? m[1]! : addr;
}

/** Address bytes (4 or 16), or null when `ip` is not an address. */
export function ipBytes(ip: string): Uint8Array | null {
  const a = normalizeIp(ip);
  const v = isIP(a);
  if (v === 4) return Uint8Array.from(a.split('.').map(Number));
  if (v !== 6) return null;
  // Expand '::' and an embedded dotted quad, then read 8 groups.
  let s = a.toLowerCase().replace(/%.*$/, '');
  const quad = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (quad) {
    const q = quad[1]!.split('.').map(Number);
    s = s.slice(0, -quad[1]!.length) + `${((q[0]! << 8) | q[1]!).toString(16)}:${((q[2]! << 8) | q[3]!).toString(16)}`;
  }
  const [head, tail] = s.includes('::') ? s.split('::') as [string, string] : [s, undefined];
  const h = head ? head.split(':') : [];
  const t = tail !== undefined ? (tail ? tail.split(':') : []) : [];
  const groups = tail !== undefined ? [...h, ...Array(8 - h.length - t.length).fill('0'), ...t] : h;
  if (groups.length !== 8) return null;
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    const n = parseInt(g, 16);
    out[2 * i] = n >> 8;
    out[2 * i + 1] = n & 0xff;
  });
  return out;
}

export interface Cidr { text: string; bytes: Uint8Array; prefix: number }

/** Parses 'a.b.c.d/n' or 'x::/n'; a bad block is a configuration error. */
export function parseCidr(text: string): Cidr {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(text);
  const bytes = m ? ipBytes(m[1]!) : null;
  const prefix = m ? Number(m[2]) : -1;
  if (!bytes || prefix < 0 || prefix > bytes.length * 8) throw new ImplementationError('CFG_BAD_CIDR', `'${text}' is not a CIDR block`);
  return { text, bytes, prefix };
}

export function cidrContains(c: Cidr, ip: string): boolean {
  const b = ipBytes(ip);
  if (!b || b.length !== c.bytes.length) return false;
  let bits = c.prefix;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((b[i]! & mask) !== (c.bytes[i]! & mask)) return false;
  }
  return true;
}
