// A flash image on disk: the "byte-addressed flash image" of a single device, and the
// loader for a fleet's shared base image. Host-side only (node:fs); firmware never imports it.
//
// Erase counters do not live in a raw image (real chips do not expose them either); a
// device that wants its wear kept across runs saves them in a sidecar file `<image>.wear`
// (saveWear/loadWear), which `usbphone inspect --wear` reads.
import { closeSync, fstatSync, openSync, readFileSync, readSync, writeFileSync, writeSync, renameSync } from 'node:fs';
import type { FlashBacking } from './backing.ts';

export class FileBacking implements FlashBacking {
  readonly path: string;
  readonly sizeBytes: number;
  #fd: number | null;

  private constructor(path: string, fd: number, size: number) {
    this.path = path;
    this.#fd = fd;
    this.sizeBytes = size;
  }

  /** Opens an existing image read-write. Its size must be the chip size. */
  static open(path: string, expectedBytes?: number): FileBacking {
    const fd = openSync(path, 'r+');
    const size = fstatSync(fd).size;
    if (expectedBytes !== undefined && size !== expectedBytes) {
      closeSync(fd);
      throw new RangeError(`${path}: ${size} bytes, expected ${expectedBytes}`);
    }
    return new FileBacking(path, fd, size);
  }

  /** Creates (or truncates) an image of sizeBytes, erased (0xFF) or holding init. */
  static create(path: string, sizeBytes: number, init?: Uint8Array): FileBacking {
    const data = init ?? new Uint8Array(sizeBytes).fill(0xff);
    if (data.length !== sizeBytes) throw new RangeError('init image has the wrong size');
    writeFileSync(path, data);
    return FileBacking.open(path, sizeBytes);
  }

  get privateBytes(): number {
    return 0; // on disk, not in memory
  }

  readInto(addr: number, out: Uint8Array): void {
    let done = 0;
    while (done < out.length) {
      const n = readSync(this.#handle(), out, done, out.length - done, addr + done);
      if (n <= 0) throw new RangeError(`${this.path}: short read at ${addr + done}`);
      done += n;
    }
  }

  write(addr: number, data: Uint8Array): void {
    let done = 0;
    while (done < data.length) done += writeSync(this.#handle(), data, done, data.length - done, addr + done);
  }

  fill(addr: number, len: number, value: number): void {
    this.write(addr, new Uint8Array(len).fill(value));
  }

  close(): void {
    if (this.#fd !== null) closeSync(this.#fd);
    this.#fd = null;
  }

  #handle(): number {
    if (this.#fd === null) throw new Error(`${this.path}: closed`);
    return this.#fd;
  }
}

/** Reads a base image for a fleet: the returned bytes are shared, read-only by convention. */
export function loadBase(path: string): Uint8Array {
  const b = readFileSync(path);
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

const WEAR_MAGIC = 'UPWEAR1\n';

/** Sidecar of erase counters: "UPWEAR1\n" then one u32 little-endian per sector. */
export function saveWear(path: string, counts: Uint32Array): void {
  const out = new Uint8Array(WEAR_MAGIC.length + counts.length * 4);
  out.set(new TextEncoder().encode(WEAR_MAGIC));
  const dv = new DataView(out.buffer);
  counts.forEach((n, i) => dv.setUint32(WEAR_MAGIC.length + i * 4, n, true));
  writeFileSync(path + '.tmp', out);
  renameSync(path + '.tmp', path);
}

/** Parses a wear sidecar; null if the bytes are not one (wrong magic or length). */
export function parseWear(bytes: Uint8Array, sectors: number): Uint32Array | null {
  const m = new TextDecoder().decode(bytes.subarray(0, WEAR_MAGIC.length));
  if (m !== WEAR_MAGIC || bytes.length !== WEAR_MAGIC.length + sectors * 4) return null;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Uint32Array(sectors);
  for (let i = 0; i < sectors; i++) out[i] = dv.getUint32(WEAR_MAGIC.length + i * 4, true);
  return out;
}

export function loadWear(path: string, sectors: number): Uint32Array | null {
  try {
    return parseWear(new Uint8Array(readFileSync(path)), sectors);
  } catch {
    return null;
  }
}
