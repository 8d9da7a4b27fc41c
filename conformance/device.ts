// The --device half of the suite (issue 13): the suite plays every server a device talks to (a
// gateway URL it listens on, the registration servers `reg-primary` and `reg-backup`, a business
// server `biz-conf`) against a device implementation started as a command, fresh for each run of
// a case and killed at the case's end, and checks the device's side of the rules
// (docs/protocol.md §6.1, §6.3, §7, §8, §10). The servers' side of each exchange is the project's
// own I/O-free machine (protocol/registration.ts RegistrationServer, protocol/login.ts
// LoginServer) over in-memory stores; a case changes only the frame its rule is about.
//
// What the suite needs of the device is its enrollment record, as a registration server would:
// serial, device key and serial token (or the master key), and the firmware measurement its chip
// attests. The device learns the suite's URL from `{url}` in its command and from the
// environment variable USBPHONE_CONFORMANCE_URL; it must register at `<url>reg-primary` (backup
// `<url>reg-backup`) and log in where the credential reply says.
import { spawn, type ChildProcess } from 'node:child_process';
import { WebSocketServer, type WebSocket } from 'ws';
import { equalBytes } from '@noble/ciphers/utils.js';
import { bytesToHex } from '@noble/hashes/utils.js';
import { RegistrationServer, type RegistrationServerDeps } from '../protocol/registration.ts';
import { LoginServer, type LoginLookup, type LoginServerDeps } from '../protocol/login.ts';
import { passwordLoginKey, systemRng } from '../protocol/channel.ts';
import { ReplayCache } from '../protocol/replay.ts';
import { decodeEnvelope, encodeError, parseError, peekSessionEnd, sessionEndFrame, typeName, MsgType, type Envelope, type Login } from '../protocol/messages.ts';
import { ProtocolError } from '../protocol/errors.ts';
import { Limits } from '../protocol/limits.ts';
import { Conn, type Line } from './wire.ts';
import { runBounded, runSequence, type CaseResult, type RunSummary } from './runner.ts';
import { closeOf, type Case, type DeviceCreds, type Outcome } from './suite.ts';

/** The placeholder of the device command that becomes the suite's URL, and the variable that carries it too. */
export const URL_PLACEHOLDER = '{url}';
export const URL_ENV = 'USBPHONE_CONFORMANCE_URL';
/** The servers the suite plays, by the dest their frames carry. */
export const DESTS = { regPrimary: 'reg-primary', regBackup: 'reg-backup', biz: 'biz-conf' } as const;

/** What the suite needs to check a device, and nothing more (docs/conformance.md). */
export interface DeviceTarget {
  /** The device command, run by the shell; `{url}` is replaced by the suite's URL. */
  command: string;
  /** The device as its enrollment record gives it. */
  device: DeviceCreds;
  /** Where the suite listens (its URL: ws://host:port/). Port 0: any free port. */
  host: string;
  port: number;
  /** Longest wait for any one expected session, frame, close or exit, ms. */
  timeoutMs: number;
}

/** A run of the device command: its process, its exit, what it printed. */
export interface DeviceRun {
  /** Resolves with the exit code (null when killed) once the process ended. */
  exited: Promise<number | null>;
  /** Ends the process group (SIGTERM, then SIGKILL after 1 s); resolves once it ended. */
  stop(): Promise<void>;
}

/** A session the device opened: its connection and its first frame (decoded, when it decodes). */
export interface Session {
  c: Conn;
  first: Uint8Array;
  env: Envelope | null;
  /** The first frame's dest ('?' when it does not decode). */
  dest: string;
}

/**
 * The business account the suite keeps for this case's device (§10): a current and at most one
 * pending generation, each a secret the suite made; a fresh user name per case, so a case starts
 * from what it issues itself whatever the device kept from an earlier one.
 */
