// The secure controller's own non-volatile memory (a real secure element's EEPROM), outside
// the flash image. Two kinds of content:
// - counters: one monotonic counter per record store. Every record the controller writes
//   carries the next value of its store's counter, sealed with the record; a record whose
//   value is below the counter is an older copy of the flash written back (a rollback), and
//   the controller refuses it (issue 9: "saved-login records carry a monotonic counter held by
//   the controller"). Also the fingerprint retry counter (Nvm.fingerprintTries), which a
//   match resets: a counter the host cannot roll back, as a smart card's PIN try counter.
// - objects: small byte strings the controller keeps only here, never in the flash (S3.3:
//   the enrolled fingerprint template, the per-site fingerprint keys, the per-site TOTP
//   seeds). A copied or restored flash image cannot carry this memory with it, and no
//   command returns an object's bytes.
//
// Not emulated: the EEPROM's own wear and its write time; a write is atomic here.
export interface ControllerNvm {
  /** The counter `id` (0 when never written). */
  read(store: number): number;
  /** Sets it; record-store counters only ever rise. */
  write(store: number, value: number): void;
  /** The object `name`, or null (a copy: wiping it leaves the memory alone). */
  readObject(name: string): Uint8Array | null;
  /** Sets the object (a copy is kept), or deletes it (null). */
  writeObject(name: string, value: Uint8Array | null): void;
}

/** Counters and objects the controller keeps outside the record stores. */
export const Nvm = {
  /** Consecutive fingerprint mismatches since the last match or enrollment. */
  fingerprintTries: 0x20,
} as const;

/** EEPROM room for objects, all together (bytes): a secure element's few KiB. */
export const NVM_OBJECT_BYTES = 8192;

/** Counters in memory: a phone of a fleet or a test (the controller lives as long as its bus, or its parked state: firmware/phone.ts park). */
export function memoryNvm(initial: Record<number, number> = {}, objects: readonly (readonly [string, Uint8Array])[] = []): ControllerNvm & { snapshot(): Record<number, number>; objectNames(): string[] } {
  const c = new Map<number, number>(Object.entries(initial).map(([k, v]) => [Number(k), v]));
  const o = new Map<string, Uint8Array>(objects.map(([k, v]) => [k, Uint8Array.from(v)]));
  return {
    read(store) { return c.get(store) ?? 0; },
    write(store, value) { return void c.set(store, value); },
    readObject(name) {
      const v = o.get(name);
      return v ? Uint8Array.from(v) : null;
    },
    writeObject(name, value) {
      o.get(name)?.fill(0);
      if (value === null) o.delete(name);
      else o.set(name, Uint8Array.from(value));
    },
    snapshot() { return Object.fromEntries(c); },
    objectNames() { return [...o.keys()]; },
  };
}
