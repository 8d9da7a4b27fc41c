// The S0 stories on the simulated HAL: the phone runs on a virtual clock with a seeded rng,
// and its network is the in-memory one (delay, loss). Its connections reach the real
// servers, in this process, through a bridge that carries each in-memory connection to the
// gateway over a WebSocket bound to the phone's loopback address.
//
// Virtual time stands still while a server is working: before the scheduler runs its next
// event, the driver waits until the bridge has no request outstanding and has been quiet for
// a few milliseconds of real time. What the phone sees — what arrives, in what order, at which
// virtual time — depends only on the seed, so the same seed gives the same trace, byte for byte.
import { ensureKeyFile } from '../server-kit/keyfiles.ts';
import { stateFiles } from '../deploy/config.ts';
import { makeTempDir, removeTempDir } from './lifetime.ts';
import WebSocket from 'ws';
import { startStack, type Stack } from '../deploy/stack.ts';
import { buildImage } from '../firmware/factory/image.ts';
import { makePhone, replug, type Phone } from '../firmware/phone.ts';
import { Scheduler, SimNetwork, simRng, type SimConn } from '../firmware/hal/sim-hal.ts';
import { fusesOf, vendorKeyOf, serialOf, phoneIp, TraceHost } from './world.ts';
import { formatTrace } from './trace.ts';
import type { DeviceOutcome } from '../firmware/device.ts';
import type { HalBase, TraceEvent } from '../firmware/hal/hal.ts';

export const DETERMINISTIC_STORIES = ['first-boot', 'both-down-uses-saved'];

/** The in-memory network's name for the gateway: what the phone's image points at. */
const SIM_ORIGIN = 'ws://gateway.sim';

export interface DeterministicOptions {
  seed: number;
  /** Probability that a frame is lost on the in-memory network. */
  loss?: number;
  /** One-way delay on the in-memory network, virtual ms. */
  delayMs?: number;
  trace?: (e: TraceEvent) => void;
  say?: (line: string) => void;
  /** Real-time quiet window that counts as "the servers are done" (ms). */
  settleMs?: number;
}

export interface DeterministicResult {
  ok: boolean;
  verdict: string;
  outcomes: DeviceOutcome[];
  trace: TraceEvent[];
  /** The trace as printed lines: what must be identical for one seed. */
  lines: string[];
}

class Bridge {
  outstanding = 0;
  lastActivity = Date.now();
  readonly #sockets = new Set<WebSocket>();
  constructor(private readonly target: () => string) {}

  accept = (conn: SimConn): void => {
    const ws = new WebSocket(this.target(), { localAddress: conn.remoteIp, perMessageDeflate: false });
    this.#sockets.add(ws);
    const queued: Uint8Array[] = [];
    let closed = false;
    const touch = () => (this.lastActivity = Date.now());
    conn.onMessage = (data) => {
      this.outstanding++;
      touch();
      if (ws.readyState === WebSocket.OPEN) ws.send(data);
      else queued.push(data);
    };
    conn.onClose = () => {
      closed = true;
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.terminate();
    };
    ws.on('open', () => queued.splice(0).forEach((d) => ws.send(d)));
    ws.on('message', (d: Buffer) => {
      this.outstanding = 0;
      touch();
      if (!closed) conn.send(new Uint8Array(d));
    });
    ws.on('close', (code, reason) => {
      this.#sockets.delete(ws);
      this.outstanding = 0;
      touch();
      if (!closed) conn.close(code === 1005 ? 1000 : code, reason.toString());
    });
    ws.on('error', () => {});
  };

