// Byte stores behind the flash chip model. The chip applies NOR rules (AND on program, fill
// on erase); a backing only stores bytes. Two in-memory implementations here (no node
// imports: firmware may construct them); the file backing is in file-backing.ts.
//
// CowBacking is how a fleet of thousands of devices shares one factory image: every device
// reads the shared, read-only base and keeps private copies of only the sectors it changed.

export interface FlashBacking {
  readonly sizeBytes: number;
  /** Copies bytes [addr, addr + out.length) into out. Caller checks the range. */
  readInto(addr: number, out: Uint8Array): void;
  /** Stores data at addr (already NOR-combined by the chip). */
  write(addr: number, data: Uint8Array): void;
  /** Sets len bytes at addr to value (an erase). */
  fill(addr: number, len: number, value: number): void;
  /** Bytes this backing holds privately (not shared with other devices). */
  readonly privateBytes: number;
}

export class MemoryBacking implements FlashBacking {
  readonly bytes: Uint8Array;
  constructor(init: number | Uint8Array) {
    this.bytes = typeof init === 'number' ? new Uint8Array(init).fill(0xff) : init;
  }
  get sizeBytes(): number {
    return this.bytes.length;
  }
  get privateBytes(): number {
    return this.bytes.length;
  }
  readInto(addr: number, out: Uint8Array): void {
    out.set(this.bytes.subarray(addr, addr + out.length));
  }
  write(addr: number, data: Uint8Array): void {
    this.bytes.set(data, addr);
  }
  fill(addr: number, len: number, value: number): void {
    this.bytes.fill(value, addr, addr + len);
  }
}

/**
 * Copy-on-write over a shared base image. The base is never written: the first write to a
 * sector copies that sector into this device's private map.
 */
export class CowBacking implements FlashBacking {
  readonly base: Uint8Array;
  readonly sectorBytes: number;
  readonly #own = new Map<number, Uint8Array>();
  constructor(base: Uint8Array, sectorBytes = 4096) {
    if (!(base instanceof Uint8Array)) throw new TypeError('base image must be a Uint8Array');
    if (!Number.isInteger(sectorBytes) || sectorBytes <= 0 || base.length % sectorBytes !== 0) {
      throw new RangeError('base image size must be a multiple of sectorBytes');
    }
    this.base = base;
    this.sectorBytes = sectorBytes;
  }
  get sizeBytes(): number {
    return this.base.length;
  }
  get privateBytes(): number {
    return this.#own.size * this.sectorBytes;
  }
  /** Indexes of the sectors this device has changed. */
  changedSectors(): number[] {
    return [...this.#own.keys()].sort((a, b) => a - b);
  }
  /** Forgets every private change: the device is back to the base image. */
  reset(): void {
    this.#own.clear();
  }

  readInto(addr: number, out: Uint8Array): void {
    const sb = this.sectorBytes;
    let done = 0;
    while (done < out.length) {
      const a = addr + done;
      const s = Math.floor(a / sb);
      const off = a - s * sb;
      const n = Math.min(sb - off, out.length - done);
      const own = this.#own.get(s);
      out.set(own ? own.subarray(off, off + n) : this.base.subarray(a, a + n), done);
      done += n;
    }
  }

  write(addr: number, data: Uint8Array): void {
    this.#apply(addr, data.length, (sector, off, from, n) => sector.set(data.subarray(from, from + n), off));
  }

  fill(addr: number, len: number, value: number): void {
    this.#apply(addr, len, (sector, off, _from, n) => sector.fill(value, off, off + n));
  }

  #apply(addr: number, len: number, f: (sector: Uint8Array, off: number, from: number, n: number) => void): void {
    const sb = this.sectorBytes;
    let done = 0;
    while (done < len) {
      const a = addr + done;
      const s = Math.floor(a / sb);
      const off = a - s * sb;
      const n = Math.min(sb - off, len - done);
      let own = this.#own.get(s);
      if (!own) {
        own = this.base.slice(s * sb, (s + 1) * sb);
        this.#own.set(s, own);
      }
      f(own, off, done, n);
      done += n;
    }
  }
}
