// The device profiles of S0.15 end to end, over real sockets against the embedded stack: a
// mobile phone whose own OS launches UPMon (no AutoRun) and whose SIM is its own, and a bank
// card in an ATM whose program plays UPMon and the main program through the card's secure
// controller. And the ATM as the hostile host: it holds the card's contacts and nothing else,
// and no command it can send gives it a key.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { bytesToHex } from '@noble/hashes/utils.js';
import { startWorld, TraceHost, fusesOf, simCardOf, cardNumberOf, phoneIp, type World } from './world.ts';
import { listIso } from '../firmware/zones/iso9660.ts';
import { zoneOf, ZoneType } from '../firmware/zones/layout.ts';
import { makeTempDir, removeTempDir } from './lifetime.ts';
import { heldSecrets } from './held-secrets.ts';
import { setLogSink } from '../server-kit/log.ts';
import { firstIdentifier } from '../firmware/first-identifier.ts';
import { cardContacts } from '../firmware/profiles.ts';
import { deriveDeviceKey } from '../protocol/keys.ts';
import { encode, decode } from '../protocol/cbor.ts';
import { MsgType } from '../protocol/messages.ts';
import { Ins, DataObject, SW, encodeCommand, parseResponse } from '../firmware/secure/apdu.ts';
import { Slot, Record } from '../firmware/secure/element.ts';
import { IDENTITY_KEY_LABEL, storeKeyLabel } from '../firmware/zones/hidden.ts';
import type { ProfileName } from '../firmware/board.ts';

setLogSink(() => {});

async function withWorld(profile: ProfileName, f: (w: World) => Promise<void>): Promise<void> {
  const dir = makeTempDir(`usbphone-profile-${profile}-`);
  const w = await startWorld({ stateDir: dir, gatewayPort: 0, profile });
  try {
    await f(w);
  } finally {
    await w.stop();
    removeTempDir(dir);
  }
}

const steps = (h: TraceHost) => h.events.map((e) => `${e.feature} ${e.step}: ${e.detail} ${e.ok}`).join('\n');

