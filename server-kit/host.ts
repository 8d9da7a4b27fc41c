// Network front of a registration or business server: a device port (direct WebSocket
// sessions, observed IP = the socket's peer; GET /healthz) and a link port (sessions
// multiplexed on authenticated gateway links, server-kit/link.ts). Both feed the same
// session factory.
import { createServer, type Server, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { Limits } from '../protocol/limits.ts';

import { attachLinkServer, LINK_MAX_PAYLOAD, toBytes, closeReason } from './link.ts';
import { normalizeIp } from './ip.ts';
import type { SessionFactory, SessionTransport } from './session.ts';
import type { ServerMetrics } from './metrics.ts';

export interface HostOptions {
  name: string;
  host: string;
  /** Direct device port; 0 = ephemeral, null = none. */
  devicePort: number | null;
  linkPort: number;
  linkKey: Uint8Array;
  /**
   * PEM certificate and key (contents or file paths): the link port speaks wss://. Needed
   * wherever a link leaves the machine: the frame MACs protect integrity, TLS adds
   * confidentiality (observed IPs, handshake frames) — docs/decisions.md.
   */
  linkTls?: { cert: string; key: string };
  factory: SessionFactory;
  /** Extra status for GET /healthz on the device port. */
  health?: () => Record<string, unknown>;
  /** Served as GET /metrics (Prometheus text) on the device and link ports. */
  metrics?: ServerMetrics;
  /** Most bytes queued to one direct device before it is dropped as a slow peer. */
  maxBufferedBytes?: number;
}

export interface Host {
  devicePort: number | null;
  linkPort: number;
  sessions(): number;
  close(): Promise<void>;
}

export function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error) => reject(e);
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

export function closeServer(server: Server, wss?: WebSocketServer): Promise<void> {
  return new Promise((resolve) => {
    if (wss?.clients) for (const c of wss.clients) c.terminate();
    wss?.close();
    server.closeAllConnections?.();
    server.close(() => resolve());
  });
}

export async function startHost(opts: HostOptions): Promise<Host> {
  const maxBuffered = opts.maxBufferedBytes ?? 256 * 1024;
  let direct = 0;
  const healthz = (req: IncomingMessage, res: ServerResponse) => {
    if (req.method === 'GET' && req.url === '/healthz') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ ok: true, name: opts.name, ...opts.health?.() }));
      return;
    }
    if (req.method === 'GET' && req.url === '/metrics' && opts.metrics) {
      opts.metrics.text().then(
        (text) => res.writeHead(200, { 'content-type': opts.metrics!.registry.contentType }).end(text),
        () => res.writeHead(500).end(),
      );
      return;
    }
    res.writeHead(404).end();
  };

  const pem = (v: string) => (v.includes('-----BEGIN') ? v : readFileSync(v, 'utf8'));
  const linkHttp: Server = opts.linkTls ? createHttpsServer({ cert: pem(opts.linkTls.cert), key: pem(opts.linkTls.key) }, healthz) : createServer(healthz);
  const linkWss = new WebSocketServer({ server: linkHttp, maxPayload: LINK_MAX_PAYLOAD });
  // ws re-emits its http server's errors; a listen error reaches the caller through listen().
  linkWss.on('error', () => {});
  const link = attachLinkServer(linkWss, { name: opts.name, key: opts.linkKey }, opts.factory);
  const linkPort = await listen(linkHttp, opts.linkPort, opts.host);

  let deviceHttp: Server | null = null;
  let deviceWss: WebSocketServer | undefined;
  let devicePort: number | null = null;
  if (opts.devicePort !== null) {
    deviceHttp = createServer(healthz);
    deviceWss = new WebSocketServer({ server: deviceHttp, maxPayload: Limits.maxFrameBytes });
    deviceWss.on('error', () => {});
    deviceWss.on('connection', (ws: WebSocket, req) => {
      direct++;
      let open = true;
      const t: SessionTransport = {
        observedIp: normalizeIp(req.socket.remoteAddress),
        via: 'direct',
        send(frame) {
          if (!open || ws.readyState !== ws.OPEN) return;
          if (ws.bufferedAmount > maxBuffered) {
            open = false;
            ws.terminate();
            return;
          }
          ws.send(frame);
        },
        close(code, reason) {
          if (!open) return;
          open = false;
          ws.close(code, closeReason(reason));
        },
        bufferedAmount: () => ws.bufferedAmount,
      };
      const h = opts.factory(t);
      ws.on('message', (data) => h.onFrame(toBytes(data)));
      ws.on('close', () => {
        direct--;
        open = false;
        h.onClose();
      });
      ws.on('error', () => {
        // ws closes the socket itself (e.g. 1009 for a frame over maxPayload).
      });
    });
    devicePort = await listen(deviceHttp, opts.devicePort, opts.host);
  }

  return {
    devicePort,
    linkPort,
    sessions: () => direct + link.sessions(),
    async close() {
      await Promise.all([closeServer(linkHttp, linkWss), deviceHttp ? closeServer(deviceHttp, deviceWss) : undefined]);
    },
  };
}

