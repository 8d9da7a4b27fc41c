// `usbphone enroll`: registers devices from enrollment records (deploy/enroll.ts): the device
// in the state directory's registration store, the business account through a running
// business server's admin API, or in the accounts file when no server of this state
// directory is running; or disables/enables a device.
import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import type { Command } from './main.ts';
import { ImplementationError } from '../protocol/errors.ts';

const HELP = `usage: usbphone enroll --state DIR (--record FILE | --batch FILE) [--account ACCT] [--user U] [--json]
       usbphone enroll --state DIR --disable SERIAL | --enable SERIAL

Registers devices from the image builder's enrollment records (JSON: one object, an array,
or one object per line; each needs "serial" and "keyVersion") in the registration database
and creates each device's business account (user 'u-' + serial unless --user). Re-enrolling
a serial changes nothing (or only its key version). '-' reads the records from stdin.

Business accounts: when 'usbphone serve all --state DIR' is running, they are created
through its business servers' admin API (operation enrollAccount, admin.key of DIR); when
no server of DIR is running, in DIR's accounts file directly (offline, as before the
servers exist). A running server that does not answer fails the enrollment (exit 1).

options:
  --state DIR       state directory (default ./state): reg.sqlite, biz-accounts.sqlite
  --record FILE     one record
  --batch FILE      many records (array or JSON lines)
  --account ACCT    business account to bind (single record)
  --user U          business user name (single record), [A-Za-z0-9._-]{1,64}
  --disable SERIAL  mark a device disabled (its registrations get "not found", S0.9)
  --enable SERIAL   mark a device active again
  --json            print the results as JSON
  -h, --help        this help

Exit: 0 done, 1 failed (e.g. ENROLL_CONFLICT, unknown serial), 2 bad usage or records.
`;

function fail(code: string, msg: string, exit: number): number {
  process.stderr.write(`usbphone enroll: ${msg} (${code})\n`);
  return exit;
}

export const command: Command = {
  summary: 'register devices from enrollment records; disable or enable a device',
  async run(argv) {
    let args;
    try {
      args = parseArgs({
        args: argv,
        options: {
          state: { type: 'string' },
          record: { type: 'string' },
          batch: { type: 'string' },
          account: { type: 'string' },
          user: { type: 'string' },
          disable: { type: 'string' },
          enable: { type: 'string' },
          json: { type: 'boolean' },
          help: { type: 'boolean', short: 'h' },
        },
      });
    } catch (e) {
      return fail('CLI_BAD_ARGS', (e as Error).message, 2);
    }
    const v = args.values;
    if (v.help) {
      process.stdout.write(HELP);
      return 0;
    }
    const modes = [v.record, v.batch, v.disable, v.enable].filter((x) => x !== undefined).length;
    if (modes !== 1) return fail('CLI_BAD_ARGS', 'give exactly one of --record, --batch, --disable, --enable', 2);
    const { SqliteRegStore } = await import('../reg-server/store.ts');
    const { SqliteBizStore } = await import('../biz-server/store.ts');
    const { stateFiles } = await import('../deploy/config.ts');
    const { enrollDevices, parseEnrollmentRecords, accountsViaAdmin, accountsInStore, readRunningBizServers } = await import('../deploy/enroll.ts');
    const files = stateFiles(v.state ?? 'state');
    let reg: InstanceType<typeof SqliteRegStore> | null = null;
    let biz: InstanceType<typeof SqliteBizStore> | null = null;
    let clients: { close(): void }[] = [];
    try {
      reg = new SqliteRegStore(files.regDb);
      if (v.disable !== undefined || v.enable !== undefined) {
        const serial = (v.disable ?? v.enable)!;
        if (!reg.setDeviceStatus(serial, v.disable !== undefined ? 'disabled' : 'active')) return fail('ENROLL_UNKNOWN_SERIAL', `no device ${serial}`, 1);
        process.stdout.write(v.json ? JSON.stringify({ serial, status: v.disable !== undefined ? 'disabled' : 'active' }) + '\n' : `${serial}: ${v.disable !== undefined ? 'disabled' : 'active'}\n`);
        return 0;
      }
      const file = (v.record ?? v.batch)!;
      let text: string;
      try {
        text = readFileSync(file === '-' ? 0 : file, 'utf8');
      } catch (e) {
        return fail('ENROLL_UNREADABLE', `${file}: ${(e as Error).message}`, 2);
      }
      const records = parseEnrollmentRecords(text);
      if (v.record !== undefined && records.length !== 1) return fail('CLI_BAD_ARGS', `--record holds ${records.length} records; use --batch`, 2);
      const { ensureKeyFile, readKeyFile } = await import('../server-kit/keyfiles.ts');
      const running = readRunningBizServers(v.state ?? 'state');
      let accounts;
      if (running.length > 0) {
        // Online: the servers own their store (docs/decisions.md).
        const { AdminClient } = await import('../server-kit/admin-rpc.ts');
        const key = readKeyFile(files.adminKey, 'admin key');
        const admin = running.map((s) => new AdminClient({ target: s.name, url: s.adminUrl, key }));
        clients = admin;
        accounts = accountsViaAdmin(admin);
        process.stderr.write(`usbphone enroll: business accounts through the admin API of ${running.map((r) => r.name).join(', ')}\n`);
      } else {
        // Offline: the accounts database wraps login keys under the state directory's storage
        // key (created here when the servers have not run yet, as `serve` would).
        ensureKeyFile(files.storeKey);
        biz = new SqliteBizStore(files.bizDb, readKeyFile(files.storeKey, 'storage key'));
        accounts = accountsInStore(biz);
        process.stderr.write(`usbphone enroll: no server of this state directory is running: business accounts in ${files.bizDb}\n`);
      }
      const results = await enrollDevices({ reg, accounts }, records, { account: v.account, user: v.user });
      if (v.json) process.stdout.write(JSON.stringify(results) + '\n');
      else for (const r of results) process.stdout.write(`${r.serial}: device ${r.device}, user ${r.user}, account ${r.account} (${r.bizAccount})\n`);
      return 0;
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === 'ADMIN_UNREACHABLE' || code === 'ADMIN_HTTP' || code === 'ADMIN_BAD_AUTH' || code === 'ADMIN_BAD_RESPONSE' || code === 'TIMEOUT') {
        return fail(code, `the running business servers did not enroll the account: ${(e as Error).message.replace(/^[A-Z_]+: /, '')}`, 1);
      }
      if (e instanceof ImplementationError) {
        const usage = e.code === 'ENROLL_BAD_RECORD' || e.code === 'ENROLL_USAGE';
        return fail(e.code, e.message.replace(/^[A-Z_]+: /, ''), usage ? 2 : 1);
      }
      return fail('ENROLL_FAILED', (e as Error).message, 1);
    } finally {
      reg?.close();
      biz?.close();
      for (const c of clients) c.close();
    }
  },
};
