// Gateway metrics in Prometheus text format (GET /metrics), one registry per gateway so that
// several gateways in one process (tests) do not share counters.
import { Registry, Counter, Gauge, Histogram, collectDefaultMetrics } from 'prom-client';
import { typeName } from '../protocol/messages.ts';
import { Tally } from '../server-kit/tally.ts';

export class GatewayMetrics {
  readonly registry = new Registry();
  readonly connections = new Gauge({ name: 'usbphone_gateway_connections', help: 'Open device connections', registers: [this.registry] });
  readonly accepted = new Counter({ name: 'usbphone_gateway_connections_total', help: 'Device connections accepted', registers: [this.registry] });
  /** Frames by type (256: invalid), counted per frame and added when read (server-kit/tally.ts). */
  readonly #in = new Tally<number>(frameLabels);
  readonly #out = new Tally<number>(frameLabels);
  readonly framesIn: Counter = new Counter({ name: 'usbphone_gateway_frames_in_total', help: 'Frames received from devices, by message type', labelNames: ['type'], registers: [this.registry], collect: (): void => this.#in.fold(this.framesIn) });
  readonly framesOut: Counter = new Counter({ name: 'usbphone_gateway_frames_out_total', help: 'Frames sent to devices, by message type', labelNames: ['type'], registers: [this.registry], collect: (): void => this.#out.fold(this.framesOut) });
  readonly errors = new Counter({ name: 'usbphone_gateway_errors_total', help: 'Device sessions refused or ended by the gateway, by error code', labelNames: ['code'], registers: [this.registry] });
  readonly upstreamLatency = new Histogram({
    name: 'usbphone_gateway_upstream_latency_seconds',
    help: 'Time from forwarding a device frame to the upstream server\'s next frame for that device',
    labelNames: ['upstream'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  readonly linkDropped = new Counter({
    name: 'usbphone_gateway_link_frames_dropped_total',
    help: 'Frames from an upstream for a connection not routed to that upstream (or no longer open), dropped',
    labelNames: ['upstream', 'kind', 'reason'],
    registers: [this.registry],
  });
  readonly linkRefused = new Counter({
    name: 'usbphone_gateway_link_refused_total',
    help: 'Upstream link connections closed for breaking the link protocol or falling silent (the heartbeat), by code (LINK_BAD_MAC, ...)',
    labelNames: ['upstream', 'code'],
    registers: [this.registry],
  });
  readonly upstreamUp = new Gauge({ name: 'usbphone_gateway_upstream_up', help: '1 when the authenticated link to the upstream is up', labelNames: ['upstream'], registers: [this.registry] });
  /** S3.4: labels are bounded: site = a configured upstream, mech = one of MECHANISMS. */
  readonly attacks = new Counter({ name: 'usbphone_gateway_attacks_detected_total', help: 'Attacks detected (more than the limit of login openings from one address group to one site and mechanism within the window; one per window)', labelNames: ['site', 'mech'], registers: [this.registry] });
  /** Read when /metrics is scraped (not on the hot path): the attack counter's tracked groups. */
  trackedIps: () => number = () => 0;
  /** Attempts the shared (Redis) window did not answer, counted in this gateway's own (issue 16). */
  sharedFallbacks: () => number = () => 0;
  readonly attackSharedFallbacks: Gauge = new Gauge({ name: 'usbphone_gateway_attack_shared_fallbacks', help: 'Login openings counted in this gateway\'s own window because the shared one (Redis) did not answer in time, since start', registers: [this.registry], collect: (): void => this.attackSharedFallbacks.set(this.sharedFallbacks()) });
  readonly attackTracked: Gauge = new Gauge({ name: 'usbphone_gateway_attack_tracked_ips', help: 'Address groups (IPv4 address, IPv6 /64) the attack counter tracks now; at most maxTrackedIps', registers: [this.registry], collect: (): void => this.attackTracked.set(this.trackedIps()) });
  readonly attackReports = new Counter({
    name: 'usbphone_gateway_attack_reports_total',
    help: 'Period attack reports (S3.5) by outcome: sent, resent (after a failure), duplicate, failed (one attempt; kept and resent), rejected (by the receiver; dropped), dropped (queue full)',
    labelNames: ['outcome'],
    registers: [this.registry],
  });
  readonly attackReportsQueued = new Gauge({ name: 'usbphone_gateway_attack_reports_queued', help: 'Period attack reports not yet delivered', registers: [this.registry] });
  /** S3.11: tables pushed to connected devices (one per device per push). */
  readonly tablePushes = new Counter({ name: 'usbphone_gateway_table_pushes_total', help: 'Attack tables pushed to connected devices (S3.11)', registers: [this.registry] });

  constructor(defaults = true) {
    if (defaults) collectDefaultMetrics({ register: this.registry, prefix: 'usbphone_gateway_' });
  }

  /** A frame from a device, by its type (null: not a valid frame). */
  frameIn(type: number | null): void {
    this.#in.add(slot(type));
  }
  /** A frame to a device, by its type (negative: not a frame of the protocol). */
  frameOut(type: number): void {
    this.#out.add(slot(type));
  }
}

/** A type's index in the counts: 0..255, or 256 (invalid) for anything else. */
function slot(type: number | null): number {
  return type !== null && Number.isInteger(type) && type >= 0 && type <= 255 ? type : 256;
}

const frameLabels = (t: number) => ({ type: t === 256 ? 'invalid' : typeName(t) });
