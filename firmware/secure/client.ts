// The host side of the secure controller: typed commands over APDUs (element.ts lists them).
// This is all a program on the host computer (UPMon, the main program, or a hostile one) can
// do with the chip: ask for its public identity and slot table, have it compute a handshake
// under a slot, hand it a wrapped secret, retire older secrets, read and write the saved-login
// record. Statuses are the status words' names ('SW_NOT_FOUND', ...); a command the chip
// could not answer because power was lost is 'ERR_POWER_LOST'.
import { decode, encode, type CborValue } from '../../protocol/cbor.ts';
import { ImplementationError } from '../../protocol/errors.ts';
import type { ClientKeyOps } from '../../protocol/handshake-keys.ts';
import { Ins, DataObject, SW, encodeCommand, parseResponse, swName } from './apdu.ts';
import { Slot, Record } from './element.ts';

export type ChipResult<T> = { ok: true; value: T } | { ok: false; status: string };

/** What a host can read of the chip's identity: nothing secret. */
export interface PublicIdentity {
  serial: string;
  /** The encrypted serial the hello carries (opaque; docs/protocol.md §5.1). */
  serialToken: Uint8Array;
  keyVersion: number;
}

/** The person layer the chip holds (SeClient.personStatus). */
export interface PersonStatus {
  finger: 'empty' | 'set' | 'blocked';
  fpSites: string[];
  /** Sites with a one-time-code seed whose current time step has not given a code yet (one code per step). */
  otpSites: string[];
  clock: boolean;
}

/** Thrown by the chip-backed key holders when the chip lost power mid-command: the device halts. */
export class ChipPowerLost extends Error {
  constructor(readonly command: string) {
    super(`power lost during ${command}`);
  }
}

export class SeClient {
  constructor(private readonly transmit: (apdu: Uint8Array) => Uint8Array) {}

