// Every limit of the gateway, with its default, in one place (docs/architecture.md
// §"Limits of every port"): what every device-facing port enforces (server-kit/limits.ts
// DeviceLimits, shared with the servers' direct device ports) plus the gateway's own.
import { DeviceDefaults, PortDefaults, type DeviceLimits, type PortLimits } from '../server-kit/limits.ts';
import { LinkHeartbeatDefaults } from '../server-kit/link.ts';

export interface GatewayLimits extends DeviceLimits {
  /**
   * ws's maxPayload: a backstop behind the frame meter, which refuses a declared length over
   * maxFrameBytes (with an error frame) before ws buffers anything.
   */
  hardMaxFrameBytes: number;
  /** Open device connections in total (GW_TOO_MANY_CONNECTIONS, close 1013). */
  maxConnections: number;
  /**
   * TCP connections allowed above maxConnections: those still in their WebSocket upgrade. The
   * port's TCP cap is maxConnections + upgradeSlack, so the gateway can still answer the
   * connection over the cap with an error frame, and silent connections cannot exhaust
   * descriptors.
   */
  upgradeSlack: number;
  /** Bytes queued towards one device before it is dropped as a slow peer (GW_SLOW_PEER). */
  maxBufferedBytes: number;
  /** A connection that sends nothing for this long is closed (GW_IDLE_TIMEOUT). */
  idleTimeoutMs: number;
  /** Bytes queued on an upstream link above which device reads pause until it drains. */
  linkHighWaterBytes: number;
  /** Reconnect backoff of upstream links. */
  reconnectMinMs: number;
  reconnectMaxMs: number;
  /**
   * Heartbeat of upstream links (server-kit/link.ts LinkHeartbeat): a PING per period in which
   * nothing was heard; the link is dead (LINK_HEARTBEAT_TIMEOUT) after linkHeartbeatMisses in a row.
   */
  linkHeartbeatMs: number;
  linkHeartbeatMisses: number;
  /** Header/request timeouts of the device port and the operator port (server-kit/limits.ts). */
  port: PortLimits;
  operatorPort: PortLimits;
}

export const GatewayDefaults: GatewayLimits = {
  ...DeviceDefaults,
  hardMaxFrameBytes: DeviceDefaults.maxFrameBytes,
  maxConnections: 10_000,
  upgradeSlack: 1_024,
  maxBufferedBytes: 64 * 1024,
  idleTimeoutMs: 60_000,
  linkHighWaterBytes: 1024 * 1024,
  reconnectMinMs: 100,
  reconnectMaxMs: 2_000,
  linkHeartbeatMs: LinkHeartbeatDefaults.heartbeatMs,
  linkHeartbeatMisses: LinkHeartbeatDefaults.heartbeatMisses,
  port: PortDefaults.gateway,
  operatorPort: PortDefaults.operator,
};
