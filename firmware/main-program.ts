// The main program (S0.11-S0.14): logs into a business server with what UPMon handed over,
// or, when no registration server answered, with the saved login (S0.13); tries servers in
// order and the newest secret first, each login computed inside the chip; after a login saves
// the server it used (S0.12), confirms a password change, and only once the server acknowledged
// the newer generation retires the older ones in the chip (S0.14). A login that worked with an
// older generation keeps the newer one: the server may still accept it later.
// The exchange itself is protocol/login.ts's LoginClient; this file keeps the program.
// With a person at the device who asks for the bank (S4), the bank step runs on the same
// sealed channel after the confirmation (protocol/bank.ts BankClient as the login's `then`):
// the card info read from the SIM by the firmware itself (S4.2, S4.8), the person's login name
// and password from the keypad (never stored, never traced).
// The person layer (S3.3): at the bank registration the person's finger is enrolled in the chip
// if none is yet (first use), the chip's fingerprint key for the site goes with the request,
// and the TOTP seed the bank answers with is imported into the chip; at a login with a one-time
// code or a fingerprint the proof is made by the chip once the channel is up (the fingerprint
// signs the channel's binding), and a proof the chip will not make ends the step on the phone.
import { sha256Of } from '../protocol/crypto-engine.ts';
import { LoginClient } from '../protocol/login.ts';
import { BankClient, type BankOutcome, type BankRequest } from '../protocol/bank.ts';
import { maskAccount, type LineIds } from '../protocol/bank-messages.ts';
import { firstIdentifier, maskCardNumber } from './first-identifier.ts';
import { tableForChoice, chooseAmong, withNewestTable } from './policy-table.ts';
import { personMechanisms, personProof, enrolFinger } from './person-proof.ts';
import type { FingerprintKey } from '../protocol/bank-messages.ts';
import type { PersonEntry } from './hal/person.ts';
import type { Mechanism, ServerChoice } from '../protocol/messages.ts';
import { bytesToHex } from '@noble/hashes/utils.js';
import { ClientSession, isSessionEnd } from './client-session.ts';
import { backoffMs } from './loop.ts';
import { afterLogin, serverOrder, loadSaved, type SavedLogin } from './saved-login.ts';
import type { Board } from './board.ts';
import type { UpmonOutcome } from './upmon.ts';

/**
 * How the bank step ended (S4.7): registered (the account number, S4.8), the account page
 * (masked number; the page token for a browser), the bank's refusal with its code, or no
 * answer (`failed`: the session ended first, or no card info to send).
 */
export type BankStepOutcome =
  /** `otp` / `fingerprint`: the chip now holds the site's seed / the bank kept its fingerprint key (S3.3). */
  | { kind: 'registered'; account: string; mode: 1 | 2; otp: boolean; fingerprint: boolean }
  | { kind: 'page'; account: string; mode: 1 | 2; mech: Mechanism; lastLogins: number; token: Uint8Array; ttlS: number }
  | { kind: 'refused'; code: string; reason: string }
  /** The chip made no proof of the person (S3.3: another finger, blocked, ...): nothing was sent; a device-local PERSON_* code. */
  | { kind: 'no-proof'; code: string; reason: string }
  | { kind: 'failed'; reason: string };

export type MainOutcome =
  | { ok: true; server: string; gen: number; via: 'registration' | 'saved'; bank?: BankStepOutcome }
  | { ok: false; kind: 'login-failed' | 'no-saved-login' | 'boot-failed'; reason: string };

/** Readings of the finger one fingerprint proof may take (S3.3): below the chip's block limit of 5. */
const FP_ATTEMPTS = 3;

