// Remote attestation over real sockets (issue 9): phones of a world (the embedded stack on
// loopback, real WebSockets) whose chip measured their boot files; the registration server
// accepts the firmware of the world's factory image and refuses a measurement it does not
// accept (REG_FIRMWARE_REFUSED, close 1008), without issuing anything.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startWorld, TraceHost } from './world.ts';
import { tempDir } from '../deploy/test-util.ts';
import { setLogSink } from '../server-kit/log.ts';

setLogSink(() => {});

test('attestation: an accepted phone logs in (its S0.5 trace names the measurement); once the firmware is revoked, a phone is refused with REG_FIRMWARE_REFUSED and gets no credentials', async () => {
  const t = tempDir('usbphone-attest-');
  const world = await startWorld({ stateDir: t.dir, gatewayPort: 0, seed: 91 });
  try {
    const measurement = world.enrollment(0).firmwareMeasurement as string;
    assert.match(measurement, /^[0-9a-f]{64}$/);
    const host = new TraceHost();
    const { phone } = await world.phone(0, host);
    const o = await phone.device.plugIn();
    assert.ok(o.ok && o.via === 'registration', JSON.stringify(o));
    const att = host.events.find((e) => e.feature === 'S0.5' && e.ok)!;
    assert.ok(att.detail.includes(`firmware measurement ${measurement.slice(0, 16)} accepted`), att.detail);
    assert.ok(host.events.some((e) => e.feature === 'S0.3' && e.ok && /boot manifest signature ok/.test(e.detail)));

    // The operator revokes this firmware: the next phone (enrolled, genuine chip) is refused at the hello.
    assert.ok((await world.stack.regStore.setFirmwareStatus(measurement, 'revoked')));
    const host2 = new TraceHost();
    const { phone: p2, serial } = await world.phone(1, host2);
    const o2 = await p2.device.plugIn();
    assert.is(o2.ok, false);
    const refused = host2.events.filter((e) => e.feature === 'S0.7' && !e.ok);
    assert.ok(refused.length >= 2, 'primary and backup both refuse');
    for (const e of refused) assert.match(e.detail, /REG_FIRMWARE_REFUSED/);
    assert.not.ok(host2.events.some((e) => e.feature === 'S0.8'), 'no credentials issued');
    assert.is((await world.stack.regStore.getDevice(serial))!.rotations, 0, 'nothing rotated for it');
  } finally {
    await world.stop();
    t.remove();
  }
});

test.run();
