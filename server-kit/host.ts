// Network front of a registration or business server: a link port (sessions multiplexed on
// authenticated gateway links, server-kit/link.ts; GET /healthz and GET /metrics for the
// operator, never on a device-facing port) and optionally a direct device port (WebSocket
// sessions, observed IP = the socket's peer) under the same device limits as the gateway's
// port (server-kit/limits.ts, frame-meter.ts). Both feed the same session factory. Every port
// gets the caps and timeouts of server-kit/limits.ts.
import { createServer, type Server, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { Limits } from '../protocol/limits.ts';
import { CloseCode } from '../protocol/errors.ts';
import { applyPortLimits, PortDefaults, DeviceDefaults, type PortLimits, type DeviceLimits } from './limits.ts';
import { FrameMeter, interpose } from './frame-meter.ts';
import type { Socket } from 'node:net';

import { attachLinkServer, LINK_MAX_PAYLOAD, toBytes, closeReason } from './link.ts';
import { normalizeIp } from './ip.ts';
import type { SessionFactory, SessionTransport } from './session.ts';
import type { ServerMetrics } from './metrics.ts';
import { useCryptoEngine } from '../protocol/crypto-engine.ts';
import { nodeEngine } from '../protocol/native-crypto.ts';
import { offerMemoryLink } from './memory-link.ts';
import { isSessionsFrame } from '../protocol/messages.ts';

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
  /** Extra status for GET /healthz on the link port. */
  health?: () => Record<string, unknown>;
  /** Served as GET /metrics (Prometheus text) on the link port. */
  metrics?: ServerMetrics;
  /** Most bytes queued to one direct device before it is dropped as a slow peer. */
  maxBufferedBytes?: number;
  /** Limits of the direct device port (default DeviceDefaults) and of each port's HTTP side. */
  deviceLimits?: Partial<DeviceLimits>;
  portLimits?: { device?: PortLimits; link?: PortLimits };
}

export interface Host {
  devicePort: number | null;
  linkPort: number;
  sessions(): number;
  close(): Promise<void>;
}

/** Listens with the port limits of server-kit/limits.ts (by default those of an HTTP API port). */
export function listen(server: Server, port: number, host: string, limits: PortLimits = PortDefaults.admin): Promise<number> {
  applyPortLimits(server, limits);
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
  // A server runs the protocol's primitives on node:crypto (issue 15): the same bytes as the
  // noble reference (native-crypto.test.ts), less CPU per login. For the whole process: a
  // phone simulated in the same process gets them too, as from its chip's crypto block.
  useCryptoEngine(nodeEngine);
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
  const linkPort = await listen(linkHttp, opts.linkPort, opts.host, opts.portLimits?.link ?? PortDefaults.link);
  // A gateway in this process links in memory (memory-link.ts): the same link protocol, no
  // socket. Not a TLS link port: whoever configured TLS gets it, and its certificate check.
  const withdrawMemoryLink = opts.linkTls ? () => {} : offerMemoryLink(opts.host, linkPort, (s) => link.accept(s as unknown as WebSocket, 'in-process'));
  const DL: DeviceLimits = { ...DeviceDefaults, ...opts.deviceLimits };
  const perIp = new Map<string, number>();
  // One sweep for unfinished messages rather than a timer per connection.
  const partial = new Set<{ meter: FrameMeter; drop(code: string, closeCode: number): void }>();
  const sweep = setInterval(() => {
    const cutoff = performance.now() - DL.messageTimeoutMs;
    for (const w of partial) {
      const p = w.meter.partialSince;
      if (p && p < cutoff) w.drop('GW_FRAME_TIMEOUT', CloseCode.policy);
    }
  }, Math.max(50, Math.min(1_000, DL.messageTimeoutMs / 4)));
  sweep.unref();

  let deviceHttp: Server | null = null;
  let deviceWss: WebSocketServer | undefined;
  let devicePort: number | null = null;
  if (opts.devicePort !== null) {
    deviceHttp = createServer((_req, res) => res.writeHead(404).end());
    deviceWss = new WebSocketServer({ server: deviceHttp, maxPayload: Math.min(DL.maxFrameBytes, Limits.maxFrameBytes), perMessageDeflate: false, skipUTF8Validation: true });
    deviceWss.on('error', () => {});
    deviceWss.on('connection', (ws: WebSocket, req) => {
      direct++;
      let open = true;
      const ip = normalizeIp(req.socket.remoteAddress);
      perIp.set(ip, (perIp.get(ip) ?? 0) + 1);
      const sock = req.socket as Socket;
      // The gateway's limits, refused the same way minus the error frame (the session's seq
      // belongs to the session): close code and the code as reason.
      const drop = (code: string, closeCode: number) => {
        if (!open) return;
        open = false;
        sock.pause();
        ws.close(closeCode, code);
        setTimeout(() => ws.terminate(), DL.closeGraceMs).unref();
      };
      const meter = new FrameMeter(DL);
      // Metered until the socket closes, also while the close handshake runs.
      interpose(sock, (chunk) => {
        const e = meter.feed(chunk);
        if (!e) return true;
        drop(e.code, e.closeCode);
        sock.pause();
        return false;
      });
      const watched = { meter, drop };
      partial.add(watched);
      const t: SessionTransport = {
        observedIp: ip,
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
          setTimeout(() => ws.terminate(), DL.closeGraceMs).unref();
        },
        bufferedAmount: () => ws.bufferedAmount,
      };
      ws.on('close', () => {
        partial.delete(watched);
        const n = (perIp.get(ip) ?? 1) - 1;
        if (n <= 0) perIp.delete(ip);
        else perIp.set(ip, n);
      });
      if (perIp.get(ip)! > DL.maxConnectionsPerIp) {
        direct--;
        drop('GW_TOO_MANY_PER_IP', CloseCode.tryAgainLater);
        return;
      }
      const h = opts.factory(t);
      ws.on('message', (data) => {
        if (!open) return;
        const f = toBytes(data);
        // docs/protocol.md §2.1: a direct port runs one session per connection; a device's
        // `sessions` (outside every session) is ignored, never answered.
        if (isSessionsFrame(f)) return;
        h.onFrame(f);
      });
      ws.on('close', () => {
        direct--;
        open = false;
        h.onClose();
      });
      ws.on('error', () => {
        // ws closes the socket itself (e.g. 1009 for a frame over maxPayload).
      });
    });
    devicePort = await listen(deviceHttp, opts.devicePort, opts.host, opts.portLimits?.device ?? PortDefaults.device);
  }

  return {
    devicePort,
    linkPort,
    sessions: () => direct + link.sessions(),
    async close() {
      clearInterval(sweep);
      withdrawMemoryLink();
      await Promise.all([closeServer(linkHttp, linkWss), deviceHttp ? closeServer(deviceHttp, deviceWss) : undefined]);
    },
  };
}

