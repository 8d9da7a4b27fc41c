// One virtual phone (the Board the programs run on): its HAL, its storage, its event loop, and the three programs that run
// on plug-in: boot (AutoRun, S0.3) -> UPMon (S0.4-S0.10) -> main program (S0.11-S0.14). The other
// devices of S0.15 (firmware/profiles.ts) are the same Board wired otherwise: their own
// launcher instead of the host's AutoRun, and on the ATM the card's controller as the chip.
import { keepPushedTable, type PolicyConfig } from './policy-table.ts';
import type { Clock, HalBase, Host, NetSocket, Network, Rng, TraceEvent } from './hal/hal.ts';
import { EventLoop } from './loop.ts';
import type { PhoneStorage } from './saved-login.ts';
import { boot, launch } from './boot.ts';
import { Upmon, type UpmonOutcome } from './upmon.ts';
import { MainProgram, type MainOutcome, type BankStepOutcome } from './main-program.ts';
import { defaultDeviceConfig, type Board, type DeviceConfig, type ProfileName } from './board.ts';
import type { SimCard } from './hal/sim-card.ts';
import type { PersonInput } from './hal/person.ts';
import type { FingerprintSensor } from './hal/fingerprint.ts';
import type { StorageResult } from './storage.ts';
import { ChipPowerLost } from './secure/client.ts';
import { mutateStorage } from './mutant.ts';
import type { ClientKeyOps } from '../protocol/handshake-keys.ts';

// Where sim/ and the CLI have always found the configuration (the type lives with the Board).
export { defaultDeviceConfig, type DeviceConfig };

/** How a plug-in ended. `ok` is true when the phone is logged into a business server. */
export type DeviceOutcome =
  | { ok: true; kind: 'logged-in'; server: string; gen: number; via: 'registration' | 'saved'; ms: number; bank?: BankStepOutcome }
  | { ok: false; kind: 'boot-failed' | 'identity-failed' | 'not-found' | 'login-failed' | 'no-saved-login' | 'power-lost' | 'crashed'; reason: string; ms: number };

/** Thrown inside the firmware when the flash reports that power was lost: the CPU stops there. */
export class PowerLost extends Error {
  constructor(readonly where: string) {
    super(`power lost during ${where}`);
  }
}

/** A power cut reported by the flash halts the firmware at `where`. */
function check<T extends { ok: boolean }>(where: string, r: T): T {
  if (!r.ok && (r as unknown as { status: string }).status === 'ERR_POWER_LOST') throw new PowerLost(where);
  return r;
}

/** The chip's key holders lose power inside a command: they throw ChipPowerLost, which halts. */
function keys(where: string, ops: ClientKeyOps): ClientKeyOps {
  const halt = <A extends unknown[], R>(f: (...a: A) => R) => (...a: A): R => {
    try {
      return f(...a);
    } catch (e) {
      if (e instanceof ChipPowerLost) throw new PowerLost(`${where} (${e.command})`);
      throw e;
    }
  };
  return { opening: halt(ops.opening), proof: halt(ops.proof), abort: ops.abort };
}

/**
 * Storage as the firmware sees it: a power cut halts the device at that very operation.
 * Methods, not arrow properties: one such object per phone, and under the loader's keepNames
 * an arrow property costs ~300 B more (issue 15; docs/decisions.md).
 */
function haltOnPowerLoss(s: PhoneStorage): PhoneStorage {
  return {
    readVirtualFile(n) { return check('read virtual zone', s.readVirtualFile(n)); },
    mountVirtual() {
      const m = check('read virtual zone', s.mountVirtual());
      return m.ok ? { ok: true, value: { readFile: (n) => check('read virtual zone', m.value.readFile(n)) } } : m;
    },
    readFreeFile(n) { return check('read free zone', s.readFreeFile(n)); },
    readIdentity() { return check('read identity', s.readIdentity()); },
    vendorKey() { return check('read vendor key', s.vendorKey()); },
    attestation() { return check('read attestation', s.attestation()); },
    deviceKeys() { return keys('registration handshake', s.deviceKeys()); },
    loginKeys() { return keys('login handshake', s.loginKeys()); },
    importSecret(u, g, c, w) { return check('import secret', s.importSecret(u, g, c, w)); },
    retireOlder(g) { return check('retire older secrets', s.retireOlder(g)); },
    secrets() { return check('read secret slots', s.secrets()); },
    person: {
      personStatus() { return check('read person status', s.person.personStatus()); },
      fpChallenge() { return check('fingerprint challenge', s.person.fpChallenge()); },
      fpEnroll(r) { return check('fingerprint enrolment', s.person.fpEnroll(r)); },
      fpKey(site, gen) { return check('fingerprint key', s.person.fpKey(site, gen)); },
      fpSign(site, c, r) { return check('fingerprint signature', s.person.fpSign(site, c, r)); },
      otpImport(site, gen, w) { return check('one-time code seed import', s.person.otpImport(site, gen, w)); },
      otpCode(site) { return check('one-time code', s.person.otpCode(site)); },
    },
    loadLogin() { return check('load saved login', s.loadLogin()); },
    saveLogin(l) { return check('save login', s.saveLogin(l)); },
  };
}

/**
 * How a device starts its programs and where its first identifier comes from (S0.15): one row
 * of firmware/profiles.ts's table. The default is the USB phone.
 */
