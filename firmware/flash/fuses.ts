// Fuses / OTP of the chip: a 32-byte hardware-unique key (HUK), an 8-byte unique id and the
// vendor's 32-byte Ed25519 public key (issue 9, signed boot: the key the boot manifest must be
// signed with; public, the secure controller hands it out by GET DATA), burnt at the factory. The HUK never leaves this object through a host or firmware path:
// only deriveKey() uses it (HKDF), and DeviceBus keeps the Fuses object private. The one
// way out is toFile(), which the factory uses to write the fuses file it keeps (0600).
//
// Not emulated: OTP programming after manufacture, lock bits, read-out protection levels;
// the fuses are a fixed value from construction on.
import { bytesToHex, hexToBytes, concatBytes } from '@noble/hashes/utils.js';
import { kdfExtract, kdfExpand } from '../../protocol/keys.ts';
import { sha256 } from '@noble/hashes/sha2.js';
import { ImplementationError } from '../../protocol/errors.ts';

export const HUK_BYTES = 32;
export const UID_BYTES = 8;
export const VENDOR_KEY_BYTES = 32;
const te = new TextEncoder();
const FUSE_KDF_SALT = te.encode('usbphone/v1 fuse-kdf');
const FILE_HEADER = 'usbphone-fuses v2';
/** Files written before the vendor key existed: refused, with what to do (no migration: OTP bits are set once). */
const OLD_HEADER = 'usbphone-fuses v1';

export class Fuses {
  readonly #huk: Uint8Array;
  /** HKDF-Extract(salt "usbphone/v1 fuse-kdf", HUK): the PRK every derived key expands from, taken on first use. */
  #prk: Uint8Array | null = null;
  /** Keys derived so far, by length and label (at most 16). */
  readonly #derived = new Map<string, Uint8Array>();
  readonly #uid: Uint8Array;
  readonly #vendor: Uint8Array;

  /** vendorPub: the vendor's Ed25519 public key (32 bytes) the boot manifest must be signed with. */
  constructor(huk: Uint8Array, uid: Uint8Array, vendorPub: Uint8Array) {
    if (!(huk instanceof Uint8Array) || !(uid instanceof Uint8Array) || !(vendorPub instanceof Uint8Array)) throw new TypeError('fuses: Uint8Array expected');
    if (huk.length !== HUK_BYTES) throw new RangeError(`fuses: HUK must be ${HUK_BYTES} bytes`);
    if (uid.length !== UID_BYTES) throw new RangeError(`fuses: unique id must be ${UID_BYTES} bytes`);
    if (vendorPub.length !== VENDOR_KEY_BYTES) throw new RangeError(`fuses: vendor public key must be ${VENDOR_KEY_BYTES} bytes`);
    this.#huk = Uint8Array.from(huk);
    this.#uid = Uint8Array.from(uid);
    this.#vendor = Uint8Array.from(vendorPub);
  }

  /** Fresh HUK and unique id from a random source (crypto randomness at the factory; a seeded rng in tests), with the vendor's public key. */
  static generate(rng: (n: number) => Uint8Array, vendorPub: Uint8Array): Fuses {
    return new Fuses(rng(HUK_BYTES), rng(UID_BYTES), vendorPub);
  }

