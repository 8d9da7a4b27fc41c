// S3.4 + S3.5 end to end over real sockets: hostile clients on their own loopback addresses
// hammer login openings at a real gateway in front of a stub business server on the real
// link protocol; at the period's end (a virtual clock: no real waiting) the gateway hands its
// report to a test sink, which fails once, so the report arrives on the resend, with the same
// periodId, once. Logins to a dest that names no upstream are refused and count nowhere; an
// honest client under the limit is no attack; counting off counts nothing.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { startGateway, type Gateway } from './gateway.ts';
import { startHost, type Host } from '../server-kit/host.ts';
import { linkKeyFor } from '../server-kit/link.ts';
import { FrameSocket } from '../server-kit/test-device.ts';
import { setLogLevel, setLogSink, type LogLine } from '../server-kit/log.ts';
import { encodeEnvelope, MsgType, type Mechanism } from '../protocol/messages.ts';
import type { AttackReport, SinkAnswer } from './attack-reporter.ts';
import { VirtualTimers, settle } from './virtual-timers.ts';

setLogLevel('error');
const root = new Uint8Array(32).fill(0x43);
const T = 60_000;
let received = 0;
let biz: Host;

/** A login opening [mech, user, gen, ext, nonce, mac] as the phone sends it (MAC not checked here). */
const login = (dest: string, mech: Mechanism, user = 'alice') => encodeEnvelope(MsgType.login, 0, dest, [mech, user, 1, new Map(), randomBytes(32), randomBytes(32)]);

test.before(async () => {
  biz = await startHost({
    name: 'biz-east', host: '127.0.0.1', devicePort: null, linkPort: 0, linkKey: linkKeyFor(root, 'biz-east'),
    factory: () => ({ onFrame() { received++; }, onClose() {} }),
  });
});
test.after(() => biz.close());

async function gateway(extra: Partial<Parameters<typeof startGateway>[0]>): Promise<Gateway> {
  const gw = await startGateway({
    host: '127.0.0.1', port: 0, operatorPort: 0,
    upstreams: [{ name: 'biz-east', linkUrl: `ws://127.0.0.1:${biz.linkPort}/`, linkKey: linkKeyFor(root, 'biz-east') }],
    ...extra,
  });
  assert.ok(await gw.waitUpstreams(5_000));
  return gw;
}

const open: FrameSocket[] = [];
/** `n` login openings from `ip`, one connection each (as a phone logs in), all sent before returning. */
async function hammer(gw: Gateway, ip: string, dest: string, mech: Mechanism, n: number): Promise<void> {
  const socks = await Promise.all(Array.from({ length: n }, () => FrameSocket.connect(gw.url, { localAddress: ip })));
  for (const s of socks) s.send(login(dest, mech));
  open.push(...socks);
}
const closeAll = () => {
  for (const s of open.splice(0)) s.terminate();
};