export class MainProgram {
  #login: SavedLogin | null = null;
  #via: 'registration' | 'saved' = 'registration';
  #tries: { server: ServerChoice; gen: number }[] = [];
  #failures: string[] = [];
  #round = 0;
  /** Tries that failed only because the server was unreachable: the next round retries them. */
  #retry: { server: ServerChoice; gen: number }[] = [];
  /** The bank step asked for (S4): the person's entry and the line ids read from the card. */
  #bank: { entry: PersonEntry; ids: LineIds } | null = null;
  #bankFailed: string | null = null;
  /** Board.tablesPushed when #login was read from the saved record; undefined: unknown (re-read before the write). */
  #pushesAtRead: number | undefined;

  constructor(
    private readonly dev: Board,
    private readonly up: Exclude<UpmonOutcome, { kind: 'not-found' | 'identity-failed' }>,
    private readonly done: (o: MainOutcome) => void,
  ) {}

  start(): void {
    const dev = this.dev;
    const exe = dev.storage.readFreeFile(this.up.mainProgram);
    // UPMon checks the main program against the hash in its own (read-only) configuration.
    if (!exe.ok) return this.done({ ok: false, kind: 'boot-failed', reason: `main program ${this.up.mainProgram} unreadable (${exe.status})` });
    if (programHash(exe.value) !== this.up.mainSha256) {
      dev.trace('S0.10', 'start main program', `${this.up.mainProgram} does not match the hash in UPMon's configuration`, false);
      return this.done({ ok: false, kind: 'boot-failed', reason: `BOOT_HASH_MISMATCH: ${this.up.mainProgram} does not match its hash` });
    }
    if (this.up.kind === 'registered') {
      this.#login = this.up.login;
      this.#pushesAtRead = this.up.tablesPushedAtSave;
    } else {
      this.#via = 'saved';
      this.#pushesAtRead = dev.tablesPushed;
      const saved = loadSaved(dev.storage);
      if (!saved.ok || !saved.value) {
        const why = saved.ok ? 'no saved login' : `saved login unreadable (${saved.status})`;
        dev.trace('S0.13', 'saved login', why, false);
        return this.done({ ok: false, kind: 'no-saved-login', reason: `${this.up.kind === 'registration-failed' ? this.up.reason : 'no registration'} and ${why}` });
      }
      this.#login = saved.value;
      dev.trace('S0.13', 'saved login', `logging in with the saved copy (user ${saved.value.user}, last server ${saved.value.lastServer ?? 'none'})`);
    }
    this.#askBank();
    this.#plan();
    this.#next();
  }

