// The live page's publish/subscribe hub (issue 17): the gateway tells it of every frame it
// relays (type and dest, never bytes), the servers' log lines tell it what the sessions did,
// the simulator tells it the steps of the phones it runs in this process, and the stack
// tells it the servers' health. From these it keeps a small picture (the phones, the last
// steps of each recent phone, a few minutes of fleet figures) and publishes messages, each
// checked against deploy/feed-schema.ts before any subscriber gets it.
//
// What it publishes is projected field by field from an allowlist: a log line's serial, a
// frame's bytes, a trace detail holding anything key-like never reach a subscriber (and
// tests search a whole run's feed for every secret and the serial: deploy/feed.test.ts).
// Phones are named by the address the gateway observed (each simulated phone has its own
// loopback address); they are not told apart behind one address. Besides the frames the
// gateway relays, a phone's diagram shows the calls its requests make between servers: the
// bank's operator calls (the bank tells of them: biz-server/bank.ts onOperatorCall, with the
// session's address) and the attack table riding along in its credential reply (the
// registration server's 'credentials issued' line names the table's version).
import { typeName, MsgType } from '../protocol/messages.ts';
import type { FrameSeen } from '../gateway/gateway.ts';
import type { PublishedTable } from '../policy-server/server.ts';
import type { Mechanism } from '../protocol/messages.ts';
import type { LogLine } from '../server-kit/log.ts';
import type { TraceEvent } from '../firmware/hal/hal.ts';
import type { OperatorCallEvent } from '../biz-server/bank.ts';
import { FEED_VERSION, feedValidator, LIFELINES, type FeedMessage, PHONE_STATES } from './feed-schema.ts';

type Lifeline = (typeof LIFELINES)[number];
type PhoneState = (typeof PHONE_STATES)[number];

export interface HealthSnapshot {
  servers: { name: string; role: 'gateway' | 'registration' | 'business' | 'operator'; running: boolean; linkUp: boolean | null; sessions: number | null }[];
  load: { rssMiB: number; heapMiB: number; cpuPercent: number; eventLoopP99Ms: number; connections: number };
}

export interface FeedHubOptions {
  /** The servers' names, in the order the page lists them. */
  servers: string[];
  /** Polled once per tick for the health message. */
  health: () => HealthSnapshot;
  tickMs?: number;
  /** Trace items kept per phone (the page shows the latest). */
  historyPerPhone?: number;
  /** Phones kept (least recently active dropped first) and phones with a trace kept. */
  maxPhones?: number;
  maxTracedPhones?: number;
  /** Fleet figures kept for a page that opens later (one per tick). */
  statsHistory?: number;
  /** Attack tables (and their choice counts) kept for a page that opens later (S3). */
  tableHistory?: number;
  now?: () => number;
}

export type FeedSink = (m: FeedMessage) => void;
interface Subscriber { sink: FeedSink; phone: string | null }

interface PhoneRow {
  id: string;
  label?: string;
  state: PhoneState;
  lastLogin: number | null;
  server: string | null;
  gen: number | null;
  user: string | null;
  lastCode: string | null;
  logins: number;
  /** When the attempt now under way began (its first frame), for the plug-in -> login latency. */
  since: number | null;
  seen: number;
}

const REG = /^reg-/;
const lifelineOf = (dest: string): Lifeline => (REG.test(dest) ? 'registration' : 'business');
const CODE_RE = /^[A-Z0-9_]{1,64}$/;
const USER_RE = /^u-[0-9a-f]{20}$/;
const NAME_RE = /^[a-z0-9][a-z0-9-]{0,31}$/;
const OPERATOR_OPS = new Set<string>(['check-validity', 'retrieve-phone-number', 'retrieve-date']);
const ANSWERS = new Set<string>(['valid', 'invalid', 'number', 'no change', 'changed after binding', 'none since binding', 'recorded at binding', 'failed']);

