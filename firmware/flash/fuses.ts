// Fuses / OTP of the chip: a 32-byte hardware-unique key (HUK) and an 8-byte unique id,
// burnt at the factory. The HUK never leaves this object through a host or firmware path:
// only deriveKey() uses it (HKDF), and DeviceBus keeps the Fuses object private. The one
// way out is toFile(), which the factory uses to write the fuses file it keeps (0600).
//
// Not emulated: OTP programming after manufacture, lock bits, read-out protection levels;
// the fuses are a fixed value from construction on.
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { ImplementationError } from '../../protocol/errors.ts';

export const HUK_BYTES = 32;
export const UID_BYTES = 8;
const te = new TextEncoder();
const FILE_HEADER = 'usbphone-fuses v1';

export class Fuses {
  readonly #huk: Uint8Array;
  readonly #uid: Uint8Array;

  constructor(huk: Uint8Array, uid: Uint8Array) {
    if (!(huk instanceof Uint8Array) || !(uid instanceof Uint8Array)) throw new TypeError('fuses: Uint8Array expected');
    if (huk.length !== HUK_BYTES) throw new RangeError(`fuses: HUK must be ${HUK_BYTES} bytes`);
    if (uid.length !== UID_BYTES) throw new RangeError(`fuses: unique id must be ${UID_BYTES} bytes`);
    this.#huk = Uint8Array.from(huk);
    this.#uid = Uint8Array.from(uid);
  }

  /** Fresh fuses from a random source (crypto randomness at the factory; a seeded rng in tests). */
  static generate(rng: (n: number) => Uint8Array): Fuses {
    return new Fuses(rng(HUK_BYTES), rng(UID_BYTES));
  }

  /** The unique id (a copy). Not secret. */
  uniqueId(): Uint8Array {
    return Uint8Array.from(this.#uid);
  }

  /** HKDF-SHA256(HUK, salt "usbphone/v1 fuse-kdf", info label) — the chip's key-derivation path. */
  deriveKey(label: string, length = 32): Uint8Array {
    if (typeof label !== 'string' || label.length === 0) throw new TypeError('deriveKey: label must be a non-empty string');
    // RFC 5869 §2.2-2.3: extract with a fixed salt, expand with the purpose label as info.
    return hkdf(sha256, this.#huk, te.encode('usbphone/v1 fuse-kdf'), te.encode(label), length);
  }

  /**
   * The fuses file (factory only):
   *   usbphone-fuses v1
   *   uid <16 hex>
   *   huk <64 hex>
   *   check <8 hex>     first 4 bytes of SHA-256(uid || huk), catches a damaged file
   */
  toFile(): string {
    return [
      '# usbphone fuses: the chip\'s hardware-unique key. Factory secret: keep it 0600.',
      FILE_HEADER,
      `uid ${bytesToHex(this.#uid)}`,
      `huk ${bytesToHex(this.#huk)}`,
      `check ${checkOf(this.#uid, this.#huk)}`,
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
    if (lines[0] !== FILE_HEADER) bad(`first line must be "${FILE_HEADER}"`);
    const fields = new Map<string, string>();
    for (const l of lines.slice(1)) {
      const m = /^(uid|huk|check)\s+([0-9a-fA-F]+)$/.exec(l);
      if (!m) bad(`unexpected line "${l.slice(0, 40)}"`);
      if (fields.has(m![1]!)) bad(`duplicate ${m![1]}`);
      fields.set(m![1]!, m![2]!.toLowerCase());
    }
    const uid = fields.get('uid'), huk = fields.get('huk'), check = fields.get('check');
    if (!uid || uid.length !== UID_BYTES * 2) bad(`uid must be ${UID_BYTES * 2} hex digits`);
    if (!huk || huk.length !== HUK_BYTES * 2) bad(`huk must be ${HUK_BYTES * 2} hex digits`);
    const u = hexToBytes(uid!), h = hexToBytes(huk!);
    if (check !== checkOf(u, h)) bad('check does not match (damaged file?)');
    return new Fuses(h, u);
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

function checkOf(uid: Uint8Array, huk: Uint8Array): string {
  const buf = new Uint8Array(uid.length + huk.length);
  buf.set(uid);
  buf.set(huk, uid.length);
  return bytesToHex(sha256(buf).subarray(0, 4));
}
