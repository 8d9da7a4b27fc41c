// The chip's secure controller (S0.4, the patent's "proprietary method"; DESIGN "Keys and
// trust"): the hidden zone and the fuses sit behind it, and the host reaches them only by the
// command APDUs below. It keeps its keys in slots whose usage is fixed by the personalisation
// and computes with them inside, as smart cards, TPMs and ATECC608-class secure elements do.
//
// Rule: NO COMMAND RETURNS A LONG-TERM KEY, A BUSINESS SECRET, A RECORD KEY OR THE HUK. What
// leaves the chip is public (serial token, key version, serial, slot table without key bytes),
// a MAC the protocol sends anyway (opening, finish), or a session traffic key (ephemeral, per
// handshake, released only after the server proved it holds the long-term key).
//
// Slots (docs/flash-layout.md §"Secure controller"):
//   0x01 device key    K_dev, from the identity record: the registration handshake (hello)
//                      and unwrapping the business secrets the registration server wraps for
//                      this chip. Nothing else.
//   0x02 business      up to two generations of the business secret, for one user: the login
//                      handshake (password mechanism) of that user and generation only.
//   0x20 fingerprint   S3.3: the enrolled template and one Ed25519 key per site (at most
//                      MAX_PERSON_SITES), all in the controller's NVM only (nvm.ts objects):
//                      a key signs FP_DOMAIN || challenge, and only after a reading from the
//                      paired sensor, in the same command, matched the template
//                      (fingerprint-match.ts). FP_MAX_TRIES consecutive mismatches block every
//                      fingerprint key until the next enrolment; an enrolment drops every key.
//   0x21 otp-seed      S3.3: one TOTP seed per site (at most MAX_PERSON_SITES), in the NVM
//                      only; imported wrapped under the business login key, used only to give
//                      the code of the controller's own clock's current time step.
//   record keys        derived from the fuses per store; used by the controller alone.
//
// Commands (CLA 0x80, ISO/IEC 7816-4 APDUs, apdu.ts):
//   CA GET DATA      P1P2 0001 identity -> [serialToken, keyVersion, serial]
//                    P1P2 0002 slots    -> [[slot, usage, state, user|null, [gen...]] ...]
//                    P1P2 0003 vendor key -> the vendor's Ed25519 public key (fuses; public)
//                    P1P2 0004 boot measurement -> [measurement(32), manifest version]
//                              (6982 when the boot files did not verify)
//                    P1P2 0005 person status -> [finger "empty"|"set"|"blocked", [fp sites],
//                              [otp sites], clock?]: which sites the chip can prove the person
//                              for (S3.1's candidates), from the chip itself, so no host-side
//                              bookkeeping decides it; site names and states only
//   10 HS OPEN       P1 slot, data [type, seq, dest, fields] -> [nC, mac]
//   12 HS FINISH     data [th1, nS, mac, th2] -> [finish, c2s, s2c]   (6300: bad server proof)
//   20 IMPORT SECRET data [user, gen, currentGen, wrapped]             (6300: does not unwrap)
//   22 RETIRE OLDER  data [gen]: drops generations < gen, only after a login with gen was
//                    accepted by a server since power-on (6982 otherwise)
//   30 FP CHALLENGE  -> [challenge(24)]: single use, for the sensor's next sealed reading
//   32 FP ENROLL     data [sealedReading]: 6982 when not sealed by the paired sensor for the
//                    current challenge; replaces the template, drops every fingerprint key,
//                    clears the try counter
//   34 FP KEY        data [site, gen] -> [publicKey, attestation]: the site's key (made on
//                    first use), the attestation a MAC under the business key of `gen`
//                    (protocol/person.ts); 6A88 no template / no such generation, 6A84 full
//   36 FP SIGN       data [site, challenge(32), sealedReading] -> [signature(64)]
//                    6983 blocked, 6A88 no template or no key for the site, 6982 reading not
//                    sealed by the sensor for the current challenge (replayed, forged, none),
//                    6300 the finger does not match (counted)
//   40 OTP IMPORT    data [site, gen, wrapped] (6300: does not unwrap under gen's login key)
//   42 OTP CODE      data [site] -> [code]: for the controller's own clock (never the host's);
//                    6985 no clock, 6A88 no seed for the site
//   B0 READ RECORD   P1 01 -> the host's saved-login record (no secret in it)
//   D0 WRITE RECORD  P1 01, data: the record
// A flash operation that loses power ends the command with no response at all (an empty
// response), as a chip that loses power answers nothing.
//
// Attestation (issue 9): before it answers its first command after power-on, and again for
// every hello and every attestation query (the host can write the disk unit in between), the
// controller measures the boot files itself, through a read-only path to the flash of its own
// (never the host's unit objects, whose methods a host program could replace): BOOT.SIG's
// signature under the vendor key in its fuses, then every listed file's SHA-256 (bounded read
// retries, as the boot). The measurement is SHA-256 of the signed manifest's body. The device
// key's usage policy binds it: a hello's fields must be [own serial token, own measurement], so
// the hello's MAC vouches for the firmware the chip measured (a TPM quote's role); when the
// files did not verify, the device key serves no hello at all.
//
// Not emulated: the physical interface (the USB mass-storage vendor SCSI command that would
// carry the APDUs), secure messaging between host and chip, side channels of the chip itself,
// personalisation commands (the factory writes the hidden zone directly, holding the fuses).
import { decode, encode, type CborValue } from '../../protocol/cbor.ts';
import { equalBytes } from '@noble/ciphers/utils.js';
import { secretWrapKey, unwrapSecret, WRAPPED_SECRET_BYTES } from '../../protocol/secret-wrap.ts';
import { MsgType, MECHANISMS, SECRET_BYTES, USER_RE, NONCE_BYTES, MAC_BYTES } from '../../protocol/messages.ts';
import { passwordLoginKey } from '../../protocol/channel.ts';
import { softClientKeyOps, type ClientKeyOps, type Rng } from '../../protocol/handshake-keys.ts';
import { FlashStatus } from '../flash/chip.ts';
import type { HiddenPort } from '../flash/hidden-port.ts';
import type { BootMediaPort } from '../flash/media-port.ts';
import { statusName } from '../flash/chip.ts';
import { listIso, readIsoEntry, type IsoEntry } from '../zones/iso9660.ts';
import { readFatFile } from '../zones/fat.ts';
import { checkBootFiles, type BootFileReader } from '../boot-manifest.ts';
import type { Fuses } from '../flash/fuses.ts';
import { memoryNvm, type ControllerNvm } from './nvm.ts';
import { readIdentity, RecordStore, HIDDEN_STORES, storeKeyLabel, type Identity, type RecordStoreOptions } from '../zones/hidden.ts';
import { CLA, Ins, DataObject, SW, parseCommand, encodeResponse } from './apdu.ts';
import { Nvm, NVM_OBJECT_BYTES } from './nvm.ts';
import { matches, openReading } from './fingerprint-match.ts';
import { CHALLENGE_BYTES, SEALED_READING_BYTES, SENSOR_PAIRING_LABEL } from '../hal/fingerprint.ts';
import { ed25519 } from '@noble/curves/ed25519.js';
import { HOTP, Secret } from 'otpauth/slim';
import { BINDING_BYTES, fingerprintMessage, fingerprintKeyAttestation, unwrapOtpSeed, isSite, type TotpParams } from '../../protocol/person.ts';