/**
 * Text with every number of 8 or more digits standing alone (spaces, dashes and a leading +
 * allowed between them; not digits inside a word such as a hex user name) cut to its last 4: an ICCID, an IMSI, a phone or account number in a phone's step
 * (the firmware traces the card it read) reaches the feed as '…0073'.
 */
export function maskIds(text: string): string {
  return text.replace(/(?<![0-9A-Za-z])\+?[0-9](?:[ -]?[0-9]){7,}(?![0-9A-Za-z])/g, (m) => `\u2026${m.replace(/[^0-9]/g, '').slice(-4)}`);
}

/** p-th percentile (0..100), nearest rank (as sim/trace.ts, which deploy/ does not import). */
function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/** The feature id a frame belongs to (docs/features.md): which exchange it is part of. */
export function featureOf(type: number, dest: string): string {
  switch (type) {
    case MsgType.hello:
    case MsgType.helloReply:
    case MsgType.finish:
      // The same handshake opens a registration (S0.5; S0.6 at the backup) and a login (S0.11).
      return REG.test(dest) ? (dest === 'reg-backup' ? 'S0.6' : 'S0.5') : 'S0.11';
    case MsgType.credRequest:
    case MsgType.credReply:
      return 'S0.8';
    case MsgType.notFound:
      return 'S0.9';
    case MsgType.pwConfirm:
    case MsgType.pwConfirmAck:
      return 'S0.14';
    case MsgType.error:
      return 'S0.7';
    case MsgType.tablePush:
      return 'S3.11';
    case MsgType.bankRegister:
    case MsgType.bankRegistered:
      return 'S4.1';
    case MsgType.bankLogin:
      return 'S4.2';
    case MsgType.bankPage:
    case MsgType.bankRefused:
    case MsgType.bankRebind:
      return 'S4.7';
    default:
      return 'S0.11';
  }
}

/** Server log lines the feed carries: message -> the feed's event name. */
const LOG_EVENTS: Record<string, string> = {
  'credentials issued': 'credentials issued',
  'device not found': 'device not found',
  'generation confirmed': 'generation confirmed',
  'login ok': 'login ok',
  'login refused': 'login refused',
  'password confirmed': 'password confirmed',
  'rotation fallback': 'rotation fallback',
  'session refused': 'session refused',
  'device refused': 'device refused',
  'business server healthy': 'server healthy',
  'business server unhealthy': 'server unhealthy',
  'link up': 'link up',
  'link down': 'link down',
};

export class FeedHub {
  readonly #o: Required<Omit<FeedHubOptions, 'health' | 'servers'>> & Pick<FeedHubOptions, 'health' | 'servers'>;
  readonly #subs = new Set<Subscriber>();
  /** Insertion order = least recently active first (a phone is re-inserted when active). */
  readonly #phones = new Map<string, PhoneRow>();
  readonly #traces = new Map<string, FeedMessage[]>();
  readonly #stats: FeedMessage[] = [];
  #health: FeedMessage | null = null;
  /** The S3 view: the latest tables, the choice counts of the ones before, the logins of the table now latest. */
  readonly #tables: FeedMessage[] = [];
  #version: number | null = null;
  #logins = new Map<string, Record<Mechanism, number>>();
  /** Login openings not yet answered, by gateway connection: their site and stated mechanism. */
  readonly #openings = new Map<number, { dest: string; mech: Mechanism }>();
  #tick: NodeJS.Timeout | null = null;
  #phonesDirty = false;
  #second = { logins: 0, refusals: 0, latencies: [] as number[] };
  #open = true;
  /**
   * Messages the schema refused (a bug of ours): counted once each and never sent. A phone's
   * step is checked when it is first sent (live or as history), so a step no page ever asked
   * for is not counted (decision 142).
   */
  refused = 0;
  /** Each kept step's verdict, once it was checked (a step is checked once, however many pages get it). */
  readonly #verdicts = new WeakMap<FeedMessage, boolean>();
  lastRefusal: string | null = null;