  close(): void {
    for (const s of this.#sockets) s.terminate();
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs the virtual scheduler until `done` settles, letting real server work finish first. */
async function drive<T>(sched: Scheduler, bridge: Bridge, done: Promise<T>, settleMs: number): Promise<T> {
  let finished = false;
  let value!: T;
  void done.then((v) => {
    finished = true;
    value = v;
  });
  const deadline = Date.now() + 60_000;
  while (!finished) {
    // Events at the current virtual instant run at once (a burst of frames sent together).
    // Before virtual time moves on, the servers get to finish: nothing outstanding on the
    // bridge and a quiet window of real time (bounded, so a lost answer cannot hang the run).
    const next = sched.nextAt();
    if (next === null || next > sched.now()) {
      const waitUntil = Date.now() + 5_000;
      while ((bridge.outstanding > 0 || Date.now() - bridge.lastActivity < settleMs) && Date.now() < waitUntil) await sleep(1);
    }
    await sleep(0);
    if (finished) break;
    if (sched.run(Infinity, 1) === 0) {
      if (Date.now() > deadline) throw new Error('deterministic run made no progress for 60 s');
      await sleep(settleMs);
    }
  }
  return value;
}

export async function runDeterministic(name: string, o: DeterministicOptions): Promise<DeterministicResult> {
  if (!DETERMINISTIC_STORIES.includes(name)) throw new Error(`no deterministic story ${name}`);
  const stateDir = makeTempDir(`usbphone-det-${name}-`);
  let stack: Stack | null = null;
  const bridge = new Bridge(() => stack!.gateway.url);
  try {
    // The policy key from the seed too: it is in the phone's signed UPMON.CFG, so in the firmware
    // measurement the trace shows.
    ensureKeyFile(stateFiles(stateDir).policyKey, () => simRng(o.seed, 'policy key')(32));
    stack = await startStack({ stateDir, gatewayPort: 0, advertisedUrl: `${SIM_ORIGIN}/` });
    // Bridged to real servers: the phone's date is the real one (the tables they sign expire on it).
    const sched = new Scheduler(Date.now());
    const net = new SimNetwork(sched, { delayMs: o.delayMs ?? 2, loss: o.loss ?? 0 }, o.seed);
    net.listen(SIM_ORIGIN, bridge.accept);
    const ring = stack.ring;
    const seed = o.seed;
    const { image: base, enrollment: template } = buildImage({ serial: 'SN-TEMPLATE', fuses: fusesOf(seed, -1), keyring: ring, vendorKey: vendorKeyOf(seed), regPrimary: `${SIM_ORIGIN}/reg-primary`, regBackup: `${SIM_ORIGIN}/reg-backup`, policy: stack.factoryPolicy });
    const serial = serialOf(seed, 0);
    // The deployment's user-name key from the seed too, so the trace (it names the user) replays.
    await stack.regStore.userNameKey(simRng(seed, 'user name key')(32));
    await stack.enroll({ serial, keyVersion: ring.current, firmwareMeasurement: template.firmwareMeasurement, firmwareVersion: template.firmwareVersion });
    const host = new TraceHost(o.trace);
    const ip = phoneIp(0);
    const rng = simRng(seed, 'phone/0');
    const hal = (): HalBase => ({ clock: sched.clock(), rng, net: net.device(ip), host });
    let phone: Phone = makePhone({ base, fuses: fusesOf(seed, 0), hal: hal(), personalize: { serial, keyVersion: ring.current, master: ring.key(ring.current) } });
    const settle = o.settleMs ?? 15;
    const say = o.say ?? (() => {});
    const boot = async (p: Phone) => {
      const out = await drive(sched, bridge, p.device.plugIn(), settle);
      say(`-> ${out.ok ? `logged in to ${out.server} with gen ${out.gen} (via ${out.via})` : `${out.kind}: ${out.reason}`} at virtual ${sched.now()} ms`);
      return out;
    };
    const outcomes: DeviceOutcome[] = [];
    let ok: boolean;
    let verdict: string;
    outcomes.push(await boot(phone));
    if (name === 'first-boot') {
      ok = outcomes[0]!.ok;
      verdict = ok ? 'first boot logged in through the registration server' : 'first boot did not log in';
    } else {
      await stack.stopReg('reg-primary');
      await stack.stopReg('reg-backup');
      say('both registration servers stopped; replug');
      phone = replug(phone, hal());
      outcomes.push(await boot(phone));
      const b = outcomes[1]!;
      ok = outcomes[0]!.ok && b.ok && b.via === 'saved';
      verdict = ok ? 'logged in from the saved copy' : 'did not log in from the saved copy';
    }
    return { ok, verdict, outcomes, trace: host.events, lines: host.events.map((e) => formatTrace(e, false)) };
  } finally {
    bridge.close();
    await stack?.stop();
    removeTempDir(stateDir);
  }
}
