// `usbphone image`: factory provisioning of one device (docs/flash-layout.md). Builds the
// flash image, keeps or creates the fuses file and the master key file, and prints the
// enrollment record the registration server needs (never the device key unless asked).
// It checks every input and builds the image in memory before it writes anything; the key
// material it creates goes into the state directory unless a path is given; a failed
// write removes what this run had written.
import { existsSync, readFileSync, writeFileSync, renameSync, openSync, writeSync, closeSync, statSync, rmSync, mkdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join, resolve } from 'node:path';
import type { Command } from './main.ts';
import { MasterKeyring } from '../protocol/keys.ts';
import { Fuses } from '../firmware/flash/fuses.ts';
import { ImplementationError } from '../protocol/errors.ts';
import { buildImage, DEFAULT_REG_BACKUP, DEFAULT_REG_PRIMARY } from '../firmware/factory/image.ts';
import { CliError, reportError, checkStateDir } from './flash-common.ts';
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import { vendorPublicKey } from '../firmware/boot-manifest.ts';
import { parseOptions } from './args.ts';

export const OPTIONS = {
  serial: { type: 'string' },
  out: { type: 'string' },
  state: { type: 'string' },
  fuses: { type: 'string' },
  'master-key': { type: 'string' },
  'vendor-key': { type: 'string' },
  'reg-primary': { type: 'string' },
  'reg-backup': { type: 'string' },
  json: { type: 'boolean' },
  'show-device-key': { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

const HELP = `usage: usbphone image --serial SN --out FILE [options]

Builds a factory flash image for one device: partition table, hidden zone (sealed identity
record), virtual zone (ISO 9660 with AUTORUN.INF and UPMon), free zone (FAT with the main
program). Same inputs (including an existing fuses file) give a byte-identical image.
Nothing is written until every input is checked; key material it creates goes into the
state directory unless --fuses / --master-key name another place.

options:
  --serial SN          device serial number ([A-Za-z0-9-], 1..64)          (required)
  --out FILE           where to write the image, e.g. state/factory.img     (required)
  --state DIR          the state directory (default: state; created if missing): where
                       the master key and the fuses go by default
  --fuses FILE         the chip's fuses: used if it exists, else generated
                       with crypto randomness and written (mode 0600)
                       (default: DIR/<image name>.fuses)
  --master-key FILE    master key file ("v<N> <64 hex>" lines); created with a
                       fresh random key (0600) if missing (default: DIR/master.key,
                       the one 'usbphone serve all --state DIR' uses)
  --vendor-key FILE    the vendor's Ed25519 signing key (64 hex) that signs the boot
                       manifest BOOT.SIG; created with a fresh random key (0600) if
                       missing (default: DIR/vendor.key). Its public key is burnt into
                       new fuses; existing fuses must hold it.
  --reg-primary URL    primary registration endpoint (default ${DEFAULT_REG_PRIMARY})
  --reg-backup URL     backup registration endpoint  (default ${DEFAULT_REG_BACKUP})
  --json               print the enrollment record as JSON
  --show-device-key    include the device key in the enrollment record (secret!)
  -h, --help           this help

exit codes: 0 image written, 1 the job failed (IMAGE_WRITE_FAILED: cannot write), 2 bad
usage or unusable input
`;

/** Writes a new secret file with mode 0600; refuses to overwrite. */
function writeSecret(path: string, text: string): void {
  const fd = openSync(path, 'wx', 0o600);
  try {
    writeSync(fd, text);
  } finally {
    closeSync(fd);
  }
}

/** Reads and parses an input file; a failure names the file and says what it should hold. */
function readInput<T>(path: string, what: string, parse: (text: string) => T): T {
  let text: string;
  try {
    if (statSync(path).isDirectory()) throw new CliError('CLI_FILE', `${what} ${path} is a directory`);
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if (e instanceof CliError) throw e;
    throw new CliError('CLI_FILE', `${what} ${path}: ${(e as Error).message}`);
  }
  try {
    return parse(text);
  } catch (e) {
    if (e instanceof ImplementationError) throw new CliError(e.code, `${path}: ${e.message.replace(/^[A-Z_]+: /, '')}`);
    throw e;
  }
}

/**
 * The directory a new file goes into must exist (and be one), or be the state directory this
 * run creates (`willCreate`); the path must not name a directory.
 */
function checkOutput(path: string, what: string, willCreate?: string): void {
  if (existsSync(path) && statSync(path).isDirectory()) throw new CliError('CLI_BAD_ARGS', `${what} ${path} is a directory; name the file to write`);
  const dir = dirname(path);
  if (!existsSync(dir) && willCreate !== undefined && resolve(dir) === resolve(willCreate)) return;
  if (!existsSync(dir)) throw new CliError('CLI_BAD_ARGS', `${what} ${path}: directory ${dir} does not exist`);
  if (!statSync(dir).isDirectory()) throw new CliError('CLI_BAD_ARGS', `${what} ${path}: ${dir} is not a directory`);
}

export const command: Command = {
  summary: 'build a factory flash image (hidden, virtual and free zones) and print its enrollment record',
  async run(argv) {
    try {
      const a = parseOptions('image', argv, OPTIONS).values as Record<string, string | undefined> & { json?: boolean; help?: boolean; 'show-device-key'?: boolean };
      if (a.help) {
        process.stdout.write(HELP);
        return 0;
      }
      if (!a.serial) throw new CliError('CLI_BAD_ARGS', "--serial is required; see 'usbphone image --help'");
      if (!a.out) throw new CliError('CLI_BAD_ARGS', "--out is required; see 'usbphone image --help'");
      const out = a.out;
      const stateDir = a.state ?? 'state';
      const stateExists = checkStateDir(stateDir, { create: true });
      const fusesPath = a.fuses ?? join(stateDir, basename(out).replace(/\.img$/, '') + '.fuses');
      const keyPath = a['master-key'] ?? join(stateDir, 'master.key');
      const vendorPath = a['vendor-key'] ?? join(stateDir, 'vendor.key');

      // 1. Check every input; build the image in memory.
      // The state directory is created with the first write, so --out may go into it.
      const creates = stateExists ? undefined : stateDir;
      checkOutput(out, '--out', creates);
      const keyExists = existsSync(keyPath);
      const fusesExist = existsSync(fusesPath);
      if (!keyExists && a['master-key'] !== undefined) checkOutput(keyPath, '--master-key', creates);
      if (!fusesExist && a.fuses !== undefined) checkOutput(fusesPath, '--fuses', creates);
      const vendorExists = existsSync(vendorPath);
      if (!vendorExists && a['vendor-key'] !== undefined) checkOutput(vendorPath, '--vendor-key', creates);
      const newVendor = vendorExists ? null : new Uint8Array(randomBytes(32));
      const vendorKey = newVendor ?? readInput(vendorPath, 'vendor key file', (t) => {
        const hex = t.replace(/#.*/g, '').trim();
        if (!/^[0-9a-fA-F]{64}$/.test(hex)) throw new ImplementationError('CLI_FILE', 'a vendor key file holds 64 hex digits');
        return hexToBytes(hex);
      });
      let newKey: Uint8Array | null = null;
      const keyring = keyExists ? readInput(keyPath, 'master key file', (t) => MasterKeyring.parse(t)) : new MasterKeyring([[1, (newKey = new Uint8Array(randomBytes(32)))]]);
      const fuses = fusesExist ? readInput(fusesPath, 'fuses file', (t) => Fuses.parse(t)) : Fuses.generate((n) => new Uint8Array(randomBytes(n)), vendorPublicKey(vendorKey));
      const { image, enrollment } = buildImage({
        serial: a.serial,
        fuses,
        keyring,
        vendorKey,
        regPrimary: a['reg-primary'],
        regBackup: a['reg-backup'],
        includeDeviceKey: a['show-device-key'] === true,
      });

      // 2. Write: new key, new fuses, then the image (through a temporary file); undo on failure.
      const created: string[] = [];
      const notes: string[] = [];
      try {
        if (!stateExists && (newKey || newVendor || !fusesExist) && (keyPath.startsWith(stateDir) || fusesPath.startsWith(stateDir) || vendorPath.startsWith(stateDir))) {
          mkdirSync(stateDir, { recursive: true });
          created.push(stateDir);
        }
        if (newKey) {
          writeSecret(keyPath, MasterKeyring.format(1, newKey));
          created.push(keyPath);
          notes.push(`created a fresh master key (version 1) in ${keyPath} (mode 0600): the registration servers need it ('usbphone serve all --state ${dirname(keyPath)}')`);
        }
        if (newVendor) {
          writeSecret(vendorPath, bytesToHex(newVendor) + '\n');
          created.push(vendorPath);
          notes.push(`created a fresh vendor signing key in ${vendorPath} (mode 0600): it signs every image's boot manifest; keep it with the master key`);
        }
        if (!fusesExist) {
          writeSecret(fusesPath, fuses.toFile());
          created.push(fusesPath);
          notes.push(`generated fuses in ${fusesPath} (mode 0600): the image is useless without them`);
        }
        created.push(out + '.tmp');
        writeFileSync(out + '.tmp', image);
        renameSync(out + '.tmp', out);
        created.pop();
      } catch (e) {
        for (const p of created.reverse()) rmSync(p, { recursive: true, force: true });
        throw new CliError('IMAGE_WRITE_FAILED', `cannot write: ${(e as Error).message} (nothing written)`);
      }
      for (const n of notes) process.stderr.write(`usbphone image: ${n}\n`);
      if (a.json) process.stdout.write(JSON.stringify(enrollment, null, 2) + '\n');
      else {
        const rows: [string, string][] = [
          ['image', `${out} (${image.length} bytes, ${enrollment.chip})`],
          ['sha256', enrollment.imageSha256],
          ['serial', enrollment.serial],
          ['key version', String(enrollment.keyVersion)],
          ['unique id', enrollment.uniqueId],
          ['reg primary', enrollment.regPrimary],
          ['reg backup', enrollment.regBackup],
          ['fuses', `${fusesPath} (${fusesExist ? 'existing' : 'generated'})`],
          ['master key', `${keyPath} (${newKey ? 'created' : 'existing'})`],
          ['vendor key', `${vendorPath} (${newVendor ? 'created' : 'existing'})`],
          ['firmware', `v${enrollment.firmwareVersion}, measurement ${enrollment.firmwareMeasurement}`],
        ];
        if (enrollment.deviceKey) rows.push(['device key', `${enrollment.deviceKey}  (SECRET)`]);
        process.stdout.write(rows.map(([k, v]) => `${k.padEnd(12)} ${v}`).join('\n') + '\n');
      }
      return 0;
    } catch (e) {
      return reportError('image', e);
    }
  },
};
