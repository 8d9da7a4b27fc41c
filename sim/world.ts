// A world for virtual phones over real sockets: the embedded server stack on loopback,
// a factory base image whose endpoints point at it, and phones made over copy-on-write
// views of that image, each bound to its own loopback address (127.1.x.y: region east,
// 127.2.x.y: region west) so the gateway sees distinct client IPs and the region map works.
// `profile` (S0.15, firmware/profiles.ts) makes them mobile phones, each with a SIM card of its
// own, or bank cards each inserted in an ATM (the address is then the ATM's).
// Every phone (not the ATM's card) has a fingerprint sensor paired with its chip and its
// person's finger on it (S3.3), both seeded from the world's seed and the phone's index; the
// finger is enrolled in the chip at the person's first bank registration (firmware/main-program.ts).
import { mkdirSync } from 'node:fs';
import { startStack, type Stack, type StackOptions } from '../deploy/stack.ts';
import { buildImage, zoneFiles } from '../firmware/factory/image.ts';
import type { EnrollmentRecord } from '../deploy/enroll.ts';
import { Fuses } from '../firmware/flash/fuses.ts';
import { makePhone, replug, tableOf, type Phone, type ParkedPhone } from '../firmware/phone.ts';
import { simRng } from '../firmware/hal/sim-hal.ts';
import { vendorPublicKey } from '../firmware/boot-manifest.ts';
import { nodeClock, nodeRng, nodeNetwork } from '../firmware/hal/node/node-hal.ts';
import type { Host, TraceEvent, HalBase } from '../firmware/hal/hal.ts';
import type { SimCard } from '../firmware/hal/sim-card.ts';
import type { PersonInput } from '../firmware/hal/person.ts';
import { defaultDeviceConfig, type DeviceConfig } from '../firmware/device.ts';
import type { PartitionTable } from '../firmware/zones/layout.ts';
import { SimSlot, type SimCardSpec } from '../firmware/hal/sim-card.ts';
import { withLuhn, luhnDigit } from '../protocol/line-ids.ts';
import type { ProfileName } from '../firmware/profiles.ts';
import { fingerFromSeed, type Finger } from '../firmware/hal/fingerprint.ts';
import type { ControllerNvm } from '../firmware/secure/nvm.ts';

export interface WorldOptions extends Partial<StackOptions> {
  stateDir: string;
  /** Seed for fuses and serials, so a failing run replays. */
  seed?: number;
  /** Override the registration endpoints written into the image (e.g. through a tampering proxy). */
  regPrimary?: string;
  regBackup?: string;
  device?: Partial<DeviceConfig>;
  /** The device every phone of this world is (S0.15; default 'usb'). */
  profile?: ProfileName;
}

/** What phones need of the servers: the stack in this process, or one in its own (`external-stack.ts`). */
export interface StackHandle {
  ring: Stack['ring'];
  /** The policy key and initial attack table phones for these servers are made with (S3.10, S3.11). */
  factoryPolicy: Stack['factoryPolicy'];
  dests: Stack['dests'];
  urlFor(dest: string): string;
  enroll: Stack['enroll'];
  stop(): Promise<void>;
}

export interface World<S extends StackHandle = Stack> {
  stack: S;
  base: Uint8Array;
  table: PartitionTable;
  seed: number;
  profile: ProfileName;
  /** The serial of device `i`: SN-... on a phone, the card number on a bank card (S0.15). */
  serialOf(i: number): string;
  /** A phone of this world, enrolled first unless opts.enroll is false (enrollment goes through the business servers' admin API). */
  phone(i: number, host: Host, opts?: { enroll?: boolean; serial?: string; sim?: SimCard; person?: PersonInput; finger?: Finger | null; nvm?: ControllerNvm; parked?: ParkedPhone }): Promise<{ phone: Phone; serial: string; ip: string }>;
  /** The same phone plugged in again; `extra` gives it a SIM slot and a person at the keypad (S4) for this plug-in. */
  replug(p: Phone, host: Host, ip: string, extra?: { sim?: SimCard; person?: PersonInput }): Phone;
  enrollment(i: number, serial?: string): EnrollmentRecord;
  stop(): Promise<void>;
}

/** Loopback address of phone i: alternating regions east (127.1/16) and west (127.2/16). */
export function phoneIp(i: number): string {
  const region = 1 + (i % 2);
  const n = Math.floor(i / 2);
  return `127.${region}.${Math.floor(n / 254) % 256}.${1 + (n % 254)}`;
}

export const serialOf = (seed: number, i: number) => `SN-${seed}-${String(i).padStart(6, '0')}`;

/**
 * The number of bank card `i` (S0.15), its serial: 16 digits with the Luhn check digit of
 * ISO/IEC 7812, issuer prefix 9999 (not a real issuer), then the seed and i.
 */
export function cardNumberOf(seed: number, i: number): string {
  const body = `9999${String(seed % 1000).padStart(3, '0')}${String(i).padStart(8, '0')}`;
  return body + String(luhnDigit(body));
}

/** The SIM card of mobile phone `i` (S0.15): a USIM of the test network 001-01 (3GPP TS 23.003), seeded. */
export function simCardOf(seed: number, i: number): SimCardSpec {
  const digits = (n: number, label: string) => Array.from(simRng(seed, `${label}/${i}`)(n), (b) => String(b % 10)).join('');
  return { iccid: withLuhn(`8900101${digits(11, 'iccid')}`), imsi: `00101${digits(10, 'imsi')}`, cardType: 'USIM', msisdn: `+99901${digits(8, 'msisdn')}` };
}

/** The world's vendor signing key (seeded: a simulation's factory; `usbphone image` keeps a real one in the state directory). */
export function vendorKeyOf(seed: number): Uint8Array {
  return simRng(seed, 'vendor')(32);
}

