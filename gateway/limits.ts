// Every limit of the gateway, with its default, in one place (docs/architecture.md
// §"Gateway limits"). Sized for device frames and a fleet of simulated phones on one host.
import { Limits } from '../protocol/limits.ts';

export interface GatewayLimits {
  /** Frames above this get the error frame GW_FRAME_TOO_LARGE and close 1009. */
  maxFrameBytes: number;
  /**
   * ws's maxPayload: a frame declaring more than this in its header is refused before it is
   * buffered (close 1009, no error frame: ws has already sent the close).
   */
  hardMaxFrameBytes: number;
  /** Open device connections in total (GW_TOO_MANY_CONNECTIONS, close 1013). */
  maxConnections: number;
  /** Open device connections from one IP (GW_TOO_MANY_PER_IP, close 1013). */
  maxConnectionsPerIp: number;
  /** Sustained frames per second per connection, and the burst above it (GW_RATE_LIMITED). */
  framesPerSecond: number;
  frameBurst: number;
  /** Bytes queued towards one device before it is dropped as a slow peer (GW_SLOW_PEER). */
  maxBufferedBytes: number;
  /** A connection that sends nothing for this long is closed (GW_IDLE_TIMEOUT). */
  idleTimeoutMs: number;
  /** Bytes queued on an upstream link above which device reads pause until it drains. */
  linkHighWaterBytes: number;
  /** Reconnect backoff of upstream links. */
  reconnectMinMs: number;
  reconnectMaxMs: number;
}

export const GatewayDefaults: GatewayLimits = {
  maxFrameBytes: Limits.maxFrameBytes,
  hardMaxFrameBytes: 2 * Limits.maxFrameBytes,
  maxConnections: 20_000,
  maxConnectionsPerIp: 256,
  framesPerSecond: 20,
  frameBurst: 40,
  maxBufferedBytes: 64 * 1024,
  idleTimeoutMs: 60_000,
  linkHighWaterBytes: 1024 * 1024,
  reconnectMinMs: 100,
  reconnectMaxMs: 2_000,
};
