// Choice of business servers for a client address (S0.8): the region of the most specific
// CIDR block holding the gateway-observed IP; in it the healthy servers, least loaded first;
// then the healthy servers of the other regions as alternates (least loaded first). An
// unhealthy server is never offered. The device-reported local IP plays no part.
import { parseCidr, cidrContains, type Cidr } from '../server-kit/ip.ts';
import type { BizServerRecord, RegionRecord } from './store.ts';

export const MAX_CHOICES = 8;

export function regionOf(ip: string, regions: readonly RegionRecord[]): string | null {
  let best: { c: Cidr; region: string } | null = null;
  for (const r of regions) {
    const c = parseCidr(r.cidr);
    if (cidrContains(c, ip) && (!best || c.prefix > best.c.prefix)) best = { c, region: r.region };
  }
  return best?.region ?? null;
}

export function chooseServers(ip: string, regions: readonly RegionRecord[], servers: readonly BizServerRecord[], max = MAX_CHOICES): BizServerRecord[] {
  const region = regionOf(ip, regions);
  const byLoad = (a: BizServerRecord, b: BizServerRecord) => a.load - b.load || a.name.localeCompare(b.name);
  const healthy = servers.filter((s) => s.healthy);
  const local = healthy.filter((s) => s.region === region).sort(byLoad);
  const others = healthy.filter((s) => s.region !== region).sort(byLoad);
  return [...local, ...others].slice(0, max);
}