/** The finger of the person of phone `i` (S3.3): seeded, the same each run. */
export function fingerOf(seed: number, i: number): Finger {
  return fingerFromSeed(`person/${seed}/${i}`);
}

/** The vendor public key of a seed's world, derived once (an Ed25519 key derivation per phone was 5 % of a fleet's phone CPU). */
const vendorPublics = new Map<number, Uint8Array>();
function vendorPublicOf(seed: number): Uint8Array {
  let k = vendorPublics.get(seed);
  if (!k) vendorPublics.set(seed, (k = vendorPublicKey(vendorKeyOf(seed))));
  return k;
}

export function fusesOf(seed: number, i: number): Fuses {
  return Fuses.generate(simRng(seed, `fuses/${i}`), Uint8Array.from(vendorPublicOf(seed)));
}

export async function startWorld(o: WorldOptions): Promise<World> {
  mkdirSync(o.stateDir, { recursive: true });
  return makeWorld(await startStack({ ...o, stateDir: o.stateDir }), o);
}

/** Phones over a running stack (stopped with the world, also when this fails). */
export async function makeWorld<S extends StackHandle>(stack: S, o: Omit<WorldOptions, keyof StackOptions> & { seed?: number; device?: Partial<DeviceConfig> }): Promise<World<S>> {
  const seed = o.seed ?? 1;
  try {
    const keyring = stack.ring;
    // The base image: a template device whose zones every phone shares; each phone then
    // gets its own identity record in its private copy-on-write sectors.
    const { image: base, enrollment: template } = buildImage({
      serial: 'SN-TEMPLATE',
      fuses: fusesOf(seed, -1),
      keyring,
      vendorKey: vendorKeyOf(seed),
      regPrimary: o.regPrimary ?? stack.urlFor(stack.dests.regPrimary),
      regBackup: o.regBackup ?? stack.urlFor(stack.dests.regBackup),
      policy: stack.factoryPolicy,
    });
    const table = tableOf(base);
    const config = { ...defaultDeviceConfig, ...o.device };
    const profile = o.profile ?? 'usb';
    const hal = (host: Host, ip: string, extra: { sim?: SimCard; person?: PersonInput } = {}): HalBase => ({
      clock: nodeClock, rng: nodeRng, net: nodeNetwork(ip), host,
      ...(extra.sim ? { sim: extra.sim } : {}), ...(extra.person ? { person: extra.person } : {}),
    });
    // The ATM's own programs: the vendor's signed set for these servers, the very files of the
    // base image (same endpoints, same key), so they verify and the card attests that version.
    const install = profile === 'atm' ? zoneFiles(o.regPrimary ?? stack.urlFor(stack.dests.regPrimary), o.regBackup ?? stack.urlFor(stack.dests.regBackup), vendorKeyOf(seed), template.firmwareVersion, stack.factoryPolicy) : undefined;
    const serialFor = (i: number) => (profile === 'atm' ? cardNumberOf(seed, i) : serialOf(seed, i));
    const world: World<S> = {
      stack,
      base,
      table,
      seed,
      profile,
      serialOf: serialFor,
      enrollment(i, serial = serialFor(i)) {
        // Every phone runs the base image's firmware: its measurement is what the servers accept.
        return { serial, keyVersion: keyring.current, firmwareMeasurement: template.firmwareMeasurement, firmwareVersion: template.firmwareVersion };
      },
      async phone(i, host, opts = {}) {
        const serial = opts.serial ?? serialFor(i);
        const ip = phoneIp(i);
        if (opts.enroll !== false) await stack.enroll(world.enrollment(i, serial));
        // A parked phone (firmware/phone.ts park) plugs in again with what it kept; a new one is personalized over the base.
        const phone = makePhone({
          ...(opts.parked ? { parked: opts.parked } : { base, personalize: { serial, keyVersion: keyring.current, master: keyring.key(keyring.current) } }),
          table,
          fuses: fusesOf(seed, i),
          // A mobile phone has its own SIM (S0.15); any phone may be given one (S4).
          hal: hal(host, ip, { sim: opts.sim ?? (profile === 'mobile' ? new SimSlot(simCardOf(seed, i)) : undefined), person: opts.person }),
          config,
          chipSeed: seed * 1_000_003 + i,
          profile,
          install,
          // The sensor paired at the factory, the person's finger on it (S3.3); none on an ATM's card.
          ...(profile === 'atm' ? {} : { fingerprint: { seed: `${seed}/${i}`, finger: opts.finger === undefined ? fingerOf(seed, i) : opts.finger } }),
          ...(opts.nvm ? { nvm: opts.nvm } : {}),
        });
        return { phone, serial, ip };
      },
      replug(p, host, ip, extra = {}) {
        // The SIM is part of the phone: it stays in its slot across a replug unless another is given.
        return replug(p, hal(host, ip, { sim: extra.sim ?? p.device.sim, person: extra.person }), config);
      },
      stop: () => stack.stop(),
    };
    return world;
  } catch (e) {
    await stack.stop();
    throw e;
  }
}

/** A host that collects the trace (and optionally prints it as it goes). */
export class TraceHost implements Host {
  readonly events: TraceEvent[] = [];
  readonly notices: string[] = [];
  constructor(private readonly print?: (e: TraceEvent) => void) {}
  trace(e: TraceEvent): void {
    this.events.push(e);
    this.print?.(e);
  }
  notice(text: string): void {
    this.notices.push(text);
  }
  has(feature: string, ok?: boolean): boolean {
    return this.events.some((e) => e.feature === feature && (ok === undefined || e.ok === ok));
  }
}
