// UPMon (S0.4-S0.10): reads the chip's public identity through the secure controller;
// authenticates with the registration server, primary then backup (S0.5, S0.6), the device
// key used inside the chip; asks for the business credentials with serial and local IP (S0.8);
// a "not found" stops everything (S0.9); an invalid server message ends that session (S0.7);
// hands the wrapped secret to the chip and saves the record (power-cut safe) before the main
// program uses them (S0.10). When no registration server answers, the main program starts
// with a failure notice (S0.13).
// The exchange itself is protocol/registration.ts's RegistrationClient; UPMon keeps the
// program: server order, backoff, save-before-use, traces.
import { bytesToHex } from '@noble/hashes/utils.js';
import { RegistrationClient, type RegistrationEvent, type RegistrationOutcome } from '../protocol/registration.ts';
import type { CredReply } from '../protocol/messages.ts';
import { ClientSession, isSessionEnd } from './client-session.ts';
import { backoffMs } from './loop.ts';
import { mergeCredReply, withGens, type SavedLogin } from './saved-login.ts';
import type { Board } from './board.ts';
import type { PublicIdentity } from './storage.ts';
import type { UpmonConfig } from './boot.ts';
import { acceptTable, type PolicyConfig } from './policy-table.ts';

export type UpmonOutcome =
  | {
      kind: 'registered'; login: SavedLogin; rotatedGen: number; mainProgram: string; mainSha256: string; policy: PolicyConfig;
      /** Board.tablesPushed when `login` was written to the saved record (absent: the board does not count). */
      tablesPushedAtSave?: number;
    }
  | { kind: 'registration-failed'; reason: string; mainProgram: string; mainSha256: string; policy: PolicyConfig }
  | { kind: 'not-found'; reason: string }
  | { kind: 'identity-failed'; reason: string };

/** A registration session: the registration machine over one connection. */
type RegSession = ClientSession<RegistrationEvent, RegistrationOutcome>;

export class Upmon {
  #identity: PublicIdentity | null = null;
  /** The firmware measurement the chip took at power-on: what the hello attests. */
  #measurement: Uint8Array | null = null;
  /** Codes the registration servers themselves answered with ("try later"), to report what happened. */
  #answered = new Set<string>();
  /**
   * Endpoints (0 primary, 1 backup) whose server refused us with a code of retry class `never`
   * (REG_FIRMWARE_REFUSED, HS_AUTH_FAILED, ...): asking it again this boot gets the same answer,
   * so it is not asked again; when both have, registration ends at once (no backoff rounds).
   */
  #refused = new Map<number, string>();

  constructor(
    private readonly dev: Board,
    private readonly cfg: UpmonConfig,
    private readonly done: (o: UpmonOutcome) => void,
  ) {}

  start(): void {
    const dev = this.dev;
    const id = dev.storage.readIdentity();
    if (!id.ok) {
      dev.trace('S0.4', 'read identity', `secure element: ${id.status}`, false);
      return this.done({ kind: 'identity-failed', reason: `identity unreadable from the secure element (${id.status})` });
    }
    this.#identity = id.value;
    dev.trace('S0.4', 'read identity', `secure element: serial token, key v${id.value.keyVersion}; the device key stays in the chip`);
    // The chip measured the boot files itself at power-on; its device key MACs only that measurement.
    const att = dev.storage.attestation();
    if (!att.ok) {
      dev.trace('S0.4', 'attestation', `secure element: the boot files did not verify (${att.status}); no hello`, false);
      return this.done({ kind: 'identity-failed', reason: `the secure element did not verify the boot files (${att.status})` });
    }
    this.#measurement = att.value.measurement;
    this.#attempt(0, 0);
  }

