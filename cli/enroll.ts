// `usbphone enroll`: registers devices from enrollment records (deploy/enroll.ts): the device
// in the state directory's registration store, the business account through a running
// business server's admin API, or in the accounts file when no server of this state
// directory is running; or disables/enables a device.
import { readFileSync, mkdirSync, existsSync } from 'node:fs';
import type { Command } from './main.ts';
import { ImplementationError } from '../protocol/errors.ts';
import { parseOptions, refuseOptions } from './args.ts';
import { CliError, reportError, checkStateDir } from './flash-common.ts';

export const OPTIONS = {
  state: { type: 'string' },
  config: { type: 'string' },
  create: { type: 'boolean' },
  record: { type: 'string' },
  batch: { type: 'string' },
  account: { type: 'string' },
  user: { type: 'string' },
  disable: { type: 'string' },
  enable: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

const HELP = `usage: usbphone enroll [--state DIR] [--create] (--record FILE | --batch FILE) [--account ACCT] [--user U] [--json]
       usbphone enroll [--state DIR] --disable SERIAL | --enable SERIAL
       usbphone enroll --config REG.json (--record FILE | --batch FILE | --disable SERIAL | --enable SERIAL) [--json]

Registers devices from the image builder's enrollment records (JSON: one object, an array,
or one object per line; each needs "serial" and "keyVersion") in the registration database
and creates each device's business account (an opaque user name, 'u-' and 20 hex digits
derived under the deployment's key, unless --user). Re-enrolling
a serial changes nothing (or only its key version). '-' reads the records from stdin.

Business accounts: when 'usbphone serve all --state DIR' is running, they are created
through its business servers' admin API (operation enrollAccount, admin.key of DIR); when
no server of DIR is running, in DIR's accounts file directly (offline, as before the
servers exist). A running server that does not answer fails the enrollment (exit 1).

options:
  --config REG.json a registration server's role file (usbphone serve reg --config, docs/deploy.md):
                    the devices go to its store (SQLite or PostgreSQL), the business accounts
                    through the admin API of the business servers it lists (its admin key);
                    instead of --state
  --state DIR       the servers' state directory (default: state): reg.sqlite,
                    biz-accounts.sqlite, store.key; it must exist (see --create)
  --create          create the state directory (and its storage key) when it does not exist
  --record FILE     one record
  --batch FILE      many records (array or JSON lines)
  --account ACCT    business account to bind (--record only)
  --user U          business user name (--record only), [A-Za-z0-9._-]{1,64}
  --disable SERIAL  mark a device disabled (its registrations get "not found", S0.9)
  --enable SERIAL   mark a device active again
  --json            print the results as JSON
  -h, --help        this help

Exit: 0 done, 1 failed (ENROLL_CONFLICT: the serial, account or user is bound to another;
ENROLL_UNKNOWN_SERIAL), 2 bad usage or records (CLI_NO_STATE: no such state directory).
`;

export const command: Command = {
  summary: 'register devices from enrollment records; disable or enable a device',
  async run(argv) {
    let reg: { close(): void | Promise<void> } | null = null;
    let biz: { close(): void | Promise<void> } | null = null;
    let clients: { close(): void }[] = [];
    try {
      const v = parseOptions('enroll', argv, OPTIONS).values;
      if (v.help) {
        process.stdout.write(HELP);
        return 0;
      }
      const modes = [v.record, v.batch, v.disable, v.enable].filter((x) => x !== undefined).length;
      if (modes !== 1) throw new CliError('CLI_BAD_ARGS', "give exactly one of --record, --batch, --disable, --enable; see 'usbphone enroll --help'");
      if (v.disable !== undefined || v.enable !== undefined) refuseOptions(v, ['state', 'config', 'disable', 'enable', 'json'], `--${v.disable !== undefined ? 'disable' : 'enable'}`);
      if (v.batch !== undefined) refuseOptions(v, ['state', 'config', 'create', 'batch', 'json'], '--batch', 'each record gets its own user and account');
      if (v.config !== undefined) {
        if (v.state !== undefined || v.create) throw new CliError('CLI_BAD_ARGS', '--config names the store and the servers: give it without --state and --create');
        return await enrollWithConfig(v.config as string, v, (x) => (reg = x), (x) => (clients = x));
      }
      const stateDir = (v.state as string | undefined) ?? 'state';
      const exists = checkStateDir(stateDir, { create: v.create === true, hint: "give the servers' state directory, or --create to start a new one" });
      const file = (v.record ?? v.batch) as string | undefined;
      const text = file !== undefined ? readFileText(file) : '';
      const { openRegStore } = await import('../reg-server/pg-store.ts');
      const { openBizStores } = await import('../biz-server/pg-store.ts');
      const { storeChoiceFrom } = await import('../server-kit/store-choice.ts');
      const { stateFiles } = await import('../deploy/config.ts');
      const { enrollDevices, parseEnrollmentRecords, accountsViaAdmin, accountsInStore, readRunningBizServers } = await import('../deploy/enroll.ts');
      const files = stateFiles(stateDir);
      // The stores of the state directory's stack: its SQLite files, or on PostgreSQL (STORE_URL,
      // as deploy/stack.ts chooses) the schemas named from the directory's pg-schema prefix.
      // A directory whose stores are on the other back end is refused (STACK_STORE_MISMATCH, exit 2):
      // enrolling into new, empty stores beside them would fork the deployment's devices.
      const choice = storeChoiceFrom(undefined);
      const { stackSchemaPrefix, stackSchemas, checkStateStores } = await import('../deploy/stack-schemas.ts');
      checkStateStores(stateDir, choice);
      const pgSchemas = choice.kind === 'postgres' ? stackSchemas(choice.schema ?? stackSchemaPrefix(stateDir)) : null;
      const regPlace = choice.kind === 'postgres' ? { ...choice, schema: pgSchemas!.reg } : { kind: 'sqlite' as const, file: files.regDb };
      const regWhere = pgSchemas ? `PostgreSQL schema ${pgSchemas.reg}` : files.regDb;
      if (v.disable !== undefined || v.enable !== undefined) {
        const serial = (v.disable ?? v.enable) as string;
        if (!pgSchemas && !existsSync(files.regDb)) throw new CliError('ENROLL_UNKNOWN_SERIAL', `no device ${serial}: ${stateDir} has no ${files.regDb} (nothing enrolled there yet)`);
        const r = await openRegStore(regPlace);
        reg = r;
        if (!(await r.setDeviceStatus(serial, v.disable !== undefined ? 'disabled' : 'active'))) throw new CliError('ENROLL_UNKNOWN_SERIAL', `no device ${serial} in ${regWhere}`);
        process.stdout.write(v.json ? JSON.stringify({ serial, status: v.disable !== undefined ? 'disabled' : 'active' }) + '\n' : `${serial}: ${v.disable !== undefined ? 'disabled' : 'active'}\n`);
        return 0;
      }
      // Every record is checked before anything is written.
      const records = recordsOf(text, file!, parseEnrollmentRecords);
      if (v.record !== undefined && records.length !== 1) throw new CliError('CLI_BAD_ARGS', `--record ${file} holds ${records.length} records; use --batch`);
      if (!exists) mkdirSync(stateDir, { recursive: true });
      const r = await openRegStore(regPlace);
      reg = r;
      const { ensureKeyFile, readKeyFile } = await import('../server-kit/keyfiles.ts');
      const running = readRunningBizServers(stateDir);
      let accounts;
      // Said once the enrollment worked: a failure is one line, its own.
      let via = '';
      if (running.length > 0) {
        // Online: the servers own their store (docs/decisions.md).
        const { AdminClient } = await import('../server-kit/admin-rpc.ts');
        const key = readKeyFile(files.adminKey, 'admin key');
        const admin = running.map((x) => new AdminClient({ target: x.name, url: x.adminUrl, key }));
        clients = admin;
        accounts = accountsViaAdmin(admin);
        via = `business accounts through the admin API of ${running.map((x) => x.name).join(', ')}`;
      } else {
        // Offline: the accounts database wraps login keys under the state directory's storage
        // key (created here when the servers have not run yet, as `serve` would).
        ensureKeyFile(files.storeKey);
        const bizPlace = choice.kind === 'postgres' ? { ...choice, schema: pgSchemas!.biz } : { kind: 'sqlite' as const, file: files.bizDb };
        const b = (await openBizStores(bizPlace, readKeyFile(files.storeKey, 'storage key'))).store;
        biz = b;
        accounts = accountsInStore(b);
        via = `no server of this state directory is running: business accounts in ${pgSchemas ? `PostgreSQL schema ${pgSchemas.biz}` : files.bizDb}`;
      }
      const results = await enrollDevices({ reg: r, accounts }, records, { account: v.account as string | undefined, user: v.user as string | undefined });
      process.stderr.write(`usbphone enroll: ${via}\n`);
      if (v.json) process.stdout.write(JSON.stringify(results) + '\n');
      else for (const x of results) process.stdout.write(`${x.serial}: device ${x.device}, user ${x.user}, account ${x.account} (${x.bizAccount})\n`);
      return 0;
    } catch (e) {
      const code = (e as { code?: string })?.code;
      if (code === 'ADMIN_UNREACHABLE' || code === 'ADMIN_HTTP' || code === 'ADMIN_BAD_AUTH' || code === 'ADMIN_BAD_RESPONSE' || code === 'TIMEOUT') {
        return reportError('enroll', new CliError('ENROLL_FAILED', `the running business servers did not enroll the account (${code}): ${(e as Error).message.replace(/^[A-Z_]+: /, '')}`));
      }
      if (e instanceof CliError || e instanceof ImplementationError || (e as { code?: string })?.code?.startsWith?.('SQLITE_')) return reportError('enroll', e);
      if (e instanceof Error && /^E[A-Z]+$/.test(String((e as NodeJS.ErrnoException).code))) return reportError('enroll', e);
      return reportError('enroll', new CliError('ENROLL_FAILED', (e as Error).message ?? String(e)));
    } finally {
      await reg?.close();
      await biz?.close();
      for (const c of clients) c.close();
    }
  },
};

/**
 * `enroll --config REG.json` (issue 16: a deployment on PostgreSQL has no state directory): the
 * devices into the registration store the role file names, the business accounts through the
 * admin API of the business servers it lists (which must run), with its admin key.
 */
async function enrollWithConfig(
  file: string,
  v: Record<string, unknown>,
  keepReg: (r: { close(): void | Promise<void> }) => void,
  keepClients: (c: { close(): void }[]) => void,
): Promise<number> {
  const { readJsonFile, regConfigFrom } = await import('../deploy/config.ts');
  const { openRegStore } = await import('../reg-server/pg-store.ts');
  const { placeOf, storeChoiceFrom } = await import('../server-kit/store-choice.ts');
  const { enrollDevices, parseEnrollmentRecords, accountsViaAdmin } = await import('../deploy/enroll.ts');
  const { AdminClient } = await import('../server-kit/admin-rpc.ts');
  const cfg = regConfigFrom(readJsonFile(file), file);
  const records = v.disable === undefined && v.enable === undefined ? recordsOf(readFileText((v.record ?? v.batch) as string), (v.record ?? v.batch) as string, parseEnrollmentRecords) : null;
  if (records && v.record !== undefined && records.length !== 1) throw new CliError('CLI_BAD_ARGS', `--record ${v.record as string} holds ${records.length} records; use --batch`);
  const reg = await openRegStore(placeOf(storeChoiceFrom(cfg.store), cfg.dbFile));
  keepReg(reg);
  const where = cfg.store?.kind === 'postgres' ? `the PostgreSQL store of ${cfg.name}` : cfg.dbFile;
  if (!records) {
    const serial = (v.disable ?? v.enable) as string;
    if (!(await reg.setDeviceStatus(serial, v.disable !== undefined ? 'disabled' : 'active'))) throw new CliError('ENROLL_UNKNOWN_SERIAL', `no device ${serial} in ${where}`);
    process.stdout.write(v.json ? JSON.stringify({ serial, status: v.disable !== undefined ? 'disabled' : 'active' }) + '\n' : `${serial}: ${v.disable !== undefined ? 'disabled' : 'active'}\n`);
    return 0;
  }
  const admin = cfg.bizServers.map((x) => new AdminClient({ target: x.name, url: x.adminUrl, key: cfg.adminKey }));
  keepClients(admin);
  const results = await enrollDevices({ reg, accounts: accountsViaAdmin(admin) }, records, { account: v.account as string | undefined, user: v.user as string | undefined });
  process.stderr.write(`usbphone enroll: devices in ${where}; business accounts through the admin API of ${cfg.bizServers.map((x) => x.name).join(', ')}\n`);
  if (v.json) process.stdout.write(JSON.stringify(results) + '\n');
  else for (const x of results) process.stdout.write(`${x.serial}: device ${x.device}, user ${x.user}, account ${x.account} (${x.bizAccount})\n`);
  return 0;
}

function readFileText(file: string): string {
  try {
    return readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (e) {
    throw new CliError('CLI_FILE', `${file}: ${(e as Error).message}`);
  }
}

function recordsOf<T>(text: string, file: string, parse: (t: string) => T[]): T[] {
  try {
    return parse(text);
  } catch (e) {
    if (e instanceof ImplementationError) throw new CliError(e.code, `${file === '-' ? 'stdin' : file}: ${e.message.replace(/^[A-Z_]+: /, '')}`);
    throw e;
  }
}
