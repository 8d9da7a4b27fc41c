// Placement's fast path (issue 15) against its simple reference: the region found with the
// address parsed once (blockHolds) equals the one found with server-kit/ip.ts cidrContains per
// block; the order by name equals localeCompare's; a cached (frozen) region list parsed once
// gives the same answers as a fresh one.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cidrContains, parseCidr } from '../server-kit/ip.ts';
import { chooseServers, regionOf } from './placement.ts';
import type { BizServerRecord, RegionRecord } from './store.ts';

/** The reference: what regionOf did before issue 15. */
function regionOfReference(ip: string, regions: readonly RegionRecord[]): string | null {
  let best: { prefix: number; region: string } | null = null;
  for (const r of regions) {
    const c = parseCidr(r.cidr);
    if (cidrContains(c, ip) && (!best || c.prefix > best.prefix)) best = { prefix: c.prefix, region: r.region };
  }
  return best?.region ?? null;
}

const regions: RegionRecord[] = [
  { cidr: '0.0.0.0/0', region: 'any4' },
  { cidr: '10.0.0.0/8', region: 'ten' },
  { cidr: '10.1.0.0/16', region: 'ten-one' },
  { cidr: '10.1.2.128/25', region: 'ten-one-high' },
  { cidr: '10.1.2.3/32', region: 'host' },
  { cidr: '127.2.0.0/15', region: 'odd-prefix' },
  { cidr: 'fd00::/8', region: 'ula' },
  { cidr: 'fd12:3456::/32', region: 'ula-site' },
  { cidr: '::/0', region: 'any6' },
];
const ips = [
  '10.1.2.3', '10.1.2.200', '10.1.2.127', '10.1.9.9', '10.9.9.9', '11.0.0.1', '127.2.0.1', '127.3.255.255', '127.4.0.1',
  '::ffff:10.1.2.3', 'fd12:3456::1', 'fd99::1', '2001:db8::1', '::1', '0.0.0.0', 'not an address', '', '10.1.2', '10.1.2.3.4', '::ffff:300.1.1.1',
];

test('regionOf with the address parsed once equals the per-block reference, for every address and every sub-list', () => {
  for (let mask = 0; mask < 1 << regions.length; mask += 1) {
    const some = regions.filter((_, i) => mask & (1 << i));
    const frozen = Object.freeze(some.map((r) => Object.freeze({ ...r })));
    for (const ip of ips) {
      const want = regionOfReference(ip, some);
      assert.is(regionOf(ip, some), want, `${ip} in ${some.map((r) => r.cidr)}`);
      assert.is(regionOf(ip, frozen), want, `${ip} (frozen list, parsed once)`);
      assert.is(regionOf(ip, frozen), want, `${ip} (frozen list, again)`);
    }
  }
});

test('servers of equal load are ordered as localeCompare orders their names', () => {
  const names = ['biz-b', 'biz-a', 'biza', 'biz-10', 'biz-9', 'b', 'biz--x', '0biz', 'z'];
  const servers: BizServerRecord[] = names.map((name) => ({ name, region: 'r', url: `ws://h/${name}`, adminUrl: 'http://h/admin', healthy: true, load: 1, checkedAt: null }));
  assert.equal(chooseServers('10.0.0.1', [], servers, 99).map((s) => s.name), [...names].sort((a, b) => a.localeCompare(b)));
});

test('a cached region list that is not frozen is parsed again: a change to it is seen', () => {
  const list = [{ cidr: '10.0.0.0/8', region: 'a' }];
  assert.is(regionOf('10.1.1.1', list), 'a');
  list[0] = { cidr: '11.0.0.0/8', region: 'b' };
  assert.is(regionOf('10.1.1.1', list), null);
  assert.is(regionOf('11.1.1.1', list), 'b');
});

test.run();