export const Slot = { deviceKey: 0x01, business: 0x02, fingerprint: 0x20, otpSeed: 0x21 } as const;
export const Record = { savedLogin: 0x01 } as const;

interface Held {
  user: string;
  /** Newest first, at most two. */
  secrets: { gen: number; secret: Uint8Array }[];
}

/** What the controller measured at power-on. */
type BootState = { ok: true; measurement: Uint8Array; version: number; retries: number } | { ok: false; code: string; reason: string };

/** Reads of the identity record before a MAC failure is believed (a transient read flip heals). */
const IDENTITY_READ_ATTEMPTS = 3;

const SECRETS_VERSION = 1;
/** The secret slots live in the hidden zone's second record store, sealed under its own fuse key. */
const SECRETS_STORE = HIDDEN_STORES.secrets;
const MAX_RECORD = 2048;

/** Consecutive fingerprint mismatches that block the fingerprint keys (a smart card's PIN try limit). */
export const FP_MAX_TRIES = 5;
/** Sites with a fingerprint key, and sites with a TOTP seed: each at most this many (EEPROM room). */
export const MAX_PERSON_SITES = 16;
/** Names of the controller's NVM objects (nvm.ts). */
const OBJ = { template: 'fp.template', fpKeys: 'fp.keys', otpSeeds: 'otp.seeds' } as const;
/** Wrapped TOTP seed: nonce (24) || CBOR([seed(16..64), alg, digits, period]) || tag (16); at most this long. */
const MAX_WRAPPED_SEED = 24 + 96 + 16;

/**
 * The controller's own clock: milliseconds since the Unix epoch (a real chip's RTC, set at the
 * factory and kept by its battery). Injected at construction from the HAL; no command sets it,
 * so a hostile host cannot ask for a future time step's code.
 */
export type ChipClock = () => number;

type Reply = { data?: Uint8Array; sw: number } | 'power-lost';
/** A command's data as a CBOR array; null if it is not one (a function, not an arrow made per command: the loader names each arrow it makes, decision 98). */
function argList(data: Uint8Array): CborValue[] | null {
  try {
    const v = decode(data);
    return Array.isArray(v) ? v : null;
  } catch {
    return null;
  }
}
const ok = (v?: CborValue): Reply => ({ data: v === undefined ? new Uint8Array(0) : encode(v), sw: SW.ok });
const status = (sw: number): Reply => ({ sw });

export class SecureElement {
  readonly #port: HiddenPort & { deriveKey(label: string): Uint8Array; uniqueId(): Uint8Array };
  readonly #rng: Rng;
  readonly #fuses: Fuses;
  #identity: Identity | null = null;
  #held: Held | null = null;
  #heldLoaded = false;
  #session: { slot: number; gen: number | null; ops: ClientKeyOps } | null = null;
  /** The generation a server accepted since power-on (a login handshake finished with it). */
  #proven: number | null = null;
  #stores = new Map<number, RecordStore>();
  readonly #media: BootMediaPort | null;
  #boot: BootState | null = null;
  /** The flash's write generation when #boot was measured (BootMediaPort.generation). */
  #bootGen: number | null = null;
  /** keepMeasurementWhileUnwritten(): a good measurement stands while the flash is unwritten. */
  #keepMeasurement = false;
  /** Counts of what a host tried, for tests and the inspector; `measurements`: power-on measurements taken. */
  readonly counters = { commands: 0, refused: 0, measurements: 0, rollbacks: 0 };

