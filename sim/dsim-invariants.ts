// The named invariants of the deterministic simulation (issue 14), checked while a run goes:
//   no-lockout          after the faults heal, a phone that saved a login logs in from it with both
//                       registration servers unreachable, and some plug-in out of LOCKOUT_TRIES
//                       (through registration) logs each phone in
//   liveness            each phone's first plug-in after the heal and settle (the saved route for a
//                       phone that saved a login, else registration) logs in within LIVENESS_BOUND_MS
//   secrets-per-user    at most SECRETS_PER_USER login keys of a user are valid at the business
//                       store at any check (current + pending: docs/firmware.md, "at most two secrets")
//   no-secret-on-wire   no key, rotation secret, login key or serial in any frame, close reason or
//                       admin body on the network, in any encoding (sim/needles.ts), checked per frame
//   no-secret-in-zones  none of them in the sectors a phone wrote in its free or virtual zone
//   no-half-validated-frame  a party that received a corrupted frame on a connection sends nothing
//                       on it afterwards but a refusal (error, loginFail) or the receipt loginAck
//                       (REFUSAL_TYPES): it must not act on it. Except a table push (S3.11) the
//                       phone refused whole: outside the session and checked whole (its signature
//                       covers the whole table), it changes nothing when refused; one it kept
//                       counts as received (the connection is tainted)
//   store-integrity     after every restart and at the end: PRAGMA integrity_check on every store
//                       (registration, business with the bank's tables, operator), every row passes
//                       the store's own row checks (accountFromRow/deviceFromRow: keys open under the
//                       storage key; bankProblems; operatorProblems), the generations are consistent
//   bank-one-identity   S4.1: every bank account is bound to one identity: its bindings name one
//                       device and at most one identifier of each kind (one card, one number)
//   bank-swap-confirmed S4.4 and the SIM swap: when a bank lets a mode-2 login in, the card the
//                       operator held for the line when it produced the answers the login used
//                       is the card bound to the account (a changed card is refused until the
//                       owner re-binds: never let in on a stale or missing answer of the
//                       operator). Judged at the answers' time, not the page's: a swap between
//                       the operator's answer and the bank's decision is a race inherent to
//                       asking a remote party, not the bank's fault
//   attack-in-table     S3.4-S3.7: an attack the gateway counted in period P, whose report the
//                       policy server took before it published the table stating P, shows in
//                       that table: the attacked mechanism's rate on the site above 0 (all of it,
//                       1,000,000 ppm, when it was the site's only attacked mechanism)
//   progress / no-crash the run ends (no wait that can never end) and nothing throws
import { byteEncodings, encodings } from './needles.ts';
import { passwordLoginKey } from '../protocol/channel.ts';
import { peekType } from '../gateway/validate.ts';
import { MsgType, peekTablePush } from '../protocol/messages.ts';
import { equalBytes } from '@noble/ciphers/utils.js';
import { zoneOf, ZoneType } from '../firmware/zones/layout.ts';
import type { CowBacking } from '../firmware/flash/backing.ts';
import { accountFromRow } from '../biz-server/store.ts';
import { deviceFromRow } from '../reg-server/store.ts';
import { bankProblems } from '../biz-server/bank-store.ts';
import { operatorProblems, type SubRow, type CardRow, type ClientRow } from '../operator-server/store.ts';
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { GATEWAY, type World, type SimPhone, type BankPageEvent } from './dsim-world.ts';

export const INVARIANTS = ['no-lockout', 'liveness', 'secrets-per-user', 'no-secret-on-wire', 'no-secret-in-zones', 'no-half-validated-frame', 'store-integrity', 'bank-one-identity', 'bank-swap-confirmed', 'attack-in-table', 'progress', 'no-crash'] as const;
export type InvariantName = (typeof INVARIANTS)[number];

/**
 * What a party may still send on a connection after it received a corrupted frame there: a
 * refusal (an error frame; loginFail, the business server's refusal of an opening whose MAC
 * fails, docs/protocol.md §6.4) or loginAck, the content-free receipt the server sends at once,
 * before it checks the opening (S0.11, §6.4). Anything else acts on the frame.
 */
const REFUSAL_TYPES: ReadonlySet<number> = new Set([MsgType.error, MsgType.loginFail, MsgType.loginAck]);

/** The documented bound: a user's valid business secrets (current + pending). */
export const SECRETS_PER_USER = 2;

export interface Violation { invariant: InvariantName; at: number; detail: string }

interface Needle { what: string; needle: string }

