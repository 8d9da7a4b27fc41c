// Prometheus metrics of the policy server (GET /metrics on its admin port): reports by result,
// the update work done and dropped, the published table version and the pending queue. Labels
// carry results only, never a gateway's key or a site's counts.
import { Registry, Counter, Gauge } from 'prom-client';

export type ReportResultLabel = 'new' | 'duplicate' | 'late' | 'refused';

export class PolicyMetrics {
  readonly registry = new Registry();
  readonly reports: Counter<'result'>;
  readonly rowsFolded: Counter;
  readonly rowsDropped: Counter;
  readonly tableVersion: Gauge;
  readonly pendingRows: Gauge;
  readonly updateSeconds: Gauge;

  constructor(readonly server: string) {
    this.registry.setDefaultLabels({ server });
    const registers = [this.registry];
    this.reports = new Counter({ name: 'usbphone_policy_reports_total', help: 'Attack reports received (S3.5), by result', labelNames: ['result'], registers });
    this.rowsFolded = new Counter({ name: 'usbphone_policy_rows_folded_total', help: 'Rows of update work done (one report row of one site folded, S3.9)', registers });
    this.rowsDropped = new Counter({ name: 'usbphone_policy_rows_dropped_total', help: 'Pending rows dropped unfolded because their period is beyond the lag window', registers });
    this.tableVersion = new Gauge({ name: 'usbphone_policy_table_version', help: 'Version of the latest signed attack table', registers });
    this.pendingRows = new Gauge({ name: 'usbphone_policy_pending_rows', help: 'Rows waiting for a later period (slices smaller than the work)', registers });
    this.updateSeconds = new Gauge({ name: 'usbphone_policy_update_seconds', help: 'Wall time of the last period update', registers });
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}