/** Waits (bounded) until the stub server has received `n` frames: the gateway has handled them all. */
async function forwarded(n: number): Promise<void> {
  const until = Date.now() + 10_000;
  while (received < n && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
  assert.is(received, n, 'frames forwarded to biz-east');
}

test('hostile clients hammer login openings: one attack per (address, site, mechanism), reported at the period end, resent once after a sink failure, counted once', async () => {
  const timers = new VirtualTimers(500 * T + 1_000);
  const reports: AttackReport[] = [];
  const stored = new Map<number, AttackReport>();
  let calls = 0;
  const lines: LogLine[] = [];
  const prev = setLogSink((l) => void lines.push(l), 'info');
  const gw = await gateway({
    attacks: { limit: 5, windowMs: 10_000, periodMs: T },
    attackTimers: timers,
    attackReports: {
      gateway: 'gw-e2e',
      async send(r): Promise<SinkAnswer> {
        calls++;
        reports.push(structuredClone(r));
        if (calls === 1) throw new Error('policy server down');
        const duplicate = stored.has(r.periodId);
        if (!duplicate) stored.set(r.periodId, r);
        return { accepted: !duplicate, duplicate };
      },
    },
  });
  try {
    received = 0;
    await hammer(gw, '127.9.0.1', 'biz-east', 'password', 30); // over the limit: 1 attack, not 25
    await hammer(gw, '127.9.0.2', 'biz-east', 'otp', 12); // 1 attack
    await hammer(gw, '127.9.0.2', 'biz-east', 'password', 3); // same address, another mechanism, under the limit
    await hammer(gw, '127.9.0.3', 'biz-east', 'password', 5); // an honest client at the limit: none
    await hammer(gw, '127.9.0.4', 'nowhere', 'password', 20); // no such site: refused, not counted
    await forwarded(30 + 12 + 3 + 5);
    await settle();
    assert.equal(Object.fromEntries(gw.attacks!.current()), { 'biz-east': { total: 2, perMech: { password: 1, otp: 1 } } });
    assert.is(calls, 0, 'nothing reported before the period ends');

    await timers.advance(T - 1_000); // period 500 ends: the first send fails
    await timers.advance(1_000); // the resend (retryMinMs 1 s)
    await gw.attackReporter!.settled();
    const expected: AttackReport = { gateway: 'gw-e2e', periodId: 500, periodMs: T, sites: [{ site: 'biz-east', total: 2, perMech: { password: 1, otp: 1 } }] };
    assert.equal(reports, [expected, expected], 'sent, failed, resent with the same periodId');
    assert.equal([...stored.values()], [expected]);

    const text = await (await fetch(gw.operatorUrl + 'metrics')).text();
    assert.match(text, 'usbphone_gateway_attacks_detected_total{site="biz-east",mech="password"} 1');
    assert.match(text, 'usbphone_gateway_attacks_detected_total{site="biz-east",mech="otp"} 1');
    assert.not.match(text, 'nowhere');
    assert.match(text, 'usbphone_gateway_attack_tracked_ips 3');
    assert.match(text, 'usbphone_gateway_attack_reports_total{outcome="failed"} 1');
    assert.match(text, 'usbphone_gateway_attack_reports_total{outcome="resent"} 1');
    assert.match(text, 'usbphone_gateway_attack_reports_queued 0');
    const detected = lines.filter((l) => l.msg === 'attack detected');
    assert.equal(detected.map((l) => [l.ip, l.site, l.mech]).sort(), [['127.9.0.1', 'biz-east', 'password'], ['127.9.0.2', 'biz-east', 'otp']]);
    assert.ok(lines.some((l) => l.msg === 'attack report failed' && l.periodId === 500 && l.reason === 'policy server down'));

    // The next period: no attack, still reported (the receiver sees the gateway alive).
    await timers.advance(T);
    await gw.attackReporter!.settled();
    assert.equal(stored.get(501), { gateway: 'gw-e2e', periodId: 501, periodMs: T, sites: [] });
  } finally {
    setLogSink(prev, 'error');
    closeAll();
    await gw.close();
  }
});

test('counting off: no counter, no reporter, logins forwarded as before', async () => {
  const gw = await gateway({ attacks: { enabled: false }, attackReports: { gateway: 'x', send: async () => ({ accepted: true, duplicate: false }) } });
  try {
    received = 0;
    await hammer(gw, '127.9.1.1', 'biz-east', 'password', 20);
    await forwarded(20);
    assert.is(gw.attacks, null);
    assert.is(gw.attackReporter, null);
    const text = await (await fetch(gw.operatorUrl + 'metrics')).text();
    assert.not.match(text, 'usbphone_gateway_attacks_detected_total{');
  } finally {
    closeAll();
    await gw.close();
  }
});

test('a bad attack configuration stops the gateway from starting: CFG_INVALID', async () => {
  try {
    await gateway({ attacks: { limit: 0 } });
    assert.unreachable();
  } catch (e) {
    assert.is((e as { code?: string }).code, 'CFG_INVALID');
  }
});

test.run();
