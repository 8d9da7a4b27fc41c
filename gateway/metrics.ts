// Gateway metrics in Prometheus text format (GET /metrics), one registry per gateway so that
// several gateways in one process (tests) do not share counters.
import { Registry, Counter, Gauge, Histogram, collectDefaultMetrics } from 'prom-client';
import { typeName } from '../protocol/messages.ts';

export class GatewayMetrics {
  readonly registry = new Registry();
  readonly connections = new Gauge({ name: 'usbphone_gateway_connections', help: 'Open device connections', registers: [this.registry] });
  readonly accepted = new Counter({ name: 'usbphone_gateway_connections_total', help: 'Device connections accepted', registers: [this.registry] });
  readonly framesIn = new Counter({ name: 'usbphone_gateway_frames_in_total', help: 'Frames received from devices, by message type', labelNames: ['type'], registers: [this.registry] });
  readonly framesOut = new Counter({ name: 'usbphone_gateway_frames_out_total', help: 'Frames sent to devices, by message type', labelNames: ['type'], registers: [this.registry] });
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
    help: 'Upstream link connections closed for breaking the link protocol, by code (LINK_BAD_MAC, ...)',
    labelNames: ['upstream', 'code'],
    registers: [this.registry],
  });
  readonly upstreamUp = new Gauge({ name: 'usbphone_gateway_upstream_up', help: '1 when the authenticated link to the upstream is up', labelNames: ['upstream'], registers: [this.registry] });

  constructor(defaults = true) {
    if (defaults) collectDefaultMetrics({ register: this.registry, prefix: 'usbphone_gateway_' });
  }

  frameIn(type: number | null): void {
    this.framesIn.inc({ type: type === null ? 'invalid' : typeName(type) });
  }
  frameOut(type: number): void {
    this.framesOut.inc({ type: type < 0 ? 'invalid' : typeName(type) });
  }
}
