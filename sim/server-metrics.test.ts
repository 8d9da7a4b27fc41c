// GET /metrics of the registration and business servers counts what real phones did:
// sessions, credentials issued, a device not found, logins, promotions, confirmations,
// and refusals by code (a garbage frame sent straight to a server).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { startWorld, TraceHost } from './world.ts';
import { setLogSink } from '../server-kit/log.ts';
import type { RolePorts } from '../deploy/config.ts';

setLogSink(() => {});

/** Value of one sample of a Prometheus text exposition, by metric name and label subset. */
function sample(text: string, name: string, labels: Record<string, string>): number {
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)\{([^}]*)\} (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries([...m[2]!.matchAll(/([a-z_]+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[3]);
  }
  return 0;
}

test('server metrics count phones\' sessions, credentials, logins and refusals', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'usbphone-metrics-'));
  const world = await startWorld({ stateDir: dir, gatewayPort: 0 });
  try {
    const host = new TraceHost();
    let { phone, ip } = await world.phone(0, host);
    assert.ok((await phone.device.plugIn()).ok);
    phone = world.replug(phone, host, ip);
    assert.ok((await phone.device.plugIn()).ok);
    const stranger = (await world.phone(2, host, { enroll: false })).phone;
    assert.is((await stranger.device.plugIn()).ok, false);

    const ports = world.stack.ports() as Record<string, RolePorts>;
    const reg = ports['reg-primary']!.device!;
    // A garbage frame straight to the registration server: refused with a CBOR code.
    await new Promise<void>((resolve) => {
      const ws = new WebSocket(`ws://127.0.0.1:${reg}/`);
      ws.on('open', () => ws.send(Buffer.from([0xff, 0x00])));
      ws.on('close', () => resolve());
      ws.on('error', () => resolve());
    });

    // /metrics is served on the link port, never on a device-facing port.
    const regText = await (await fetch(`http://127.0.0.1:${ports['reg-primary']!.link}/metrics`)).text();
    assert.is(sample(regText, 'usbphone_server_events_total', { event: 'credentials_issued', server: 'reg-primary' }), 2);
    assert.is(sample(regText, 'usbphone_server_events_total', { event: 'device_not_found' }), 1);
    assert.is(sample(regText, 'usbphone_server_sessions_total', { via: 'gateway' }), 3);
    assert.is(sample(regText, 'usbphone_server_sessions_total', { via: 'direct' }), 1);
    const refusals = regText.split('\n').filter((l) => l.startsWith('usbphone_server_refusals_total{'));
    assert.is(refusals.length, 1, regText);
    assert.match(refusals[0]!, /code="CBOR_[A-Z_]+".* 1$/);

    const bizText = await (await fetch(`http://127.0.0.1:${ports['biz-east']!.link}/metrics`)).text();
    assert.is(sample(bizText, 'usbphone_server_events_total', { event: 'login_ok', server: 'biz-east' }), 2);
    assert.is(sample(bizText, 'usbphone_server_events_total', { event: 'password_promoted' }), 2);
    // Every login confirms the generation it used and waits for the answer (the promotion is done by then).
    assert.is(sample(bizText, 'usbphone_server_events_total', { event: 'password_confirmed' }), 2);
    assert.not.match(bizText + regText, /SN-1-|u-SN/, 'no device identity in the labels');
  } finally {
    await world.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
