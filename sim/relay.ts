// A party on the path between phones and the gateway, for the tests that play one (a man in the
// middle that alters a frame, a relay that withholds, delays or refuses): each connection a phone
// opens gets its own connection to `target()` (asked at each connection, so the relay can start
// before what it fronts); every frame, either way, goes through a hook that passes it on (the
// default), or keeps it and acts through the connection's handle. Loopback only.
// As a transparent proxy would, both ways: a frame passes byte for byte and as the kind it was
// sent as (binary or text: a text frame is the gateway's GW_TEXT_FRAME, not to be hidden); a
// close passes with its code and reason (a close frame without a code, 1005, as one without);
// a side that vanishes (its socket destroyed: 1006, no close frame) has the other side cut too,
// seen there as 1006. A phone that closes before the target's connection is open has its frames
// sent, then its close, once it opens. Tested on its own in sim/relay.test.ts.
import { WebSocketServer, WebSocket } from 'ws';
import type { AddressInfo } from 'node:net';

/** One phone connection through the relay. */
export interface RelayConn {
  /** 0 for the first connection the relay accepted, then 1, 2, ... */
  readonly n: number;
  /** The path the phone asked for, without its leading '/' (the dest of a gateway URL). */
  readonly path: string;
  /** To the phone; `binary` false sends a text frame (default binary). */
  toDevice(f: Uint8Array, binary?: boolean): void;
  /** To the target; queued until its connection is open (opened now if the relay is lazy and has none yet). */
  toUpstream(f: Uint8Array, binary?: boolean): void;
  /** Closes the phone's side with `code` and `reason`, or cuts it ('terminate', seen as 1006), and the target's with it. */
  end(how: { code: number; reason?: string } | 'terminate'): void;
}

export interface RelayHooks {
  /** A frame from the phone (`binary` false: a text frame); return false when the hook dealt with it (not passed on). */
  fromDevice?(f: Uint8Array, c: RelayConn, binary: boolean): boolean;
  /** A frame from the target; return false when the hook dealt with it. */
  fromUpstream?(f: Uint8Array, c: RelayConn, binary: boolean): boolean;
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

/**
 * Ends `ws` as its peer's end said: the same code and reason; no code (1005) as a close frame
 * without one; a vanished peer (1006, never on the wire) by cutting `ws` (seen as 1006).
 */
function passClose(ws: WebSocket, code: number, reason: Buffer): void {
  if (code === 1006) ws.terminate();
  else if (code === 1005) ws.close();
  else ws.close(code, reason);
}

export async function startRelay(target: () => string, hooks: RelayHooks = {}): Promise<Relay> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((r) => wss.once('listening', () => r()));
  let count = 0;
  const ups = new Set<WebSocket>();
  wss.on('connection', (down, req) => {
    const path = (req.url ?? '/').replace(/^\//, '');
    let up: WebSocket | null = null;
    const pending: { f: Uint8Array; binary: boolean }[] = [];
    let ended = false;
    // The phone's close while the target's connection was still opening: passed on once it opens.
    let deviceClosed: { code: number; reason: Buffer } | null = null;
    const connectUp = (): WebSocket => {
      const u = new WebSocket(target() + path, { perMessageDeflate: false });
      up = u;
      ups.add(u);
      u.once('close', () => ups.delete(u));
      u.on('open', () => {
        for (const p of pending.splice(0)) u.send(p.f, { binary: p.binary });
        if (deviceClosed) passClose(u, deviceClosed.code, deviceClosed.reason);
      });
      u.on('message', (m: Buffer, binary: boolean) => {
        const f = Uint8Array.from(m);
        if (hooks.fromUpstream?.(f, c, binary) === false) return;
        c.toDevice(f, binary);
      });
      u.on('close', (code, reason) => {
        if (down.readyState === WebSocket.OPEN) passClose(down, code, reason);
      });
      u.on('error', () => down.terminate());
      return u;
    };
    const c: RelayConn = {
      n: count++,
      path,
      toDevice: (f, binary = true) => void (down.readyState === WebSocket.OPEN && down.send(f, { binary })),
      toUpstream: (f, binary = true) => {
        if (ended) return;
        const u = up ?? connectUp();
        if (u.readyState === WebSocket.OPEN) u.send(f, { binary });
        else pending.push({ f, binary });
      },
      end: (how) => {
        ended = true;
        if (how === 'terminate') down.terminate();
        else if (down.readyState === WebSocket.OPEN) down.close(how.code, how.reason);
        if (!up) return;
        if (how === 'terminate') up.terminate();
        else if (up.readyState === WebSocket.OPEN) up.close();
        else if (up.readyState === WebSocket.CONNECTING) deviceClosed = { code: 1005, reason: Buffer.alloc(0) };
      },
    };
    if (!hooks.lazyUpstream) connectUp();
    down.on('message', (d: Buffer, binary: boolean) => {
      const f = Uint8Array.from(d);
      if (hooks.fromDevice?.(f, c, binary) === false) return;
      c.toUpstream(f, binary);
    });
    down.on('close', (code, reason) => {
      hooks.onDeviceClose?.(code, c);
      if (up?.readyState === WebSocket.CONNECTING) deviceClosed ??= { code, reason };
      else if (up?.readyState === WebSocket.OPEN) passClose(up, code, reason);
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
