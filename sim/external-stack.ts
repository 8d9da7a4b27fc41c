// Servers that run in another process. Two ways:
//   attachStack        a stack that is already running (`make serve`, `usbphone serve all
//                      --state DIR`): phones reach its gateway URL, enrollment writes the
//                      stores of its state directory's back end with its keys (the SQLite
//                      files, WAL and busy timeout, or its PostgreSQL schemas), as `usbphone
//                      enroll` does. Nothing is started or stopped.
//   phoneOnlyStack     no servers of ours at all (`usbphone sim --phone-only`): phones reach
//                      a gateway URL whose servers know the phone from its enrollment record
//                      (a conformance suite playing them, `usbphone conformance --device`);
//                      the state directory holds only the phone and the master key that
//                      makes its identity.
//   startExternalStack the embedded stack in a child process of its own (`usbphone serve all
//                      --port 0`), for fleets: the servers get a core of their own instead of
//                      sharing the phones' event loop. The child dies with this process.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { ImplementationError } from '../protocol/errors.ts';
import { stateFiles, DEFAULT_TOPOLOGY, factoryPolicyFor } from '../deploy/config.ts';
import { readKeyFile, loadMasterKeyring, ensureMasterKeyFile } from '../server-kit/keyfiles.ts';
import { SqliteRegStore, type RegStore } from '../reg-server/store.ts';
import { SqliteBizStore, type BizStore } from '../biz-server/store.ts';
import { openRegStore } from '../reg-server/pg-store.ts';
import { openBizStores } from '../biz-server/pg-store.ts';
import { openOperatorStore } from '../operator-server/pg-store.ts';
import type { OperatorStore } from '../operator-server/store.ts';
import { storeChoiceFrom } from '../server-kit/store-choice.ts';
import { stackSchemaPrefix, stackSchemas } from '../deploy/stack-schemas.ts';
import { enrollInBatches, enrollDevices, type EnrollmentRecord, type EnrollOptions, accountsInStore } from '../deploy/enroll.ts';
import { trackChild, PARENT_PIPE_ENV } from './lifetime.ts';
import type { StackHandle } from './world.ts';

const bin = join(dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'usbphone.js');

export interface ExternalStack extends StackHandle {
  gatewayUrl: string;
  /** The live page of the server process (its gateway's operator port), as its start printed it; null if it did not. */
  pageUrl: string | null;
  pid: number;
}

/**
 * The files a running `serve all --state DIR` keeps there (what attachStack needs): its keys, and
 * its SQLite files, or on PostgreSQL (STORE_URL, as deploy/stack.ts chooses) its schema prefix.
 */
export function attachFiles(env: NodeJS.ProcessEnv = process.env): string[] {
  return storeChoiceFrom(undefined, env).kind === 'postgres' ? ['master.key', 'store.key', 'pg-schema'] : ['master.key', 'store.key', 'reg.sqlite', 'biz-accounts.sqlite'];
}

/**
 * A running stack, by its gateway URL ('ws://host:port/') and its state directory.
 * Throws ImplementationError SIM_NOT_STACK_STATE when the directory lacks the servers' files.
 */
export function attachStack(stateDir: string, gatewayUrl: string): StackHandle & { gatewayUrl: string } {
  const missing = attachFiles().filter((f) => !existsSync(join(stateDir, f)));
  if (missing.length) throw new ImplementationError('SIM_NOT_STACK_STATE', `${stateDir} has no ${missing.join(', ')}`);
  const files = stateFiles(stateDir);
  const ring = loadMasterKeyring({ file: files.masterKey });
  const common: Omit<StackHandle, 'enroll' | 'stop'> & { gatewayUrl: string } = {
    gatewayUrl,
    ring,
    factoryPolicy: factoryPolicyFor(stateDir),
    dests: { regPrimary: 'reg-primary', regBackup: 'reg-backup', biz: DEFAULT_TOPOLOGY.biz.map((b) => b.name) },
    urlFor: (dest) => gatewayUrl + dest,
  };
  const choice = storeChoiceFrom(undefined);
  if (choice.kind === 'postgres') {
    // The stack's schemas (its state directory's prefix), opened on the first enrollment; one
    // record at a time (enrollInBatches batches SQLite transactions only).
    const schemas = stackSchemas(choice.schema ?? stackSchemaPrefix(stateDir));
    let opened: Promise<[RegStore, BizStore]> | null = null;
    const open = () =>
      (opened ??= (async (): Promise<[RegStore, BizStore]> => {
        const reg = await openRegStore({ ...choice, schema: schemas.reg });
        try {
          return [reg, (await openBizStores({ ...choice, schema: schemas.biz }, readKeyFile(files.storeKey, 'storage key'))).store];
        } catch (e) {
          await reg.close();
          throw e;
        }
      })());
    return {
      ...common,
      enroll: async (records: EnrollmentRecord | EnrollmentRecord[], o?: EnrollOptions) => {
        const [reg, biz] = await open();
        return enrollDevices({ reg, accounts: accountsInStore(biz) }, Array.isArray(records) ? records : [records], o);
      },
      async stop() {
        const o = opened;
        opened = null;
        const stores = o ? await o.catch(() => null) : null;
        if (stores) for (const x of stores) await x.close();
      },
    };
  }
  const reg = new SqliteRegStore(files.regDb);
  let biz: SqliteBizStore;
  try {
    biz = new SqliteBizStore(files.bizDb, readKeyFile(files.storeKey, 'storage key'));
  } catch (e) {
    reg.close();
    throw e;
  }
  let open = true;
  return {
    ...common,
    // A fleet's million records in batches of one transaction each (a commit per device took 150 us).
    enroll: (records: EnrollmentRecord | EnrollmentRecord[], o?: EnrollOptions) => enrollInBatches([reg.db, biz.db], { reg, accounts: accountsInStore(biz) }, Array.isArray(records) ? records : [records], o),
    async stop() {
      if (!open) return;
      open = false;
      reg.close();
      biz.close();
    },
  };
}

