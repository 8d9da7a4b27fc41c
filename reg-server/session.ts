// One registration session (S0.5, S0.7-S0.9, S0.14), the server side: the adapter around
// protocol/registration.ts's RegistrationServer. The machine runs the exchange
// (docs/protocol.md §6.2); this file keeps what needs the server: the device key from the
// master keyring, the replay cache, the device record, placement, rotation, logs and metrics.
import { RegistrationServer, RegMessages, type CredentialsNeed, type RegistrationServerStep } from '../protocol/registration.ts';
import { CRED_TABLE_MAX_BYTES, type Envelope } from '../protocol/messages.ts';
import { identifyToken, type MasterKeyring, type TokenRefusal } from '../protocol/keys.ts';
import { ProtocolError, ImplementationError } from '../protocol/errors.ts';
import { bytesToHex } from '@noble/hashes/utils.js';
import type { ReplayCache } from '../protocol/replay.ts';
import { OpeningCheck, type SharedReplay } from '../server-kit/shared-replay.ts';
import { ServerSession, type SessionOptions, type SessionTransport } from '../server-kit/session.ts';
import type { LogField } from '../server-kit/log.ts';
import { alteredTable } from '../server-kit/mutant.ts';
import { StoreWrites } from '../server-kit/store-writes.ts';
import { chooseServers } from './placement.ts';
import { rotate, REISSUE_ALARM, type RotationDeps } from './rotation.ts';
import type { RegStore } from './store.ts';

export interface RegServerSessionDeps extends RotationDeps {
  store: RegStore;
  ring: MasterKeyring;
  replay: ReplayCache;
  /** The replay cache shared by the instances of this server (Redis, issue 16); none: this process's only. */
  sharedReplay?: SharedReplay;
  /** S3.11: the latest signed attack table to hand on (server-kit/table-source.ts), or null. */
  table?: () => Uint8Array | null;
  /** The version the latest table states (for the 'credentials issued' log line and the live page), or null. */
  tableVersion?: () => number | null;
}

export class RegServerSession extends ServerSession {
  protected readonly exchange: RegistrationServer;
  /** Why the hello's token named no device; the peer gets HS_BAD_CLIENT_PROOF whatever it is. */
  #tokenRefusal: TokenRefusal | null = null;
  /**
   * The store's verdict on the measurement of the hello being handled, read before the frame
   * goes to the machine (whose acceptFirmware is synchronous): on PostgreSQL the read is async.
   */
  #firmware: { hex: string; accepted: boolean } | null = null;
  /** Store writes the machine asked for during one receive(), awaited before its reply is sent. */
  readonly #writes = new StoreWrites();
  readonly #opening: OpeningCheck;

