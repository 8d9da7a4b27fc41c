// The few Reflect metadata functions tsyringe checks for when it loads (@peculiar/x509 uses
// it as its service container). Its usual providers (reflect-metadata, @abraham/reflection)
// are not installed; @peculiar/x509 only needs the functions to exist, and stores and reads
// back no metadata we rely on. Imported for its side effect, before @peculiar/x509
// (server-kit/tls-ca.ts). Not installed when a real polyfill already is.
type Key = string | symbol | undefined;
const store = new WeakMap<object, Map<Key, Map<unknown, unknown>>>();
const R = Reflect as unknown as Record<string, unknown>;

function table(target: object, prop: Key, make: boolean): Map<unknown, unknown> | undefined {
  let byProp = store.get(target);
  if (!byProp) {
    if (!make) return undefined;
    byProp = new Map();
    store.set(target, byProp);
  }
  let m = byProp.get(prop);
  if (!m && make) {
    m = new Map();
    byProp.set(prop, m);
  }
  return m;
}

if (typeof R.getMetadata !== 'function') {
  const getOwn = (k: unknown, t: object, p?: Key) => table(t, p, false)?.get(k);
  const get = (k: unknown, t: object, p?: Key) => {
    for (let o: object | null = t; o; o = Object.getPrototypeOf(o)) {
      const m = table(o, p, false);
      if (m?.has(k)) return m.get(k);
    }
    return undefined;
  };
  const define = (k: unknown, v: unknown, t: object, p?: Key) => void table(t, p, true)!.set(k, v);
  Object.assign(R, {
    defineMetadata: define,
    getOwnMetadata: getOwn,
    getMetadata: get,
    hasOwnMetadata: (k: unknown, t: object, p?: Key) => table(t, p, false)?.has(k) ?? false,
    hasMetadata: (k: unknown, t: object, p?: Key) => get(k, t, p) !== undefined,
    metadata: (k: unknown, v: unknown) => (t: object, p?: Key) => define(k, v, t, p),
  });
}

export {};