export class Account {
  readonly user = `conf-${bytesToHex(systemRng(4))}`;
  current: { gen: number; secret: Uint8Array } | null = null;
  pending: { gen: number; secret: Uint8Array } | null = null;
  #next = 1;
  /** Every secret issued, to search the device's frames and output for (§12). */
  readonly issued: Uint8Array[] = [];
  /** Generations whose login completed (finish verified), in order. */
  readonly loggedIn: number[] = [];
  /** Generations the device confirmed (pwConfirm). */
  readonly confirmed: number[] = [];

  /** A new pending generation (§10): the secret the registration server hands out. */
  issue(): { gen: number; secret: Uint8Array; currentGen: number } {
    const p = { gen: this.#next++, secret: systemRng(32) };
    this.pending = p;
    this.issued.push(p.secret);
    return { gen: p.gen, secret: Uint8Array.from(p.secret), currentGen: this.current?.gen ?? 0 };
  }

  /** The pending generation expires unused (§10: only while a current one exists). */
  expirePending(): void {
    if (this.current) this.pending = null;
  }

  readonly deps: LoginServerDeps = {
    lookup: (l: Login): LoginLookup => {
      if (l.mech !== 'password') return { kind: 'unsupported' };
      const g = l.user !== this.user ? null : [this.current, this.pending].find((x) => x?.gen === l.gen) ?? null;
      return g ? { kind: 'found', key: passwordLoginKey(g.secret, this.user), active: true, pending: g === this.pending } : { kind: 'unknown' };
    },
    assertFresh: () => {},
    promote: (_user, gen) => {
      if (this.pending?.gen !== gen) return false;
      this.current = this.pending;
      this.pending = null;
      return true;
    },
    confirm: (_user, gen) => {
      this.confirmed.push(gen);
      return this.current?.gen === gen;
    },
  };
}

/** What a case works with (--device). */
export interface DeviceCaseContext {
  target: DeviceTarget;
  /** The suite's URL, as the device is told it. */
  url: string;
  log: Line[];
  account: Account;
  /** Starts the device command (a fresh process; the case may start it again once it ended). */
  startDevice(): DeviceRun;
  /**
   * The next session the device opens, once its first frame came; null when none within
   * `timeoutMs` (default the target's), or once `until` settles (e.g. the device run's exit).
   */
  nextSession(timeoutMs?: number, until?: Promise<unknown>): Promise<Session | null>;
  /** Every frame the device sent in this case, in order. */
  deviceFrames(): Uint8Array[];
  /** What the device printed so far in this case. */
  output(): string;
}

export type DeviceCase = Case<DeviceCaseContext>;

/** The last `max` characters of a text, marked when cut. */
const tail = (s: string, max: number) => (s.length > max ? `…${s.slice(-max)}` : s);

/** The suite's listener: every connection goes to the case that runs, or is refused between cases. */
export class DeviceHost {
  #sink: ((ws: WebSocket, path: string) => void) | null = null;

