// Load under attack (issue 10, "done when"): a gateway in a process of its own, in front of
// the real registration and business servers, takes thousands of hostile connections of the
// fragment kind (a frame without FIN, then a stream of one-byte continuations that never
// finishes) while honest phones register and log in through it. Every honest phone logs in,
// every hostile connection is refused with GW_FRAGMENTED, and the gateway's memory stays
// under MEMORY_BOUND the whole time (sampled every 250 ms). 1,000 hostile connections by
// default; 10,000 under SLOW=1 (`make test-slow`). Figures: docs/benchmarks.md.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { testStack } from '../deploy/test-util.ts';
import { makeDevice, register, DeviceWallet } from '../server-kit/test-device.ts';
import { readKeyFile } from '../server-kit/keyfiles.ts';
import { clientFrame, rawUpgrade, startProbeGateway, type RawClient } from './hostile-client.ts';
import type { RolePorts } from '../deploy/config.ts';

const HOSTILE = process.env.SLOW ? 10_000 : 1_000;
const HONEST = process.env.SLOW ? 200 : 40;
/** The gateway process's RSS stays under this during the whole run (stated in docs/architecture.md). */
const MEMORY_BOUND = 256 * 2 ** 20;
const MiB = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test(`${HOSTILE} hostile fragment connections and ${HONEST} honest phones: every phone logs in, every attacker refused, gateway RSS under ${MiB(MEMORY_BOUND)}`, async () => {
  const stack = await testStack();
  const ports = stack.ports();
  const root = readKeyFile(join(stack.stateDir, 'link.key'), 'link key');
  const upstreams = ['reg-primary', 'reg-backup', 'biz-east', 'biz-west'].map((name) => ({ name, linkUrl: `ws://127.0.0.1:${(ports[name] as RolePorts).link}/` }));
  const gw = await startProbeGateway({ upstreams, rootKeyHex: Buffer.from(root).toString('hex'), limits: { maxConnections: 20_000 } });
  const url = `ws://127.0.0.1:${gw.port}/`;
  let peak = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      peak = Math.max(peak, (await gw.memory()).rss);
      await sleep(250);
    }
  })();
  try {
    const base = await gw.memory();
    const devs = Array.from({ length: HONEST }, (_, i) => makeDevice(stack.ring, `SN-LOAD-${i}`));
    await stack.enroll(devs.map((d) => ({ serial: d.serial, keyVersion: stack.ring.current })));
    const started = performance.now();

    // Attackers, in waves of 250 (one source address per wave: under the per-IP cap).
    const attack = Buffer.concat([clientFrame(2, 1, false), ...Array.from({ length: 1_000 }, () => clientFrame(0, 1, false))]);
    const hostile: RawClient[] = [];
    const attackers = (async () => {
      for (let i = 0; i < HOSTILE; i += 250) {
        const ip = `127.8.${(i / 250) >> 8}.${((i / 250) & 255) + 1}`;
        const wave = await Promise.all(Array.from({ length: Math.min(250, HOSTILE - i) }, () => rawUpgrade(gw.port, ip)));
        for (const c of wave) c.sock.write(attack);
        hostile.push(...wave);
      }
    })();
    // Honest phones meanwhile, 10 at a time: register, then log in with what they were given.
    let loggedIn = 0;
    const failures: string[] = [];
    const honest = (async () => {
      for (let i = 0; i < HONEST; i += 10) {
        await Promise.all(devs.slice(i, i + 10).map(async (d, j) => {
          const localAddress = `127.1.1.${i + j + 1}`;
          const r = await register(url + 'reg-primary', 'reg-primary', d, { localAddress, timeoutMs: 20_000 });
          if (r.kind !== 'cred') return void failures.push(`${d.serial}: ${JSON.stringify(r)}`);
          const w = new DeviceWallet();
          w.take(r.reply);
          const dest = r.reply.servers[0]!.url.split('/').at(-1)!;
          if ((await w.login(url + dest, dest, { localAddress, timeoutMs: 20_000 })) !== null) loggedIn++;
          else failures.push(`${d.serial}: login refused`);
        }));
      }
    })();
    await Promise.all([attackers, honest]);
    const refusedBy = performance.now() + 30_000;
    while (performance.now() < refusedBy && hostile.some((c) => !c.isClosed())) await sleep(100);
    const seconds = (performance.now() - started) / 1000;
    const refused = hostile.filter((c) => c.received().includes('GW_FRAGMENTED')).length;
    const end = await gw.memory();
    console.log(`  ${HOSTILE} hostile + ${HONEST} honest in ${seconds.toFixed(1)} s: ${loggedIn} logged in, ${refused} refused GW_FRAGMENTED; gateway RSS ${MiB(base.rss)} -> peak ${MiB(peak)} -> ${MiB(end.rss)} (heap+external at the end ${MiB(end.heapUsed + end.external)})`);
    for (const c of hostile) c.sock.destroy();
    assert.equal(failures, []);
    assert.is(loggedIn, HONEST);
    assert.is(refused, HOSTILE);
    assert.ok(peak < MEMORY_BOUND, `peak RSS ${MiB(peak)}`);
  } finally {
    sampling = false;
    await sampler;
    await gw.stop();
    await stack.stop();
  }
});

test.run();