  /** Round `round`, endpoint `i` (0 primary, 1 backup). */
  #attempt(round: number, i: number): void {
    const dev = this.dev;
    const endpoint = i === 0 ? this.cfg.regPrimary : this.cfg.regBackup;
    const id = this.#identity!;
    const machine = new RegistrationClient({ dest: endpoint.dest, deviceKey: dev.storage.deviceKeys(), serialToken: id.serialToken, measurement: this.#measurement!, serial: id.serial, localIp: dev.net.localIp, rng: dev.rng });
    let credAt = 0;
    const credMs = () => dev.clock.now() - credAt;
    const session: RegSession = new ClientSession(dev, endpoint.url, machine, () => {
      // 'authenticated': the server proved it holds the device key; the request is on its way.
      dev.trace('S0.5', `hello -> ${session.dest}`, `mutual authentication ok, firmware measurement ${bytesToHex(this.#measurement!).slice(0, 16)} accepted`, true, dev.clock.now() - session.openedAt);
      credAt = dev.clock.now();
      session.arm('credential reply');
    }, (r) => {
      if (!isSessionEnd(r)) {
        if (r.kind === 'not-found') {
          dev.trace('S0.9', `credentials <- ${session.dest}`, `not found: ${r.reason}`, false, credMs());
          dev.notice(`This phone is not registered: ${r.reason}`);
          this.#forget();
          return this.done({ kind: 'not-found', reason: r.reason });
        }
        return this.#registered(session.dest, credMs(), r.cred);
      }
      if (r.kind === 'unreachable' && r.stale) {
        // The held connection ended before this server answered (§2.1): again at once on a new connection.
        dev.trace('S0.6', `session ${session.dest}`, `${r.why}: again at once on a new connection`);
        return this.#attempt(round, i);
      }
      const feature = r.kind === 'unreachable' ? 'S0.6' : 'S0.7';
      // A server's own "not now" (REG_/SRV_ codes), not the gateway's word that it is unreachable.
      if (r.kind === 'unreachable' && r.code && !r.code.startsWith('GW_')) this.#answered.add(r.code);
      dev.trace(feature, `session ${session.dest}`, `${r.kind}: ${'code' in r ? `${r.code} ` : ''}${r.why}`, false, session.ms);
      // A server's own refusal for good (an error frame whose code's retry class is `never`).
      if (r.kind === 'refused') this.#refused.set(i, r.code);
      const next = this.#nextAttempt(round, i);
      if (!next) {
        this.#forget();
        // Say what happened: nobody answered, a server answered "not now" (REG_NO_BIZ_SERVER...), or refused us.
        const codes = [...new Set([...this.#answered, ...this.#refused.values()])];
        const reason = this.#refused.size === 2
          ? `both registration servers refused this phone (${codes.join(', ')})`
          : codes.length ? `no registration server could issue credentials (${codes.join(', ')})` : 'no registration server answered';
        dev.trace('S0.13', 'registration', `${reason}: main program starts with a failure notice`, false);
        return this.done({ kind: 'registration-failed', reason, mainProgram: this.cfg.mainProgram, mainSha256: this.cfg.mainSha256, policy: this.cfg.policy });
      }
      // A backoff before each new round; none between the primary and the backup of one round.
      const wait = next.round > round ? backoffMs(next.round, dev.rng, dev.config.backoffBaseMs, dev.config.backoffCapMs) : 0;
      dev.loop.after(wait, () => this.#attempt(next.round, next.i));
    });
    session.start();
  }

  /**
   * The attempt after (round, i): the other endpoint of the round, then the next round from the
   * primary, skipping endpoints that refused us for good; null when rounds (S0.6) run out or
   * every endpoint refused.
   */
  #nextAttempt(round: number, i: number): { round: number; i: number } | null {
    if (this.#refused.size === 2) return null;
    let r = round;
    let j = i;
    do {
      if (j === 0) j = 1;
      else {
        j = 0;
        r++;
      }
      if (r >= this.dev.config.regRounds) return null;
    } while (this.#refused.has(j));
    return { round: r, i: j };
  }

  #registered(dest: string, ms: number, cred: CredReply): void {
    const dev = this.dev;
    dev.trace('S0.8', `credentials <- ${dest}`, `user ${cred.user}, ${cred.servers.length} business server(s), best ${cred.servers[0]!.name} (${cred.servers[0]!.region})`, true, ms);
    this.#forget();
    // S0.10: the secret goes into the chip (it arrives wrapped for it), then the record; both
    // before any use. A cut in between leaves the new secret with the old server list.
    const imported = dev.storage.importSecret(cred.user, cred.gen, cred.currentGen, cred.wrapped);
    if (!imported.ok) {
      dev.trace('S0.10', 'import secret', `the secure element refused the new secret (${imported.status}); using the saved login`, false);
      return this.done({ kind: 'registration-failed', reason: `could not import the new secret (${imported.status})`, mainProgram: this.cfg.mainProgram, mainSha256: this.cfg.mainSha256, policy: this.cfg.policy });
    }
    const prev = dev.storage.loadLogin();
    const held = prev.ok ? prev.value : null;
    // S3.11: the reply's attack table is kept only if the policy server signed it, it is newer
    // than the one held and not expired; otherwise the held one stays (against downgrade).
    const t = acceptTable(held?.table ?? null, cred.table, this.cfg.policy, dev.clock.epochMs());
    if (t.verdict.kind === 'accepted') dev.trace('S3.11', 'attack table', `table v${t.verdict.table.version} from the policy server accepted (${t.verdict.table.sites.length} site(s))`);
    else if (t.verdict.kind === 'held') dev.trace('S3.11', 'attack table', 'the table it holds, unchanged');
    else if (t.verdict.kind === 'refused') dev.trace('S3.11', 'attack table', `refused (${t.verdict.code}: ${t.verdict.reason}); the held table stays`, false);
    const record = mergeCredReply(held, cred, t.keep);
    const saved = dev.storage.saveLogin(record);
    const pushes = dev.tablesPushed;
    // The write answered OK only once its slot read back byte for byte: the record is the one
    // written, not read again (issue 15); the chip's generations are asked for.
    const login = saved.ok ? withGens(dev.storage, record) : saved;
    if (!login.ok || !login.value) {
      const status = login.ok ? 'no secret held' : login.status;
      // Never use a secret that is not durably saved: log in with what is saved instead.
      dev.trace('S0.10', 'save credentials', `flash refused the save (${status}); using the saved login`, false);
      return this.done({ kind: 'registration-failed', reason: `could not save credentials (${status})`, mainProgram: this.cfg.mainProgram, mainSha256: this.cfg.mainSha256, policy: this.cfg.policy });
    }
    dev.trace('S0.10', 'save credentials', `new secret gen ${cred.gen} imported into the secure element (business server current gen ${cred.currentGen}); main program started`);
    this.done({ kind: 'registered', login: login.value, rotatedGen: cred.gen, mainProgram: this.cfg.mainProgram, mainSha256: this.cfg.mainSha256, policy: this.cfg.policy, ...(pushes === undefined ? {} : { tablesPushedAtSave: pushes }) });
  }

  /** UPMon keeps the public identity only as long as it needs it. */
  #forget(): void {
    this.#identity = null;
    this.#measurement = null;
  }
}