  private constructor(private readonly wss: WebSocketServer, readonly url: string) {
    wss.on('connection', (ws, req) => {
      if (this.#sink) this.#sink(ws, req.url ?? '/');
      else ws.close(1013, 'no case is running');
    });
  }

  /** Listens on host:port (0: any free port); rejects (EADDRINUSE...) when it cannot. */
  static listen(host: string, port: number): Promise<DeviceHost> {
    return new Promise((resolve, reject) => {
      const wss = new WebSocketServer({ host, port, perMessageDeflate: false, maxPayload: Limits.maxFrameBytes });
      wss.once('error', reject);
      wss.once('listening', () => {
        const a = wss.address();
        const p = typeof a === 'object' && a ? a.port : port;
        resolve(new DeviceHost(wss, `ws://${host.includes(':') ? `[${host}]` : host}:${p}/`));
      });
    });
  }

  /** Runs one case: its sessions, its device runs (all stopped at its end), its record. */
  async run(c: DeviceCase, target: DeviceTarget): Promise<CaseResult> {
    const conns: Conn[] = [];
    const waiting: Conn[] = [];
    let wake: (() => void) | null = null;
    const runs: { n: number; p: ChildProcess; out: string; exit: number | null | undefined; exited: Promise<number | null>; stop(): Promise<void> }[] = [];
    let log: Line[] = [];
    this.#sink = (ws, path) => {
      log.push({ dir: 'got', text: `the device connected to ${path}` });
      const conn = Conn.adopt(ws, log, target.timeoutMs);
      conns.push(conn);
      waiting.push(conn);
      wake?.();
    };
    const account = new Account();
    const url = this.url;
    const ctx = (l: Line[]): DeviceCaseContext => ({
      target,
      url,
      log: l,
      account,
      startDevice() {
        const run = startProcess(target.command.split(URL_PLACEHOLDER).join(url), url, runs.length + 1);
        runs.push(run);
        l.push({ dir: 'sent', text: `device run ${run.n} started` });
        return run;
      },
      async nextSession(timeoutMs = target.timeoutMs, until) {
        const deadline = Date.now() + timeoutMs;
        let over = false;
        void until?.then(() => {
          over = true;
          wake?.();
        });
        for (;;) {
          let conn = waiting.shift();
          while (!conn) {
            const left = deadline - Date.now();
            if (left <= 0 || over) return null;
            await new Promise<void>((r) => {
              const t = setTimeout(r, left);
              wake = () => (clearTimeout(t), r());
            });
            wake = null;
            conn = waiting.shift();
          }
          const r = await conn.next(Math.max(1, deadline - Date.now()));
          // A connection that sends nothing (a reachability check) is not a session.
          if (r.kind !== 'frame') continue;
          let env: Envelope | null = null;
          try {
            env = decodeEnvelope(r.bytes);
          } catch {
            // The case judges a frame that does not decode.
          }
          return { c: conn, first: r.bytes, env, dest: env?.dest ?? '?' };
        }
      },
      deviceFrames: () => conns.flatMap((x) => x.frames),
      output: () => runs.map((r) => r.out).join('\n'),
    });
    const budget = target.timeoutMs * 12;
    try {
      return await runBounded(c, budget, (l) => {
        log = l;
        return c.run(ctx(l));
      }, async () => {
        for (const x of conns) x.close();
        await Promise.all(runs.map((r) => r.stop()));
        return runs.map((r) => `device run ${r.n} (${r.exit === undefined ? 'running' : r.exit === null ? 'killed' : `exit ${r.exit}`}):\n${tail(r.out.trimEnd(), 4000)}`).join('\n') || undefined;
      });
    } finally {
      this.#sink = null;
    }
  }

  close(): Promise<void> {
    for (const ws of this.wss.clients) ws.terminate();
    return new Promise((r) => this.wss.close(() => r()));
  }
}

/** Starts the device command in a process group of its own (so the case's end stops all of it). */
function startProcess(cmd: string, url: string, n: number) {
  const p = spawn(cmd, { shell: true, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, [URL_ENV]: url } });
  const run = {
    n,
    p,
    out: '',
    exit: undefined as number | null | undefined,
    exited: null as unknown as Promise<number | null>,
    async stop() {
      if (run.exit !== undefined) return;
      const kill = (sig: NodeJS.Signals) => {
        try {
          process.kill(-p.pid!, sig);
        } catch {
          // already gone
        }
      };
      kill('SIGTERM');
      const t = setTimeout(() => kill('SIGKILL'), 1_000);
      await run.exited;
      clearTimeout(t);
    },
  };
  const keep = (d: Buffer) => {
    run.out = tail(run.out + d.toString(), 64 * 1024);
  };
  p.stdout!.on('data', keep);
  p.stderr!.on('data', keep);
  run.exited = new Promise((resolve) => {
    p.once('error', (e) => {
      run.out += `cannot start the device command: ${e.message}\n`;
      run.exit = null;
      resolve(null);
    });
    p.once('close', (code) => {
      run.exit = code;
      resolve(code);
    });
  });
  return run;
}

