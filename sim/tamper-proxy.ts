// A man in the middle for the tampered-reply story (S0.7): relays WebSocket frames between
// phones and the gateway (sim/relay.ts), and flips one bit of the first frame the server sends on each of
// the first `tamperConnections` connections. Loopback only.
import { startRelay } from './relay.ts';

export interface TamperProxy {
  /** ws://127.0.0.1:PORT/ : put a dest after it. */
  url: string;
  tampered: number;
  close(): Promise<void>;
}

/** `target()` is asked at each connection, so the proxy can start before what it fronts. */
export async function startTamperProxy(target: () => string, opts: { tamperConnections?: number; byte?: number } = {}): Promise<TamperProxy> {
  const firstSeen = new Set<number>();
  const relay = await startRelay(target, {
    fromUpstream: (f, c) => {
      if (firstSeen.has(c.n)) return true;
      firstSeen.add(c.n);
      if (c.n >= (opts.tamperConnections ?? 1)) return true;
      const frame = Uint8Array.from(f);
      frame[Math.min(frame.length - 1, opts.byte ?? frame.length - 5)]! ^= 0x01;
      proxy.tampered++;
      c.toDevice(frame);
      return false;
    },
  });
  const proxy: TamperProxy = { url: relay.url, tampered: 0, close: relay.close };
  return proxy;
}