  constructor(t: SessionTransport, opts: SessionOptions, private readonly deps: RegServerSessionDeps) {
    super(t, opts);
    const opening = (this.#opening = new OpeningCheck(deps.replay, deps.sharedReplay));
    this.exchange = new RegistrationServer(opts.name, {
      deviceKey: (token) => {
        // The same work and the same answer for every token (identifyToken); why a token
        // named no device goes only into this server's log line (refusalLogFields).
        const id = identifyToken(deps.ring, token);
        this.#tokenRefusal = id.ok ? null : id.why;
        return id.ok ? { serial: id.serial, key: id.key } : null;
      },
      assertFresh: opening.assertFresh,
      acceptFirmware: (serial, measurement) => {
        const hex = bytesToHex(measurement);
        // step() read the verdict for this very hello; anything else is our bug, never a pass.
        if (this.#firmware?.hex !== hex) throw new ImplementationError('EXCHANGE_STATE', 'firmware verdict not loaded for this hello');
        if (this.#firmware.accepted) return;
        this.opts.log.info('firmware refused', { code: 'REG_FIRMWARE_REFUSED', serial, measurement: hex.slice(0, 16) });
        throw new ProtocolError('REG_FIRMWARE_REFUSED', `firmware measurement ${hex.slice(0, 16)}… is not accepted by this server`);
      },
      recordConfirmation: (serial, gen) => this.#writes.write(deps.store.recordConfirmation(serial, gen)),
    });
  }

  /** The operator's view of a refused hello: the token's fault (`why`), or a genuine token with a wrong MAC. */
  protected override refusalLogFields(e: ProtocolError): Record<string, LogField> {
    if (e.code !== 'HS_BAD_CLIENT_PROOF' || this.exchange.serial !== '') return {};
    return { why: this.#tokenRefusal ?? 'HS_BAD_CLIENT_PROOF' };
  }

  protected async step(frame: Uint8Array, env: Envelope): Promise<void> {
    if (env.type === RegMessages.hello.type && this.exchange.serial === '') {
      const loading = this.#loadFirmwareVerdict(env);
      if (loading) await loading;
    }
    let s: RegistrationServerStep;
    try {
      s = this.exchange.receive(frame, env);
    } finally {
      // The store has the write (or the session fails) before the device hears the answer.
      const flushing = this.#writes.flush();
      if (flushing) await flushing;
    }
    // No helloReply leaves before every instance's cache said the hello is new.
    const shared = this.#opening.settle();
    if (shared) await shared;
    this.send(s.send);
    if (s.event) {
      this.opts.log.info('generation confirmed', { serial: s.event.serial, gen: s.event.gen });
      this.opts.metrics?.event('generation_confirmed');
    }
    if (s.need) await this.#credentials(s.need);
  }

  /**
   * One read per well-formed hello, before its MAC is checked (the machine checks it, then asks
   * for the verdict synchronously): a malformed hello is left to the machine to refuse.
   * Synchronous (undefined) when the store is.
   */
  #loadFirmwareVerdict(env: Envelope): Promise<void> | undefined {
    let measurement: Uint8Array;
    try {
      measurement = RegMessages.hello.decode(env.body).measurement;
    } catch {
      return undefined;
    }
    const hex = bytesToHex(measurement);
    const keep = (accepted: boolean) => {
      this.#firmware = { hex, accepted };
    };
    const v = this.deps.store.firmwareAccepted(hex);
    if (v instanceof Promise) return v.then(keep);
    keep(v);
    return undefined;
  }

  /** The credential request (S0.8, S0.9, S0.14): the device record, placement, rotation. */
  async #credentials({ serial, request }: CredentialsNeed): Promise<void> {
    const ip = this.transport.observedIp;
    const device = await this.deps.store.getDevice(serial);
    if (!device || device.status !== 'active') {
      this.opts.log.info('device not found', { code: 'REG_NOT_FOUND', serial, disabled: device?.status === 'disabled', ip });
      this.opts.metrics?.event('device_not_found');
      return this.#finish(this.exchange.answer({ kind: 'not-found', reason: device ? 'device disabled' : 'device not registered' }), 'REG_NOT_FOUND');
    }
    const [regions, servers] = await Promise.all([this.deps.store.listRegions(), this.deps.store.listServers()]);
    const choices = chooseServers(ip, regions, servers);
    if (choices.length === 0) throw new ProtocolError('REG_NO_BIZ_SERVER', 'no healthy business server');
    const r = await rotate(this.deps, device, choices);
    if (this.ended) {
      // The device went away while we rotated: nothing to send; the business server keeps
      // its current generation, so the device's saved secret still works.
      r.secret.fill(0);
      return;
    }
    // S3.11: the policy server's latest table rides along, if it fits a credential reply (a
    // table of thousands of sites does not: the phone keeps the one it has, and says so).
    const table = this.deps.table?.() ?? null;
    const fits = table !== null && table.length <= CRED_TABLE_MAX_BYTES;
    if (table) this.opts.metrics?.event(fits ? 'table_sent' : 'table_too_large');
    // The machine seals the reply and wipes the secret.
    const step = this.exchange.answer({ kind: 'cred', reply: {
      user: device.user,
      secret: r.secret,
      gen: r.gen,
      currentGen: r.currentGen,
      servers: choices.map((s) => ({ name: s.name, url: s.url, region: s.region })),
      ...(fits ? { table: this.opts.mutant === 'altered-table' ? alteredTable(table) : table } : {}),
    } });
    this.opts.metrics?.event(r.reissued ? 'credentials_reissued' : 'credentials_issued');
    if (r.pendingReissues >= REISSUE_ALARM) {
      // The same pending secret, again and again, and no login with it: its logins fail (an
      // attacker on the device's path keeping the old password current, issue 9). Raised,
      // not replaced: a new secret would fail the same way, and replacing could cost the device
      // the generation it holds.
      this.opts.log.warn('pending secret re-issued without a login', { serial: device.serial, gen: r.gen, currentGen: r.currentGen, reissues: r.pendingReissues });
      this.opts.metrics?.event('pending_reissue_alarm');
    }
    this.opts.log.info('credentials issued', {
      serial: device.serial, user: device.user, gen: r.gen, currentGen: r.currentGen, ip, via: this.transport.via,
      region: choices[0]!.region, first: choices[0]!.name, reissued: r.reissued, installedAt: r.installedAt, localIp: request.localIp,
      // S3.11: which table rode along (or was held back as too large), by the version it states.
      ...(table ? { [fits ? 'table' : 'tableWithheld']: this.deps.tableVersion?.() ?? null } : {}),
    });
    this.#finish(step, 'done');
  }

  #finish(step: RegistrationServerStep, reason: string): void {
    this.send(step.send);
    if (step.done) this.end(step.done.closeCode, this.opts.mutant === 'leak-serial' ? `${reason} ${this.exchange.serial}` : reason);
  }
}