  /** The unique id (a copy). Not secret. */
  uniqueId(): Uint8Array {
    return Uint8Array.from(this.#uid);
  }

  /** The vendor's Ed25519 public key (a copy). Not secret: the boot checks BOOT.SIG with it. */
  vendorPublicKey(): Uint8Array {
    return Uint8Array.from(this.#vendor);
  }

  /** HKDF-SHA256(HUK, salt "usbphone/v1 fuse-kdf", info label) — the chip's key-derivation path. */
  deriveKey(label: string, length = 32): Uint8Array {
    if (typeof label !== 'string' || label.length === 0) throw new TypeError('deriveKey: label must be a non-empty string');
    // RFC 5869 §2.2-2.3: extract with a fixed salt, expand with the purpose label as info.
    // On the protocol's engine (the chip's crypto block in a fleet; the same bytes as noble's
    // hkdf, fuses.test.ts). The extract step depends on the HUK alone: taken once, kept inside.
    // Each derived key is kept too, in the chip's RAM beside the HUK it comes from (the
    // controller derives the same record and identity keys at every command): a copy is given.
    const id = `${length}/${label}`;
    let k = this.#derived.get(id);
    if (!k) {
      this.#prk ??= kdfExtract(this.#huk, FUSE_KDF_SALT);
      k = kdfExpand(this.#prk, te.encode(label), length);
      if (this.#derived.size >= 16) this.#derived.clear();
      this.#derived.set(id, k);
    }
    return Uint8Array.from(k);
  }

  /**
   * The fuses file (factory only):
   *   usbphone-fuses v2
   *   uid <16 hex>
   *   huk <64 hex>
   *   vpk <64 hex>      the vendor's Ed25519 public key (signed boot)
   *   check <8 hex>     first 4 bytes of SHA-256(uid || huk || vpk), catches a damaged file
   * A v1 file (no vpk) is refused with FUSES_BAD_FILE: its chip has no vendor key burnt and
   * cannot boot a signed image; build a new device (new fuses) instead.
   */
  toFile(): string {
    return [
      '# usbphone fuses: the chip\'s hardware-unique key. Factory secret: keep it 0600.',
      FILE_HEADER,
      `uid ${bytesToHex(this.#uid)}`,
      `huk ${bytesToHex(this.#huk)}`,
      `vpk ${bytesToHex(this.#vendor)}`,
      `check ${checkOf(this.#uid, this.#huk, this.#vendor)}`,
      '',
    ].join('\n');
  }

  /** Parses a fuses file; throws ImplementationError FUSES_BAD_FILE naming what is wrong. */
  static parse(text: string): Fuses {
    const bad = (m: string): never => {
      throw new ImplementationError('FUSES_BAD_FILE', `fuses file: ${m}`);
    };
    if (typeof text !== 'string' || text.length > 4096) bad('not a small text file');
    const lines = text.split(/\r?\n/).map((l) => l.replace(/#.*/, '').trim()).filter(Boolean);
    if (lines[0] === OLD_HEADER) bad(`"${OLD_HEADER}" predates the signed boot: this chip has no vendor public key burnt and cannot boot a signed image; build a new device (move the old fuses file away and build the image again)`);
    if (lines[0] !== FILE_HEADER) bad(`first line must be "${FILE_HEADER}"`);
    const fields = new Map<string, string>();
    for (const l of lines.slice(1)) {
      const m = /^(uid|huk|vpk|check)\s+([0-9a-fA-F]+)$/.exec(l);
      if (!m) bad(`unexpected line "${l.slice(0, 40)}"`);
      if (fields.has(m![1]!)) bad(`duplicate ${m![1]}`);
      fields.set(m![1]!, m![2]!.toLowerCase());
    }
    const uid = fields.get('uid'), huk = fields.get('huk'), vpk = fields.get('vpk'), check = fields.get('check');
    if (!uid || uid.length !== UID_BYTES * 2) bad(`uid must be ${UID_BYTES * 2} hex digits`);
    if (!huk || huk.length !== HUK_BYTES * 2) bad(`huk must be ${HUK_BYTES * 2} hex digits`);
    if (!vpk || vpk.length !== VENDOR_KEY_BYTES * 2) bad(`vpk (vendor public key) must be ${VENDOR_KEY_BYTES * 2} hex digits`);
    const u = hexToBytes(uid!), h = hexToBytes(huk!), v = hexToBytes(vpk!);
    if (check !== checkOf(u, h, v)) bad('check does not match (damaged file?)');
    return new Fuses(h, u, v);
  }

  // Never print the HUK by accident (console.log, JSON.stringify, util.inspect).
  toJSON(): { uniqueId: string } {
    return { uniqueId: bytesToHex(this.#uid) };
  }
  toString(): string {
    return `Fuses(uid ${bytesToHex(this.#uid)})`;
  }
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }
}

function checkOf(uid: Uint8Array, huk: Uint8Array, vpk: Uint8Array): string {
  return bytesToHex(sha256(concatBytes(uid, huk, vpk)).subarray(0, 4));
}