/** Runs `cases` against the device, one after another, on one listener. */
export async function runDeviceCases(cases: readonly DeviceCase[], target: DeviceTarget, onResult?: (r: CaseResult, i: number, n: number) => void): Promise<RunSummary> {
  const host = await DeviceHost.listen(target.host, target.port);
  try {
    return await runSequence(cases, `the device command '${target.command}' (servers played at ${host.url})`, (c) => host.run(c, target), onResult);
  } finally {
    await host.close();
  }
}

// ---- the servers the suite plays ----

/** How a played exchange ended. */
export type Played =
  /** The exchange ran to its end as the machine says (a credential reply or notFound sent; a login and its confirmation). */
  | { kind: 'done'; gen?: number; confirmed?: number; end?: DeviceEnd }
  /** The suite sent the frame the case is about and stopped there: the case judges what follows. */
  | { kind: 'sent' }
  /** The device sent an error frame. */
  | { kind: 'device-error'; code: string }
  /** The device closed. */
  | { kind: 'device-closed'; code: number }
  /** The suite's server refused a device frame (the error frame sent, closed): the device broke a rule. */
  | { kind: 'refused'; code: string; why: string }
  /** The business login failed (loginFail sent). */
  | { kind: 'login-failed'; gen: number }
  /** The device's finish was dropped on purpose (the case's lost reply). */
  | { kind: 'finish-dropped'; gen: number }
  | { kind: 'timeout' };

export const playedText = (p: Played): string => {
  switch (p.kind) {
    case 'device-error': return `the device sent error ${p.code}`;
    case 'device-closed': return `the device closed ${p.code}`;
    case 'refused': return `the suite refused a device frame: ${p.code} (${p.why})`;
    case 'timeout': return 'nothing from the device within the timeout';
    default: return p.kind;
  }
};

/** How the device ended a business session it ended itself: a close, or (§2.1) a sessionEnd [number, dest, code]. */
export type DeviceEnd = { kind: 'close'; code: number } | { kind: 'sessionEnd'; n: number; dest: string; code: number } | { kind: 'none' };

/** A change the case makes to a frame the suite is about to send: returns the bytes to send instead. */
export type Tamper = (frame: Uint8Array) => Uint8Array;

/** Reads the next device frame of a played exchange; anything but a frame ends the exchange. */
async function nextFrame(s: Session): Promise<{ bytes: Uint8Array; env: Envelope } | Played> {
  const r = await s.c.next();
  if (r.kind === 'timeout') return { kind: 'timeout' };
  if (r.kind === 'close') return { kind: 'device-closed', code: r.code };
  let env: Envelope;
  try {
    env = decodeEnvelope(r.bytes);
  } catch (e) {
    return refuse(s, e);
  }
  if (env.type === MsgType.error) {
    try {
      return { kind: 'device-error', code: parseError(env.body).code };
    } catch {
      return { kind: 'device-error', code: '(malformed error frame)' };
    }
  }
  return { bytes: r.bytes, env };
}

/** The suite's server refuses a device frame (§7): error frame, close; the case learns why. */
function refuse(s: Session, e: unknown, seq = 0): Played {
  if (!(e instanceof ProtocolError)) throw e;
  s.c.send(encodeError(seq, s.dest, e.code, null, e.message));
  s.c.close(e.closeCode);
  return { kind: 'refused', code: e.code, why: e.message };
}

const isPlayed = (x: unknown): x is Played => typeof x === 'object' && x !== null && 'kind' in x;

/**
 * Plays a registration server on `s` (its first frame the device's hello): RegistrationServer
 * with the device's record. `helloReply` tampers with the proof frame; with `stopAfterReply`
 * the exchange stops once it is sent. `answer`: a credential reply with a new pending generation
 * of the case's account (default), or notFound.
 */
