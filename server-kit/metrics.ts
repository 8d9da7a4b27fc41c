// Prometheus metrics of a registration or business server (GET /metrics on its device and
// link ports; the gateway has its own, gateway/metrics.ts): sessions by transport, refusals
// by error code, and what the sessions did (credentials issued, devices not found, logins by
// result, passwords promoted and confirmed). Labels carry codes and names only, never an
// identity or a secret. Process metrics (memory, event loop) are the gateway's, or left to
// the process supervisor: several servers may share one process (the embedded default).
import { Registry, Counter } from 'prom-client';
import { Tally } from './tally.ts';

export type ServerEvent =
  | 'credentials_issued'
  | 'credentials_reissued'
  | 'device_not_found'
  | 'generation_confirmed'
  | 'login_ok'
  | 'login_refused'
  | 'password_promoted'
  | 'password_confirmed'
  | 'bank_register'
  | 'bank_login'
  | 'bank_rebind'
  /** A device confirmed its older generation while a newer one is pending: the newer one did not work for it (issue 9). */
  | 'rotation_fallback'
  /** One pending secret re-issued REISSUE_ALARM times without a login using it (issue 9). */
  | 'pending_reissue_alarm'
  /** S3.11: a poll of the policy server's latest attack table (server-kit/table-source.ts) that worked / failed. */
  | 'table_poll_ok'
  | 'table_poll_failed'
  /** S3.11: a credential reply that carried the attack table / that could not (larger than credReply allows). */
  | 'table_sent'
  | 'table_too_large'
  /** Issue 16: a replay check the shared cache (Redis) did not answer in time: this process's cache decided alone. */
  | 'shared_replay_fallback';

export class ServerMetrics {
  readonly registry = new Registry();
  readonly sessions: Counter<'via'>;
  readonly refusals: Counter<'code'>;
  readonly events: Counter<'event' | 'code'>;
  /** Sessions by transport and events by (event, code), counted per session and added when read (tally.ts). */
  readonly #sessions = new Tally<string>((via) => ({ via }));
  readonly #events = new Tally<string>((k) => ({ event: k.slice(0, k.indexOf('|')), code: k.slice(k.indexOf('|') + 1) }));

  constructor(readonly server: string) {
    this.registry.setDefaultLabels({ server });
    const registers = [this.registry];
    this.sessions = new Counter({ name: 'usbphone_server_sessions_total', help: 'Device sessions opened, by transport (gateway link or direct)', labelNames: ['via'], registers, collect: () => this.#sessions.fold(this.sessions) });
    this.refusals = new Counter({ name: 'usbphone_server_refusals_total', help: 'Sessions ended with an error frame, by error code (S0.7)', labelNames: ['code'], registers });
    this.events = new Counter({ name: 'usbphone_server_events_total', help: 'What sessions did, by event (and refusal code for login_refused)', labelNames: ['event', 'code'], registers, collect: () => this.#events.fold(this.events) });
  }

  /** A session opened, by its transport ('link', 'direct'). */
  session(via: string): void {
    this.#sessions.add(via);
  }

  event(event: ServerEvent, code = ''): void {
    this.#events.add(`${event}|${code}`);
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}
