// `make sim`: one phone, verbosely. Starts the embedded stack on loopback with its SQLite
// files in the state directory, builds (or reuses) the phone's factory image there, enrolls
// it, plugs the phone in and prints each step. The image is a file, so what the phone saves
// persists: the next run is a second boot (a password change), and so on.
import { bytesToHex } from '@noble/hashes/utils.js';
import { existsSync, readFileSync, writeFileSync, appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { startStack, type Stack, type StackOptions } from '../deploy/stack.ts';
import { setLogSink } from '../server-kit/log.ts';
import { buildImage } from '../firmware/factory/image.ts';
import { Fuses } from '../firmware/flash/fuses.ts';
import { FileBacking, loadWear, saveWear } from '../firmware/host/file-backing.ts';
import { makePhone } from '../firmware/phone.ts';
import { nodeClock, nodeRng, nodeNetwork } from '../firmware/hal/node/node-hal.ts';
import { TraceHost } from './world.ts';
import type { DeviceOutcome } from '../firmware/device.ts';
import type { TraceEvent } from '../firmware/hal/hal.ts';
import type { SavedLogin } from '../firmware/saved-login.ts';
import { kdf } from '../protocol/keys.ts';

export interface SingleOptions {
  stateDir: string;
  gatewayPort?: number;
  serial?: string;
  /** The phone's loopback address (127.1.x.y: region east; 127.2.x.y: west). */
  ip?: string;
  trace?: (e: TraceEvent) => void;
  say?: (line: string) => void;
  /** Receives the stack as soon as it runs (so a Ctrl-C handler can stop it). */
  onStack?: (s: Stack) => void;
  stack?: Partial<StackOptions>;
}

export interface SingleResult {
  outcome: DeviceOutcome;
  saved: SavedLogin | null;
  imagePath: string;
  rebuilt: boolean;
}

export async function runSinglePhone(o: SingleOptions): Promise<SingleResult> {
  mkdirSync(o.stateDir, { recursive: true });
  const say = o.say ?? (() => {});
  const logFile = join(o.stateDir, 'servers.log');
  const prevSink = setLogSink((line) => appendFileSync(logFile, JSON.stringify(line) + '\n'));
  let stack: Stack | null = null;
  try {
    stack = await startStack({ ...o.stack, stateDir: o.stateDir, gatewayPort: o.gatewayPort ?? 7400 });
    o.onStack?.(stack);
    say(`servers up: gateway ${stack.gatewayUrl} -> reg-primary, reg-backup, ${stack.dests.biz.join(', ')} (state in ${o.stateDir}, logs in ${logFile})`);

    const serial = o.serial ?? 'SN-0000001';
    const imagePath = join(o.stateDir, 'phone.img');
    const fusesPath = join(o.stateDir, 'phone.fuses');
    const recordPath = join(o.stateDir, 'phone.enrollment.json');
    const regPrimary = stack.urlFor(stack.dests.regPrimary);
    const regBackup = stack.urlFor(stack.dests.regBackup);
    const ring = stack.ring;

    // Reuse the image when it was built for these endpoints and this master key version.
    const prev = existsSync(recordPath) && existsSync(imagePath) && existsSync(fusesPath) ? (JSON.parse(readFileSync(recordPath, 'utf8')) as Record<string, unknown>) : null;
    const reuse = prev !== null && prev.serial === serial && prev.regPrimary === regPrimary && prev.regBackup === regBackup && prev.keyVersion === ring.current && prev.masterKeyCheck === masterCheck(stack);
    const fuses = existsSync(fusesPath) ? Fuses.parse(readFileSync(fusesPath, 'utf8')) : Fuses.generate(nodeRng);
    if (!existsSync(fusesPath)) writeFileSync(fusesPath, fuses.toFile(), { mode: 0o600 });
    if (!reuse) {
      const { image, enrollment } = buildImage({ serial, fuses, keyring: ring, regPrimary, regBackup });
      FileBacking.create(imagePath, image.length, image).close();
      writeFileSync(recordPath, JSON.stringify({ ...enrollment, masterKeyCheck: masterCheck(stack) }, null, 2) + '\n');
      say(`factory image built: ${imagePath} (serial ${serial}, ${image.length / 1048576} MiB; enrollment record ${recordPath})`);
    } else say(`factory image reused: ${imagePath} (serial ${serial}; what the phone saved last time is still there)`);
    const enrolled = await stack.enroll({ serial, keyVersion: ring.current });
    say(`enrolled ${serial}: user ${enrolled[0]!.user} (${enrolled[0]!.device})`);

    const backing = FileBacking.open(imagePath);
    try {
      const host = new TraceHost(o.trace);
      const ip = o.ip ?? '127.1.0.1';
      const phone = makePhone({ backing, fuses, hal: { clock: nodeClock, rng: nodeRng, net: nodeNetwork(ip), host } });
      // The chip's erase counters live beside the image (a raw image carries none), so wear
      // adds up over runs: `usbphone inspect state/phone.img --wear`.
      const wearPath = imagePath + '.wear';
      const wear = reuse ? loadWear(wearPath, phone.chip.sizeBytes / phone.chip.profile.sectorBytes) : null;
      if (wear) phone.chip.loadEraseCounts(wear);
      say(`plug-in: phone ${serial} on ${ip}`);
      const outcome = await phone.device.plugIn();
      saveWear(wearPath, phone.chip.eraseCounts());
      const saved = phone.device.storage.loadLogin();
      return { outcome, saved: saved.ok ? saved.value : null, imagePath, rebuilt: !reuse };
    } finally {
      backing.close();
    }
  } finally {
    await stack?.stop();
    // Lines the servers log while their sockets wind down still go to the file.
    setTimeout(() => setLogSink(prevSink), 200).unref();
  }
}

/** Key check value of the master key (a one-way fingerprint, not the key): an image built under another key is rebuilt. */
function masterCheck(stack: Stack): string {
  return bytesToHex(kdf(stack.ring.key(stack.ring.current), 'usbphone/v1 key check value', '', 8));
}
