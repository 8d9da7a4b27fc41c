// Choice of business servers for a client address (S0.8): the region of the most specific
// CIDR block holding the gateway-observed IP; in it the healthy servers, least loaded first;
// then the healthy servers of the other regions as alternates (least loaded first). An
// unhealthy server is never offered. The device-reported local IP plays no part.
import { parseCidr, ipBytes, type Cidr } from '../server-kit/ip.ts';
import type { BizServerRecord, RegionRecord } from './store.ts';

export const MAX_CHOICES = 8;

/**
 * The parsed blocks of a region list, kept by the list itself: a cached list (tables-cache.ts,
 * frozen, one per version of the tables) is parsed once, not at every registration. A list
 * that is not frozen may change, so it is parsed each time.
 */
const parsed = new WeakMap<readonly RegionRecord[], readonly { c: Cidr; region: string }[]>();

function parsedRegions(regions: readonly RegionRecord[]): readonly { c: Cidr; region: string }[] {
  const have = parsed.get(regions);
  if (have) return have;
  const out = regions.map((r) => ({ c: parseCidr(r.cidr), region: r.region }));
  if (Object.isFrozen(regions) && regions.every((r) => Object.isFrozen(r))) parsed.set(regions, out);
  return out;
}

/**
 * Whether address bytes `b` (ipBytes) lie in block `c`: server-kit/ip.ts cidrContains with the
 * address parsed once per registration, not once per block (the parse was most of placement's
 * cost; placement.test.ts checks the two agree).
 */
export function blockHolds(c: Cidr, b: Uint8Array): boolean {
  if (b.length !== c.bytes.length) return false;
  let bits = c.prefix;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((b[i]! & mask) !== (c.bytes[i]! & mask)) return false;
  }
  return true;
}

export function regionOf(ip: string, regions: readonly RegionRecord[]): string | null {
  const b = ipBytes(ip);
  if (!b) return null;
  let best: { c: Cidr; region: string } | null = null;
  for (const r of parsedRegions(regions)) {
    if (blockHolds(r.c, b) && (!best || r.c.prefix > best.c.prefix)) best = r;
  }
  return best?.region ?? null;
}

// String.prototype.localeCompare without arguments, at a fraction of its cost per call.
const byName = new Intl.Collator().compare;

export function chooseServers(ip: string, regions: readonly RegionRecord[], servers: readonly BizServerRecord[], max = MAX_CHOICES): BizServerRecord[] {
  const region = regionOf(ip, regions);
  const byLoad = (a: BizServerRecord, b: BizServerRecord) => a.load - b.load || byName(a.name, b.name);
  const healthy = servers.filter((s) => s.healthy);
  const local = healthy.filter((s) => s.region === region).sort(byLoad);
  const others = healthy.filter((s) => s.region !== region).sort(byLoad);
  return [...local, ...others].slice(0, max);
}