export async function playRegistration(ctx: DeviceCaseContext, s: Session, o: { helloReply?: Tamper; stopAfterReply?: boolean; answer?: 'cred' | 'not-found'; endAs?: { session: number } } = {}): Promise<Played> {
  const dev = ctx.target.device;
  const replay = new ReplayCache();
  const deps: RegistrationServerDeps = {
    deviceKey: (token) => (equalBytes(token, dev.token) ? { serial: dev.serial, key: Uint8Array.from(dev.key) } : null),
    assertFresh: (mac) => replay.assertFresh(mac),
    acceptFirmware: (_serial, m) => {
      if (!equalBytes(m, dev.measurement)) throw new ProtocolError('REG_FIRMWARE_REFUSED', `the hello attests measurement ${bytesToHex(m)}, not the enrolled ${bytesToHex(dev.measurement)}`);
    },
    recordConfirmation: () => {},
  };
  const m = new RegistrationServer(s.dest, deps);
  try {
    if (!s.env || s.env.type !== MsgType.hello) return refuse(s, new ProtocolError('MSG_UNEXPECTED', `${s.env ? typeName(s.env.type) : 'an undecodable frame'} as the first frame of a registration session`));
    let step = m.receive(s.first, s.env);
    const reply = step.send[0]!;
    const out = o.helloReply ? o.helloReply(reply) : reply;
    s.c.send(out, equalBytes(out, reply) ? undefined : 'changed by the case');
    if (o.stopAfterReply) return { kind: 'sent' };
    for (;;) {
      const f = await nextFrame(s);
      if (isPlayed(f)) return f;
      step = m.receive(f.bytes, f.env);
      for (const x of step.send) s.c.send(x);
      if (step.need) {
        if (step.need.request.serial !== dev.serial) throw new ProtocolError('MSG_BAD_FIELD', `credRequest.serial ${step.need.request.serial}`);
        let gen: number | undefined;
        if (o.answer === 'not-found') step = m.answer({ kind: 'not-found', reason: 'device not registered (conformance suite)' });
        else {
          const a = ctx.account.issue();
          gen = a.gen;
          step = m.answer({ kind: 'cred', reply: { user: ctx.account.user, secret: a.secret, gen: a.gen, currentGen: a.currentGen, servers: [{ name: DESTS.biz, url: ctx.url + DESTS.biz, region: 'conformance' }] } });
        }
        for (const x of step.send) s.c.send(x);
        // §2.1: on a connection in sequence the server's end is the gateway's sessionEnd, not a close.
        // A normal end is [1000, ""] (§2.1 rule 3): a device gives up a connection whose crossing end carries anything else.
        if (o.endAs) s.c.send(sessionEndFrame(o.endAs.session, s.dest, 1000, ''), 'the gateway ends the session (§2.1)');
        else s.c.close(1000);
        return { kind: 'done', gen };
      }
    }
  } catch (e) {
    return refuse(s, e, m.nextSendSeq);
  } finally {
    m.abort();
  }
}

/**
 * Plays the business server on `s` (its first frame the device's login): LoginServer over the
 * case's account. `loginOk` tampers with the proof frame (and `stopAfterOk` stops there);
 * `dropFinish` drops the connection when the finish arrives, unread: the finish is lost, nothing
 * promoted, no pwConfirmAck.
 */
