// The gateway (the front door, the S3 management center): terminates device WebSockets
// (ws://, or wss:// given a certificate and key), validates every frame before forwarding it
// (validate.ts), routes it by envelope dest to the upstream server over that server's
// authenticated link (upstream.ts), tells the server the client IP it observed on the socket
// (never one the device states), relays replies back, enforces the limits of limits.ts, counts
// login openings for attack detection (attacks.ts, S3.4) and reports attacks per period to a
// sink (attack-reporter.ts, S3.5), and serves GET /healthz and GET /metrics.
import { createServer as createHttpServer, type Server, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { readFileSync } from 'node:fs';
import { WebSocketServer, type WebSocket, type RawData } from 'ws';
import { encodeEnvelope, decodeEnvelope, parseError, errorBody, tablePushFrame, sessionsFrame, sessionEndFrame, MsgType, type Envelope, type Mechanism } from '../protocol/messages.ts';
import { ProtocolError, CloseCode } from '../protocol/errors.ts';
import type { Socket } from 'node:net';
import { toBytes, closeReason, type LinkSocket } from '../server-kit/link.ts';
import { normalizeIp } from '../server-kit/ip.ts';
import { listen, closeServer } from '../server-kit/host.ts';
import { FrameMeter, interpose } from '../server-kit/frame-meter.ts';
import { createLogger, type Logger } from '../server-kit/log.ts';
import { GatewayDefaults, type GatewayLimits } from './limits.ts';
import { validateDeviceFrame, peekType } from './validate.ts';
import { GatewayMetrics } from './metrics.ts';
import { UpstreamLink } from './upstream.ts';
import { AttackCounter, addressGroup, type AttackLimits } from './attacks.ts';
import { AttackReporter, realTimers, type AttackSink, type Timers } from './attack-reporter.ts';
import { RedisAttackWindow } from './shared-attacks.ts';
import { SharedState, type SharedStateConfig } from '../server-kit/redis.ts';

export interface UpstreamConfig {
  name: string;
  linkUrl: string;
  linkKey: Uint8Array;
  /** PEM (contents or file path) of the certificate(s) a wss:// link server must chain to. */
  linkCa?: string;
}

export interface GatewayConfig {
  host: string;
  port: number;
  upstreams: UpstreamConfig[];
  /** PEM certificate and key (contents or file paths): serve wss:// instead of ws://. */
  tls?: { cert: string; key: string };
  /** Port of GET /healthz and GET /metrics (0 = ephemeral; absent = not served). */
  operatorPort?: number;
  limits?: Partial<GatewayLimits>;
  /**
   * Told of every frame the gateway forwards or sends, by type and dest (never its bytes):
   * the live page draws the protocol from it (deploy/feed-hub.ts). Called in line: keep it cheap.
   */
  observe?: FrameObserver;
  /**
   * More routes on the operator port (the live page and its feed): returns true when it
   * answered the request. /healthz and /metrics stay the gateway's own.
   */
  operatorRoutes?: (req: IncomingMessage, res: ServerResponse) => boolean;
  /** Attack counting (S3.4; attacks.ts): on by default. */
  attacks?: Partial<AttackLimits>;
  /**
   * Issue 16: the Redis the gateways of a deployment share: the attack window is counted there
   * (shared-attacks.ts), so an attacker alternating gateways is counted once. Absent: this process's own.
   */
  redis?: SharedStateConfig;
  /**
   * Where each period's attack report goes (S3.5; attack-reporter.ts): deploy/ plugs in the
   * policy server. Without it attacks are still counted (metrics, log lines), not reported.
   */
  attackReports?: { gateway: string; send: AttackSink; maxQueue?: number; sendTimeoutMs?: number };
  /** The attack counter's and reporter's clock and timers (tests: a virtual clock). */
  attackTimers?: Timers;
  /**
   * The sockets seam (the deterministic simulation, sim/dsim-gateway.ts): no port is opened,
   * devices come in through Gateway.accept, the upstream links through io.connectLink, and every
   * clock and timer of the gateway and its links is io.timers. Absent: real sockets and timers.
   */
  io?: GatewayIo;
  log?: Logger;
  /** Tests: the id counter (its `next` is the next id tried), to start it near the wrap. */
  ids?: { next: number };
}

export interface GatewayIo {
  connectLink(url: string): LinkSocket;
  timers: Timers;
}

/**
 * The part of ws's WebSocket the gateway uses of a device connection. Over the sockets seam
 * (GatewayConfig.io) there is no TCP socket under it: the frame meter (frame-level limits read
 * from raw bytes) and the slow-upgrade limits are a socket's and do not run.
 */
export interface DeviceSocket {
  readonly readyState: number;
  readonly OPEN: number;
  readonly bufferedAmount: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  terminate(): void;
  pause(): void;
  resume(): void;
  on(ev: 'message', fn: (data: RawData, isBinary: boolean) => void): unknown;
  on(ev: 'close', fn: () => void): unknown;
  on(ev: 'error', fn: (e: Error & { code?: string }) => void): unknown;
}

/** A frame seen by the gateway: 'up' from a device towards `dest`, 'down' back to it. */
export interface FrameSeen {
  conn: number;
  ip: string;
  dir: 'up' | 'down';
  /** Envelope type (protocol/messages.ts MsgType). */
  type: number;
  dest: string;
  /** For an error frame: its code; `byGateway` when the gateway itself refused. */
  code?: string;
  byGateway?: boolean;
  /** For a login opening: the mechanism it states in clear (S3.1, S3.4). */
  mech?: Mechanism;
}
export type FrameObserver = (f: FrameSeen) => void;

export interface Gateway {
  port: number;
  url: string;
  /** 'http://host:port/' of /healthz and /metrics, or null. */
  operatorUrl: string | null;
  metrics: GatewayMetrics;
  /** The attack counter (null when attacks.enabled is false) and the period reporter (null without a sink). */
  attacks: AttackCounter | null;
  attackReporter: AttackReporter | null;
  upstream(name: string): UpstreamLink | undefined;
  /** Adds an upstream, or points an existing one at a new link address. */
  setUpstream(u: UpstreamConfig): void;
  /** Resolves when every upstream link is up (false after timeoutMs). */
  waitUpstreams(timeoutMs?: number, names?: string[]): Promise<boolean>;
  connections(): number;
  /**
   * Takes a device connection from remoteAddress that has no socket under it (GatewayConfig.io):
   * every rule runs but the frame meter's. The port's own connections take the same path with their socket.
   */
  accept(ws: DeviceSocket, remoteAddress: string | undefined): void;
  /**
   * S3.11: pushes the policy server's newest signed table to every connected device
   * (protocol/messages.ts tablePushFrame: outside the sessions' sequence; the phones check the
   * signature). Returns how many devices it was sent to.
   */
  pushTable(table: Uint8Array): number;
  close(): Promise<void>;
}

interface Conn {
  id: number;
  ws: DeviceSocket;
  ip: string;
  /** The attack counter's key for ip (IPv6 by /64), or '' with counting off. */
  group: string;
  dest: string | null;
  up: UpstreamLink | null;
  /**
   * The open session's connection id on its upstream link (0: none). A connection's first
   * session uses the connection's id; each later one (sessions in sequence, docs/protocol.md
   * §2.1) a fresh id, so nothing a server sends for an ended session reaches the next one.
   */
  sid: number;
  /** The device asked for sessions in sequence and the gateway answered (§2.1). */
  inSequence: boolean;
  /** Sessions opened on this connection so far: the open (or last) session's number (§2.1). */
  n: number;
  /** The dest of the session that ended last (a device's sessionEnd may cross the server's). */
  lastDest: string | null;
  /** Reads every frame header before ws buffers the frame (rate, size, fragments, text). */
  meter: FrameMeter;
  /** Null over the sockets seam. */
  sock: Socket | null;
  lastActive: number;
  /** Frames forwarded to the device: the seq the gateway's own error frame would carry. */
  toDevice: number;
  waitingSince: number;
  closed: boolean;
}

/** The code of an error frame (its body is in clear), or 'unreadable'; only for the observer. */
function errorCodeOf(frame: Uint8Array): string {
  try {
    return parseError(decodeEnvelope(frame).body).code;
  } catch {
    return 'unreadable';
  }
}

const pem = (v: string) => (v.includes('-----BEGIN') ? v : readFileSync(v, 'utf8'));

/** Types only the gateway sends to a device: a server's frame of one of them is never forwarded. */
const GATEWAY_ONLY: ReadonlySet<number> = new Set([MsgType.tablePush, MsgType.sessions, MsgType.sessionEnd]);

export async function startGateway(cfg: GatewayConfig): Promise<Gateway> {
  const L: GatewayLimits = { ...GatewayDefaults, ...cfg.limits };
  const log = cfg.log ?? createLogger('gateway');
  const io = cfg.io;
  // Over the sockets seam the process's own metrics (GC, event loop) are not this gateway's.
  const metrics = new GatewayMetrics(!cfg.io);
  const conns = new Map<number, Conn>();
  /** Open sessions by their link connection id (Conn.sid). */
  const sessions = new Map<number, Conn>();
  const perIp = new Map<string, number>();
  const upstreams = new Map<string, UpstreamLink>();
  const byUpstream = new Map<string, Set<Conn>>();
  const paused = new Map<string, Set<Conn>>();
  const observe = cfg.observe;
  const ids = cfg.ids ?? { next: 1 };
  /**
   * Connection ids and link session ids come from one counter: never two alike while alive.
   * After the wrap an id still live (a held connection's, an open session's) is skipped: a
   * repeat would overwrite `conns`, and an OPEN of a live id makes the server drop the link.
   */
  const takeId = () => {
    for (;;) {
      const id = ids.next;
      ids.next = id >= 0xffffffff || id < 1 ? 1 : id + 1;
      if (id >= 1 && id <= 0xffffffff && !conns.has(id) && !sessions.has(id)) return id;
    }
  };

  const timers = io?.timers ?? cfg.attackTimers ?? realTimers;
  /** The gateway's monotonic clock (activity, latency, the sweep). */
  const clock = io ? () => io.timers.now() : () => performance.now();
  /** An attempt's time on the counter's clock, from the clock() taken for its frame. */
  const attackTime = io || cfg.attackTimers ? () => timers.now() : (perfNow: number) => performance.timeOrigin + perfNow;
  const later = (fn: () => void, ms: number): unknown => {
    if (io) return io.timers.setTimeout(fn, ms);
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  };
  const shared = cfg.redis && cfg.attacks?.enabled !== false ? new SharedState(cfg.redis) : null;
  const counter = cfg.attacks?.enabled === false ? null : new AttackCounter(cfg.attacks, {
    now: timers.now,
    ...(shared ? { shared: new RedisAttackWindow(shared, cfg.attacks) } : {}),
    onAttack(a) {
      metrics.attacks.inc({ site: a.site, mech: a.mech });
      log.info('attack detected', { ip: a.group, site: a.site, mech: a.mech });
    },
  });
  if (counter) metrics.trackedIps = () => counter.tracked;
  if (counter && shared) metrics.sharedFallbacks = () => counter.sharedFallbacks;
  const reporter = counter && cfg.attackReports ? new AttackReporter({
    ...cfg.attackReports,
    counter,
    timers,
    onEvent(e) {
      metrics.attackReports.inc({ outcome: e.outcome });
      metrics.attackReportsQueued.set(reporter!.queued);
      if (e.outcome === 'failed' || e.outcome === 'rejected' || e.outcome === 'dropped') log.warn('attack report ' + e.outcome, { periodId: e.periodId, attempts: e.attempts, reason: e.reason });
    },
  }) : null;

  const operator = (req: IncomingMessage, res: ServerResponse) => {
    if (req.method === 'GET' && req.url === '/healthz') {
      const ups = Object.fromEntries([...upstreams].map(([n, u]) => [n, u.up ? 'up' : 'down']));
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ ok: true, connections: conns.size, upstreams: ups }));
      return;
    }
    if (cfg.operatorRoutes?.(req, res)) return;
    if (req.method === 'GET' && req.url === '/metrics') {
      metrics.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
        () => res.writeHead(500).end(),
      );
      return;
    }
    res.writeHead(404).end();
  };
  // The device port answers nothing but WebSocket upgrades.
  const http = (_req: IncomingMessage, res: ServerResponse) => res.writeHead(404).end();
  const server: Server | null = io ? null : cfg.tls ? createHttpsServer({ cert: pem(cfg.tls.cert), key: pem(cfg.tls.key) }, http) : createHttpServer(http);
  // A client that opens TCP and never finishes its HTTP upgrade is dropped (slowloris), at
  // headersTimeoutMs, not at Node's 30 s check.
  const portLimits = { ...L.port, maxConnections: L.maxConnections + L.upgradeSlack };
  // Text frames are refused from their header (the meter), so ws need not validate UTF-8:
  // every text frame, valid UTF-8 or not, gets GW_TEXT_FRAME (1003), as docs/errors.md says.
  const wss = server && new WebSocketServer({ server, maxPayload: L.hardMaxFrameBytes, perMessageDeflate: false, clientTracking: false, skipUTF8Validation: true });
  // ws re-emits its http server's errors; a listen error reaches the caller through listen().
  wss?.on('error', () => {});

  const release = (c: Conn) => {
    if (c.closed) return false;
    c.closed = true;
    conns.delete(c.id);
    metrics.connections.set(conns.size);
    const n = (perIp.get(c.ip) ?? 1) - 1;
    if (n <= 0) perIp.delete(c.ip);
    else perIp.set(c.ip, n);
    if (c.dest) {
      byUpstream.get(c.dest)?.delete(c);
      paused.get(c.dest)?.delete(c);
    }
    if (c.sid) sessions.delete(c.sid);
    return true;
  };

  /**
   * Sessions in sequence (docs/protocol.md §2.1): the open session ends and the connection
   * stays, with no session. `byDevice`: the device's sessionEnd (the server's side is closed
   * 1000); else the device is told with a sessionEnd carrying what the close would have.
   */
  const endSession = (c: Conn, code: number, reason: string, byDevice: boolean) => {
    const up = c.up;
    const dest = c.dest!;
    const sid = c.sid;
    sessions.delete(sid);
    byUpstream.get(dest)?.delete(c);
    if (paused.get(dest)?.delete(c)) c.ws.resume();
    c.lastDest = dest;
    c.dest = null;
    c.up = null;
    c.sid = 0;
    c.waitingSince = 0;
    if (byDevice) {
      c.lastDest = null;
      up?.close(sid, CloseCode.normal, 'device ended the session');
      return;
    }
    if (c.ws.readyState !== c.ws.OPEN) return;
    // A normal end is [1000, ""] whatever reason the server gave (§2.1 rule 3): it is the one
    // sessionEnd a connection outlives (it may cross the device's own), so it carries nothing
    // the device could not check; a reason it could not check would be given up on.
    c.ws.send(sessionEndFrame(c.n, dest, code, code === CloseCode.normal ? '' : reason));
    metrics.frameOut(MsgType.sessionEnd);
  };

  /**
   * A refusal that is the upstream's, not the device's (GW_UPSTREAM_UNAVAILABLE, GW_UPSTREAM_LOST):
   * on a connection in sequence it ends the session only (error frame, then sessionEnd);
   * otherwise it closes the connection as every refusal does.
   */
  const refuseSession = (c: Conn, e: ProtocolError, prevSeq: number | null) => {
    if (c.closed) return;
    if (!c.inSequence || c.dest === null) return refuse(c, e, prevSeq);
    metrics.errors.inc({ code: e.code });
    log.info('session refused', { code: e.code, ip: c.ip, dest: c.dest });
    observe?.({ conn: c.id, ip: c.ip, dir: 'down', type: MsgType.error, dest: c.dest, code: e.code, byGateway: true });
    if (c.ws.readyState === c.ws.OPEN) {
      c.ws.send(encodeEnvelope(MsgType.error, c.toDevice, c.dest, errorBody(e.code, prevSeq, e.message)));
      metrics.frameOut(MsgType.error);
    }
    const up = c.up;
    const sid = c.sid;
    endSession(c, e.closeCode, e.code, false);
    if (up?.up) up.close(sid, CloseCode.goingAway, e.code);
  };

  /** Sends the gateway's own error frame, closes the device, tells the upstream. */
  const refuse = (c: Conn, e: ProtocolError, prevSeq: number | null) => {
    if (c.closed) return;
    metrics.errors.inc({ code: e.code });
    log.info('device refused', { code: e.code, ip: c.ip, dest: c.dest });
    observe?.({ conn: c.id, ip: c.ip, dir: 'down', type: MsgType.error, dest: c.dest ?? 'gateway', code: e.code, byGateway: true });
    if (c.ws.readyState === c.ws.OPEN) {
      c.ws.send(encodeEnvelope(MsgType.error, c.toDevice, c.dest ?? 'gateway', errorBody(e.code, prevSeq, e.message)));
      metrics.frameOut(MsgType.error);
      c.ws.close(e.closeCode, e.code);
    }
    // ws waits 30 s for the peer's close frame; a refused peer gets closeGraceMs.
    const ws = c.ws;
    later(() => ws.terminate(), L.closeGraceMs);
    const up = c.up;
    const sid = c.sid;
    if (release(c) && up) up.close(sid, CloseCode.goingAway, e.code);
  };

  const makeUpstream = (u: UpstreamConfig) => {
    /**
     * The live device connection `connId` when it is routed to this link. A server may only
     * write into the sessions the gateway opened on its own link: a frame for any other
     * connection (another link's, a closed one) is dropped and counted, never delivered.
     */
    const owned = (connId: number, kind: 'data' | 'close'): Conn | null => {
      const c = sessions.get(connId);
      if (c && !c.closed && c.up === link) return c;
      metrics.linkDropped.inc({ upstream: u.name, kind, reason: c && !c.closed ? 'not-routed-here' : 'no-such-connection' });
      return null;
    };
    const link: UpstreamLink = new UpstreamLink(
      { name: u.name, url: u.linkUrl, key: u.linkKey, reconnectMinMs: L.reconnectMinMs, reconnectMaxMs: L.reconnectMaxMs, heartbeatMs: L.linkHeartbeatMs, heartbeatMisses: L.linkHeartbeatMisses, wsOptions: u.linkCa ? { ca: pem(u.linkCa) } : undefined, ...(io ? { connect: io.connectLink, timers: io.timers } : {}), ...(cfg.log ? { log: cfg.log } : {}) },
      {
        onData(connId, frame) {
          const c = owned(connId, 'data');
          if (!c) return;
          const type = peekType(frame);
          if (GATEWAY_ONLY.has(type)) {
            // A frame only the gateway sends (a table push, sessions, sessionEnd: §2.1, §16),
            // from a server: never delivered (it could end the device's session or stand for
            // the gateway's push); dropped, counted, and the session ends (GW_UPSTREAM_BAD_FRAME).
            metrics.linkDropped.inc({ upstream: u.name, kind: 'data', reason: 'gateway-only-type' });
            log.info('upstream frame refused', { code: 'GW_UPSTREAM_BAD_FRAME', upstream: u.name, type });
            return refuseSession(c, new ProtocolError('GW_UPSTREAM_BAD_FRAME', `${u.name} sent a frame of type ${type}, which only the gateway sends`), null);
          }
          if (c.waitingSince) {
            metrics.upstreamLatency.observe({ upstream: u.name }, (clock() - c.waitingSince) / 1000);
            c.waitingSince = 0;
          }
          if (c.ws.bufferedAmount > L.maxBufferedBytes) {
            // A device that does not read is dropped rather than buffered without bound.
            metrics.errors.inc({ code: 'GW_SLOW_PEER' });
            log.info('device refused', { code: 'GW_SLOW_PEER', ip: c.ip });
            c.ws.terminate();
            const sid = c.sid;
            if (release(c)) link.close(sid, CloseCode.goingAway, 'GW_SLOW_PEER');
            return;
          }
          c.toDevice++;
          metrics.frameOut(type);
          if (observe) observe({ conn: c.id, ip: c.ip, dir: 'down', type, dest: u.name, code: type === MsgType.error ? errorCodeOf(frame) : undefined });
          c.ws.send(frame);
        },
        onClose(connId, code, reason) {
          const c = owned(connId, 'close');
          if (!c) return;
          const safe = code === 1000 || (code >= 1001 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999) ? code : CloseCode.internal;
          // Sessions in sequence (§2.1): the server ended its session, not the connection.
          if (c.inSequence) return endSession(c, safe, closeReason(reason), false);
          if (!release(c)) return;
          c.ws.close(safe, closeReason(reason));
          // ws waits 30 s for the device's close frame; give it closeGraceMs.
          later(() => c.ws.terminate(), L.closeGraceMs);
        },
        onRefused(code) {
          metrics.linkRefused.inc({ upstream: u.name, code });
        },
        onDown() {
          metrics.upstreamUp.set({ upstream: u.name }, 0);
          const set = byUpstream.get(u.name);
          if (!set) return;
          for (const c of [...set]) refuseSession(c, new ProtocolError('GW_UPSTREAM_LOST', `the link to ${u.name} went down`), null);
        },
        onUp() {
          metrics.upstreamUp.set({ upstream: u.name }, 1);
        },
        onDrain() {
          const set = paused.get(u.name);
          if (!set || link.bufferedAmount > L.linkHighWaterBytes) return;
          for (const c of set) if (!c.closed) c.ws.resume();
          set.clear();
        },
      },
    );
    upstreams.set(u.name, link);
    byUpstream.set(u.name, new Set());
    paused.set(u.name, new Set());
    metrics.upstreamUp.set({ upstream: u.name }, 0);
    log.info('upstream added', { upstream: u.name });
    link.start();
  };
  for (const u of cfg.upstreams) makeUpstream(u);

  const onFrame = (c: Conn, data: RawData, isBinary: boolean) => {
    if (c.closed) return;
    const now = clock();
    c.lastActive = now;
    const frame = toBytes(data);
    let env: Envelope;
    try {
      env = validateDeviceFrame(frame, isBinary, L.maxFrameBytes);
    } catch (e) {
      metrics.frameIn(null);
      if (e instanceof ProtocolError) return refuse(c, e, null);
      throw e;
    }
    metrics.frameIn(env.type);
    // Sessions in sequence (docs/protocol.md §2.1): the device's two frames to the gateway itself.
    if (env.type === MsgType.sessions) {
      if (c.inSequence || c.n > 0) return refuse(c, new ProtocolError('MSG_UNEXPECTED', 'sessions is only the first frame of a connection'), env.seq);
      c.inSequence = true;
      c.ws.send(sessionsFrame());
      metrics.frameOut(MsgType.sessions);
      return;
    }
    if (env.type === MsgType.sessionEnd) {
      if (c.inSequence && c.dest !== null && env.seq === c.n && env.dest === c.dest) return endSession(c, CloseCode.normal, '', true);
      // The server's end crossed the device's: that session has just ended; nothing to do.
      if (c.inSequence && c.dest === null && c.n > 0 && env.seq === c.n && env.dest === c.lastDest) {
        c.lastDest = null;
        return;
      }
      return refuse(c, new ProtocolError('MSG_UNEXPECTED', `sessionEnd for session ${env.seq} (${env.dest}) is not this connection's open session`), env.seq);
    }
    // S3.4: every valid login opening to a configured site counts, forwarded or refused
    // below; a dest that names no upstream is refused and counts nowhere (no invented sites).
    if (env.type === MsgType.login && counter !== null && upstreams.has(env.dest)) counter.attempt(c.group, env.dest, (env.body as unknown[])[0] as Mechanism, attackTime(now));
    if (c.dest === null) {
      const up = upstreams.get(env.dest);
      if (!up) return refuse(c, new ProtocolError('GW_UNKNOWN_DEST', `no upstream named '${env.dest}'`), env.seq);
      c.n++;
      c.toDevice = 0;
      c.lastDest = null;
      if (!up.up) {
        const e = new ProtocolError('GW_UPSTREAM_UNAVAILABLE', `${env.dest} is unreachable; try the backup`);
        if (!c.inSequence) return refuse(c, e, env.seq);
        // The upstream's refusal ends this session only (§2.1): it never reached the link.
        metrics.errors.inc({ code: e.code });
        c.lastDest = env.dest;
        c.ws.send(encodeEnvelope(MsgType.error, 0, env.dest, errorBody(e.code, env.seq, e.message)));
        c.ws.send(sessionEndFrame(c.n, env.dest, e.closeCode, e.code));
        metrics.frameOut(MsgType.error);
        metrics.frameOut(MsgType.sessionEnd);
        return;
      }
      c.dest = env.dest;
      c.up = up;
      c.sid = c.n > 1 ? takeId() : c.id;
      sessions.set(c.sid, c);
      byUpstream.get(env.dest)!.add(c);
      up.open(c.sid, c.ip);
    } else if (env.dest !== c.dest) {
      return refuse(c, new ProtocolError('GW_DEST_CHANGED', `a session to '${c.dest}' cannot switch to '${env.dest}'`), env.seq);
    }
    const up = c.up!;
    if (!up.up) return refuseSession(c, new ProtocolError('GW_UPSTREAM_LOST', `the link to ${c.dest} went down`), env.seq);
    if (observe) observe({ conn: c.id, ip: c.ip, dir: 'up', type: env.type, dest: env.dest, code: env.type === MsgType.error ? errorCodeOf(frame) : undefined, mech: env.type === MsgType.login ? ((env.body as unknown[])[0] as Mechanism) : undefined });
    if (!c.waitingSince) c.waitingSince = now;
    up.send(c.sid, frame);
    if (up.bufferedAmount > L.linkHighWaterBytes) {
      c.ws.pause();
      paused.get(c.dest!)!.add(c);
    }
  };

  wss?.on('connection', (ws: WebSocket, req: IncomingMessage) => accept(ws, req.socket.remoteAddress, req.socket as Socket));

  function accept(ws: DeviceSocket, remoteAddress: string | undefined, sock: Socket | null): void {
    const ip = normalizeIp(remoteAddress);
    const now = clock();
    const c: Conn = { id: takeId(), ws, ip, group: counter ? addressGroup(ip) : '', dest: null, up: null, sid: 0, inSequence: false, n: 0, lastDest: null, meter: new FrameMeter(L), sock, lastActive: now, toDevice: 0, waitingSince: 0, closed: false };
    // In front of ws's own listener: the meter sees each read before ws buffers it, and a
    // read that breaks a limit never reaches ws (ws has attached its listener and put back
    // any bytes that came with the upgrade; they are emitted after this handler returns).
    // The meter keeps counting after a session ended (ws still reads until the close
    // handshake completes), so a closing connection cannot be used to pin memory either.
    if (sock) interpose(sock, (chunk) => {
      const e = c.meter.feed(chunk);
      if (!e) return true;
      if (!c.closed) {
        metrics.frameIn(null);
        refuse(c, e, null);
      }
      // Read nothing more from a peer that broke the limits: what it sends stays in the kernel.
      sock.pause();
      return false;
    });
    conns.set(c.id, c);
    perIp.set(ip, (perIp.get(ip) ?? 0) + 1);
    metrics.accepted.inc();
    metrics.connections.set(conns.size);
    ws.on('message', (data, isBinary) => onFrame(c, data, isBinary));
    ws.on('close', () => {
      const up = c.up;
      const sid = c.sid;
      if (release(c) && up) up.close(sid, CloseCode.goingAway, 'device closed');
    });
    ws.on('error', (e: Error & { code?: string }) => {
      // ws has already closed the socket (1009 for a frame over hardMaxFrameBytes, read from
      // its header; 1002 for a WebSocket-level protocol error).
      const code = e.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' ? 'GW_FRAME_TOO_LARGE' : 'GW_WS_PROTOCOL';
      metrics.errors.inc({ code });
      log.info('device refused', { code, ip });
    });
    if (conns.size > L.maxConnections) {
      return refuse(c, new ProtocolError('GW_TOO_MANY_CONNECTIONS', 'the gateway is at its connection limit'), null);
    }
    if (perIp.get(ip)! > L.maxConnectionsPerIp) {
      return refuse(c, new ProtocolError('GW_TOO_MANY_PER_IP', `more than ${L.maxConnectionsPerIp} connections from one address`), null);
    }
  }

  // One sweep for idle connections instead of a timer per connection (memory per idle
  // connection matters at 10,000 of them).
  const sweepMs = Math.max(50, Math.min(1_000, L.idleTimeoutMs / 4));
  const sweepOnce = () => {
    const cutoff = clock() - L.idleTimeoutMs;
    const msgCutoff = clock() - L.messageTimeoutMs;
    for (const c of conns.values()) {
      const partial = c.meter.partialSince;
      if (partial && partial < msgCutoff) {
        refuse(c, new ProtocolError('GW_FRAME_TIMEOUT', `a message not complete ${L.messageTimeoutMs} ms after it began`), null);
        c.sock?.pause();
      } else if (c.lastActive < cutoff && c.waitingSince === 0) refuse(c, new ProtocolError('GW_IDLE_TIMEOUT', `nothing received for ${L.idleTimeoutMs} ms`), null);
    }
    // Paused readers are resumed on the link socket's 'drain'; this catches a buffer that
    // emptied without one (a drain is only emitted after a write the socket refused).
    for (const [name, set] of paused) {
      const up = upstreams.get(name);
      if (!set.size || !up || up.bufferedAmount > L.linkHighWaterBytes) continue;
      for (const c of set) if (!c.closed) c.ws.resume();
      set.clear();
    }
  };
  // Over the sockets seam the sweep is a chain of io timers (they have no interval).
  let sweepTimer: unknown = null;
  const sweepIo = () => {
    sweepOnce();
    sweepTimer = io!.timers.setTimeout(sweepIo, sweepMs);
  };
  const sweep = io ? null : setInterval(sweepOnce, sweepMs);
  sweep?.unref();
  if (io) sweepTimer = io.timers.setTimeout(sweepIo, sweepMs);
  const stopSweep = () => {
    if (sweep) clearInterval(sweep);
    if (io) io.timers.clearTimeout(sweepTimer);
  };

  const hostPart = cfg.host.includes(':') ? `[${cfg.host}]` : cfg.host;
  const opServer = cfg.operatorPort === undefined || io ? null : createHttpServer(operator);
  let port = 0;
  let opPort: number | null = null;
  try {
    if (shared && !(await shared.ready())) log.warn('shared state not reachable at start: attacks are counted by this gateway alone until it is', { code: 'SHARED_STATE_DOWN' });
    if (server) port = await listen(server, cfg.port, cfg.host, portLimits);
    if (opServer) opPort = await listen(opServer, cfg.operatorPort!, cfg.host, L.operatorPort);
  } catch (e) {
    stopSweep();
    for (const u of upstreams.values()) u.stop();
    if (server) await closeServer(server, wss!);
    if (opServer?.listening) await closeServer(opServer);
    await shared?.close();
    throw e;
  }
  const url = io ? `io://${hostPart}/` : `${cfg.tls ? 'wss' : 'ws'}://${hostPart}:${port}/`;
  const operatorUrl = opPort === null ? null : `http://${hostPart}:${opPort}/`;
  // Upstreams added later (the embedded stack adds them as their servers start) log their own line.
  log.info('listening', { url, operatorUrl: operatorUrl ?? 'none', upstreams: cfg.upstreams.length ? cfg.upstreams.map((u) => u.name).join(',') : 'none yet' });
  reporter?.start();

  return {
    port,
    url,
    operatorUrl,
    metrics,
    attacks: counter,
    attackReporter: reporter,
    upstream: (name) => upstreams.get(name),
    setUpstream(u) {
      const have = upstreams.get(u.name);
      if (!have) makeUpstream(u);
      else if (have.url !== u.linkUrl) have.setUrl(u.linkUrl);
    },
    async waitUpstreams(timeoutMs = 5_000, names) {
      const list = names ? names.map((n) => upstreams.get(n)!).filter(Boolean) : [...upstreams.values()];
      const r = await Promise.all(list.map((u) => u.waitUp(timeoutMs)));
      return r.every(Boolean);
    },
    connections: () => conns.size,
    accept: (ws, remoteAddress) => accept(ws, remoteAddress, null),
    pushTable(table) {
      const frame = tablePushFrame(table);
      let n = 0;
      for (const c of conns.values()) {
        if (c.ws.readyState !== c.ws.OPEN) continue;
        c.ws.send(frame);
        observe?.({ conn: c.id, ip: c.ip, dir: 'down', type: MsgType.tablePush, dest: c.dest ?? 'gateway', byGateway: true });
        n++;
      }
      metrics.tablePushes.inc(n);
      log.info('attack table pushed', { devices: n, bytes: table.length });
      return n;
    },
    async close() {
      reporter?.stop();
      stopSweep();
      for (const u of upstreams.values()) u.stop();
      for (const c of conns.values()) c.ws.terminate();
      await Promise.all([server ? closeServer(server, wss!) : undefined, opServer ? closeServer(opServer) : undefined]);
      await shared?.close();
    },
  };
}
