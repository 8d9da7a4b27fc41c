// A man in the middle for the tampered-reply story (S0.7): relays WebSocket frames between
// phones and the gateway, and flips one bit of the first frame the server sends on each of
// the first `tamperConnections` connections. Loopback only.
import { WebSocketServer, WebSocket } from 'ws';
import type { AddressInfo } from 'node:net';

export interface TamperProxy {
  /** ws://127.0.0.1:PORT/ : put a dest after it. */
  url: string;
  tampered: number;
  close(): Promise<void>;
}

/** `target()` is asked at each connection, so the proxy can start before what it fronts. */
export async function startTamperProxy(target: () => string, opts: { tamperConnections?: number; byte?: number } = {}): Promise<TamperProxy> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((r) => wss.once('listening', () => r()));
  let connections = 0;
  const proxy: TamperProxy = {
    url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}/`,
    tampered: 0,
    close: () =>
      new Promise<void>((r) => {
        for (const c of wss.clients) c.terminate();
        wss.close(() => r());
      }),
  };
  wss.on('connection', (down, req) => {
    const n = connections++;
    const up = new WebSocket(target() + (req.url ?? '/').replace(/^\//, ''));
    let first = true;
    const pending: Buffer[] = [];
    up.on('open', () => pending.splice(0).forEach((f) => up.send(f)));
    down.on('message', (d: Buffer) => (up.readyState === WebSocket.OPEN ? up.send(d) : pending.push(d)));
    up.on('message', (d: Buffer) => {
      const frame = Buffer.from(d);
      if (first && n < (opts.tamperConnections ?? 1)) {
        frame[Math.min(frame.length - 1, opts.byte ?? frame.length - 5)]! ^= 0x01;
        proxy.tampered++;
      }
      first = false;
      if (down.readyState === WebSocket.OPEN) down.send(frame);
    });
    const end = () => {
      if (down.readyState === WebSocket.OPEN) down.close();
      if (up.readyState === WebSocket.OPEN) up.close();
    };
    up.on('close', end);
    up.on('error', () => down.terminate());
    down.on('close', end);
    down.on('error', () => up.terminate());
  });
  return proxy;
}