export async function playLogin(ctx: DeviceCaseContext, s: Session, o: { loginOk?: Tamper; stopAfterOk?: boolean; dropFinish?: boolean } = {}): Promise<Played> {
  const m = new LoginServer(s.dest, ctx.account.deps);
  try {
    if (!s.env || s.env.type !== MsgType.login) return refuse(s, new ProtocolError('MSG_UNEXPECTED', `${s.env ? typeName(s.env.type) : 'an undecodable frame'} as the first frame of a business session`));
    const gen = (s.env.body as unknown[])[2] as number;
    let step = m.receive(s.first, s.env);
    for (const [i, x] of step.send.entries()) {
      const ok = i === 1 && !step.done && o.loginOk;
      s.c.send(ok ? o.loginOk!(x) : x, ok ? 'changed by the case' : undefined);
    }
    if (step.done) {
      s.c.close(step.done.closeCode);
      return { kind: 'login-failed', gen };
    }
    if (step.refuse) return refuse(s, step.refuse, m.nextSendSeq);
    if (o.stopAfterOk) return { kind: 'sent' };
    let f = await nextFrame(s);
    if (isPlayed(f)) return f;
    if (o.dropFinish && f.env.type === MsgType.finish) {
      s.c.drop();
      return { kind: 'finish-dropped', gen };
    }
    step = m.receive(f.bytes, f.env);
    ctx.account.loggedIn.push(gen);
    f = await nextFrame(s);
    // A device may end after the finish without confirming (it must confirm a change, §6.3).
    if (isPlayed(f)) return f.kind === 'device-closed' ? { kind: 'done', gen } : f;
    step = m.receive(f.bytes, f.env);
    for (const x of step.send) s.c.send(x);
    const confirmed = step.event?.kind === 'confirmed' ? step.event.gen : undefined;
    // The device closes once acknowledged (§6.3 WAIT_PWACK), or on a connection in sequence ends the session (§2.1).
    const end = await s.c.next();
    let how: DeviceEnd = { kind: 'none' };
    if (end.kind === 'close') how = { kind: 'close', code: end.code };
    else if (end.kind === 'frame') {
      const e = peekSessionEnd(end.bytes);
      if (e) how = { kind: 'sessionEnd', n: e.n, dest: e.dest, code: e.code };
    }
    if (how.kind !== 'sessionEnd' && end.kind !== 'close') s.c.close(1000);
    return { kind: 'done', gen, confirmed, end: how };
  } catch (e) {
    return refuse(s, e, m.nextSendSeq);
  } finally {
    m.abort();
  }
}

/**
 * Judges the device's answer to a frame it must refuse (§7): one error frame with `code` (if
 * possible), then its close with that code's close code, and nothing else. An answer that is
 * not an error frame (a finish, a credRequest) means the device acted on it: fail.
 */
export async function expectDeviceRefusal(s: Session, code: string): Promise<Outcome> {
  const expected = `${code} (error frame, if possible) then close ${closeOf(code)}; no other frame`;
  let refusal: string | null = null;
  for (;;) {
    const r = await s.c.next();
    if (r.kind === 'timeout') return { verdict: 'fail', expected, note: refusal ? `${refusal} was sent but the session was not closed within the timeout (S0.7)` : 'neither a refusal nor a close within the timeout (S0.7)' };
    if (r.kind === 'close') {
      if (refusal === null) return { verdict: 'non-strict', expected, note: `closed ${r.code} without an error frame (§7 step 2: 'if possible')` };
      if (refusal !== code) return { verdict: 'non-strict', expected, note: `refused with ${refusal} instead, close ${r.code}` };
      if (r.code !== closeOf(code)) return { verdict: 'non-strict', expected, note: `${refusal} then close ${r.code}, not ${closeOf(code)}` };
      return { verdict: 'pass', expected };
    }
    let env: Envelope;
    try {
      env = decodeEnvelope(r.bytes);
    } catch (e) {
      return { verdict: 'fail', expected, note: `the device sent a frame that does not decode: ${(e as Error).message}` };
    }
    if (refusal !== null) return { verdict: 'fail', expected, note: `the device sent ${typeName(env.type)} after its error frame (§7: it is the last frame)` };
    if (env.type !== MsgType.error) return { verdict: 'fail', expected, note: `the device answered with ${typeName(env.type)}: it acted on what it must refuse` };
    try {
      refusal = parseError(env.body).code;
    } catch {
      refusal = '(malformed error frame)';
    }
  }
}
