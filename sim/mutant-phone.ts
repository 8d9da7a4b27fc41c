// TEST ONLY (issue 13): the device command of conformance/device.test.ts's mutant devices: one
// phone run as `usbphone sim --phone-only --gateway URL --state DIR` runs it, with one rule of
// the firmware broken on purpose (firmware/mutant.ts, DeviceConfig.mutant). No CLI option,
// configuration file or environment variable reaches it; only this file, which only that test
// starts.
//   node --import tsx sim/mutant-phone.ts MUTANT URL STATE-DIR
import { runSinglePhone } from './single.ts';
import { formatTrace } from './trace.ts';
import { DEVICE_MUTANTS, type DeviceMutant } from '../firmware/mutant.ts';

const [mutant, gateway, stateDir] = process.argv.slice(2);
if (!DEVICE_MUTANTS.includes(mutant as DeviceMutant) || !gateway || !stateDir) {
  process.stderr.write(`usage: node --import tsx sim/mutant-phone.ts (${DEVICE_MUTANTS.join('|')}) URL STATE-DIR\n`);
  process.exit(2);
}
const r = await runSinglePhone({ stateDir, gateway, enroll: false, device: { mutant: mutant as DeviceMutant }, trace: (e) => process.stdout.write(`${formatTrace(e)}\n`), say: (l) => process.stdout.write(`${l}\n`) });
process.stdout.write(r.outcome.ok ? `LOGGED IN (mutant ${mutant}) with gen ${r.outcome.gen}\n` : `NOT LOGGED IN (mutant ${mutant}): ${r.outcome.kind}: ${r.outcome.reason}\n`);
process.exitCode = r.outcome.ok ? 0 : 1;
