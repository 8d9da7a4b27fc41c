// Several hosts on one machine (issue 16): each role in its own network namespace (`ip netns`),
// joined by veth pairs to one bridge in the root namespace (10.77.0.1/24), each with its own
// address 10.77.0.x; a process runs inside its host with `ip netns exec`, a link is cut by
// setting the host's veth down (no RST: the peers' connections hang as on a real partition)
// and healed by setting it up. Needs root (CAP_NET_ADMIN); `netnsAvailable()` says whether
// this machine allows it.
//
// Without namespaces (not root, or a container that forbids them) the same hosts are distinct
// loopback addresses 127.0.77.x in the root namespace; a link cut is then SIGSTOP of the host's
// processes (their sockets stay open and silent, as behind a cut link) and the heal SIGCONT.
// The harness prints which of the two it ran on.
import { spawnSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { openSync, closeSync, writeSync, readFileSync, unlinkSync } from 'node:fs';

const PREFIX = 'uc16';
const BRIDGE = `${PREFIX}br`;
export const BRIDGE_ADDRESS = '10.77.0.1';

export type HostMode = 'netns' | 'loopback';

export interface ClusterHost {
  /** Short name (file-safe, at most 6 characters: it names the namespace and the veth). */
  name: string;
  /** The host's address: 10.77.0.x (netns) or 127.0.77.x (loopback). */
  address: string;
}

function ip(args: string[], check = true): { ok: boolean; err: string } {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  const ok = r.status === 0;
  if (check && !ok) throw new Error(`ip ${args.join(' ')}: ${(r.stderr || r.error?.message || '').trim()}`);
  return { ok, err: (r.stderr ?? '').trim() };
}

/** Whether `ip netns add` works here (tries it with a throwaway namespace); the reason when not. */
export function netnsAvailable(): { ok: true } | { ok: false; why: string } {
  if (process.platform !== 'linux') return { ok: false, why: `not Linux (${process.platform})` };
  if (process.getuid?.() !== 0) return { ok: false, why: 'not root: ip netns needs CAP_NET_ADMIN' };
  const name = `${PREFIX}-probe`;
  ip(['netns', 'del', name], false);
  const r = ip(['netns', 'add', name], false);
  if (!r.ok) return { ok: false, why: `ip netns add failed: ${r.err || 'no ip command'}` };
  ip(['netns', 'del', name], false);
  return { ok: true };
}

const LOCK = '/tmp/usbphone-cluster.lock';

/**
 * One cluster per machine at a time (the namespaces, the bridge and its subnet are fixed
 * names): waits up to `ms` for another run's lock (its process alive), takes over a dead one's.
 */
export async function lockCluster(ms = 300_000): Promise<() => void> {
  const until = Date.now() + ms;
  for (;;) {
    try {
      const fd = openSync(LOCK, 'wx');
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return () => {
        try {
          if (readFileSync(LOCK, 'utf8') === String(process.pid)) unlinkSync(LOCK);
        } catch {
          // gone already
        }
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      let holder = 0;
      try {
        holder = Number(readFileSync(LOCK, 'utf8'));
        process.kill(holder, 0);
      } catch {
        // A dead holder (or an unreadable lock): take it over.
        try {
          unlinkSync(LOCK);
        } catch {
          // another waiter took it first
        }
        continue;
      }
      if (Date.now() > until) throw new Error(`another cluster run (pid ${holder}) holds ${LOCK}`);
      await new Promise((r) => setTimeout(r, 1_000));
    }
  }
}

/** The hosts' network: namespaces and a bridge, or loopback addresses. */
export class HostNetwork {
  readonly mode: HostMode;
  readonly hosts = new Map<string, ClusterHost>();
  /** Processes started per host (for the loopback cut). */
  readonly #procs = new Map<string, Set<ChildProcess>>();

  constructor(mode: HostMode) {
    this.mode = mode;
  }

  /** Address of the root namespace as the hosts see it (where the harness's own listeners and phones are). */
  get rootAddress(): string {
    return this.mode === 'netns' ? BRIDGE_ADDRESS : '127.0.77.1';
  }

  /** Removes whatever a previous run left (namespaces, veths, the bridge). */
  static cleanStale(): void {
    const r = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    for (const line of (r.stdout ?? '').split('\n')) {
      const n = line.split(' ')[0];
      if (n?.startsWith(`${PREFIX}-`)) ip(['netns', 'del', n], false);
    }
    ip(['link', 'del', BRIDGE], false);
  }

  /** Creates the bridge (netns mode), with extra root-namespace addresses (the phones' sources). */
  setUp(extraRootAddresses: string[] = []): void {
    if (this.mode !== 'netns') return;
    HostNetwork.cleanStale();
    ip(['link', 'add', BRIDGE, 'type', 'bridge']);
    ip(['addr', 'add', `${BRIDGE_ADDRESS}/24`, 'dev', BRIDGE]);
    for (const a of extraRootAddresses) ip(['addr', 'add', `${a}/32`, 'dev', BRIDGE]);
    ip(['link', 'set', BRIDGE, 'up']);
  }

  /** Adds a host with the last octet `n` of its address. */
  addHost(name: string, n: number): ClusterHost {
    if (!/^[a-z0-9]{1,6}$/.test(name)) throw new Error(`host name '${name}' must be 1-6 lower-case letters or digits`);
    const h: ClusterHost = { name, address: this.mode === 'netns' ? `10.77.0.${n}` : `127.0.77.${n}` };
    if (this.mode === 'netns') {
      const ns = `${PREFIX}-${name}`;
      const veth = `${PREFIX}-${name}`;
      ip(['netns', 'add', ns]);
      ip(['link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
      ip(['link', 'set', veth, 'master', BRIDGE, 'up']);
      ip(['-n', ns, 'addr', 'add', `${h.address}/24`, 'dev', 'eth0']);
      ip(['-n', ns, 'link', 'set', 'eth0', 'up']);
      ip(['-n', ns, 'link', 'set', 'lo', 'up']);
    }
    this.hosts.set(name, h);
    return h;
  }

  /** Runs `argv` on host `name` (inside its namespace, or as is on loopback). */
  spawn(name: string, argv: string[], opts: SpawnOptions): ChildProcess {
    if (!this.hosts.has(name)) throw new Error(`no host '${name}'`);
    const [cmd, args] = this.mode === 'netns' ? ['ip', ['netns', 'exec', `${PREFIX}-${name}`, ...argv]] : [argv[0]!, argv.slice(1)];
    // `ip netns exec` execs the command: the child's pid is the command's (kill -9 reaches it).
    const p = spawn(cmd, args, opts);
    let set = this.#procs.get(name);
    if (!set) this.#procs.set(name, (set = new Set()));
    set.add(p);
    p.once('exit', () => set.delete(p));
    return p;
  }

  /** Cuts host `name` off the network (its veth down; loopback: its processes stopped). */
  cut(name: string): void {
    if (this.mode === 'netns') ip(['link', 'set', `${PREFIX}-${name}`, 'down']);
    else for (const p of this.#procs.get(name) ?? []) p.kill('SIGSTOP');
  }

  heal(name: string): void {
    if (this.mode === 'netns') ip(['link', 'set', `${PREFIX}-${name}`, 'up']);
    else for (const p of this.#procs.get(name) ?? []) p.kill('SIGCONT');
  }

  /** Removes the namespaces and the bridge. */
  tearDown(): void {
    if (this.mode !== 'netns') return;
    for (const h of this.hosts.values()) ip(['netns', 'del', `${PREFIX}-${h.name}`], false);
    ip(['link', 'del', BRIDGE], false);
  }
}
