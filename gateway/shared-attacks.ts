// The attack window of attacks.ts shared by several gateways (issue 16), in Redis: an attacker
// spreading its login openings over the gateways is counted as if one gateway saw them all,
// and its attack once (by the gateway whose attempt crossed the limit).
//
// One Lua script per attempt (atomic: two gateways' attempts never interleave inside it):
//   KEYS[1] a list of the last `limit` attempt times of (address group, site, mechanism),
//   KEYS[2] the time until which no further attack of it counts (one per window).
// The same rule as attacks.ts's ring: an attempt is over the limit when the limit-th attempt
// before it is less than windowMs older; an over-limit attempt is an attack when no attack of
// that (group, site, mechanism) was counted in the last window. Times are the gateways' clocks
// (attack-reporter.ts realTimers: wall clock at start + monotonic): gateways' clocks skewed
// by d move the window's edges by d. The keys' expiry (Redis' clock) only frees memory: the
// decisions read the stored times. Both keys expire after a window of silence: Redis holds
// at most the groups active in the last window (no maxTrackedIps there: Redis' maxmemory).
//
// Redis down or slow: the call rejects within the shared state's timeoutMs and the counter
// counts in its own window (fail open to local): docs/architecture.md "What is shared, where".
import type { Redis } from 'ioredis';
import type { Mechanism } from '../protocol/messages.ts';
import type { SharedState } from '../server-kit/redis.ts';
import { attackLimits, type AttackLimits, type SharedAttackWindow } from './attacks.ts';

const SCRIPT = `
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local win = tonumber(ARGV[3])
local over = false
if redis.call('LLEN', KEYS[1]) >= limit then
  over = now - tonumber(redis.call('LINDEX', KEYS[1], -limit)) < win
end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -limit, -1)
redis.call('PEXPIRE', KEYS[1], win)
if not over then return 0 end
local quiet = redis.call('GET', KEYS[2])
if quiet and now < tonumber(quiet) then return 0 end
redis.call('SET', KEYS[2], tostring(now + win), 'PX', win)
return 1
`;

type WithScript = Redis & { usbphoneAttack(ring: string, mark: string, now: string, limit: number, win: number): Promise<number> };

export class RedisAttackWindow implements SharedAttackWindow {
  readonly limits: AttackLimits;

  constructor(
    private readonly shared: SharedState,
    limits: Partial<AttackLimits> = {},
  ) {
    this.limits = attackLimits(limits);
    // EVALSHA, loading the script on NOSCRIPT (ioredis defineCommand).
    if (!('usbphoneAttack' in shared.redis)) shared.redis.defineCommand('usbphoneAttack', { numberOfKeys: 2, lua: SCRIPT });
  }

  async attempt(group: string, site: string, mech: Mechanism, now: number): Promise<boolean> {
    const k = this.shared.key('attack', group, site, mech);
    const { limit, windowMs } = this.limits;
    const r = await this.shared.call((c) => (c as WithScript).usbphoneAttack(k, `${k}:counted`, String(now), limit, windowMs));
    return r === 1;
  }
}