  /** The person's bank request, if any, with the line ids the firmware reads itself (S4.2). */
  #askBank(): void {
    const dev = this.dev;
    const entry = dev.person?.bankEntry() ?? null;
    if (!entry) return;
    // The first identifier by profile (S0.15): the SIM's card info on a phone, the card's number in an ATM.
    const id = firstIdentifier(dev);
    if (!id.ok) {
      dev.trace('S4.2', 'first identifier', `${id.reason}: ${id.detail}; no bank step`, false);
      this.#bankFailed = `${id.reason}: ${id.detail}`;
      return;
    }
    if (id.kind === 'card') {
      dev.trace('S4.2', 'read card number', `bank card ${maskCardNumber(id.cardNumber)} (from the card's secure controller, never typed)`);
      this.#bank = { entry, ids: { idKind: 'card', cardId: id.cardNumber } };
      return;
    }
    const c = id.info;
    dev.trace('S4.2', 'read SIM card', `${c.cardType} ICCID ${c.iccid}, IMSI ${c.imsi}${c.msisdn ? `, number ${c.msisdn}` : ', no number on the card'} (read by the firmware, never typed)`);
    this.#bank = { entry, ids: { idKind: 'sim', iccid: c.iccid, imsi: c.imsi, msisdn: c.msisdn ?? null } };
  }

  /**
   * The smart client's choice (S3.1, S3.2) for a login to `site` with a person at the device:
   * the least-attacked mechanism in the attack table the phone holds (firmware/policy-table.ts;
   * random among equals), among those this device can prove (personMechanisms). Without a
   * person (a device-only login) the opening states 'password', the device's own.
   */
  #mechFor(site: string): Mechanism {
    const dev = this.dev;
    if (!this.#bank || this.#bank.entry.action !== 'login') return 'password';
    // What the chip holds for this site (not anything the host could have written).
    const st = dev.storage.person.personStatus();
    const entry = this.#bank.entry;
    const capable = personMechanisms(entry, st.ok ? st.value : null, site, dev.fingerprint !== undefined);
    if (capable.length === 0) {
      // Nothing the person agreed to is provisioned here: the first they asked for, which the
      // phone then cannot prove (no-proof, nothing sent); never a password they did not offer.
      const m = entry.mechanisms?.[0] ?? 'password';
      dev.trace('S3.1', `mechanism for ${site}`, `${m} (the person asked for ${entry.mechanisms?.join(', ') ?? 'password'}; this device proves none of them here)`, false);
      return m;
    }
    const t = tableForChoice(this.#login?.table ?? null, this.up.policy, dev.clock.epochMs());
    const m = chooseAmong(t.table, site, dev.rng, capable);
    const row = t.table?.sites.find((s) => s.site === site);
    const rates = row ? row.mechs.map((x) => `${x.mech} ${(x.ratePpm / 10_000).toFixed(1)} %`).join(', ') : 'no entry for the site';
    dev.trace('S3.1', `mechanism for ${site}`, `${m} (${t.why}: ${rates}; this device proves ${capable.join(', ')})`, t.table !== null);
    return m;
  }

  /**
   * A fresh bank request for one login try to `site` with generation `gen` (the proof is
   * wiped once sealed). A one-time code or a fingerprint is proved by the chip only when the
   * channel is up (BankClient's prover); a registration carries the chip's fingerprint key for
   * the site, the finger enrolled first if the chip holds none (first use).
   */
  #bankRequest(mech: Mechanism, site: string, gen: number): BankRequest | null {
    const b = this.#bank;
    if (!b) return null;
    const dev = this.dev;
    const { action, name, password } = b.entry;
    if (action === 'login') {
      if (mech === 'password') return { kind: 'login', name, mech, proof: new TextEncoder().encode(password), ids: b.ids };
      return {
        kind: 'prove', name, mech, ids: b.ids, ...(mech === 'otp' ? { password } : {}),
        prove: (binding) => {
          // A finger badly placed is not matched (about 2 % of readings, docs/firmware.md): the
          // person is asked to touch the sensor again, at most FP_ATTEMPTS times in all, as phones
          // do; each miss counts against the chip's block limit (5 in a row).
          let r = personProof(dev.storage.person, dev.fingerprint, mech, site, binding ?? new Uint8Array(0));
          for (let i = 1; i < FP_ATTEMPTS && !r.ok && r.code === 'PERSON_FP_NO_MATCH'; i++) {
            dev.trace('S3.3', 'fingerprint', 'not recognized: touch the sensor again', false);
            r = personProof(dev.storage.person, dev.fingerprint, mech, site, binding ?? new Uint8Array(0));
          }
          // The code and the signature are what the bank receives anyway; still, never traced.
          dev.trace('S3.3', `${mech} proof`, r.ok ? `made by the secure controller${mech === 'fingerprint' ? ' over this session\'s channel binding, after the finger matched' : ' for its own clock'}` : `${r.code}: ${r.detail}`, r.ok);
          return r;
        },
      };
    }
    if (action === 'rebind') return { kind: action, name, password, ids: b.ids };
    const fingerprint = this.#fingerprintKey(site, gen);
    return { kind: action, name, password, ids: b.ids, ...(fingerprint ? { fingerprint } : {}) };
  }

  /** The chip's fingerprint key for `site` (S3.3), the person's finger enrolled first if none is; null when the phone cannot. */
  #fingerprintKey(site: string, gen: number): FingerprintKey | null {
    const dev = this.dev;
    const sensor = dev.fingerprint;
    if (!sensor) return null;
    const st = dev.storage.person.personStatus();
    if (!st.ok) return null;
    if (st.value.finger === 'empty') {
      const e = enrolFinger(dev.storage.person, sensor);
      dev.trace('S3.3', 'enrol finger', e.ok ? 'the finger on the sensor is enrolled in the secure controller (first use; the template stays in the chip)' : `not enrolled (${e.status})`, e.ok);
      if (!e.ok) return null;
    } else if (st.value.finger === 'blocked') {
      dev.trace('S3.3', 'fingerprint key', 'the fingerprint is blocked in the secure controller: no key for the site', false);
      return null;
    }
    const k = dev.storage.person.fpKey(site, gen);
    dev.trace('S3.3', 'fingerprint key', k.ok ? `the secure controller's key for ${site}, attested under the login key of gen ${gen}` : `none (${k.status})`, k.ok);
    return k.ok ? { publicKey: k.value.publicKey, attestation: k.value.attestation } : null;
  }

  /** Traces the bank's answer (S4.1, S4.7, S4.8) and turns it into the device's outcome; imports a TOTP seed the registration brought (S3.3). */
  #bankOutcome(o: BankOutcome | undefined, why: string, t: { site: string; gen: number; mech: Mechanism }): BankStepOutcome | undefined {
    const dev = this.dev;
    if (!this.#bank) return this.#bankFailed ? { kind: 'failed', reason: this.#bankFailed } : undefined;
    const action = this.#bank.entry.action;
    if (!o) {
      dev.trace('S4.7', `bank ${action}`, `no answer from the bank (${why})`, false);
      return { kind: 'failed', reason: why };
    }
    if (o.kind === 'refused') {
      dev.trace('S4.7', `bank ${action}`, `login not allowed: ${o.code}: ${o.reason}`, false);
      dev.notice(`The bank refused: ${o.reason} (${o.code})`);
      return { kind: 'refused', code: o.code, reason: o.reason };
    }
    if (o.kind === 'no-proof') {
      dev.trace('S3.3', `bank ${action}`, `no ${t.mech} proof: ${o.code}: ${o.reason}; nothing sent, the step ends here`, false);
      dev.notice(`No ${t.mech === 'fingerprint' ? 'fingerprint' : 'one-time code'}: ${o.reason} (${o.code})`);
      return { kind: 'no-proof', code: o.code, reason: o.reason };
    }
    if (o.kind === 'registered') {
      const r = o.registered;
      dev.trace('S4.1', `bank ${action}`, `${action === 'rebind' ? 'binding moved to this card' : 'account opened'}: ${maskAccount(r.account)}, mode ${r.mode} (S4.8: the binding holds the number)`);
      let otp = false;
      if (r.otpSeed) {
        // The seed stays wrapped on its way through the host: only the chip opens it (§17).
        const imp = dev.storage.person.otpImport(t.site, t.gen, r.otpSeed);
        otp = imp.ok;
        dev.trace('S3.3', 'one-time code seed', imp.ok ? `imported into the secure controller for ${t.site} (it arrived wrapped under the login key)` : `not imported (${imp.status})`, imp.ok);
      }
      if (r.fpKept !== undefined) dev.trace('S3.3', 'fingerprint key', r.fpKept ? `kept by ${t.site}` : `not kept by ${t.site}`, r.fpKept);
      return { kind: 'registered', account: r.account, mode: r.mode, otp, fingerprint: r.fpKept ?? false };
    }
    const p = o.page;
    dev.trace('S4.7', 'bank login', `account page: ${p.account}, found in mode ${p.mode} (${p.mode === 1 ? 'S4.3' : 'S4.4'}) with ${t.mech}, ${p.lastLogins.length} recent login(s)`);
    return { kind: 'page', account: p.account, mode: p.mode, mech: t.mech, lastLogins: p.lastLogins.length, token: p.token, ttlS: p.ttlS };
  }

  /**
   * Every server, and for each the newest secret first. After a registration, in the order
   * the registration server chose for this IP (S0.8); from the saved copy, the server that
   * last worked first (S0.13).
   */
  #plan(): void {
    const gens = [...this.#login!.gens].sort((a, b) => b - a);
    const servers = this.#via === 'saved' ? serverOrder(this.#login!) : this.#login!.servers;
    for (const server of servers) for (const gen of gens) this.#tries.push({ server, gen });
  }

  #next(): void {
    const dev = this.dev;
    const t = this.#tries.shift();
    if (!t) {
      // Another round, after a backoff, over what was only unreachable (a refused secret
      // stays refused), while rounds remain.
      if (this.#retry.length && ++this.#round < dev.config.loginRounds) {
        this.#tries.push(...this.#retry.splice(0));
        dev.loop.after(backoffMs(this.#round, dev.rng, dev.config.backoffBaseMs, dev.config.backoffCapMs), () => this.#next());
        return;
      }
      return this.done({ ok: false, kind: 'login-failed', reason: `no business login succeeded (${this.#failures.join('; ')})` });
    }
    const login = this.#login!;
    const newest = Math.max(...login.gens);
    let savedOk = false;
    let loggedIn = false;
    /** pwConfirmAck came back and the bank step started on the channel. */
    let continued = false;
    /** S0.12: save the server that worked before anything else. Returns whether to confirm a change (S0.14). */
    const save = (): boolean => {
      loggedIn = true;
      // Nothing changed (a login from the saved copy on the same server): spare the flash.
      const unchanged = login.lastServer === t.server.name;
      // S3.11: a table pushed during this login was kept in the record meanwhile: the write
      // keeps the newer of the two, never the one read before the push. Only a push can have
      // changed the record's table since it was read (UPMon's write comes before that read), so
      // without one the record is not read again (issue 15: one sealed read less per login).
      const pushed = this.#pushesAtRead === undefined || dev.tablesPushed !== this.#pushesAtRead;
      const next = unchanged || !pushed ? afterLogin(login, t.server.name) : withNewestTable(dev, this.up.policy, afterLogin(login, t.server.name));
      const r = unchanged ? ({ ok: true } as const) : dev.storage.saveLogin(next);
      savedOk = r.ok;
      if (r.ok) this.#login = { ...next, gens: login.gens };
      if (!unchanged) dev.trace('S0.12', 'save login', r.ok ? `user ${login.user}, gen ${t.gen}, server ${t.server.name} (${hostOf(t.server.url)}) saved` : `save failed (${r.status}); the older record stays`, r.ok);
      // Always say which generation works, and wait for the answer: the server promotes a
      // pending generation when it takes the finish, which the acknowledgement follows on the
      // same ordered stream, so the login is complete at the server once it arrives (a phone
      // that hung up right after the finish could leave the promotion undone, and the password
      // would never change). The newest confirms the change (S0.14); an older one reports a
      // fallback, which the server counts (issue 9).
      return true;
    };
    const mech = this.#mechFor(t.server.name);
    const bankReq = this.#bankRequest(mech, t.server.name, t.gen);
    const machine = new LoginClient<BankOutcome>({ dest: t.server.name, user: login.user, gen: t.gen, secret: dev.storage.loginKeys(), rng: dev.rng, mech, ...(bankReq ? { then: new BankClient(bankReq) } : {}) });
    const s = new ClientSession(
      dev,
      t.server.url,
      machine,
      (e) => {
        if (e === 'acknowledged') {
          dev.trace('S0.11', `login -> ${s.dest}`, 'received, verifying', true, s.ms);
          return s.arm('login result');
        }
        if (e === 'continued') {
          continued = true;
          dev.trace('S4.5', `bank -> ${s.dest}`, `${bankReq!.kind === 'prove' ? `login (${mech})` : bankReq!.kind} request sealed on the login's channel`);
          return s.arm('bank answer');
        }
        // 'logged-in': the server proved itself; save, then confirm or end.
        const confirm = save();
        s.apply(machine.afterLogin(confirm));
        if (confirm) s.arm('password-change acknowledgement');
      },
      (r) => {
        if (!isSessionEnd(r) && r.kind === 'ok' && r.confirmed && t.gen !== newest) {
          // A fallback, reported: the newer generation stays held for when the server promotes it.
          dev.trace('S0.14', `password change -> ${s.dest}`, `gen ${t.gen} in use; the newer gen ${newest} did not work and is kept (reported to the server)`, false);
        } else if (!isSessionEnd(r) && r.kind === 'ok' && r.confirmed) {
          // The server acknowledged the newer generation: only now are the older ones let go.
          const retired = dev.storage.retireOlder(t.gen);
          const what = login.gens.length > 1 ? (retired.ok ? '; older generations retired in the secure element' : `; the older generation stays (${retired.status})`) : '';
          dev.trace('S0.14', `password change -> ${s.dest}`, `gen ${t.gen} confirmed${what}`, true);
          if (retired.ok) this.#login = { ...this.#login!, gens: [t.gen] };
        }
        if (loggedIn && isSessionEnd(r) && !continued) {
          // Logged in; only the confirmation was lost. Both generations stay in the chip, so
          // the next login works whichever the server holds.
          dev.trace('S0.14', `password change -> ${t.server.name}`, `confirmation not acknowledged (${r.why}); both generations kept`, false);
        }
        if (loggedIn) {
          dev.trace('S0.11', `login <- ${t.server.name}`, `confirmed: logged in as ${login.user} with gen ${t.gen}${savedOk ? '' : ' (not saved)'}`, true, s.ms);
          const bank = this.#bankOutcome(!isSessionEnd(r) && r.kind === 'ok' ? r.then : undefined, isSessionEnd(r) ? `${r.kind}: ${r.why}` : 'no bank request sent', { site: t.server.name, gen: t.gen, mech });
          return this.done({ ok: true, server: t.server.name, gen: t.gen, via: this.#via, ...(bank ? { bank } : {}) });
        }
        if (isSessionEnd(r) && r.kind === 'unreachable' && r.stale) {
          // The held connection ended before this session's server answered (§2.1): the same
          // try at once on a new connection (a new opening), not a failure and no backoff.
          dev.trace('S0.11', `login -> ${t.server.name}`, `${r.why}: again at once on a new connection`);
          this.#tries.unshift(t);
          return this.#next();
        }
        const why = isSessionEnd(r) ? `${r.kind}${'code' in r ? ` ${r.code}` : ''}: ${r.why}` : r.kind === 'failed' ? `${r.code}: ${r.reason}` : 'ended before login';
        this.#failures.push(`${t.server.name}/gen ${t.gen}: ${why}`);
        if (isSessionEnd(r) && r.kind === 'unreachable') this.#retry.push(t);
        dev.trace('S0.11', `login ${t.server.name}`, `gen ${t.gen} failed: ${why}`, false, s.ms);
        this.#next();
      },
    );
    s.start();
    // Issue 15 (docs/protocol.md §2.1): through the same gateway, the login runs on the
    // connection of the session before it (the registration's): no new connection or upgrade.
    if (s.reused) dev.trace('S0.11', `login -> ${t.server.name}`, 'on the connection of the session before it (sessions in sequence)');
  }
}

function hostOf(url: string): string {
  return /^wss?:\/\/([^/]+)/.exec(url)?.[1] ?? url;
}

/**
 * SHA-256 of the main program, hex (64 characters): what UPMON.CFG holds. On the device's engine
 * (protocol/crypto-engine.ts sha256Of: the chip's on a fleet's phones, the noble reference
 * elsewhere, the same bytes): noble over a whole program was ~1 % of a fleet's phone CPU (issue 15).
 */
export function programHash(b: Uint8Array): string {
  return bytesToHex(sha256Of(b));
}