function contains(hay: Uint8Array, needle: Uint8Array, min = needle.length): boolean {
  outer: for (let i = 0; i + min <= hay.length; i++) {
    for (let j = 0; j < min; j++) if (hay[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

test('mobile profile: the phone registers and logs in over real sockets; its own OS launches UPMon (no AutoRun); its first identifier is its own SIM', async () => {
  await withWorld('mobile', async (w) => {
    const host = new TraceHost();
    const { phone, ip } = await w.phone(0, host);
    assert.is(phone.profile, 'mobile');
    const o = await phone.device.plugIn();
    assert.ok(o.ok && o.via === 'registration', `${JSON.stringify(o)}\n${steps(host)}`);
    // The launcher started UPMon; the host-AutoRun step never ran.
    assert.ok(host.events.some((e) => e.feature === 'S0.15' && e.step === 'launch' && e.ok && /launcher starts UPMON\.EXE \(no AutoRun\)/.test(e.detail)), steps(host));
    assert.not.ok(host.events.some((e) => e.step === 'autorun'), 'no AutoRun step');
    // Registered (S0.5, S0.8) and logged in (S0.11), as the USB phone does.
    for (const f of ['S0.5', 'S0.8', 'S0.10', 'S0.11']) assert.ok(host.has(f, true), `${f}\n${steps(host)}`);
    const id = firstIdentifier(phone.device);
    assert.ok(id.ok && id.kind === 'sim');
    assert.equal(id.info, simCardOf(w.seed, 0));
    // A second boot: the SIM stays in the phone; the password changes (S0.14).
    const again = w.replug(phone, host, ip);
    const b = await again.device.plugIn();
    assert.ok(b.ok && o.ok && b.gen > o.gen && host.has('S0.14', true), steps(host));
    assert.is(again.device.sim, phone.device.sim);
  });
});

test('ATM profile: a bank card in an ATM registers and logs in over real sockets; the card number is the first identifier; a second insertion changes the password', async () => {
  await withWorld('atm', async (w) => {
    const host = new TraceHost();
    const { phone, ip, serial } = await w.phone(0, host);
    assert.is(serial, cardNumberOf(w.seed, 0));
    assert.is(phone.profile, 'atm');
    assert.is(phone.device.sim, undefined, 'no SIM in a bank card');
    const o = await phone.device.plugIn();
    assert.ok(o.ok && o.via === 'registration', `${JSON.stringify(o)}\n${steps(host)}`);
    assert.ok(host.events.some((e) => e.feature === 'S0.15' && e.step === 'launch' && e.ok && /atm profile's launcher/.test(e.detail)), steps(host));
    assert.not.ok(host.events.some((e) => e.step === 'autorun'));
    const id = firstIdentifier(phone.device);
    assert.ok(id.ok && id.kind === 'card' && id.cardNumber === serial);
    // The card keeps the saved login: taken out and inserted again, it logs in with a new password.
    const again = w.replug(phone, host, ip);
    const b = await again.device.plugIn();
    assert.ok(b.ok && o.ok && b.gen > o.gen && host.has('S0.14', true), steps(host));
    // The card number shows in no trace line in full (a screen or a journal shows its last four digits at most).
    assert.not.ok(steps(host).includes(serial));
  });
});

test("ATM, hostile host: the ATM holds only the card's contacts; it cannot read the hidden zone, the keys or the business secrets by any command", async () => {
  await withWorld('atm', async (w) => {
    const host = new TraceHost();
    const { phone, serial } = await w.phone(0, host);
    assert.ok((await phone.device.plugIn()).ok, steps(host));
    const fuses = fusesOf(w.seed, 0);
    const secrets = heldSecrets(phone, fuses);
    assert.is(secrets.length, 1, 'the card holds the business secret the login used');
    const deviceKey = deriveDeviceKey(w.stack.ring.key(w.stack.ring.current), serial);
    const keys = [deviceKey, ...secrets, fuses.deriveKey(IDENTITY_KEY_LABEL), fuses.deriveKey(storeKeyLabel('login')), fuses.deriveKey(storeKeyLabel('secrets'))];

    // What an ATM gets of a card: a transmit function, nothing else (no unit, no bus, no chip).
    const contacts = cardContacts(phone.bus);
    assert.equal(Object.keys(contacts), ['transmit']);
    assert.ok(Object.isFrozen(contacts));
    const call = (ins: number, o: { p1?: number; p2?: number; data?: Uint8Array } = {}) => parseResponse(contacts.transmit(encodeCommand({ ins, ...o })));

    // Direct reads of the hidden zone: only the saved-login record is a readable object; the
    // secrets store and anything else are refused.
    for (let p1 = 0; p1 < 256; p1++) {
      const r = call(Ins.readRecord, { p1 });
      assert.is(r.sw === SW.ok, p1 === Record.savedLogin, `READ RECORD P1 ${p1}`);
    }
    // The device key serves the registration hello only: a login opening under it is refused.
    assert.is(call(Ins.hsOpen, { p1: Slot.deviceKey, data: encode([MsgType.login, 0, 'biz-east', ['password', 'x', 1, new Map()]]) }).sw, SW.conditionsNotSatisfied);
    // GET DATA of every object: the public ones answer, none holds a key.
    for (let p2 = 0; p2 < 256; p2++) {
      const r = call(Ins.getData, { p2 });
      // The person status (S3.3) is public: a finger state, site names, whether there is a clock.
      if (p2 === DataObject.personStatus) assert.equal(r.sw === SW.ok && decode(r.data), ['empty', [], [], false], 'a bank card: no finger, no key, no seed, no clock');
      else if (p2 === DataObject.identity || p2 === DataObject.slots || p2 === DataObject.vendorKey || p2 === DataObject.bootMeasurement) assert.is(r.sw, SW.ok, `GET DATA ${p2}`);
      else assert.is.not(r.sw, SW.ok);
    }
    // Every instruction byte, with the arguments a hostile program would try: no response carries a key.
    const payloads: (Uint8Array | undefined)[] = [undefined, new Uint8Array(0), encode([]), encode([2]), new Uint8Array(64).fill(0xff)];
    let n = 0;
    for (let ins = 0; ins < 256; ins++) {
      for (const p1 of [0, 1, 2, 0x20, 0xff]) {
        for (const p2 of [0, 1, 2, 3, 4]) {
          for (const data of payloads) {
            const out = contacts.transmit(encodeCommand({ ins, p1, p2, data }));
            n++;
            for (const k of keys) assert.not.ok(contains(out, k, 8), `INS ${ins.toString(16)} P1 ${p1} P2 ${p2}: key bytes came out`);
          }
        }
      }
    }
    assert.ok(n > 30_000);
    // And the trace the ATM printed holds none of them either.
    const text = steps(host);
    for (const k of keys) assert.not.ok(text.includes(bytesToHex(k)));
    // The ATM's programs read their own install, never the card's zones; the card attests its
    // own signed program store: a rotted bit there and the card serves no hello, though the
    // ATM's files are intact.
    const mine = phone.device.storage.readVirtualFile('UPMON.EXE');
    assert.ok(mine.ok && phone.install);
    assert.equal(mine.value, phone.install.virtual.find((f) => f.name === 'UPMON.EXE')!.data);
    const v = zoneOf(phone.table, ZoneType.VIRTUAL);
    const upmon = (listIso((lba, k) => phone.chip.peek(v.offset + lba * 2048, k * 2048)) ?? []).find((e) => e.name === 'UPMON.EXE');
    assert.ok(upmon);
    phone.chip.flipBit(v.offset + upmon.lba * 2048 + 100, 3);
    const seen = host.events.length;
    const rotted = await w.replug(phone, host, phoneIp(0)).device.plugIn();
    assert.ok(!rotted.ok && rotted.kind === 'identity-failed' && /did not verify the boot files/.test(rotted.reason), JSON.stringify(rotted));
    assert.ok(host.events.slice(seen).some((e) => e.step === 'launch' && e.ok), 'the ATM launched its own intact programs');
  });
});

test.run();
