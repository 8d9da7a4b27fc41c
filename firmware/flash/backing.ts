// Byte stores behind the flash chip model. The chip applies NOR rules (AND on program, fill
// on erase); a backing only stores bytes. Two in-memory implementations here (no node
// imports: firmware may construct them); the file backing is host-side, in ../host/file-backing.ts.
//
// CowBacking is how a fleet of a million devices shares one factory image: every device
// reads the shared, read-only base and keeps private copies of only the pages it changed.
//
// What a backing stores changes through its own write, fill or reset, each of which moves
// `generation`; neither exposes its arrays. MemoryBacking copies the array it is given.
// CowBacking reads its base by reference: the base is the fleet's factory image, made once and
// never written again by any code (a copy would be one more 8 MiB image per fleet: it took the
// 1,500-phone fleet of sim/fleet-scale.test.ts over its 8 KiB per phone, 10.3-10.7 KiB); a caller that wrote into it
// would change every device made from it without moving a generation, so the contract is
// that nothing does. A changed factory image is a new array (image.slice()). The secure
// controller's kept measurement (secure/element.ts) relies on both.

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
  /**
   * Changes with every write, fill or reset through this backing, the only ways its bytes
   * change (absent: a backing that cannot tell, e.g. an image file another process may write). The secure controller of a
   * fleet's phone keeps its boot measurement while it stays the same (secure/element.ts).
   */
  readonly generation?: number;
}

export class MemoryBacking implements FlashBacking {
  /** Private: only write and fill change it (each moves the generation). */
  readonly #bytes: Uint8Array;
  #generation = 0;
  get generation(): number {
    return this.#generation;
  }
  /** A blank (0xFF) flash of `init` bytes, or a copy of `init` (later writes into the caller's array are not seen). */
  constructor(init: number | Uint8Array) {
    this.#bytes = typeof init === 'number' ? new Uint8Array(init).fill(0xff) : Uint8Array.from(init);
  }
  get sizeBytes(): number {
    return this.#bytes.length;
  }
  get privateBytes(): number {
    return this.#bytes.length;
  }
  /** A copy of every byte. */
  snapshot(): Uint8Array {
    return this.#bytes.slice();
  }
  readInto(addr: number, out: Uint8Array): void {
    out.set(this.#bytes.subarray(addr, addr + out.length));
  }
  write(addr: number, data: Uint8Array): void {
    this.#generation++;
    this.#bytes.set(data, addr);
  }
  fill(addr: number, len: number, value: number): void {
    this.#generation++;
    this.#bytes.fill(value, addr, addr + len);
  }
}

/**
 * Copy-on-write over a shared base image, at page granularity: the base is never written
 * (read by reference, not exposed: the caller's factory image, which no code writes again);
 * a device keeps only the pages it changed, each without its trailing 0xFF bytes (a record
 * programmed into an erased page costs its own length, not the page), all packed in one
 * buffer, and a mark per erased sector (whose pages then read 0xFF, not the base). A page
 * that reads as its reference again (the base, or 0xFF in an erased sector) is dropped.
 * Fleets: a phone's login changes six pages in four sectors, about 1.1 KiB (docs/benchmarks.md).
 */
export class CowBacking implements FlashBacking {
  /** The shared base (the caller's array, by reference; not exposed). */
  readonly #base: Uint8Array;
  readonly sectorBytes: number;
  readonly pageBytes: number;
  /**
   * page index -> offset * (pageBytes + 1) + stored length, into #pool; and -(sector + 1) ->
   * 0 for a sector erased over a base that is not all 0xFF there. One map: a phone holds one
   * small map and one buffer, not an object per page.
   */
  readonly #index = new Map<number, number>();
  #pool: Uint8Array = new Uint8Array(0);
  #generation = 0;
  /** Changes with every write, fill and reset (FlashBacking.generation). */
  get generation(): number {
    return this.#generation;
  }

