// A party on the path between phones and the gateway, for the tests that play one (a man in the
// middle that alters a frame, a relay that withholds, delays or refuses): each connection a phone
// opens gets its own connection to `target()` (asked at each connection, so the relay can start
// before what it fronts); every frame, either way, goes through a hook that passes it on (the
// default), or keeps it and acts through the connection's handle. Close codes pass both ways, as
// through a transparent proxy. Loopback only.
import { WebSocketServer, WebSocket } from 'ws';
import type { AddressInfo } from 'node:net';

/** One phone connection through the relay. */
export interface RelayConn {
  /** 0 for the first connection the relay accepted, then 1, 2, ... */
  readonly n: number;
  /** The path the phone asked for, without its leading '/' (the dest of a gateway URL). */
  readonly path: string;
  toDevice(f: Uint8Array): void;
  /** To the target; queued until its connection is open (opened now if the relay is lazy and has none yet). */
  toUpstream(f: Uint8Array): void;
  /** Closes the phone's side with `code` and `reason`, or cuts it ('terminate', seen as 1006), and the target's with it. */
  end(how: { code: number; reason?: string } | 'terminate'): void;
}

export interface RelayHooks {
  /** A frame from the phone; return false when the hook dealt with it (not passed on). */
  fromDevice?(f: Uint8Array, c: RelayConn): boolean;
  /** A frame from the target; return false when the hook dealt with it. */
  fromUpstream?(f: Uint8Array, c: RelayConn): boolean;
  /** The phone's side closed, with its close code. */
  onDeviceClose?(code: number, c: RelayConn): void;
  /** Connect to the target only when a first frame goes to it (a peer that may refuse before any upstream exists). */
  lazyUpstream?: boolean;
}

export interface Relay {
  /** ws://127.0.0.1:PORT/ : put a dest after it. */
  url: string;
  /** Connections accepted so far. */
  connections(): number;
  close(): Promise<void>;
}

export async function startRelay(target: () => string, hooks: RelayHooks = {}): Promise<Relay> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((r) => wss.once('listening', () => r()));
  let count = 0;
  const ups = new Set<WebSocket>();
  wss.on('connection', (down, req) => {
    const path = (req.url ?? '/').replace(/^\//, '');
    let up: WebSocket | null = null;
    const pending: Uint8Array[] = [];
    let ended = false;
    const connectUp = (): WebSocket => {
      const u = new WebSocket(target() + path, { perMessageDeflate: false });
      up = u;
      ups.add(u);
      u.once('close', () => ups.delete(u));
      u.on('open', () => pending.splice(0).forEach((f) => u.send(f)));
      u.on('message', (m: Buffer) => {
        const f = Uint8Array.from(m);
        if (hooks.fromUpstream?.(f, c) === false) return;
        c.toDevice(f);
      });
      u.on('close', (code, reason) => {
        if (down.readyState !== WebSocket.OPEN) return;
        // 1005 and 1006 are not sent on the wire: a close without a code.
        if (code === 1005 || code === 1006) down.close();
        else down.close(code, reason);
      });
      u.on('error', () => down.terminate());
      return u;
    };
    const c: RelayConn = {
      n: count++,
      path,
      toDevice: (f) => void (down.readyState === WebSocket.OPEN && down.send(f)),
      toUpstream: (f) => {
        if (ended) return;
        const u = up ?? connectUp();
        if (u.readyState === WebSocket.OPEN) u.send(f);
        else pending.push(f);
      },
      end: (how) => {
        ended = true;
        if (how === 'terminate') down.terminate();
        else if (down.readyState === WebSocket.OPEN) down.close(how.code, how.reason);
        if (up) (how === 'terminate' ? up.terminate() : up.readyState === WebSocket.OPEN && up.close());
      },
    };
    if (!hooks.lazyUpstream) connectUp();
    down.on('message', (d: Buffer) => {
      const f = Uint8Array.from(d);
      if (hooks.fromDevice?.(f, c) === false) return;
      c.toUpstream(f);
    });
    down.on('close', (code, reason) => {
      hooks.onDeviceClose?.(code, c);
      if (up?.readyState !== WebSocket.OPEN) return;
      if (code === 1005 || code === 1006) up.close();
      else up.close(code, reason);
    });
    down.on('error', () => up?.terminate());
  });
  return {
    url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}/`,
    connections: () => count,
    /** Cuts every connection, both sides (an upstream still opening too), and stops listening. */
    close: () => new Promise<void>((r) => {
      for (const u of ups) u.terminate();
      for (const x of wss.clients) x.terminate();
      wss.close(() => r());
    }),
  };
}
