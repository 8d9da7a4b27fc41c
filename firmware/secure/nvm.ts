// The secure controller's own non-volatile memory (a real secure element's EEPROM): one
// monotonic counter per record store, outside the flash image. Every record the controller
// writes carries the next value of its store's counter, sealed with the record; a record whose
// value is below the counter is an older copy of the flash written back (a rollback), and the
// controller refuses it (issue 9: "saved-login records carry a monotonic counter held by the
// controller"). A copied or restored flash image cannot carry this memory with it.
//
// Not emulated: the EEPROM's own wear and its write time; a counter write is atomic here.
export interface ControllerNvm {
  /** The counter of record store `store` (0 when never written). */
  read(store: number): number;
  /** Sets it; the controller only ever raises it. */
  write(store: number, value: number): void;
}

/** Counters in memory: a phone of a fleet or a test (the controller lives as long as its bus). */
export function memoryNvm(initial: Record<number, number> = {}): ControllerNvm & { snapshot(): Record<number, number> } {
  const c = new Map<number, number>(Object.entries(initial).map(([k, v]) => [Number(k), v]));
  return {
    read: (store) => c.get(store) ?? 0,
    write: (store, value) => void c.set(store, value),
    snapshot: () => Object.fromEntries(c),
  };
}
