// Every limit of every listening port, with its default, in one place (docs/architecture.md
// §"Limits of every port"). Two kinds:
// - PortLimits: what any HTTP/WebSocket listener gets before a request or upgrade is complete
//   (connection cap, header and request timeouts, keep-alive), applied by applyPortLimits();
// - DeviceLimits: what a device-facing WebSocket port enforces on frames (the gateway's port
//   and the servers' direct device ports alike), applied by FrameMeter and the ports.
// gateway/limits.ts adds the gateway's own (links, backpressure) on top of DeviceLimits.
import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import { Limits } from '../protocol/limits.ts';

export interface PortLimits {
  /** Open TCP connections on the port; more are closed at accept (Node's server.maxConnections). */
  maxConnections: number;
  /**
   * A connection that has not sent a complete request head (an HTTP request or WebSocket
   * upgrade) this long after it opened is closed: a raw TCP connection sending nothing, or a
   * trickled header (slowloris).
   */
  headersTimeoutMs: number;
  /** A whole HTTP request (head and body) must arrive within this. */
  requestTimeoutMs: number;
  /** An idle keep-alive HTTP connection is closed after this. */
  keepAliveTimeoutMs: number;
  /**
   * How often Node checks the two timeouts above. Its default (30 s) is what let a silent
   * connection live about 30 s whatever headersTimeout said.
   */
  checkIntervalMs: number;
}

const http: PortLimits = { maxConnections: 1_024, headersTimeoutMs: 5_000, requestTimeoutMs: 10_000, keepAliveTimeoutMs: 5_000, checkIntervalMs: 500 };

/** The defaults of each kind of port. */
export const PortDefaults = {
  /**
   * The gateway's device port. Its TCP cap is not this one: the gateway sets it to its own
   * maxConnections + upgradeSlack (gateway/limits.ts), checked with an error frame after the
   * upgrade, so connections still in their upgrade cannot exhaust descriptors.
   */
  gateway: { ...http },
  /** A server's direct device port (off unless configured). */
  device: { ...http, maxConnections: 2_048 },
  /** A server's link port: a handful of gateways. */
  link: { ...http, maxConnections: 64 },
  /** A business server's admin API (reg servers call it). */
  admin: { ...http, maxConnections: 256 },
  /** The operator port (/healthz, /metrics): scraped by monitoring. */
  operator: { ...http, maxConnections: 64 },
  /**
   * The mobile operator's HTTPS API (operator-server/): a few banks, each with a keep-alive
   * pool. A request is a small JSON body, so it must be whole within 5 s.
   */
  mobileOperator: { ...http, maxConnections: 256, requestTimeoutMs: 5_000 },
} satisfies Record<string, PortLimits>;

/** Largest request body of the mobile operator's API (its JSON bodies are under 200 bytes). */
export const MOBILE_OPERATOR_MAX_BODY = 4 * 1024;

const kHeadDone = Symbol('usbphone.headDone');
const kTls = Symbol('usbphone.tlsSocket');
type TrackedSocket = Socket & { [kHeadDone]?: boolean; [kTls]?: TrackedSocket; parser?: unknown; _parent?: TrackedSocket };

/** Applies `l` to a server before it listens (the check interval is read at listen time). */
export function applyPortLimits(server: Server, l: PortLimits): void {
  server.maxConnections = l.maxConnections;
  server.headersTimeout = l.headersTimeoutMs;
  server.requestTimeout = l.requestTimeoutMs;
  server.keepAliveTimeout = l.keepAliveTimeoutMs;
  (server as Server & { connectionsCheckingInterval: number }).connectionsCheckingInterval = l.checkIntervalMs;
  // Node times out a request head only once its parser has seen a message begin: a connection
  // that sends nothing (or too little) lives on. So every connection gets its own deadline:
  // at headersTimeoutMs it must have completed a request head ('request' marks it) or an
  // upgrade (Node then detaches its HTTP parser: socket.parser is null), else it is closed.
  // Behind TLS (https, wss) 'connection' gives the raw socket and the HTTP parser sits on the
  // TLS socket made from it: a raw socket whose handshake never completed is closed too.
  server.on('request', (req) => {
    (req.socket as TrackedSocket)[kHeadDone] = true;
  });
  server.on('secureConnection', (tls: TrackedSocket) => {
    if (tls._parent) tls._parent[kTls] = tls;
  });
  const tlsServer = 'setSecureContext' in server;
  server.on('connection', (sock: TrackedSocket) => {
    const t = setTimeout(() => {
      const s = tlsServer ? sock[kTls] : sock;
      if (!s) sock.destroy();
      else if (!s[kHeadDone] && s.parser) s.destroy();
    }, l.headersTimeoutMs);
    t.unref();
    sock.once('close', () => clearTimeout(t));
  });
}

/** What a device-facing WebSocket port enforces on every connection. */
export interface DeviceLimits {
  /** Largest message, read from the frame headers before anything is buffered (GW_FRAME_TOO_LARGE, 1009). */
  maxFrameBytes: number;
  /** Open device connections from one IP (GW_TOO_MANY_PER_IP, 1013). */
  maxConnectionsPerIp: number;
  /**
   * WebSocket frames per second per connection, sustained, and the burst above it
   * (GW_RATE_LIMITED, 1008). Every frame counts, data and control, fragment or whole: a
   * stream of continuation frames that never completes a message is a flood too.
   */
  framesPerSecond: number;
  frameBurst: number;
  /**
   * Most WebSocket frames one message may be split into (GW_FRAGMENTED, 1008). Devices never
   * fragment; a few are allowed for clients whose library does.
   */
  maxFragments: number;
  /**
   * Most socket reads one message may arrive in (GW_TRICKLED, 1008). Each read is a buffer the
   * WebSocket parser keeps until the message completes; a message trickled a byte at a time
   * would pin thousands of them.
   */
  maxReadsPerMessage: number;
  /** A message must complete this long after its first byte arrived (GW_FRAME_TIMEOUT, 1008). */
  messageTimeoutMs: number;
  /** A refused connection that does not finish the close handshake is dropped after this. */
  closeGraceMs: number;
}

export const DeviceDefaults: DeviceLimits = {
  maxFrameBytes: Limits.maxFrameBytes,
  maxConnectionsPerIp: 256,
  framesPerSecond: 20,
  frameBurst: 40,
  maxFragments: 4,
  maxReadsPerMessage: 32,
  messageTimeoutMs: 10_000,
  closeGraceMs: 1_000,
};