  #call(name: string, ins: number, o: { p1?: number; p2?: number; data?: CborValue | Uint8Array } = {}): ChipResult<Uint8Array> {
    const data = o.data === undefined ? undefined : o.data instanceof Uint8Array ? o.data : encode(o.data);
    const raw = this.transmit(encodeCommand({ ins, p1: o.p1, p2: o.p2, data }));
    if (raw.length === 0) return { ok: false, status: 'ERR_POWER_LOST' };
    const r = parseResponse(raw);
    void name;
    return r.sw === SW.ok ? { ok: true, value: r.data } : { ok: false, status: swName(r.sw) };
  }

  identity(): ChipResult<PublicIdentity> {
    const r = this.#call('GET DATA identity', Ins.getData, { p2: DataObject.identity });
    if (!r.ok) return r;
    const [serialToken, keyVersion, serial] = decode(r.value) as [Uint8Array, number, string];
    return { ok: true, value: { serial, serialToken, keyVersion } };
  }

  /** The vendor's Ed25519 public key burnt into the fuses (32 bytes, public). */
  vendorKey(): ChipResult<Uint8Array> {
    return this.#call('GET DATA vendor key', Ins.getData, { p2: DataObject.vendorKey });
  }

  /** The firmware measurement taken at power-on and the manifest version; SW_SECURITY_NOT_SATISFIED when the boot files did not verify. */
  attestation(): ChipResult<{ measurement: Uint8Array; version: number }> {
    const r = this.#call('GET DATA boot measurement', Ins.getData, { p2: DataObject.bootMeasurement });
    if (!r.ok) return r;
    const [measurement, version] = decode(r.value) as [Uint8Array, number];
    return { ok: true, value: { measurement, version } };
  }

  /** The business secrets the chip holds: their user and generations, newest first (no key bytes). */
  secrets(): ChipResult<{ user: string; gens: number[] } | null> {
    const r = this.#call('GET DATA slots', Ins.getData, { p2: DataObject.slots });
    if (!r.ok) return r;
    const slots = decode(r.value) as [number, string, string, string | null, number[]][];
    const b = slots.find((s) => s[0] === Slot.business);
    if (!b || b[2] !== 'set' || b[3] === null || b[4].length === 0) return { ok: true, value: null };
    return { ok: true, value: { user: b[3], gens: [...b[4]].sort((x, y) => y - x) } };
  }

  importSecret(user: string, gen: number, currentGen: number, wrapped: Uint8Array): ChipResult<void> {
    const r = this.#call('IMPORT SECRET', Ins.importSecret, { data: [user, gen, currentGen, wrapped] });
    return r.ok ? { ok: true, value: undefined } : r;
  }

  retireOlder(gen: number): ChipResult<void> {
    const r = this.#call('RETIRE OLDER', Ins.retireOlder, { data: [gen] });
    return r.ok ? { ok: true, value: undefined } : r;
  }

  readRecord(): ChipResult<Uint8Array | null> {
    const r = this.#call('READ RECORD', Ins.readRecord, { p1: Record.savedLogin });
    if (!r.ok) return r.status === 'SW_NOT_FOUND' ? { ok: true, value: null } : r;
    return r;
  }

  writeRecord(b: Uint8Array): ChipResult<void> {
    const r = this.#call('WRITE RECORD', Ins.writeRecord, { p1: Record.savedLogin, data: b });
    return r.ok ? { ok: true, value: undefined } : r;
  }

  // ---- person layer (S3.3)

  /**
   * What the chip can prove the person with, per site (GET DATA person status): the enrolled
   * finger's state, the sites it holds a fingerprint key for, those it holds a TOTP seed for,
   * and whether it has a clock (no clock, no one-time codes: a bank card has none).
   */
  personStatus(): ChipResult<PersonStatus> {
    const r = this.#call('GET DATA person status', Ins.getData, { p2: DataObject.personStatus });
    if (!r.ok) return r;
    const [finger, fpSites, otpSites, clock] = decode(r.value) as [PersonStatus['finger'], string[], string[], boolean];
    return { ok: true, value: { finger, fpSites, otpSites, clock } };
  }

  /** A fresh single-use challenge (24 bytes) for the fingerprint sensor's next reading. */
  fpChallenge(): ChipResult<Uint8Array> {
    const r = this.#call('FP CHALLENGE', Ins.fpChallenge);
    return r.ok ? { ok: true, value: (decode(r.value) as [Uint8Array])[0] } : r;
  }

  /** Enrols the finger of a sealed reading (drops every fingerprint key the chip held). */
  fpEnroll(sealedReading: Uint8Array): ChipResult<void> {
    const r = this.#call('FP ENROLL', Ins.fpEnroll, { data: [sealedReading] });
    return r.ok ? { ok: true, value: undefined } : r;
  }

  /** The site's fingerprint public key (made on first use) and its attestation under the business key of `gen`. */
  fpKey(site: string, gen: number): ChipResult<{ publicKey: Uint8Array; attestation: Uint8Array }> {
    const r = this.#call('FP KEY', Ins.fpKey, { data: [site, gen] });
    if (!r.ok) return r;
    const [publicKey, attestation] = decode(r.value) as [Uint8Array, Uint8Array];
    return { ok: true, value: { publicKey, attestation } };
  }

  /**
   * The site's fingerprint signature over `challenge` (32 bytes), if the sealed reading
   * matches the enrolled finger. SW_VERIFICATION_FAILED: another finger (counted);
   * SW_BLOCKED: too many; SW_SECURITY_NOT_SATISFIED: the reading is not a fresh one from the
   * paired sensor; SW_NOT_FOUND: no finger enrolled or no key for the site.
   */
  fpSign(site: string, challenge: Uint8Array, sealedReading: Uint8Array): ChipResult<Uint8Array> {
    const r = this.#call('FP SIGN', Ins.fpSign, { data: [site, challenge, sealedReading] });
    return r.ok ? { ok: true, value: (decode(r.value) as [Uint8Array])[0] } : r;
  }

  /** Imports a site's TOTP seed, wrapped by the site under the business key of `gen`. */
  otpImport(site: string, gen: number, wrapped: Uint8Array): ChipResult<void> {
    const r = this.#call('OTP IMPORT', Ins.otpImport, { data: [site, gen, wrapped] });
    return r.ok ? { ok: true, value: undefined } : r;
  }

  /** The site's one-time code for the chip's own current time. */
  otpCode(site: string): ChipResult<string> {
    const r = this.#call('OTP CODE', Ins.otpCode, { data: [site] });
    return r.ok ? { ok: true, value: (decode(r.value) as [string])[0] } : r;
  }

  /**
   * A key holder for one handshake under `slot` (protocol/handshake-keys.ts): the chip draws
   * the client nonce, computes the MACs and releases the traffic keys, the long-term key stays
   * inside. A refusal by the chip is ImplementationError SE_REFUSED (the program asked for
   * something the slot's policy forbids, or another host program interleaved its commands);
   * a power cut is ChipPowerLost.
   */
  keyOps(slot: number): ClientKeyOps {
    const must = (name: string, r: ChipResult<Uint8Array>): Uint8Array => {
      if (r.ok) return r.value;
      if (r.status === 'ERR_POWER_LOST') throw new ChipPowerLost(name);
      throw new ImplementationError('SE_REFUSED', `${name}: the secure element answered ${r.status}`);
    };
    return {
      opening: (type, seq, dest, fields) => {
        const [nonce, mac] = decode(must('HS OPEN', this.#call('HS OPEN', Ins.hsOpen, { p1: slot, data: [type, seq, dest, fields] }))) as [Uint8Array, Uint8Array];
        return { nonce, mac };
      },
      proof: (p) => {
        const r = this.#call('HS FINISH', Ins.hsFinish, { data: [p.th1, p.nonce, p.mac, p.th2] });
        if (!r.ok && r.status === swName(SW.verificationFailed)) return null;
        const [finish, c2s, s2c] = decode(must('HS FINISH', r)) as [Uint8Array, Uint8Array, Uint8Array];
        return { finish, c2s, s2c };
      },
      // Nothing to wipe on the host: the chip drops its handshake state at the next opening or power-on.
      abort: () => {},
    };
  }

  deviceKeyOps(): ClientKeyOps {
    return this.keyOps(Slot.deviceKey);
  }
  loginKeyOps(): ClientKeyOps {
    return this.keyOps(Slot.business);
  }
}