  /**
   * port: the hidden zone, private to the controller (the bus gives the host no path to it).
   * media: read-only views of the host units, to measure the boot files (null: no boot media,
   * the boot never verifies and the device key serves no hello).
   * Throws only on bad construction.
   */
  readonly #nvm: ControllerNvm;

  readonly #clock: ChipClock | null;
  /** The outstanding sensor challenge (FP CHALLENGE): consumed by the next FP ENROLL / FP SIGN. */
  #fpChallenge: Uint8Array | null = null;
  /** TEST ONLY (firmware/mutant.ts StoreMutant): how the record stores write; {} in production. */
  readonly #storeOpts: RecordStoreOptions;

  /**
   * clock: the controller's own clock (ChipClock); null: no clock, no one-time codes.
   * storeOpts: TEST ONLY, a record-store mutant (firmware/zones/hidden.ts RecordStoreOptions).
   */
  constructor(port: HiddenPort, fuses: Fuses, rng: Rng, media: BootMediaPort | null = null, nvm: ControllerNvm = memoryNvm(), clock: ChipClock | null = null, storeOpts: RecordStoreOptions = {}) {
    this.#storeOpts = storeOpts;
    this.#nvm = nvm;
    this.#clock = clock;
    this.#fuses = fuses;
    this.#media = media;
    this.#port = Object.freeze({
      hiddenBytes: port.hiddenBytes,
      sectorBytes: port.sectorBytes,
      pageBytes: port.pageBytes,
      readHidden(o: number, n: number) { return port.readHidden(o, n); },
      programHidden(o: number, d: Uint8Array) { return port.programHidden(o, d); },
      eraseHiddenSector(o: number) { return port.eraseHiddenSector(o); },
      deriveKey(label: string) { return fuses.deriveKey(label); },
      uniqueId() { return fuses.uniqueId(); },
    });
    this.#rng = rng;
  }

  /** Power-on reset: RAM state (session, identity cache, proven generation) is gone. */
  reset(): void {
    this.#session?.ops.abort();
    this.#session = null;
    this.#identity?.deviceKey.fill(0);
    this.#identity = null;
    this.#wipeHeld();
    this.#proven = null;
    this.#stores.clear();
    this.#boot = null;
    this.#fpChallenge = null;
  }

  /**
   * A fleet's chips (issue 15): a hello or a measurement query re-measures only when a byte of
   * the flash may have changed since the last good measurement (the flash's write generation
   * moved: any program or erase, by the host's units, the controller or a write, fill or reset
   * called on the backing itself; a backing exposes no array, and a fleet's shared base is
   * its factory image, which no code writes: flash/backing.ts), instead of at every one. A real controller sits in the flash's write path and
   * knows whether it was written; the files are what was measured while it was not. Off by
   * default (the single phone, the stories, the deterministic simulation measure every time);
   * a backing that cannot tell (generation null) is measured every time. element.test.ts
   * attacks it: MAIN.EXE rewritten through the disk unit, or directly in the flash, after a
   * kept measurement, gets no hello.
   */
  keepMeasurementWhileUnwritten(on = true): void {
    this.#keepMeasurement = on;
  }

  /** Forgets the measurement before a hello or a query, unless it stands (keepMeasurementWhileUnwritten). */
  #remeasure(): void {
    const b = this.#boot;
    if (this.#keepMeasurement && b?.ok && this.#bootGen !== null && this.#bootGen === (this.#media?.generation() ?? null)) return;
    this.#boot = null;
  }

  /** The power-on measurement (taken once, before the first command is answered). */
  #measure(): BootState | 'power-lost' {
    if (this.#boot) return this.#boot;
    const m = this.#media;
    if (!m) return (this.#boot = { ok: false, code: 'BOOT_MISSING_PROGRAM', reason: 'no boot media' });
    // Taken before the reads: a write during them (there is none: a command runs to its end) would move it.
    this.#bootGen = m.generation();
    let last: number = FlashStatus.OK;
    const blocks = (lba: number, n: number) => {
      const r = m.readCdrom(lba, n);
      last = r.status;
      return r.status === FlashStatus.OK ? r.data : null;
    };
    const sectors = (lba: number, n: number) => {
      const r = m.readDisk(lba, n);
      last = r.status;
      return r.status === FlashStatus.OK ? r.data : null;
    };
    // The CD-ROM's directory is read once per attempt (as the host's AutoRun mounts it once,
    // firmware/boot.ts), not once per file: a retry (attempt > 0) reads it again, so no
    // cache outlives a read that did not check out; an unreadable directory is not kept
    // (each file then reports that read's own status). Nothing is written during a command.
    let dir: readonly IsoEntry[] | null = null;
    let dirAt = -1;
    const cdromFile = (name: string, attempt: number) => {
      if (!dir || (attempt > 0 && dirAt !== attempt)) {
        dir = listIso(blocks, m.cdromBlocks);
        dirAt = attempt;
      }
      return dir ? readIsoEntry(blocks, dir, name) : null;
    };
    const read: BootFileReader = (zone, name, attempt) => {
      last = FlashStatus.OK;
      const b = zone === 'cdrom' ? cdromFile(name, attempt) : readFatFile(sectors, name);
      return b ? { ok: true, data: b } : { ok: false, status: statusName(last === FlashStatus.OK ? FlashStatus.ERR_NOT_FOUND : last) };
    };
    this.counters.measurements++;
    const c = checkBootFiles(read, this.#fuses.vendorPublicKey());
    if (!c.ok && c.powerLost) return 'power-lost';
    return (this.#boot = c.ok ? { ok: true, measurement: c.measurement, version: c.manifest.version, retries: c.retries } : { ok: false, code: c.code, reason: c.reason });
  }

  /** One command APDU in, one response APDU out (data || SW1 SW2; empty when power was lost). */
  transmit(apdu: Uint8Array): Uint8Array {
    this.counters.commands++;
    let r: Reply;
    try {
      r = this.#dispatch(apdu);
    } catch {
      // A model never throws at its host: anything unforeseen is "no precise diagnosis".
      r = status(SW.noDiagnosis);
    }
    if (r === 'power-lost') return new Uint8Array(0);
    if (r.sw !== SW.ok) this.counters.refused++;
    return encodeResponse(r.data ?? new Uint8Array(0), r.sw);
  }

  #dispatch(apdu: Uint8Array): Reply {
    // Power-on: the boot files are measured before the first command is answered.
    if (this.#measure() === 'power-lost') return 'power-lost';
    const c = parseCommand(apdu);
    if (!c) return status(SW.wrongLength);
    if (c.cla !== CLA) return status(SW.claNotSupported);
    switch (c.ins) {
      case Ins.getData:
        if (c.data.length) return status(SW.wrongLength);
        return this.#getData((c.p1 << 8) | c.p2);
      case Ins.hsOpen: {
        const a = argList(c.data);
        return a ? this.#hsOpen(c.p1, c.p2, a) : status(SW.wrongData);
      }
      case Ins.hsFinish: {
        const a = argList(c.data);
        return a ? this.#hsFinish(a) : status(SW.wrongData);
      }
      case Ins.importSecret: {
        const a = argList(c.data);
        return a ? this.#import(a) : status(SW.wrongData);
      }
      case Ins.retireOlder: {
        const a = argList(c.data);
        return a ? this.#retire(a) : status(SW.wrongData);
      }
      case Ins.fpChallenge:
        if (c.p1 !== 0 || c.p2 !== 0) return status(SW.wrongP1P2);
        if (c.data.length) return status(SW.wrongLength);
        return this.#fpNewChallenge();
      case Ins.fpEnroll:
      case Ins.fpKey:
      case Ins.fpSign:
      case Ins.otpImport:
      case Ins.otpCode: {
        if (c.p1 !== 0 || c.p2 !== 0) return status(SW.wrongP1P2);
        const a = argList(c.data);
        if (!a) return status(SW.wrongData);
        if (c.ins === Ins.fpEnroll) return this.#fpEnroll(a);
        if (c.ins === Ins.fpKey) return this.#fpKey(a);
        if (c.ins === Ins.fpSign) return this.#fpSign(a);
        if (c.ins === Ins.otpImport) return this.#otpImport(a);
        return this.#otpCode(a);
      }
      case Ins.readRecord:
        if (c.p1 !== Record.savedLogin || c.p2 !== 0 || c.data.length) return status(SW.wrongP1P2);
        return this.#readRecord();
      case Ins.writeRecord:
        if (c.p1 !== Record.savedLogin || c.p2 !== 0) return status(SW.wrongP1P2);
        return this.#writeRecord(c.data);
      default:
        return status(SW.insNotSupported);
    }
  }

  // ---- identity and slots

  #loadIdentity(): Identity | Reply {
    if (this.#identity) return this.#identity;
    let r = readIdentity(this.#port);
    // A record that does not authenticate is read again: a transient read flip heals, a stored one does not.
    for (let i = 1; i < IDENTITY_READ_ATTEMPTS && (r.status === FlashStatus.ERR_AUTH || r.status === FlashStatus.ERR_FORMAT); i++) r = readIdentity(this.#port);
    if (r.status === FlashStatus.ERR_POWER_LOST) return 'power-lost';
    if (!r.identity) return status(r.status === FlashStatus.ERR_EMPTY ? SW.notFound : SW.memoryFailure);
    return (this.#identity = r.identity);
  }

  #getData(obj: number): Reply {
    // Public objects that need no identity record.
    if (obj === DataObject.vendorKey) return { data: this.#fuses.vendorPublicKey(), sw: SW.ok };
    if (obj === DataObject.bootMeasurement) {
      // As the files are now (a hello is measured again too).
      this.#remeasure();
      const b = this.#measure();
      if (b === 'power-lost') return b;
      return b.ok ? ok([b.measurement, b.version]) : status(SW.securityNotSatisfied);
    }
    if (obj === DataObject.personStatus) {
      const finger = this.#nvm.readObject(OBJ.template);
      const state = finger ? (this.#nvm.read(Nvm.fingerprintTries) >= FP_MAX_TRIES ? 'blocked' : 'set') : 'empty';
      finger?.fill(0);
      const sites = (name: string) => {
        const t = this.#siteTable(name);
        const out = [...t.keys()].sort();
        for (const [, f] of t) if (f[0] instanceof Uint8Array) f[0].fill(0);
        return out;
      };
      // The one-time-code sites whose current time step has not given a code yet (#otpCode).
      const now = this.#clock?.();
      const seeds = this.#siteTable(OBJ.otpSeeds);
      const ready = [...seeds].filter(([, f]) => typeof now === 'number' && !(typeof f[4] === 'number' && Math.floor(now / 1000 / (f[3] as number)) <= f[4])).map(([s]) => s).sort();
      for (const [, f] of seeds) if (f[0] instanceof Uint8Array) f[0].fill(0);
      return ok([state, sites(OBJ.fpKeys), ready, this.#clock !== null]);
    }
    const id = this.#loadIdentity();
    if (!isIdentity(id)) return id;
    if (obj === DataObject.identity) return ok([id.serialToken, id.keyVersion, id.serial]);
    if (obj === DataObject.slots) {
      const h = this.#loadHeld();
      if (h === 'power-lost') return h;
      return ok([
        [Slot.deviceKey, 'device-key', 'set', null, [id.keyVersion]],
        [Slot.business, 'business-secret', h ? 'set' : 'empty', h?.user ?? null, h ? h.secrets.map((s) => s.gen) : []],
        [Slot.fingerprint, 'fingerprint', this.#nvm.readObject(OBJ.template) ? (this.#nvm.read(Nvm.fingerprintTries) >= FP_MAX_TRIES ? 'blocked' : 'set') : 'empty', null, []],
        [Slot.otpSeed, 'otp-seed', this.#siteTable(OBJ.otpSeeds).size ? 'set' : 'empty', null, []],
      ]);
    }
    return status(SW.wrongP1P2);
  }

  // ---- handshake

  #hsOpen(slot: number, p2: number, a: CborValue[]): Reply {
    if (p2 !== 0) return status(SW.wrongP1P2);
    if (a.length !== 4) return status(SW.wrongData);
    const [type, seq, dest, fields] = a;
    if (typeof type !== 'number' || typeof seq !== 'number' || typeof dest !== 'string' || !Array.isArray(fields)) return status(SW.wrongData);
    // A new opening abandons any handshake in progress (its keys are wiped).
    this.#session?.ops.abort();
    this.#session = null;
    const id = this.#loadIdentity();
    if (!isIdentity(id)) return id;
    let key: Uint8Array;
    let gen: number | null = null;
    if (slot === Slot.deviceKey) {
      // Usage policy: the registration hello, with this chip's own serial token and the
      // measurement of the boot files as they are now, nothing else; no hello at all for
      // unverified firmware. Measured again for each hello, not only at power-on: the host can
      // write the disk unit after the first measurement (found by review: a genuine measurement
      // attested over a MAIN.EXE rewritten after power-on). A fleet's chip keeps a good
      // measurement while the flash is unwritten (keepMeasurementWhileUnwritten).
      this.#remeasure();
      const mb = this.#measure();
      if (mb === 'power-lost') return mb;
      const b = mb;
      if (!b?.ok) return status(SW.securityNotSatisfied);
      if (type !== MsgType.hello || fields.length !== 2 || !isBytes(fields[0], id.serialToken.length) || !equalBytes(fields[0], id.serialToken) || !isBytes(fields[1], 32) || !equalBytes(fields[1], b.measurement)) return status(SW.conditionsNotSatisfied);
      key = Uint8Array.from(id.deviceKey);
    } else if (slot === Slot.business) {
      // Usage policy: a business login of the user these secrets belong to, with a held
      // generation. The login proves the device whatever person mechanism it states (S3.2: the
      // opening names the mechanism the person's proof will use, so the gateway can count
      // attacks per mechanism, S3.4); a mechanism the protocol does not know is refused.
      const h = this.#loadHeld();
      if (h === 'power-lost') return h;
      if (type !== MsgType.login || fields.length !== 4) return status(SW.conditionsNotSatisfied);
      const [mech, user, g] = fields;
      if (!(MECHANISMS as readonly unknown[]).includes(mech) || !h || user !== h.user || typeof g !== 'number') return status(SW.conditionsNotSatisfied);
      const s = h.secrets.find((x) => x.gen === g);
      if (!s) return status(SW.notFound);
      key = passwordLoginKey(s.secret, h.user);
      gen = g;
    } else if (slot === Slot.fingerprint || slot === Slot.otpSeed) {
      return status(SW.notFound);
    } else return status(SW.wrongP1P2);
    const ops = softClientKeyOps(key, this.#rng);
    key.fill(0);
    const o = ops.opening(type, seq, dest, fields);
    this.#session = { slot, gen, ops };
    return ok([o.nonce, o.mac]);
  }

  #hsFinish(a: CborValue[]): Reply {
    const s = this.#session;
    if (!s) return status(SW.securityNotSatisfied);
    this.#session = null;
    const [th1, nonce, mac, th2] = a;
    if (a.length !== 4 || !isBytes(th1, 32) || !isBytes(nonce, NONCE_BYTES) || !isBytes(mac, MAC_BYTES) || !isBytes(th2, 32)) {
      s.ops.abort();
      return status(SW.wrongData);
    }
    const out = s.ops.proof({ th1, nonce, mac, th2 });
    if (!out) return status(SW.verificationFailed);
    if (s.slot === Slot.business) this.#proven = s.gen;
    return ok([out.finish, out.c2s, out.s2c]);
  }

  // ---- business secrets

  #loadHeld(): Held | null | 'power-lost' {
    if (this.#heldLoaded) return this.#held;
    const r = this.#readCounted(SECRETS_STORE);
    if (r.status === FlashStatus.ERR_POWER_LOST) return 'power-lost';
    this.#heldLoaded = true;
    if (r.status !== FlashStatus.OK) return (this.#held = null);
    try {
      const v = decode(r.payload!);
      if (!Array.isArray(v) || v.length !== 3 || v[0] !== SECRETS_VERSION || typeof v[1] !== 'string' || !Array.isArray(v[2])) throw new Error('shape');
      const secrets = v[2].map((e) => {
        if (!Array.isArray(e) || typeof e[0] !== 'number' || !isBytes(e[1], SECRET_BYTES)) throw new Error('shape');
        return { gen: e[0], secret: Uint8Array.from(e[1]) };
      });
      this.#held = { user: v[1], secrets };
    } catch {
      this.#held = null;
    } finally {
      r.payload?.fill(0);
    }
    return this.#held;
  }

  #saveHeld(h: Held): Reply | null {
    const bytes = encode([SECRETS_VERSION, h.user, h.secrets.map((s) => [s.gen, s.secret])]);
    const st = this.#writeCounted(SECRETS_STORE, bytes);
    bytes.fill(0);
    if (st === FlashStatus.ERR_POWER_LOST) return 'power-lost';
    if (st !== FlashStatus.OK) return status(SW.memoryFailure);
    this.#wipeHeld();
    this.#held = h;
    this.#heldLoaded = true;
    return null;
  }

  #wipeHeld(): void {
    for (const s of this.#held?.secrets ?? []) s.secret.fill(0);
    this.#held = null;
    this.#heldLoaded = false;
  }

  #import(a: CborValue[]): Reply {
    const [user, gen, currentGen, wrapped] = a;
    if (a.length !== 4 || typeof user !== 'string' || !USER_RE.test(user) || !isUint(gen) || !isUint(currentGen) || !isBytes(wrapped, WRAPPED_SECRET_BYTES)) return status(SW.wrongData);
    const id = this.#loadIdentity();
    if (!isIdentity(id)) return id;
    const k = secretWrapKey(id.deviceKey);
    const secret = unwrapSecret(k, user, gen, wrapped);
    k.fill(0);
    if (!secret) return status(SW.verificationFailed);
    const prev = this.#loadHeld();
    if (prev === 'power-lost') return prev;
    const same = prev && prev.user === user ? prev : null;
    // No rollback: a replayed older reply cannot replace a newer generation.
    if (same && same.secrets.some((s) => s.gen > gen)) return status(SW.conditionsNotSatisfied);
    const secrets = [{ gen, secret }];
    const keep = same?.secrets.find((s) => s.gen === currentGen && s.gen !== gen);
    if (keep) secrets.push({ gen: keep.gen, secret: Uint8Array.from(keep.secret) });
    return this.#saveHeld({ user, secrets }) ?? ok();
  }

  #retire(a: CborValue[]): Reply {
    const [gen] = a;
    if (a.length !== 1 || !isUint(gen)) return status(SW.wrongData);
    // Only after a server accepted `gen` in this power-on: then the older ones are no longer needed.
    if (this.#proven !== gen) return status(SW.securityNotSatisfied);
    const h = this.#loadHeld();
    if (h === 'power-lost') return h;
    if (!h || !h.secrets.some((s) => s.gen === gen)) return status(SW.notFound);
    if (h.secrets.every((s) => s.gen >= gen)) return ok();
    return this.#saveHeld({ user: h.user, secrets: h.secrets.filter((s) => s.gen >= gen).map((s) => ({ gen: s.gen, secret: Uint8Array.from(s.secret) })) }) ?? ok();
  }

  // ---- person layer (S3.3): fingerprint, match-on-chip

  #pairingKey(): Uint8Array {
    return this.#fuses.deriveKey(SENSOR_PAIRING_LABEL);
  }

  #fpNewChallenge(): Reply {
    this.#fpChallenge?.fill(0);
    this.#fpChallenge = this.#rng(CHALLENGE_BYTES);
    return ok([Uint8Array.from(this.#fpChallenge)]);
  }

  /** Opens a sealed reading against the outstanding challenge, which it consumes either way. */
  #takeReading(sealed: CborValue): Uint8Array | null {
    const challenge = this.#fpChallenge;
    this.#fpChallenge = null;
    if (!challenge || !(sealed instanceof Uint8Array) || sealed.length !== SEALED_READING_BYTES) return null;
    const k = this.#pairingKey();
    const r = openReading(k, challenge, sealed);
    k.fill(0);
    challenge.fill(0);
    return r;
  }

  /** A table site -> CBOR value kept as one NVM object: [[site, ...fields], ...]. */
  #siteTable(name: string): Map<string, CborValue[]> {
    const raw = this.#nvm.readObject(name);
    const m = new Map<string, CborValue[]>();
    if (!raw) return m;
    try {
      const v = decode(raw);
      // Byte strings are copied out: the decoder's may be views of `raw`, which is wiped below.
      if (Array.isArray(v)) for (const e of v) if (Array.isArray(e) && isSite(e[0])) m.set(e[0], e.slice(1).map((f) => (f instanceof Uint8Array ? Uint8Array.from(f) : f)));
    } catch {
      // An unreadable table is an empty one (the model's EEPROM does not corrupt; a bug would).
    } finally {
      raw.fill(0);
    }
    return m;
  }

  /** Writes a site table; false when it would not fit the NVM's object room. */
  #saveSiteTable(name: string, m: Map<string, CborValue[]>): boolean {
    const bytes = encode([...m].map(([site, f]) => [site, ...f]));
    if (bytes.length > NVM_OBJECT_BYTES / 2) return false;
    this.#nvm.writeObject(name, m.size ? bytes : null);
    bytes.fill(0);
    return true;
  }

  #fpEnroll(a: CborValue[]): Reply {
    if (a.length !== 1) {
      this.#fpChallenge = null;
      return status(SW.wrongData);
    }
    const r = this.#takeReading(a[0]!);
    if (!r) return status(SW.securityNotSatisfied);
    // A new finger invalidates every key the old one guarded (as Android's keys invalidated by
    // a new biometric enrolment): whoever enrols cannot use what another finger registered.
    this.#nvm.writeObject(OBJ.fpKeys, null);
    this.#nvm.writeObject(OBJ.template, r);
    this.#nvm.write(Nvm.fingerprintTries, 0);
    r.fill(0);
    return ok();
  }

  /** The business login key of generation `gen`, computed inside (null: not held). */
  #loginKeyOf(gen: CborValue): { user: string; key: Uint8Array } | null | 'power-lost' {
    if (!isUint(gen)) return null;
    const h = this.#loadHeld();
    if (h === 'power-lost') return h;
    const s = h?.secrets.find((x) => x.gen === gen);
    return s && h ? { user: h.user, key: passwordLoginKey(s.secret, h.user) } : null;
  }

  #fpKey(a: CborValue[]): Reply {
    const [site, gen] = a;
    if (a.length !== 2 || !isSite(site) || !isUint(gen)) return status(SW.wrongData);
    if (!this.#nvm.readObject(OBJ.template)) return status(SW.notFound);
    const lk = this.#loginKeyOf(gen);
    if (lk === 'power-lost') return lk;
    if (!lk) return status(SW.notFound);
    const keys = this.#siteTable(OBJ.fpKeys);
    let priv = keys.get(site)?.[0];
    if (!(priv instanceof Uint8Array) || priv.length !== 32) {
      if (keys.size >= MAX_PERSON_SITES) {
        lk.key.fill(0);
        return status(SW.notEnoughMemory);
      }
      priv = this.#rng(32);
      keys.set(site, [priv]);
      if (!this.#saveSiteTable(OBJ.fpKeys, keys)) {
        lk.key.fill(0);
        return status(SW.notEnoughMemory);
      }
    }
    const pub = ed25519.getPublicKey(priv);
    priv.fill(0);
    for (const [, f] of keys) if (f[0] instanceof Uint8Array) f[0].fill(0);
    const attestation = fingerprintKeyAttestation(lk.key, site, lk.user, pub);
    lk.key.fill(0);
    return ok([pub, attestation]);
  }

  #fpSign(a: CborValue[]): Reply {
    const [site, challenge, sealed] = a;
    if (a.length !== 3 || !isSite(site) || !isBytes(challenge, BINDING_BYTES)) {
      this.#fpChallenge = null;
      return status(SW.wrongData);
    }
    // The order of a smart card's VERIFY: blocked first, then the count raised before the
    // comparison, so that cutting the power once the result shows cannot save a try.
    if (this.#nvm.read(Nvm.fingerprintTries) >= FP_MAX_TRIES) {
      this.#fpChallenge = null;
      return status(SW.blocked);
    }
    const template = this.#nvm.readObject(OBJ.template);
    const keys = this.#siteTable(OBJ.fpKeys);
    const priv = keys.get(site)?.[0];
    if (!template || !(priv instanceof Uint8Array)) {
      this.#fpChallenge = null;
      template?.fill(0);
      return status(SW.notFound);
    }
    const r = this.#takeReading(sealed ?? null);
    if (!r) {
      template.fill(0);
      priv.fill(0);
      return status(SW.securityNotSatisfied);
    }
    const tries = this.#nvm.read(Nvm.fingerprintTries) + 1;
    this.#nvm.write(Nvm.fingerprintTries, tries);
    const ok_ = matches(template, r);
    template.fill(0);
    r.fill(0);
    if (!ok_) {
      priv.fill(0);
      return status(SW.verificationFailed);
    }
    this.#nvm.write(Nvm.fingerprintTries, 0);
    const sig = ed25519.sign(fingerprintMessage(challenge), priv);
    priv.fill(0);
    return ok([sig]);
  }

  // ---- person layer (S3.3): one-time codes

  #otpImport(a: CborValue[]): Reply {
    const [site, gen, wrapped] = a;
    if (a.length !== 3 || !isSite(site) || !isUint(gen) || !(wrapped instanceof Uint8Array) || wrapped.length > MAX_WRAPPED_SEED) return status(SW.wrongData);
    const lk = this.#loginKeyOf(gen);
    if (lk === 'power-lost') return lk;
    if (!lk) return status(SW.notFound);
    const opened = unwrapOtpSeed(lk.key, site, lk.user, wrapped);
    lk.key.fill(0);
    if (!opened) return status(SW.verificationFailed);
    const seeds = this.#siteTable(OBJ.otpSeeds);
    if (!seeds.has(site) && seeds.size >= MAX_PERSON_SITES) {
      opened.seed.fill(0);
      return status(SW.notEnoughMemory);
    }
    const p = opened.params;
    seeds.set(site, [opened.seed, p.algorithm, p.digits, p.period]);
    const saved = this.#saveSiteTable(OBJ.otpSeeds, seeds);
    for (const [, f] of seeds) if (f[0] instanceof Uint8Array) f[0].fill(0);
    return saved ? ok() : status(SW.notEnoughMemory);
  }

  #otpCode(a: CborValue[]): Reply {
    const [site] = a;
    if (a.length !== 1 || !isSite(site)) return status(SW.wrongData);
    const now = this.#clock?.();
    if (typeof now !== 'number' || !Number.isFinite(now) || now < 0) return status(SW.conditionsNotSatisfied);
    const seeds = this.#siteTable(OBJ.otpSeeds);
    const e = seeds.get(site);
    let code: string | null = null;
    let used = false;
    if (e && e[0] instanceof Uint8Array) {
      const [seed, algorithm, digits, period, last] = e as [Uint8Array, TotpParams['algorithm'], number, number, number | undefined];
      // RFC 6238 §4.2: T = floor((unix time - T0) / X), T0 = 0; the code is HOTP(K, T).
      const step = Math.floor(now / 1000 / period);
      // One code per time step, as the site accepts each step once (RFC 6238 §5.2): a step the
      // chip already gave a code for gives none (the person uses another mechanism or waits).
      // The step is recorded before the code leaves: a power cut cannot give it twice.
      if (typeof last === 'number' && step <= last) used = true;
      else {
        e[4] = step;
        if (!this.#saveSiteTable(OBJ.otpSeeds, seeds)) used = true;
        else code = HOTP.generate({ secret: new Secret({ buffer: Uint8Array.from(seed).buffer }), algorithm, digits, counter: step });
      }
    }
    for (const [, f] of seeds) if (f[0] instanceof Uint8Array) f[0].fill(0);
    if (used) return status(SW.conditionsNotSatisfied);
    return code === null ? status(SW.notFound) : ok([code]);
  }

  // ---- host records

  #store(geometry: { id: number; firstSector: number; slots: number }): RecordStore {
    let s = this.#stores.get(geometry.id);
    if (!s) {
      const name = geometry.id === HIDDEN_STORES.login.id ? 'login' : 'secrets';
      const key = this.#fuses.deriveKey(storeKeyLabel(name));
      s = new RecordStore(this.#port, key, geometry, this.#storeOpts);
      key.fill(0);
      this.#stores.set(geometry.id, s);
    }
    return s;
  }

  /**
   * The current record of a store, with its rollback counter checked: a record sealed with a
   * value below the controller's counter for that store is an older copy of the flash, refused
   * (counted in `counters.rollbacks`) as if absent. A record above it (the power failed after
   * the flash write, before the counter's) raises the counter.
   */
  #readCounted(geometry: { id: number; firstSector: number; slots: number }): { status: number; payload: Uint8Array | null } {
    const r = this.#store(geometry).read();
    if (r.status !== FlashStatus.OK) return { status: r.status, payload: null };
    let counter: number, payload: Uint8Array;
    try {
      const v = decode(r.payload!);
      if (!Array.isArray(v) || v.length !== 2 || !isUint(v[0]) || !(v[1] instanceof Uint8Array)) throw new Error('shape');
      [counter, payload] = [v[0], Uint8Array.from(v[1])];
    } catch {
      return { status: FlashStatus.ERR_FORMAT, payload: null };
    } finally {
      r.payload?.fill(0);
    }
    const held = this.#nvm.read(geometry.id);
    if (counter < held) {
      this.counters.rollbacks++;
      payload.fill(0);
      return { status: FlashStatus.ERR_EMPTY, payload: null };
    }
    if (counter > held) this.#nvm.write(geometry.id, counter);
    return { status: FlashStatus.OK, payload };
  }

  /** Writes a record sealed with the next value of its store's counter, then raises the counter. */
  #writeCounted(geometry: { id: number; firstSector: number; slots: number }, payload: Uint8Array): number {
    const next = this.#nvm.read(geometry.id) + 1;
    const wrapped = encode([next, payload]);
    const st = this.#store(geometry).write(wrapped);
    wrapped.fill(0);
    if (st === FlashStatus.OK) this.#nvm.write(geometry.id, next);
    return st;
  }

  #readRecord(): Reply {
    const r = this.#readCounted(HIDDEN_STORES.login);
    if (r.status === FlashStatus.ERR_POWER_LOST) return 'power-lost';
    if (r.status === FlashStatus.ERR_EMPTY) return status(SW.notFound);
    if (r.status !== FlashStatus.OK) return status(SW.memoryFailure);
    return { data: r.payload!, sw: SW.ok };
  }

  #writeRecord(data: Uint8Array): Reply {
    if (data.length === 0) return status(SW.wrongLength);
    if (data.length > MAX_RECORD) return status(SW.notEnoughMemory);
    const st = this.#writeCounted(HIDDEN_STORES.login, data);
    if (st === FlashStatus.ERR_POWER_LOST) return 'power-lost';
    return st === FlashStatus.OK ? ok() : status(SW.memoryFailure);
  }
}

function isIdentity(v: Identity | Reply): v is Identity {
  return typeof v === 'object' && v !== null && 'deviceKey' in v;
}
function isBytes(v: unknown, n: number): v is Uint8Array {
  return v instanceof Uint8Array && v.length === n;
}
function isUint(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
}