/** bank-one-identity's query: per account, how many devices and identifiers of each kind its bindings name. */
const BINDINGS_BY_ACCOUNT = "SELECT account_no, COUNT(DISTINCT device_user) AS devices, SUM(id_kind = 'iccid') AS cards, SUM(id_kind = 'imsi') AS imsis, SUM(id_kind = 'msisdn') AS numbers FROM bank_bindings GROUP BY account_no";

export class Invariants {
  readonly violations: Violation[] = [];
  checks = 0;
  readonly #needles: Needle[] = [];
  #secretsSeen = 0;
  /** conn/party pairs that received a corrupted frame. */
  readonly #tainted = new Set<string>();
  readonly #corrupted = new Set<string>();
  /** Corrupted table pushes a phone received and has not handled yet, by phone: the connection and the table as received. */
  readonly #pushes = new Map<string, { conn: number; table: Uint8Array }[]>();
  /**
   * conn/party pairs with a corrupted table push delivered and not yet handled as one: tainted
   * like any corrupted frame until the push handler confirms a refusal (a phone that took the
   * frame for something else is then judged by its next frame, found by review).
   */
  readonly #unhandledPush = new Map<string, number>();
  /** conn/party pairs on which a phone kept a corrupted table push (the report says so). */
  readonly #keptPush = new Set<string>();
  /** conn/party pairs on which a phone refused a corrupted table push whole, until its next frame there. */
  readonly #refusedPush = new Set<string>();
  /** Frames a phone sent on a connection after it refused a corrupted table push there whole (allowed; counted for the tests). */
  framesAfterRefusedPush = 0;
  readonly #bindingsByAccount = new WeakMap<Database.Database, Database.Statement>();