export interface DeviceWiring {
  profile: ProfileName;
  /** 'autorun': the host's AutoRun of the virtual zone (boot.ts boot); 'launcher': the device's own OS (boot.ts launch). */
  start: 'autorun' | 'launcher';
  /** 'sim': the SIM slot's card info (HalBase.sim); 'card': the inserted card's number (Board.cardIdentity). */
  firstIdentifier: 'sim' | 'card';
}

export const USB_WIRING: DeviceWiring = { profile: 'usb', start: 'autorun', firstIdentifier: 'sim' };

/** The real board: a HAL, the flash storage (halting on a power cut) and one event loop. */
export class Device implements Board {
  readonly profile: ProfileName;
  readonly sim?: SimCard;
  readonly cardIdentity?: () => StorageResult<string>;
  readonly loop: EventLoop;
  readonly clock: Clock;
  readonly rng: Rng;
  readonly net: Network;
  readonly host: Host;
  readonly storage: PhoneStorage;
  readonly person?: PersonInput;
  readonly fingerprint?: FingerprintSensor;
  #t0 = 0;
  #done: ((o: DeviceOutcome) => void) | null = null;
  readonly #sockets = new Set<NetSocket>();

  constructor(
    hal: HalBase,
    storage: PhoneStorage,
    readonly config: DeviceConfig = defaultDeviceConfig,
    readonly wiring: DeviceWiring = USB_WIRING,
  ) {
    this.profile = wiring.profile;
    if (hal.sim) this.sim = hal.sim;
    // The card's number is the public identity the controller answers GET DATA with (S0.15).
    if (wiring.firstIdentifier === 'card') {
      this.cardIdentity = () => {
        const r = this.storage.readIdentity();
        return r.ok ? { ok: true, value: r.value.serial } : r;
      };
    }
    this.clock = hal.clock;
    this.rng = hal.rng;
    this.host = hal.host;
    if (hal.person) this.person = hal.person;
    if (hal.fingerprint) this.fingerprint = hal.fingerprint;
    this.storage = mutateStorage(haltOnPowerLoss(storage), config.mutant);
    // Track sockets so a halted device drops its connections, as a power cut would.
    const sockets = this.#sockets;
    this.net = {
      localIp: hal.net.localIp,
      connect(url, h) {
        const s = hal.net.connect(url, { ...h, onClose: (c, r) => (sockets.delete(s), h.onClose(c, r)) });
        sockets.add(s);
        return s;
      },
    };
    this.loop = new EventLoop(hal.clock, (e) => {
      for (const s of [...this.#sockets]) s.close(1001, 'device halted');
      if (e instanceof PowerLost) {
        this.trace('power', 'power cut', e.message, false);
        this.#finish({ ok: false, kind: 'power-lost', reason: e.message, ms: this.elapsed });
      } else this.#finish({ ok: false, kind: 'crashed', reason: String((e as Error)?.stack ?? e), ms: this.elapsed });
    });
  }

  get elapsed(): number {
    return this.clock.now() - this.#t0;
  }

  notice(text: string): void {
    this.host.notice(text);
  }

  trace(feature: string, step: string, detail: string, ok = true, ms?: number): void {
    const e: TraceEvent = { t: this.elapsed, feature, step, detail, ok };
    if (ms !== undefined) e.ms = ms;
    this.host.trace(e);
  }

  /** The plug-in event: runs the programs; resolves once the phone is logged in or has stopped. */
  plugIn(): Promise<DeviceOutcome> {
    return new Promise((resolve) => {
      this.#done = resolve;
      this.#t0 = this.clock.now();
      this.loop.post(() => this.#boot());
    });
  }

  /** The factory's policy key and initial table, from this boot's UPMON.CFG (S3.11). */
  #policy: PolicyConfig | null = null;

  #tablesPushed = 0;

  /** Counted before anything else, even on a board with no policy yet: the count only ever errs towards a re-read. */
  tablePush(table: Uint8Array): void {
    this.#tablesPushed++;
    if (this.#policy) keepPushedTable(this, this.#policy, table);
  }

  get tablesPushed(): number {
    return this.#tablesPushed;
  }

  #boot(): void {
    const b = this.wiring.start === 'launcher' ? launch(this) : boot(this);
    if (!b.ok) return this.#finish({ ok: false, kind: 'boot-failed', reason: b.reason, ms: this.elapsed });
    this.#policy = b.config.policy;
    new Upmon(this, b.config, (o) => this.#afterUpmon(o)).start();
  }

  #afterUpmon(o: UpmonOutcome): void {
    if (o.kind === 'identity-failed') return this.#finish({ ok: false, kind: 'identity-failed', reason: o.reason, ms: this.elapsed });
    if (o.kind === 'not-found') return this.#finish({ ok: false, kind: 'not-found', reason: o.reason, ms: this.elapsed });
    new MainProgram(this, o, (m: MainOutcome) => {
      if (m.ok) this.#finish({ ok: true, kind: 'logged-in', server: m.server, gen: m.gen, via: m.via, ms: this.elapsed, ...(m.bank ? { bank: m.bank } : {}) });
      else this.#finish({ ok: false, kind: m.kind, reason: m.reason, ms: this.elapsed });
    }).start();
  }

  /**
   * The device is unplugged: every connection it still has closes (the one it holds after a
   * login for the table pushes, docs/protocol.md §2.1, among them).
   */
  unplug(): void {
    for (const s of [...this.#sockets]) s.close(1000, 'unplugged');
  }

  #finish(o: DeviceOutcome): void {
    const d = this.#done;
    this.#done = null;
    d?.(o);
  }
}
