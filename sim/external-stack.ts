// The embedded stack in its own process (`usbphone serve all --port 0`), for fleets: the
// servers get a core of their own instead of sharing the phones' event loop. Phones reach it
// over loopback as they would any deployment; enrollment writes the same SQLite files the
// servers use (WAL, busy timeout), as `usbphone enroll` does.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { MasterKeyring } from '../protocol/keys.ts';
import { ImplementationError } from '../protocol/errors.ts';
import { stateFiles, DEFAULT_TOPOLOGY } from '../deploy/config.ts';
import { readKeyFile } from '../server-kit/keyfiles.ts';
import { SqliteRegStore } from '../reg-server/store.ts';
import { SqliteBizStore } from '../biz-server/store.ts';
import { enrollDevices, type EnrollmentRecord, type EnrollOptions, accountsInStore } from '../deploy/enroll.ts';
import type { StackHandle } from './world.ts';

const bin = join(dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'usbphone.js');

export interface ExternalStack extends StackHandle {
  gatewayUrl: string;
  pid: number;
}

/** opts.nodeArgs: flags for the server process's node (e.g. --cpu-prof, --max-old-space-size). */
export async function startExternalStack(stateDir: string, opts: { logLevel?: string; startTimeoutMs?: number; nodeArgs?: string[] } = {}): Promise<ExternalStack> {
  const proc: ChildProcess = spawn(process.execPath, [...(opts.nodeArgs ?? []), bin, 'serve', 'all', '--state', stateDir, '--port', '0'], {
    env: { ...process.env, USBPHONE_LOG_LEVEL: opts.logLevel ?? 'warn' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const gatewayUrl = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new ImplementationError('SIM_STACK_START', 'the server process did not start in time')), opts.startTimeoutMs ?? 30_000);
    proc.once('exit', (code) => reject(new ImplementationError('SIM_STACK_START', `the server process exited (${code}) before listening`)));
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      try {
        const ev = JSON.parse(line) as { event?: string; gatewayUrl?: string };
        if (ev.event === 'listening' && typeof ev.gatewayUrl === 'string') {
          clearTimeout(timer);
          resolve(ev.gatewayUrl);
        }
      } catch {
        // not a JSON line: ignore
      }
    });
  }).catch(async (e) => {
    proc.kill('SIGKILL');
    await exited;
    throw e;
  });
  const files = stateFiles(stateDir);
  const ring = MasterKeyring.parse(readFileSync(files.masterKey, 'utf8'));
  const reg = new SqliteRegStore(files.regDb);
  const biz = new SqliteBizStore(files.bizDb, readKeyFile(files.storeKey, 'storage key'));
  return {
    gatewayUrl,
    pid: proc.pid!,
    ring,
    dests: { regPrimary: 'reg-primary', regBackup: 'reg-backup', biz: DEFAULT_TOPOLOGY.biz.map((b) => b.name) },
    urlFor: (dest) => gatewayUrl + dest,
    enroll: (records: EnrollmentRecord | EnrollmentRecord[], o?: EnrollOptions) => enrollDevices({ reg, accounts: accountsInStore(biz) }, Array.isArray(records) ? records : [records], o),
    async stop() {
      reg.close();
      biz.close();
      proc.kill('SIGTERM');
      await exited;
    },
  };
}