  constructor(private readonly w: World) {
    for (const p of w.phones) for (const e of encodings(p.serial)) this.#needles.push({ what: `serial of ${p.party} (${e.what})`, needle: e.needle });
    // The person's bank password travels only sealed (S4.5).
    for (const p of w.phones) for (const e of encodings(p.person.password)) this.#needles.push({ what: `bank password of ${p.party}'s person (${e.what})`, needle: e.needle });
    for (const [what, k] of [['master key', w.masterKey], ['admin key', w.adminKey], ['storage key', w.storageKey]] as const) {
      for (const e of byteEncodings(k)) this.#needles.push({ what: `${what} (${e.what})`, needle: e.needle });
    }
    w.onWire = (e) => this.#wire(e);
    w.onDeliver = (conn, to, bytes) => {
      // Most runs corrupt nothing: no key to build for every frame delivered then.
      if (this.#corrupted.size === 0 || !this.#corrupted.has(`${conn}/${Buffer.from(bytes).toString('hex')}`)) return;
      // A corrupted frame a phone will take for a table push (firmware/client-session.ts peeks
      // every frame for one first): judged once the phone has handled it (tablePushHandled).
      const table = to.startsWith('phone-') ? peekTablePush(bytes) : null;
      if (table) {
        this.#pushes.set(to, [...(this.#pushes.get(to) ?? []), { conn, table }]);
        this.#unhandledPush.set(`${conn}/${to}`, (this.#unhandledPush.get(`${conn}/${to}`) ?? 0) + 1);
      } else this.#tainted.add(`${conn}/${to}`);
    };
    w.onTablePush = (p, table, recordChanged) => this.tablePushHandled(p, table, recordChanged);
    w.onRestart = () => this.storeIntegrity('after a restart');
    w.onBankPage = (e) => this.bankPage(e);
  }

  /**
   * bank-swap-confirmed: the bank just let a login into `e.name`'s account. In mode 2 (the
   * operator asked, S4.4) the card the operator held for the account's line (its database: the
   * truth, not an answer) when it produced an answer this login used must be a card the account
   * is bound to. At the moment of an answer, not of the page: an answer produced before a swap
   * and delivered after it (a slow or stalled operator) was true when given, and the bank acted
   * on it correctly (a time-of-check/time-of-use race of asking any remote party). A mode-2
   * login let in on no answer of the operator at all is reported too.
   */
  bankPage(e: BankPageEvent): void {
    if (e.mode !== 2) return;
    const store = this.w.liveBizStore();
    if (!store) return;
    this.checks++;
    const acct = store.db.prepare('SELECT account_no FROM bank_accounts WHERE name = ?').get(e.name) as { account_no: string } | undefined;
    if (!acct) return this.report('bank-swap-confirmed', `${e.server} let ${e.name} in, but no such account is stored`);
    const ids = store.db.prepare('SELECT id_kind, id_value FROM bank_bindings WHERE account_no = ?').all(acct.account_no) as { id_kind: string; id_value: string }[];
    const number = ids.find((i) => i.id_kind === 'msisdn')?.id_value;
    if (!number) return;
    const bound = (iccid: string) => ids.some((i) => i.id_kind === 'iccid' && i.id_value === iccid);
    if (e.answers.length === 0) return this.report('bank-swap-confirmed', `${e.server} let a mode-2 login into ${e.name}'s account on no answer of the operator`);
    // A line the operator does not hold is not this invariant's to judge (as before: the truth is unknown).
    if (e.answers.some((a) => { const card = this.#lineCardAt(number, a.swaps); return card === undefined || bound(card); })) return;
    // No time in the detail: a rule broken at every login is one finding (report()).
    this.report('bank-swap-confirmed', `${e.server} let a mode-2 login into ${e.name}'s account while the line's card (the operator's, when it produced the answers the login used) is not the card bound to it: a card change acted on without the operator's answer`);
  }

  /**
   * The card of line `number` after the first `swaps` SIM swaps of the run (World.swapLog): the
   * last of them that moved this line, else the card its first swap moved it from, else (never
   * swapped in the run) the card the operator's database holds now.
   */
  #lineCardAt(number: string, swaps: number): string | undefined {
    const log = this.w.swapLog;
    for (let i = Math.min(swaps, log.length) - 1; i >= 0; i--) if (log[i]!.number === number) return log[i]!.to;
    const first = log.find((s) => s.number === number);
    if (first) return first.from;
    const db = new Database(join(this.w.dir, 'operator.sqlite'), { readonly: true });
    try {
      return (db.prepare('SELECT iccid FROM subscriptions WHERE phone_number = ?').get(number) as { iccid: string } | undefined)?.iccid;
    } finally {
      db.close();
    }
  }

  /** bank-one-identity: every account's bindings name one device and at most one identifier of each kind. */
  bankOneIdentity(): void {
    const store = this.w.liveBizStore();
    if (!store) return;
    this.checks++;
    // Prepared once per connection (a server's restart opens a new one): this runs after every plug-in and every 2.5 virtual s.
    let q = this.#bindingsByAccount.get(store.db);
    if (!q) this.#bindingsByAccount.set(store.db, (q = store.db.prepare(BINDINGS_BY_ACCOUNT)));
    const rows = q.all() as { account_no: string; devices: number; cards: number; imsis: number; numbers: number }[];
    for (const r of rows) {
      if (r.devices > 1 || r.cards > 1 || r.imsis > 1 || r.numbers > 1) {
        this.report('bank-one-identity', `a bank account is bound to more than one identity: ${r.devices} device(s), ${r.cards} ICCID(s), ${r.imsis} IMSI(s), ${r.numbers} number(s)`);
      }
    }
  }

  report(invariant: InvariantName, detail: string): void {
    // One report per invariant and detail: a stuck rule is one finding.
    if (this.violations.some((v) => v.invariant === invariant && v.detail === detail)) return;
    this.violations.push({ invariant, at: this.w.sched.now(), detail });
  }

  /**
   * no-half-validated-frame, a table push: phone `p` has just handled a pushed `table`. When it
   * is a corrupted push it received, the phone must have refused it whole: a push is outside the
   * session (no sequence number, no state) and its table is checked whole before anything is
   * kept (firmware/policy-table.ts: the Ed25519 signature over the whole table, version,
   * expiry), so a refused one changes nothing and the phone's next frames on that connection do
   * not act on it. Anything of its saved login changed while it handled it, it was acted on: the
   * connection is tainted as for any corrupted frame, and the phone's next frame there reported.
   */
  tablePushHandled(p: SimPhone, table: Uint8Array, recordChanged: boolean): void {
    const pending = this.#pushes.get(p.party);
    const i = pending?.findIndex((x) => equalBytes(x.table, table)) ?? -1;
    if (i < 0) return;
    const { conn } = pending!.splice(i, 1)[0]!;
    const key = `${conn}/${p.party}`;
    const left = (this.#unhandledPush.get(key) ?? 1) - 1;
    if (left > 0) this.#unhandledPush.set(key, left);
    else this.#unhandledPush.delete(key);
    this.checks++;
    // Refused whole = the saved record byte for byte as before the handler ran: a phone that
    // changed anything of it (dropped its table, kept a re-encoded one, any other field) acted on
    // the push (found by review: comparing only the saved table with the pushed bytes let such a
    // phone pass as refusing).
    if (recordChanged) {
      this.#tainted.add(`${conn}/${p.party}`);
      this.#keptPush.add(`${conn}/${p.party}`);
    } else {
      this.#refusedPush.add(`${conn}/${p.party}`);
      this.w.log(`${p.party} kept nothing of a corrupted table push on connection ${conn} (refused, not acted on): its next frames there are not judged by it (no-half-validated-frame)`);
    }
  }

  /** New rotation secrets (and their login keys) become needles as soon as they are drawn. */
  #refreshNeedles(): void {
    const s = this.w.secrets;
    for (; this.#secretsSeen < s.length; this.#secretsSeen++) {
      const secret = s[this.#secretsSeen]!;
      for (const e of byteEncodings(secret)) this.#needles.push({ what: `rotation secret #${this.#secretsSeen} (${e.what})`, needle: e.needle });
      for (const p of this.w.phones) {
        if (!p.user) continue;
        for (const e of byteEncodings(passwordLoginKey(secret, p.user))) this.#needles.push({ what: `login key of secret #${this.#secretsSeen} (${e.what})`, needle: e.needle });
      }
    }
  }

  #scan(bytes: Uint8Array, where: string, invariant: InvariantName): void {
    this.#refreshNeedles();
    this.checks++;
    const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
    for (const n of this.#needles) {
      if (n.needle.length >= 6 && text.includes(n.needle)) this.report(invariant, `${n.what} found in ${where}`);
    }
  }

  #wire(e: { conn: number; from: string; to: string; sent: Uint8Array; bytes: Uint8Array; fate: string; kind: string }): void {
    // What its sender put on the wire (a corruption on the way is the network's, not the sender's).
    this.#scan(e.sent, `a ${e.kind} ${e.from} -> ${e.to}`, 'no-secret-on-wire');
    if (e.kind !== 'frame') return;
    if (e.fate === 'corrupt') this.#corrupted.add(`${e.conn}/${Buffer.from(e.bytes).toString('hex')}`);
    // The gateway relays what it cannot check (sealed bodies): the endpoint behind it is the one that must refuse.
    if (e.from === GATEWAY || e.fate === 'dup') return;
    this.checks++;
    if (this.#refusedPush.size > 0 && this.#refusedPush.delete(`${e.conn}/${e.from}`)) this.framesAfterRefusedPush++;
    if (this.#tainted.has(`${e.conn}/${e.from}`) || this.#unhandledPush.has(`${e.conn}/${e.from}`)) {
      let type = -1;
      try {
        type = peekType(e.sent);
      } catch {
        // unreadable: not an error frame
      }
      const what = this.#keptPush.has(`${e.conn}/${e.from}`) ? 'kept a corrupted table push' : this.#unhandledPush.has(`${e.conn}/${e.from}`) ? 'received a corrupted table push it did not handle as one' : 'received a corrupted frame';
      if (!REFUSAL_TYPES.has(type)) this.report('no-half-validated-frame', `${e.from} sent a frame of type ${type} on connection ${e.conn} after it ${what} there`);
    }
  }

  /** Checks that run every few virtual seconds. */
  periodic(): void {
    this.secretsPerUser();
    this.bankOneIdentity();
  }

  afterPlug(): void {
    this.secretsPerUser();
    this.bankOneIdentity();
  }

  afterHeal(): void {
    this.storeIntegrity('at the heal');
  }

  secretsPerUser(): void {
    const store = this.w.liveBizStore();
    if (!store) return;
    const now = this.w.clockOf('biz-east')();
    for (const p of this.w.phones) {
      let a;
      try {
        a = store.getByUser(p.user);
      } catch {
        continue; // a corrupt row is store-integrity's finding
      }
      if (!a) continue;
      this.checks++;
      let valid = 0;
      for (let g = 0; g <= a.maxGen; g++) {
        const k = store.loginKey(p.user, g, now);
        if (k) {
          valid++;
          k.key.fill(0);
        }
      }
      if (valid > SECRETS_PER_USER) this.report('secrets-per-user', `${valid} valid business secrets for ${p.party}'s user (bound ${SECRETS_PER_USER})`);
    }
  }

  liveness(p: SimPhone, ok: boolean, tookMs: number, boundMs: number): void {
    this.checks++;
    if (!ok || tookMs > boundMs) this.report('liveness', `${p.party}'s first plug-in after the heal did not log in within ${boundMs} ms`);
  }

  savedRoute(p: SimPhone, ok: boolean): void {
    this.checks++;
    if (!ok) this.report('no-lockout', `${p.party} saved a login but could not log in from it with the registration servers unreachable`);
  }

  lockout(p: SimPhone, tries: number): void {
    this.checks++;
    this.report('no-lockout', `${p.party} could not log in after the heal (${tries} plug-ins)`);
  }

  /** PRAGMA integrity_check and the stores' own row checks, on a connection of its own. */
  storeIntegrity(when: string): void {
    this.checks++;
    for (const file of ['reg.sqlite', 'biz.sqlite', 'operator.sqlite']) {
      let db: Database.Database;
      try {
        db = new Database(join(this.w.dir, file), { readonly: true });
      } catch (e) {
        this.report('store-integrity', `${file} ${when}: does not open: ${(e as Error).message}`);
        continue;
      }
      try {
        const r = db.pragma('integrity_check', { simple: true });
        if (r !== 'ok') this.report('store-integrity', `${file} ${when}: integrity_check says ${String(r)}`);
        if (file === 'biz.sqlite') {
          for (const row of db.prepare('SELECT * FROM accounts').all() as Parameters<typeof accountFromRow>[0][]) {
            try {
              const a = accountFromRow(row, this.w.storageKey);
              if (a.pendingGen !== null && a.pendingGen <= a.currentGen) this.report('store-integrity', `${file} ${when}: pending generation ${a.pendingGen} not above current ${a.currentGen}`);
              if (a.currentGen > a.maxGen || (a.pendingGen ?? 0) > a.maxGen) this.report('store-integrity', `${file} ${when}: a generation above maxGen ${a.maxGen}`);
            } catch (e) {
              this.report('store-integrity', `${file} ${when}: ${(e as Error).message}`);
            }
          }
          const all = (t: string) => db.prepare(`SELECT * FROM ${t}`).all() as Record<string, unknown>[];
          for (const p of bankProblems({ accounts: all('bank_accounts'), bindings: all('bank_bindings'), logins: all('bank_logins'), person: all('bank_person'), tokens: all('bank_page_tokens') }, this.w.storageKey)) {
            this.report('store-integrity', `${file} ${when}: bank: ${p}`);
          }
        } else if (file === 'operator.sqlite') {
          const all = <R>(t: string) => db.prepare(`SELECT * FROM ${t}`).all() as R[];
          for (const p of operatorProblems({ subs: all<SubRow>('subscriptions'), cards: all<CardRow>('cards'), clients: all<ClientRow>('oauth_clients') })) this.report('store-integrity', `${file} ${when}: ${p}`);
        } else {
          for (const row of db.prepare('SELECT * FROM devices').all() as Parameters<typeof deviceFromRow>[0][]) {
            try {
              deviceFromRow(row);
            } catch (e) {
              this.report('store-integrity', `${file} ${when}: ${(e as Error).message}`);
            }
          }
        }
      } catch (e) {
        this.report('store-integrity', `${file} ${when}: ${(e as Error).message}`);
      } finally {
        db.close();
      }
    }
  }

  /**
   * attack-in-table: each report the policy server took (its answer back at the gateway) before
   * it published the table of the next period, checked against that table. A report whose
   * answer came later is not judged (it may have been taken after the update: a table states
   * only complete periods, policy-server/update.ts).
   */
  attackInTable(): void {
    for (const r of this.w.attackReports) {
      const t = this.w.policyTables.find((x) => x.periodId === r.periodId + 1);
      if (!t || t.at <= r.ackAt) continue;
      for (const s of r.sites) {
        for (const [mech, n] of Object.entries(s.perMech)) {
          if (!n) continue;
          this.checks++;
          const rate = t.table.sites.find((x) => x.site === s.site)?.mechs.find((m) => m.mech === mech)?.ratePpm ?? 0;
          const whole = n === s.total;
          if (rate <= 0 || (whole && rate !== 1_000_000)) {
            this.report('attack-in-table', `${n} attack(s) on ${s.site}'s ${mech} in period ${r.periodId} (of ${s.total}), reported and taken, but table v${t.version} states a ${mech} rate of ${rate} ppm`);
          }
        }
      }
    }
  }

  /** At the end: the zones the phones wrote, and the stores once more. */
  atEnd(): void {
    this.attackInTable();
    this.secretsPerUser();
    this.bankOneIdentity();
    this.storeIntegrity('at the end');
    this.#refreshNeedles();
    for (const p of this.w.phones) {
      const backing = p.phone.backing as CowBacking;
      if (typeof backing.changedSectors !== 'function') continue;
      for (const type of [ZoneType.FREE, ZoneType.VIRTUAL]) {
        const z = zoneOf(p.phone.table, type);
        for (const s of backing.changedSectors()) {
          const at = s * backing.sectorBytes;
          if (at < z.offset || at >= z.offset + z.size) continue;
          const buf = new Uint8Array(backing.sectorBytes);
          backing.readInto(at, buf);
          this.#scan(buf, `${p.party}'s ${type === ZoneType.FREE ? 'free' : 'virtual'} zone at ${at}`, 'no-secret-in-zones');
        }
      }
    }
  }
}