/**
 * The operator's store of the running stack in `stateDir` (what `usbphone sim --gateway` tells
 * of a phone's card), on the back end attachStack uses for the others: on PostgreSQL (STORE_URL)
 * the directory's operator schema, else its SQLite file. Null when the directory has none (no
 * pg-schema, or no operator.sqlite: its operator never ran); nothing is created. The caller closes it.
 */
export async function openAttachedOperatorStore(stateDir: string): Promise<OperatorStore | null> {
  const choice = storeChoiceFrom(undefined);
  if (choice.kind === 'postgres') {
    if (!choice.schema && !existsSync(join(stateDir, 'pg-schema'))) return null;
    return openOperatorStore({ ...choice, schema: stackSchemas(choice.schema ?? stackSchemaPrefix(stateDir)).operator });
  }
  const file = stateFiles(stateDir).operatorDb;
  return existsSync(file) ? openOperatorStore({ kind: 'sqlite', file }) : null;
}

/**
 * Servers this process knows nothing of but their gateway URL ('ws://host:port/'): the phone's
 * identity comes from `stateDir`/master.key (made with a fresh key when missing); enroll() is
 * not available (ImplementationError SIM_NO_ENROLL): whoever runs those servers enrolls the
 * phone from its enrollment record.
 */
export function phoneOnlyStack(stateDir: string, gatewayUrl: string): StackHandle & { gatewayUrl: string } {
  const file = stateFiles(stateDir).masterKey;
  ensureMasterKeyFile(file);
  return {
    gatewayUrl,
    ring: loadMasterKeyring({ file }),
    // Servers not ours: no policy key to give the phone, which then trusts no attack table.
    factoryPolicy: {},
    dests: { regPrimary: 'reg-primary', regBackup: 'reg-backup', biz: DEFAULT_TOPOLOGY.biz.map((b) => b.name) },
    urlFor: (dest) => gatewayUrl + dest,
    enroll: () => Promise.reject(new ImplementationError('SIM_NO_ENROLL', 'a phone-only run enrolls nothing: the servers take its enrollment record')),
    async stop() {},
  };
}

/** opts.nodeArgs: flags for the server process's node (e.g. --cpu-prof, --max-old-space-size). */
export async function startExternalStack(stateDir: string, opts: { logLevel?: string; startTimeoutMs?: number; nodeArgs?: string[] } = {}): Promise<ExternalStack> {
  const proc: ChildProcess = spawn(process.execPath, [...(opts.nodeArgs ?? []), bin, 'serve', 'all', '--state', stateDir, '--port', '0', '--json'], {
    env: { ...process.env, USBPHONE_LOG_LEVEL: opts.logLevel ?? 'warn', [PARENT_PIPE_ENV]: '1' },
    // stdin is a pipe the child watches: when this process dies, however, the child stops.
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  trackChild(proc);
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  let pageUrl: string | null = null;
  const gatewayUrl = await new Promise<string>((resolve, reject) => {
    // 90 s: the process compiles the servers' TypeScript first, which took over 30 s on this
    // 2-core machine at load 20 (a fleet test and the 2,000-phone bench failed so); a process that
    // exits is told at once below, so a long wait costs only a start that really hangs.
    const ms = opts.startTimeoutMs ?? 90_000;
    const timer = setTimeout(() => reject(new ImplementationError('SIM_STACK_START', `the server process did not start within ${ms / 1000} s`)), ms);
    proc.once('exit', (code) => reject(new ImplementationError('SIM_STACK_START', `the server process exited (${code}) before listening`)));
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      try {
        const ev = JSON.parse(line) as { event?: string; gatewayUrl?: string; pageUrl?: unknown };
        if (ev.event === 'listening' && typeof ev.gatewayUrl === 'string') {
          clearTimeout(timer);
          if (typeof ev.pageUrl === 'string' && /^http:\/\/[^\s/]+\/$/.test(ev.pageUrl)) pageUrl = ev.pageUrl;
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
  const attached = attachStack(stateDir, gatewayUrl);
  return {
    ...attached,
    pageUrl,
    pid: proc.pid!,
    async stop() {
      await attached.stop();
      proc.kill('SIGTERM');
      await exited;
    },
  };
}
