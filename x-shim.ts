const store = new WeakMap<object, Map<string | symbol | undefined, Map<unknown, unknown>>>();
const R = Reflect as any;
if (typeof R.getMetadata !== 'function') {
  const table = (t: object, p: string | symbol | undefined, make: boolean) => { let m = store.get(t); if (!m) { if (!make) return undefined; m = new Map(); store.set(t, m); } let q = m.get(p); if (!q && make) { q = new Map(); m.set(p, q); } return q; };
  R.defineMetadata = (k: unknown, v: unknown, t: object, p?: string | symbol) => { table(t, p, true)!.set(k, v); };
  R.getOwnMetadata = (k: unknown, t: object, p?: string | symbol) => table(t, p, false)?.get(k);
  R.getMetadata = (k: unknown, t: object, p?: string | symbol) => { for (let o: object | null = t; o; o = Object.getPrototypeOf(o)) { const q = table(o, p, false); if (q?.has(k)) return q.get(k); } return undefined; };
  R.hasMetadata = (k: unknown, t: object, p?: string | symbol) => R.getMetadata(k, t, p) !== undefined;
  R.metadata = (k: unknown, v: unknown) => (t: object, p?: string | symbol) => R.defineMetadata(k, v, t, p);
}