  constructor(base: Uint8Array, sectorBytes = 4096, pageBytes = 256) {
    if (!(base instanceof Uint8Array)) throw new TypeError('base image must be a Uint8Array');
    if (!Number.isInteger(sectorBytes) || sectorBytes <= 0 || base.length % sectorBytes !== 0) {
      throw new RangeError('base image size must be a multiple of sectorBytes');
    }
    if (!Number.isInteger(pageBytes) || pageBytes <= 0 || sectorBytes % pageBytes !== 0) {
      throw new RangeError('sectorBytes must be a multiple of pageBytes');
    }
    this.#base = base;
    this.sectorBytes = sectorBytes;
    this.pageBytes = pageBytes;
  }
  get sizeBytes(): number {
    return this.#base.length;
  }
  /** Bytes of page data this device holds (its changed pages, trailing 0xFF left out). */
  get privateBytes(): number {
    return this.#pool.length;
  }
  /** Indexes of the sectors this device has changed (a page in them, or erased over a non-blank base). */
  changedSectors(): number[] {
    const per = this.sectorBytes / this.pageBytes;
    const s = new Set<number>();
    for (const k of this.#index.keys()) s.add(k < 0 ? -k - 1 : Math.floor(k / per));
    return [...s].sort((a, b) => a - b);
  }
  /** Indexes of the pages this device holds privately. */
  changedPages(): number[] {
    return [...this.#index.keys()].filter((k) => k >= 0).sort((a, b) => a - b);
  }
  /** Forgets every private change: the device is back to the base image. */
  reset(): void {
    this.#generation++;
    this.#index.clear();
    this.#pool = new Uint8Array(0);
  }

  readInto(addr: number, out: Uint8Array): void {
    if (this.#index.size === 0) {
      out.set(this.#base.subarray(addr, addr + out.length));
      return;
    }
    const pb = this.pageBytes;
    let done = 0;
    while (done < out.length) {
      const a = addr + done;
      const p = Math.floor(a / pb);
      const off = a - p * pb;
      const n = Math.min(pb - off, out.length - done);
      const at = this.#index.get(p);
      if (at !== undefined) {
        const start = Math.floor(at / (pb + 1));
        const len = at - start * (pb + 1);
        const have = Math.max(0, Math.min(n, len - off));
        if (have > 0) out.set(this.#pool.subarray(start + off, start + off + have), done);
        if (have < n) out.fill(0xff, done + have, done + n);
      } else if (this.#erasedAt(p)) out.fill(0xff, done, done + n);
      else out.set(this.#base.subarray(a, a + n), done);
      done += n;
    }
  }

  write(addr: number, data: Uint8Array): void {
    this.#generation++;
    this.#apply(addr, data.length, (page, off, from, n) => page.set(data.subarray(from, from + n), off));
  }

  fill(addr: number, len: number, value: number): void {
    this.#generation++;
    const sb = this.sectorBytes;
    // An erase of whole sectors: a mark each, their pages dropped.
    if (value === 0xff && addr % sb === 0 && len % sb === 0) {
      const per = sb / this.pageBytes;
      for (let s = addr / sb; s < (addr + len) / sb; s++) {
        let dropped = false;
        for (let p = s * per; p < (s + 1) * per; p++) dropped = this.#index.delete(p) || dropped;
        if (dropped) this.#repack();
        if (isBlank(this.#base, s * sb, sb)) this.#index.delete(-s - 1);
        else this.#index.set(-s - 1, 0);
      }
      return;
    }
    this.#apply(addr, len, (page, off, _from, n) => page.fill(value, off, off + n));
  }

  #erasedAt(page: number): boolean {
    return this.#index.has(-Math.floor((page * this.pageBytes) / this.sectorBytes) - 1);
  }

  #apply(addr: number, len: number, f: (page: Uint8Array, off: number, from: number, n: number) => void): void {
    const pb = this.pageBytes;
    let done = 0;
    while (done < len) {
      const a = addr + done;
      const p = Math.floor(a / pb);
      const off = a - p * pb;
      const n = Math.min(pb - off, len - done);
      const page = new Uint8Array(pb);
      this.readInto(p * pb, page);
      f(page, off, done, n);
      this.#store(p, page);
      done += n;
    }
  }

  /** Keeps `page` as page p's content, or drops it when it reads as its reference. */
  #store(p: number, page: Uint8Array): void {
    const pb = this.pageBytes;
    const erased = this.#erasedAt(p);
    let same = true;
    for (let i = 0; i < pb && same; i++) same = page[i] === (erased ? 0xff : this.#base[p * pb + i]);
    let len = pb;
    while (len > 0 && page[len - 1] === 0xff) len--;
    this.#index.delete(p);
    if (same) {
      this.#repack();
      return;
    }
    this.#repack(len);
    this.#index.set(p, (this.#pool.length - len) * (pb + 1) + len);
    this.#pool.set(page.subarray(0, len), this.#pool.length - len);
  }

  /** Packs the pages still indexed into a new pool, with `room` bytes free at its end. */
  #repack(room = 0): void {
    const pb = this.pageBytes;
    let total = room;
    for (const [k, at] of this.#index) if (k >= 0) total += at % (pb + 1);
    const pool = new Uint8Array(total);
    let o = 0;
    for (const [k, at] of this.#index) {
      if (k < 0) continue;
      const start = Math.floor(at / (pb + 1));
      const len = at - start * (pb + 1);
      pool.set(this.#pool.subarray(start, start + len), o);
      this.#index.set(k, o * (pb + 1) + len);
      o += len;
    }
    this.#pool = pool;
  }
}

function isBlank(b: Uint8Array, at: number, n: number): boolean {
  for (let i = at; i < at + n; i++) if (b[i] !== 0xff) return false;
  return true;
}
