// Logged-in phones held connected (issue 15, docs/protocol.md §2.1): N phones of the firmware
// plug in through the gateway of a stack in this process, each registering and logging in on one
// WebSocket, and stay plugged in: each holds that connection after its login, idle, so the
// attack tables the policy server signs next are pushed to it. Counts what the gateway holds
// and which phones accepted a pushed table after their login (their S3.11 trace).
import { TraceHost, type World } from './world.ts';
import type { Phone } from '../firmware/phone.ts';
import type { Gateway } from '../gateway/gateway.ts';

export interface HeldPhones {
  /** Phones that logged in, and the others' outcome kinds. */
  loggedIn: number;
  failed: Record<string, number>;
  /** Device connections the gateway accepted for all the logins (one per login with §2.1). */
  accepted: number;
  loginMs: number;
  /** Phones that accepted a table pushed by the gateway after their login. */
  pushed(): number;
  /** Unplugs every phone (their held connections close). */
  unplug(): void;
}

const acceptedOf = async (gw: Gateway) => (await gw.metrics.accepted.get()).values.reduce((n, v) => n + v.value, 0);

/** Plugs in phones 0..count-1 of `world` (enrolled first), `concurrency` at a time, and keeps them plugged in. */
export async function holdPhones(world: World, count: number, concurrency = 32): Promise<HeldPhones> {
  await world.stack.enroll(Array.from({ length: count }, (_, i) => world.enrollment(i)));
  const gw = world.stack.gateway;
  const a0 = await acceptedOf(gw);
  const phones: { phone: Phone; host: TraceHost; after: number }[] = [];
  const failed: Record<string, number> = {};
  let loggedIn = 0;
  let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, async () => {
    while (next < count) {
      const i = next++;
      const host = new TraceHost();
      const { phone } = await world.phone(i, host, { enroll: false });
      const r = await phone.device.plugIn();
      if (r.ok) {
        loggedIn++;
        phones.push({ phone, host, after: host.events.length });
      } else {
        failed[r.kind] = (failed[r.kind] ?? 0) + 1;
        phone.device.unplug();
      }
    }
  }));
  const loginMs = performance.now() - t0;
  const accepted = (await acceptedOf(gw)) - a0;
  return {
    loggedIn,
    failed,
    accepted,
    loginMs,
    pushed: () => phones.filter((p) => p.host.events.slice(p.after).some((e) => e.feature === 'S3.11' && e.ok && /from the gateway accepted/.test(e.detail))).length,
    unplug: () => {
      for (const p of phones) p.phone.device.unplug();
    },
  };
}
