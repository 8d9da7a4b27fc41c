// TEST ONLY (issue 13): the switches of the conformance suite's mutant devices. Each breaks one
// rule of docs/protocol.md in the project's own firmware so that sim/conformance-device.test.ts
// can show a named `usbphone conformance --device` case catches it. Set only through
// DeviceConfig.mutant by sim/mutant-phone.ts, which that test starts as the device command; no
// configuration file, environment variable or CLI option reaches it, and unset (always, in
// production) it changes nothing. The break sits in the storage seam (what the firmware asks of
// its chip), the one place all three rules pass through, so the firmware's programs stay as
// shipped.
import type { ClientKeyOps, FinishKeys } from '../protocol/handshake-keys.ts';
import type { PhoneStorage } from './saved-login.ts';
import type { RecordStoreOptions } from './zones/hidden.ts';

export type DeviceMutant =
  /** §5.2, §6.1: the registration key holder answers a wrong helloReply proof with a finish anyway. */
  | 'accept-bad-server-proof'
  /** §5.2, §6.3: the login key holder answers a wrong loginOk proof with a finish anyway. */
  | 'finish-after-bad-login-ok'
  /** §10 rule 3: the older generations are retired as soon as loginOk verifies, before pwConfirmAck. */
  | 'retire-before-ack';

export const DEVICE_MUTANTS: readonly DeviceMutant[] = ['accept-bad-server-proof', 'finish-after-bad-login-ok', 'retire-before-ack'];

/**
 * TEST ONLY (issue 14, power-cut search): a break below the storage seam, in the chip's own
 * record stores (firmware/zones/hidden.ts RecordStoreOptions), set through
 * DeviceConfig.storeMutant and reaching the controller when the phone is made
 * (firmware/phone.ts). 'in-place': a new record overwrites the current slot instead of going to
 * the next one, so a power cut between the erase and the last program leaves neither the old
 * record nor the new one. sim/power-cut-search.test.ts shows the search reports it, with the
 * operation index. Unset (always, in production) it changes nothing.
 */
export type StoreMutant = NonNullable<RecordStoreOptions['mutant']>;

/** A finish that proves nothing (all-zero MAC and traffic keys): what a device that skipped the check would send. */
const blindFinish = (): FinishKeys => ({ finish: new Uint8Array(32), c2s: new Uint8Array(32), s2c: new Uint8Array(32) });

/** The key holder, with the server's proof no longer able to stop the handshake. */
function acceptAnyProof(ops: ClientKeyOps): ClientKeyOps {
  return { opening: ops.opening, proof: (p) => ops.proof(p) ?? blindFinish(), abort: ops.abort };
}

/** The storage the firmware sees: `s` itself unless a mutant is set. */
export function mutateStorage(s: PhoneStorage, mutant: DeviceMutant | undefined): PhoneStorage {
  if (mutant === undefined) return s;
  if (mutant === 'accept-bad-server-proof') return { ...s, deviceKeys: () => acceptAnyProof(s.deviceKeys()) };
  if (mutant === 'finish-after-bad-login-ok') return { ...s, loginKeys: () => acceptAnyProof(s.loginKeys()) };
  // 'retire-before-ack': the generation the login names (login fields [mech, user, gen, ext]) is
  // retired down to as soon as the chip accepted the server's proof for it.
  return {
    ...s,
    loginKeys: () => {
      const ops = s.loginKeys();
      let gen = -1;
      return {
        opening: (type, seq, dest, fields) => {
          gen = fields[2] as number;
          return ops.opening(type, seq, dest, fields);
        },
        proof: (p) => {
          const r = ops.proof(p);
          if (r) s.retireOlder(gen);
          return r;
        },
        abort: ops.abort,
      };
    },
  };
}
