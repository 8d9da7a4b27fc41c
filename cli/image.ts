// `usbphone image`: factory provisioning of one device (docs/flash-layout.md). Builds the
// flash image, keeps or creates the fuses file and the master key file, and prints the
// enrollment record the registration server needs (never the device key unless asked).
import { parseArgs } from 'node:util';
import { existsSync, readFileSync, writeFileSync, renameSync, openSync, writeSync, closeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import type { Command } from './main.ts';
import { MasterKeyring } from '../protocol/keys.ts';
import { Fuses } from '../firmware/flash/fuses.ts';
import { buildImage, DEFAULT_REG_BACKUP, DEFAULT_REG_PRIMARY } from '../firmware/factory/image.ts';
import { CliError, reportError } from './flash-common.ts';

const HELP = `usage: usbphone image --serial SN --out phone.img [options]

Builds a factory flash image for one device: partition table, hidden zone (sealed identity
record), virtual zone (ISO 9660 with AUTORUN.INF and UPMon), free zone (FAT with the main
program). Same inputs (including an existing fuses file) give a byte-identical image.

options:
  --serial SN          device serial number ([A-Za-z0-9-], 1..64)          (required)
  --out FILE           where to write the image                            (required)
  --fuses FILE         the chip's fuses: used if it exists, else generated
                       with crypto randomness and written (mode 0600)
                       (default: the image path with .fuses)
  --master-key FILE    master key file ("v<N> <64 hex>" lines); created with a
                       fresh random key (0600) if missing (default: master.key
                       beside the image)
  --reg-primary URL    primary registration endpoint (default ${DEFAULT_REG_PRIMARY})
  --reg-backup URL     backup registration endpoint  (default ${DEFAULT_REG_BACKUP})
  --json               print the enrollment record as JSON
  --show-device-key    include the device key in the enrollment record (secret!)
  -h, --help           this help

exit codes: 0 image written, 1 the job failed (cannot write), 2 bad usage or unusable input
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

export const command: Command = {
  summary: 'build a factory flash image (hidden, virtual and free zones) and print its enrollment record',
  async run(argv) {
    try {
      let a;
      try {
        a = parseArgs({
          args: argv,
          options: {
            serial: { type: 'string' },
            out: { type: 'string' },
            fuses: { type: 'string' },
            'master-key': { type: 'string' },
            'reg-primary': { type: 'string' },
            'reg-backup': { type: 'string' },
            json: { type: 'boolean' },
            'show-device-key': { type: 'boolean' },
            help: { type: 'boolean', short: 'h' },
          },
          strict: true,
          allowPositionals: false,
        }).values;
      } catch (e) {
        throw new CliError('CLI_BAD_ARGS', `${(e as Error).message}; see 'usbphone image --help'`);
      }
      if (a.help) {
        process.stdout.write(HELP);
        return 0;
      }
      if (!a.serial) throw new CliError('CLI_BAD_ARGS', "--serial is required; see 'usbphone image --help'");
      if (!a.out) throw new CliError('CLI_BAD_ARGS', "--out is required; see 'usbphone image --help'");
      const out = a.out;
      const fusesPath = a.fuses ?? out.replace(/\.img$/, '') + '.fuses';
      const keyPath = a['master-key'] ?? join(dirname(out), 'master.key');
      const notes: string[] = [];

      let keyring: MasterKeyring;
      if (existsSync(keyPath)) keyring = MasterKeyring.parse(readFileSync(keyPath, 'utf8'));
      else {
        const key = new Uint8Array(randomBytes(32));
        writeSecret(keyPath, MasterKeyring.format(1, key));
        keyring = new MasterKeyring([[1, key]]);
        notes.push(`created a fresh master key (version 1) in ${keyPath} (mode 0600): keep it for the registration servers`);
      }
      let fuses: Fuses;
      let fusesNote = 'existing';
      if (existsSync(fusesPath)) fuses = Fuses.parse(readFileSync(fusesPath, 'utf8'));
      else {
        fuses = Fuses.generate((n) => new Uint8Array(randomBytes(n)));
        fusesNote = 'generated';
      }
      const { image, enrollment } = buildImage({
        serial: a.serial,
        fuses,
        keyring,
        regPrimary: a['reg-primary'],
        regBackup: a['reg-backup'],
        includeDeviceKey: a['show-device-key'] === true,
      });
      try {
        if (fusesNote === 'generated') {
          writeSecret(fusesPath, fuses.toFile());
          notes.push(`generated fuses in ${fusesPath} (mode 0600): the image is useless without them`);
        }
        writeFileSync(out + '.tmp', image);
        renameSync(out + '.tmp', out);
      } catch (e) {
        throw new CliError('IMAGE_WRITE_FAILED', `cannot write: ${(e as Error).message}`, 1);
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
          ['fuses', `${fusesPath} (${fusesNote})`],
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
