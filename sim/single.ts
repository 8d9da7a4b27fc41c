// `make sim`: one phone, verbosely. Either starts the embedded stack on loopback with its
// SQLite files in the state directory, or (`gateway`) plugs into a stack that already runs
// (`make serve`) with that stack's state directory: its keys to build the image and its
// databases to enroll the phone. The phone's factory image, fuses and enrollment record are
// kept in the state directory, so what the phone saves persists: the next run is a second
// boot (a password change), and so on. `profile` (S0.15) makes it a mobile phone with its own
// SIM, or a bank card inserted in an ATM (its serial then a card number: another device).
import { existsSync, readFileSync, writeFileSync, appendFileSync, mkdirSync, rmSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { startStack, type Stack, type StackOptions } from '../deploy/stack.ts';
import { setLogSink } from '../server-kit/log.ts';
import { buildImage, zoneFiles } from '../firmware/factory/image.ts';
import { Fuses } from '../firmware/flash/fuses.ts';
import { FileBacking, loadWear, saveWear } from '../firmware/host/file-backing.ts';
import { fileNvm } from '../firmware/host/file-nvm.ts';
import { parseTable } from '../firmware/zones/layout.ts';
import { makePhone } from '../firmware/phone.ts';
import { fingerFromSeed } from '../firmware/hal/fingerprint.ts';
import { SimSlot, type SimCardSpec } from '../firmware/hal/sim-card.ts';
import type { PersonInput } from '../firmware/hal/person.ts';
import { maskCardNumber } from '../firmware/first-identifier.ts';
import type { ProfileName } from '../firmware/profiles.ts';
import { nodeClock, nodeRng, nodeNetwork } from '../firmware/hal/node/node-hal.ts';
import { TraceHost, cardNumberOf, simCardOf, type StackHandle } from './world.ts';
import { attachStack, phoneOnlyStack } from './external-stack.ts';
import { defaultDeviceConfig, type DeviceConfig, type DeviceOutcome } from '../firmware/device.ts';
import type { TraceEvent } from '../firmware/hal/hal.ts';
import { loadSaved, type SavedLogin } from '../firmware/saved-login.ts';
import { bytesToHex } from '@noble/hashes/utils.js';
import { equalBytes } from '@noble/ciphers/utils.js';
import { vendorPublicKey } from '../firmware/boot-manifest.ts';
import { ensureKeyFile, readKeyFile } from '../server-kit/keyfiles.ts';
import { kdf, type MasterKeyring } from '../protocol/keys.ts';
import { ImplementationError } from '../protocol/errors.ts';

/**
 * The layout generation of the phone this simulator builds and keeps (flash zones, hidden-zone
 * stores, record formats). An image of another one is rebuilt, said, not misread: bump it when
 * a format changes (3: the secure controller's stores and the power-safe disk controller;
 * 4: the signed boot manifest and fuses v2 with the vendor key; 5: records carry the
 * controller's rollback counter; 6: UPMON.CFG carries the policy server's key and the initial
 * attack table, the saved record the table the phone holds).
 */
export const PHONE_FORMAT = 6;

export interface SingleOptions {
  stateDir: string;
  /** Base port of the embedded stack (0: ephemeral). Ignored with `gateway`. */
  gatewayPort?: number;
  /** A running stack's gateway ('ws://host:port/'): plug into it instead of starting servers. */
  gateway?: string;
  /**
   * With `gateway`: false for servers that are not ours (`usbphone sim --phone-only`, the device
   * command of `usbphone conformance --device`): the state directory holds only the phone and its
   * master key, and nothing is enrolled; those servers take the enrollment record. Default true.
   */
  enroll?: boolean;
  /** The firmware's configuration over the defaults (tests: short timeouts; sim/mutant-phone.ts: a mutant). */
  device?: Partial<DeviceConfig>;
  serial?: string;
  /** The phone's loopback address (127.1.x.y: region east; 127.2.x.y: west). */
  ip?: string;
  trace?: (e: TraceEvent) => void;
  say?: (line: string) => void;
  /** Receives the stack as soon as it runs (so a Ctrl-C handler can stop it). */
  onStack?: (s: StackHandle) => void | Promise<void>;
  stack?: Partial<StackOptions>;
  /** Awaited after the phone's run, before the servers stop (`usbphone sim --watch`: the live page stays up). */
  hold?: (outcome: DeviceOutcome) => Promise<void>;
  /** The device (S0.15; default 'usb'): 'mobile' gets a SIM card of its own, 'atm' is a bank card in an ATM. */
  profile?: ProfileName;
  /** The card in the phone's SIM slot (sim/single-sim.ts; `usbphone sim --sim-card`, `--iccid`): default none, a mobile phone's own card 1. Not on an ATM card. */
  sim?: SimCardSpec;
  /** The person at the phone (`usbphone sim --bank`): the bank step after the login (S4.1); none by default. */
  person?: PersonInput;
}

/** The serial of the single device when none is given: a phone's, or a bank card's number. */
export const defaultSerial = (profile: ProfileName) => (profile === 'atm' ? cardNumberOf(0, 1) : 'SN-0000001');

export interface SingleResult {
  outcome: DeviceOutcome;
  saved: SavedLogin | null;
  imagePath: string;
  rebuilt: boolean;
}

/** The phone's files in the state directory. */
export const phoneFiles = (stateDir: string) => ({
  image: join(stateDir, 'phone.img'),
  fuses: join(stateDir, 'phone.fuses'),
  record: join(stateDir, 'phone.enrollment.json'),
});

const corrupt = (path: string, what: string): never => {
  throw new ImplementationError('CLI_CORRUPT_FILE', `${path} ${what}; delete it to build a fresh phone, or 'make clean' to start over (the phone's saved login is lost)`);
};

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

export async function runSinglePhone(o: SingleOptions): Promise<SingleResult> {
  const say = o.say ?? (() => {});
  let stack: StackHandle | null = null;
  let prevSink: ReturnType<typeof setLogSink> | null = null;
  try {
    if (o.gateway && o.enroll === false) {
      mkdirSync(o.stateDir, { recursive: true });
      stack = phoneOnlyStack(o.stateDir, o.gateway);
      say(`servers: whatever answers at ${o.gateway} (phone only: state directory ${o.stateDir}/, nothing enrolled)`);
    } else if (o.gateway) {
      stack = attachStack(o.stateDir, o.gateway);
      await o.onStack?.(stack);
      say(`servers: the running stack at ${o.gateway} (state directory ${o.stateDir}/)`);
    } else {
      mkdirSync(o.stateDir, { recursive: true });
      const logFile = join(o.stateDir, 'servers.log');
      prevSink = setLogSink((line) => appendFileSync(logFile, JSON.stringify(line) + '\n'));
      const s: Stack = await startStack({ ...o.stack, stateDir: o.stateDir, gatewayPort: o.gatewayPort ?? 7400 });
      stack = s;
      await o.onStack?.(s);
      say(`servers up: gateway ${s.gatewayUrl} -> reg-primary, reg-backup, ${s.dests.biz.join(', ')}; operator ${s.operatorUrl}, policy ${s.policy.adminUrl} (state directory ${o.stateDir}/, server logs in ${logFile})`);
    }

    const profile = o.profile ?? 'usb';
    const serial = o.serial ?? defaultSerial(profile);
    // A card number is shown as a card's screen shows it: the last four digits.
    const shown = profile === 'atm' ? maskCardNumber(serial) : serial;
    const f = phoneFiles(o.stateDir);
    const regPrimary = stack.urlFor(stack.dests.regPrimary);
    const regBackup = stack.urlFor(stack.dests.regBackup);
    const ring = stack.ring;
    const check = masterCheck(ring);

    // The vendor's signing key is a factory secret of the state directory (as master.key).
    const vendorPath = join(o.stateDir, 'vendor.key');
    ensureKeyFile(vendorPath);
    const vendorKey = readKeyFile(vendorPath, 'vendor key');
    const vendorPub = vendorPublicKey(vendorKey);
    let fuses: Fuses | null = null;
    let fusesWhy = '';
    if (existsSync(f.fuses)) {
      try {
        fuses = Fuses.parse(readFileSync(f.fuses, 'utf8'));
      } catch (e) {
        const m = (e as Error).message.replace(/^[A-Z_]+: /, '');
        if (!/predates the signed boot/.test(m)) throw corrupt(f.fuses, `is not a fuses file (${m})`);
        fusesWhy = 'its fuses predate the signed boot (no vendor key burnt): a new phone';
      }
      if (fuses && !equalBytes(fuses.vendorPublicKey(), vendorPub)) {
        fuses = null;
        fusesWhy = `its fuses hold another vendor key than ${vendorPath}: a new phone`;
      }
    }
    if (!fuses) {
      fuses = Fuses.generate(nodeRng, vendorPub);
      writeFileSync(f.fuses, fuses.toFile(), { mode: 0o600 });
    }

    // Reuse the image when it was built for these endpoints and this master key, and is
    // still what this command left there (not rebuilt by `usbphone image`, not damaged).
    let prev: Record<string, unknown> | null = null;
    if (existsSync(f.record) && existsSync(f.image)) {
      try {
        prev = JSON.parse(readFileSync(f.record, 'utf8'));
      } catch (e) {
        throw corrupt(f.record, `is not JSON (${(e as Error).message})`);
      }
      if (typeof prev !== 'object' || prev === null || Array.isArray(prev)) throw corrupt(f.record, 'is not an enrollment record');
    }
    let why = existsSync(f.image) ? fusesWhy : 'new phone';
    // A new chip (fusesWhy) keeps nothing of the old image.
    if (prev && !why) {
      const img = new Uint8Array(readFileSync(f.image));
      if (typeof prev.imageSha256AfterRun === 'string' && prev.imageSha256AfterRun !== sha256(img)) {
        why = `${f.image} changed since the last run (rebuilt by 'usbphone image' / 'make image'?): what the phone had saved is gone, so this is a first boot again`;
      } else if (!parseTable(img.subarray(0, 4096), img.length).ok) throw corrupt(f.image, 'is not a flash image (no valid partition table)');
      else if (prev.format !== PHONE_FORMAT) why = `it was made by another version of usbphone (format ${String(prev.format ?? 'unknown')}, now ${PHONE_FORMAT}): a new phone`;
      else if (prev.serial !== serial) why = `the image is of ${/^[0-9]{12,19}$/.test(String(prev.serial)) ? `card ${maskCardNumber(String(prev.serial))}` : String(prev.serial)}`;
      else if (prev.regPrimary !== regPrimary || prev.regBackup !== regBackup) why = `its registration endpoints were ${String(prev.regPrimary)}, now ${regPrimary}: a phone for these servers`;
      else if (prev.keyVersion !== ring.current || prev.masterKeyCheck !== check) why = 'the servers have another master key: a phone for them';
      else if (typeof prev.firmwareMeasurement !== 'string') why = 'the image predates the signed boot: a new one';
    } else if (!why && existsSync(f.image)) why = `no enrollment record ${f.record} beside it`;
    const reuse = why === '';

    if (!reuse) {
      const { image, enrollment } = buildImage({ serial, fuses, keyring: ring, vendorKey, regPrimary, regBackup, policy: stack.factoryPolicy });
      FileBacking.create(f.image, image.length, image).close();
      writeFileSync(f.record, JSON.stringify({ ...enrollment, masterKeyCheck: check, format: PHONE_FORMAT }, null, 2) + '\n');
      prev = enrollment as unknown as Record<string, unknown>;
      say(`factory image built: ${f.image} (serial ${shown}, ${image.length / 1048576} MiB, ${why}; enrollment record ${f.record})`);
    } else say(`factory image reused: ${f.image} (serial ${shown}; what the phone saved last time is still there)`);
    // The firmware of this image is what the registration servers will accept (attestation).
    if (o.gateway && o.enroll === false) {
      say(`not enrolled here: the servers must know ${serial} (key version ${ring.current}, firmware measurement ${String(prev!.firmwareMeasurement)}; enrollment record ${f.record})`);
    } else {
      const enrolled = await stack.enroll({ serial, keyVersion: ring.current, firmwareMeasurement: prev!.firmwareMeasurement as string, firmwareVersion: prev!.firmwareVersion as number });
      say(`enrolled ${shown}: user ${enrolled[0]!.user} (${enrolled[0]!.device === 'exists' ? 'already enrolled' : enrolled[0]!.device})`);
    }

    const backing = FileBacking.open(f.image);
    let outcome: DeviceOutcome;
    let saved: SavedLogin | null;
    try {
      const host = new TraceHost(o.trace);
      const ip = o.ip ?? '127.1.0.1';
      // The controller's rollback counters live beside the image, as a real chip's EEPROM lives
      // beside its flash: a new image (a new phone) starts them again.
      const nvmPath = f.image + '.nvm';
      if (!reuse) rmSync(nvmPath, { force: true });
      const hal = { clock: nodeClock, rng: nodeRng, net: nodeNetwork(ip), host };
      // The mobile phone's own SIM (the same card each run); the ATM's own programs: the
      // vendor's signed set for these servers, the files of the card's image.
      const phone = makePhone({
        backing,
        fuses,
        nvm: fileNvm(nvmPath),
        config: { ...defaultDeviceConfig, ...o.device },
        hal: { ...hal, ...(profile !== 'atm' && (o.sim || profile === 'mobile') ? { sim: new SimSlot(o.sim ?? simCardOf(0, 1)) } : {}), ...(o.person ? { person: o.person } : {}) },
        profile,
        // The phone's fingerprint sensor with its person's finger (S3.3; the same each run); none in an ATM.
        ...(profile === 'atm' ? {} : { fingerprint: { seed: serial, finger: fingerFromSeed(`person/${serial}`) } }),
        install: profile === 'atm' ? zoneFiles(regPrimary, regBackup, vendorKey, prev!.firmwareVersion as number, stack.factoryPolicy) : undefined,
      });
      // The chip's erase counters live beside the image (a raw image carries none), so wear
      // adds up over runs: `usbphone inspect state/phone.img --wear`.
      const wearPath = f.image + '.wear';
      const wear = reuse ? loadWear(wearPath, phone.chip.sizeBytes / phone.chip.profile.sectorBytes) : null;
      if (wear) phone.chip.loadEraseCounts(wear);
      say(profile === 'atm' ? `card ${maskCardNumber(serial)} inserted into the ATM on ${ip}` : profile === 'mobile' ? `power-on: mobile phone ${serial} on ${ip}` : `plug-in: phone ${serial} on ${ip}`);
      outcome = await phone.device.plugIn();
      saveWear(wearPath, phone.chip.eraseCounts());
      const s = loadSaved(phone.device.storage);
      saved = s.ok ? s.value : null;
      // The run is over: the phone is unplugged, and the connection it held after its login
      // (docs/protocol.md §2.1) closes with it, so the process does not wait for the gateway's idle cut.
      phone.device.unplug();
    } finally {
      backing.close();
    }
    // What this run left in the image: a later run notices when something else rewrote it.
    const record = JSON.parse(readFileSync(f.record, 'utf8')) as Record<string, unknown>;
    writeFileSync(f.record, JSON.stringify({ ...record, imageSha256AfterRun: sha256(readFileSync(f.image)) }, null, 2) + '\n');
    await o.hold?.(outcome);
    return { outcome, saved, imagePath: f.image, rebuilt: !reuse };
  } finally {
    await stack?.stop();
    // Lines the servers log while their sockets wind down still go to the file.
    if (prevSink) {
      const p = prevSink;
      setTimeout(() => setLogSink(p), 200).unref();
    }
  }
}

/** Key check value of the master key (a one-way fingerprint, not the key): an image built under another key is rebuilt. */
function masterCheck(ring: MasterKeyring): string {
  return bytesToHex(kdf(ring.key(ring.current), 'usbphone/v1 key check value', '', 8));
}