  constructor(o: FeedHubOptions) {
    this.#o = { tickMs: 1_000, historyPerPhone: 80, maxPhones: 500, maxTracedPhones: 32, statsHistory: 300, tableHistory: 120, now: Date.now, ...o };
    this.#tick = setInterval(() => this.tick(), this.#o.tickMs);
    this.#tick.unref();
  }

  get isOpen(): boolean {
    return this.#open;
  }

  /**
   * A new subscriber gets the picture so far (hello, phones, the watched phone's recent
   * trace, the fleet figures, the last health), then every message as it is published.
   * Returns the unsubscriber; null when the hub is closed.
   */
  subscribe(sink: FeedSink, opts: { phone?: string | null } = {}): (() => void) | null {
    if (!this.#open) return null;
    const phone = opts.phone && this.#phones.has(opts.phone) ? opts.phone : null;
    const sub: Subscriber = { sink, phone };
    const send = (m: FeedMessage) => this.#checked(m) && sink(m);
    send({ kind: 'hello', t: this.#o.now(), version: FEED_VERSION, watching: phone, servers: this.#o.servers });
    send(this.#phonesMessage());
    for (const m of this.#stats) send(m);
    for (const m of this.#tables) send(m);
    if (this.#health) send(this.#health);
    if (phone) for (const m of this.#traces.get(phone) ?? []) if (this.#stepChecked(m)) sink(m);
    this.#subs.add(sub);
    return () => void this.#subs.delete(sub);
  }

  /** Ends every subscription and refuses new ones until open() (the "feed dropped" case). */
  close(): void {
    this.#open = false;
    this.#subs.clear();
    for (const c of this.#closers) c();
  }

  open(): void {
    this.#open = true;
  }

  readonly #closers = new Set<() => void>();
  /** Called on close() (the HTTP layer ends its streams). */
  onClose(fn: () => void): () => void {
    this.#closers.add(fn);
    return () => void this.#closers.delete(fn);
  }

  stop(): void {
    this.close();
    if (this.#tick) clearInterval(this.#tick);
    this.#tick = null;
  }

  /** The gateway's frame observer. */
  frame(f: FrameSeen): void {
    if (!NAME_RE.test(f.dest) && f.dest !== 'gateway') return;
    const now = this.#o.now();
    const p = this.#phone(f.ip, now);
    const refused = f.type === MsgType.error || f.type === MsgType.loginFail || f.type === MsgType.notFound;
    const server: Lifeline = f.dest === 'gateway' ? 'gateway' : lifelineOf(f.dest);
    // A pushed table (S3.11) is the policy server's, sent on by the gateway: drawn from the policy.
    const from: Lifeline = f.dir === 'up' ? 'phone' : f.type === MsgType.tablePush ? 'policy' : f.byGateway ? 'gateway' : server;
    const to: Lifeline = f.dir === 'up' ? server : 'phone';
    if (f.dir === 'up' && p.since === null) p.since = now;
    // S3: a login's mechanism, as its opening stated it, counts as a choice once the site says ok.
    if (f.dir === 'up' && f.type === MsgType.login && f.mech !== undefined && NAME_RE.test(f.dest)) {
      this.#openings.delete(f.conn);
      this.#openings.set(f.conn, { dest: f.dest, mech: f.mech });
      if (this.#openings.size > 4_096) this.#openings.delete(this.#openings.keys().next().value!);
    }
    if (f.dir === 'down' && f.type === MsgType.loginOk) {
      const o = this.#openings.get(f.conn);
      if (o && o.dest === f.dest) {
        let c = this.#logins.get(o.dest);
        if (!c) this.#logins.set(o.dest, (c = { password: 0, otp: 0, fingerprint: 0 }));
        if (c[o.mech] !== undefined) c[o.mech]++;
      }
    }
    if (f.dir === 'down' && (f.type === MsgType.loginOk || f.type === MsgType.loginFail || f.type === MsgType.error)) this.#openings.delete(f.conn);
    if (f.dir === 'up' && f.type === MsgType.hello) p.state = server === 'registration' ? 'registering' : 'logging in';
    if (f.dir === 'down') {
      if (f.type === MsgType.credReply) p.state = 'registered';
      else if (f.type === MsgType.notFound) p.state = 'not found';
      else if (f.type === MsgType.loginOk) {
        p.state = 'logged in';
        p.lastLogin = now;
        p.server = f.dest;
        p.logins++;
        this.#second.logins++;
        if (p.since !== null) this.#second.latencies.push(now - p.since);
        p.since = null;
      }
    }
    if (refused) {
      p.state = f.type === MsgType.notFound ? 'not found' : 'refused';
      if (f.type === MsgType.error) p.lastCode = f.code && CODE_RE.test(f.code) ? f.code : 'unreadable';
      this.#second.refusals++;
      if (f.type !== MsgType.error) p.since = null;
    }
    this.#phonesDirty = true;
    // "login not allowed" (S4.7) is drawn red; the phone's S0 login went through, its state stays.
    const red = refused || f.type === MsgType.bankRefused;
    const item: Record<string, unknown> = { t: now, kind: 'frame', from, to, type: f.type === MsgType.error ? 'error' : typeName(f.type), dest: f.dest === 'gateway' ? 'gateway' : f.dest, feature: featureOf(f.type, f.dest), refused: red };
    if (f.type === MsgType.error) item.code = p.lastCode;
    this.#trace(f.ip, { kind: 'trace', t: now, phone: f.ip, item });
  }

  /**
   * A bank's operator call (S4.4, S4.6), drawn in the diagram of the phone whose request made
   * it: business -> operator with the CAMARA operation, and the answer back (an invalid card, a
   * failure or a card changed after the binding in red). The phone is found by the session's
   * address, else by its device user; a call of no known phone is dropped. Projected: the
   * operation, the verdict, a code, the last 4 digits of a number.
   */
  operatorCall(e: OperatorCallEvent): void {
    const ip = typeof e.ip === 'string' && this.#phones.has(e.ip) ? e.ip : this.#phoneOfUser(e.deviceUser);
    if (!ip || !OPERATOR_OPS.has(e.op)) return;
    const now = this.#o.now();
    this.#phone(ip, now);
    const item: Record<string, unknown> = { t: now, kind: 'call', op: e.op, feature: e.feature === 'S4.6' ? 'S4.6' : 'S4.4' };
    if (e.phase === 'ask') Object.assign(item, { from: 'business', to: 'operator', refused: false });
    else {
      const answer = typeof e.answer === 'string' && ANSWERS.has(e.answer) ? e.answer : 'failed';
      const tail = answer === 'number' && typeof e.tail === 'string' && /^[0-9]{1,4}$/.test(e.tail) ? ` \u2026${e.tail}` : '';
      Object.assign(item, { from: 'operator', to: 'business', answer: answer + tail, refused: answer === 'invalid' || answer === 'failed' || answer === 'changed after binding' });
      if (typeof e.code === 'string') item.code = CODE_RE.test(e.code) ? e.code : 'unreadable';
      if (typeof e.ms === 'number' && Number.isFinite(e.ms) && e.ms >= 0) item.ms = Math.round(e.ms * 10) / 10;
    }
    this.#trace(ip, { kind: 'trace', t: now, phone: ip, item });
  }

  /** The most recently active phone known to have logged in as `user`, or null. */
  #phoneOfUser(user: unknown): string | null {
    if (typeof user !== 'string' || !USER_RE.test(user)) return null;
    for (const p of [...this.#phones.values()].reverse()) if (p.user === user) return p.id;
    return null;
  }

  /** A step of a phone this process runs (its firmware's trace line), by its address. */
  phoneStep(ip: string, e: TraceEvent, label?: string): void {
    const now = this.#o.now();
    const p = this.#phone(ip, now);
    if (label !== undefined) p.label = label;
    this.#trace(ip, { kind: 'trace', t: now, phone: ip, item: { t: now, kind: 'step', feature: e.feature, step: maskIds(e.step).slice(0, 60), detail: maskIds(e.detail).slice(0, 160), ok: e.ok } });
  }

  /**
   * A table the policy server published (S3.11): first the logins counted while the previous
   * one was the latest (by the mechanism their opening stated, as the gateway saw them; only
   * logins the site accepted), then the new table with the attacks of the period it states.
   * Rates, levels, names and counts only.
   */
  table(p: PublishedTable): void {
    const now = this.#o.now();
    if (this.#version !== null) {
      const sites = [...this.#logins].filter(([site]) => NAME_RE.test(site)).slice(0, 64).map(([site, logins]) => ({ site, logins: { ...logins } }));
      this.#keepTable({ kind: 'choices', t: now, version: this.#version, sites });
    }
    this.#logins = new Map();
    this.#version = p.table.version;
    const zero = { total: 0, password: 0, otp: 0, fingerprint: 0 };
    this.#keepTable({
      kind: 'table',
      t: now,
      version: p.table.version,
      periodId: p.periodId,
      issuedAt: p.table.issuedAt,
      expiresAt: p.table.expiresAt,
      sites: p.table.sites.slice(0, 64).map((s) => {
        const a = p.attacks.get(s.site) ?? zero;
        return { site: s.site, level: s.level, floor: s.floor, degreePpm: s.degreePpm, mechs: s.mechs.map((m) => ({ mech: m.mech, ratePpm: m.ratePpm })), attacks: { total: a.total, password: a.password, otp: a.otp, fingerprint: a.fingerprint } };
      }),
    });
  }

  #keepTable(m: FeedMessage): void {
    if (!this.#checked(m)) return;
    this.#tables.push(m);
    if (this.#tables.length > this.#o.tableHistory) this.#tables.shift();
    for (const s of this.#subs) s.sink(m);
  }

  /** A server log line: a few messages become server events, projected field by field. */
  log(line: LogLine): void {
    const event = LOG_EVENTS[line.msg];
    if (!event) return;
    // 'gateway/biz-east' (the gateway's end of a link) and 'biz-east/link' name one server.
    const svc = String(line.svc);
    const server = svc.startsWith('gateway/') ? svc.slice(8) : svc.split('/')[0]!;
    if (!NAME_RE.test(server)) return;
    const m: FeedMessage = { kind: 'server', t: this.#o.now(), server, event };
    if (typeof line.code === 'string') m.code = CODE_RE.test(line.code) ? line.code : 'unreadable';
    if (typeof line.user === 'string' && USER_RE.test(line.user)) m.user = line.user;
    if (typeof line.gen === 'number' && Number.isInteger(line.gen) && line.gen >= 0) m.gen = line.gen;
    if (typeof line.ip === 'string' && this.#phones.has(line.ip)) {
      m.phone = line.ip;
      const p = this.#phones.get(line.ip)!;
      if (m.user) p.user = m.user as string;
      if (event === 'login ok') {
        if (m.gen !== undefined) p.gen = m.gen as number;
        p.server = server;
      }
      this.#phonesDirty = true;
    }
    this.#publish(m);
    // S3.11: the attack table that rode along in this phone's credential reply (or was held back as too large).
    if (event === 'credentials issued' && m.phone) {
      const v = line.table ?? line.tableWithheld;
      if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) {
        const withheld = line.table === undefined;
        const item: Record<string, unknown> = { t: m.t, kind: 'call', from: 'policy', to: 'registration', op: `table v${v}`, feature: 'S3.11', refused: withheld };
        if (withheld) item.answer = 'too large - not sent';
        this.#trace(m.phone as string, { kind: 'trace', t: m.t, phone: m.phone, item });
      }
    }
    if (event === 'login ok' && line.promoted === true) this.#publish({ ...m, event: 'password promoted' });
  }

  /** One tick: the fleet figures of the last interval, the health, the phones if they changed. */
  tick(): void {
    const now = this.#o.now();
    const s = this.#second;
    this.#second = { logins: 0, refusals: 0, latencies: [] };
    const per = 1_000 / this.#o.tickMs;
    const stats: FeedMessage = {
      kind: 'stats',
      t: now,
      loginsPerSec: s.logins * per,
      refusalsPerSec: s.refusals * per,
      p50Ms: s.latencies.length ? percentile(s.latencies, 50) : null,
      p99Ms: s.latencies.length ? percentile(s.latencies, 99) : null,
    };
    this.#stats.push(stats);
    if (this.#stats.length > this.#o.statsHistory) this.#stats.shift();
    this.#publish(stats);
    this.#health = { kind: 'health', t: now, ...this.#o.health() };
    this.#publish(this.#health);
    this.flushPhones();
  }

  /** Publishes the phones table now if it changed (the tick does it at most once per interval). */
  flushPhones(): void {
    if (!this.#phonesDirty) return;
    this.#phonesDirty = false;
    this.#publish(this.#phonesMessage());
  }

  #phonesMessage(): FeedMessage {
    // The most recently active phones first; the page shows the total beside them.
    const rows = [...this.#phones.values()].reverse().slice(0, 200);
    return {
      kind: 'phones',
      t: this.#o.now(),
      total: this.#phones.size,
      phones: rows.map((p) => ({ id: p.id, ...(p.label ? { label: p.label } : {}), state: p.state, lastLogin: p.lastLogin, server: p.server, gen: p.gen, user: p.user, lastCode: p.lastCode, logins: p.logins })),
    };
  }

  #phone(ip: string, now: number): PhoneRow {
    let p = this.#phones.get(ip);
    if (p) this.#phones.delete(ip);
    else {
      p = { id: ip, state: 'connecting', lastLogin: null, server: null, gen: null, user: null, lastCode: null, logins: 0, since: null, seen: now };
      this.#phonesDirty = true;
    }
    p.seen = now;
    this.#phones.set(ip, p);
    if (this.#phones.size > this.#o.maxPhones) this.#phones.delete(this.#phones.keys().next().value!);
    return p;
  }

  #trace(ip: string, m: FeedMessage): void {
    // Kept unchecked: the schema is checked when it is sent, live (below) or to a new
    // subscriber of this phone (subscribe): most phones' steps are never watched (issue 15).
    let list = this.#traces.get(ip);
    if (list) this.#traces.delete(ip);
    else list = [];
    list.push(m);
    if (list.length > this.#o.historyPerPhone) list.shift();
    this.#traces.set(ip, list);
    if (this.#traces.size > this.#o.maxTracedPhones) this.#traces.delete(this.#traces.keys().next().value!);
    for (const s of this.#subs) if (s.phone === ip && this.#stepChecked(m)) s.sink(m);
  }

  /** A kept step's verdict, checked the first time it is sent. */
  #stepChecked(m: FeedMessage): boolean {
    let ok = this.#verdicts.get(m);
    if (ok === undefined) {
      ok = this.#checked(m);
      this.#verdicts.set(m, ok);
    }
    return ok;
  }

  #publish(m: FeedMessage): void {
    if (!this.#subs.size && m.kind !== 'health' && m.kind !== 'stats') return;
    if (!this.#checked(m)) return;
    for (const s of this.#subs) s.sink(m);
  }

  /** The schema's verdict; a refused message is counted and dropped, never sent. */
  #checked(m: FeedMessage): boolean {
    const v = feedValidator();
    const ok: boolean = v(m);
    if (ok) return true;
    this.refused++;
    this.lastRefusal = `${m.kind}: ${v.errors?.[0]?.instancePath ?? ''} ${v.errors?.[0]?.message ?? ''}`;
    return false;
  }
}
