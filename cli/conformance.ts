// `usbphone conformance --target URL`: checks a server implementation of docs/protocol.md from
// the outside (conformance/), with a test device's credentials as the only input besides the URL.
// `usbphone conformance --device CMD`: checks a device implementation, the suite playing its
// servers (conformance/device.ts), with the same device inputs (its enrollment record).
import { readFileSync, writeFileSync } from 'node:fs';
import { hexToBytes } from '@noble/hashes/utils.js';
import type { Command } from './main.ts';
import { Limits } from '../protocol/limits.ts';
import { parseOptions, intOption } from './args.ts';
import { CliError, reportError } from './flash-common.ts';

export const OPTIONS = {
  target: { type: 'string' },
  device: { type: 'string' },
  listen: { type: 'string' },
  'reg-dest': { type: 'string' },
  'master-key': { type: 'string' },
  'key-version': { type: 'string' },
  serial: { type: 'string' },
  'device-key': { type: 'string' },
  'serial-token': { type: 'string' },
  measurement: { type: 'string' },
  'policy-key': { type: 'string' },
  timeout: { type: 'string' },
  'step-timeout': { type: 'string' },
  case: { type: 'string' },
  list: { type: 'boolean' },
  json: { type: 'boolean' },
  junit: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** Where the suite listens for the device by default (a device built for one URL keeps working across runs). */
export const DEFAULT_LISTEN = '127.0.0.1:7460';

const HELP = `usage: usbphone conformance --target URL DEVICE [--reg-dest NAME] [--step-timeout MS] [--policy-key HEX] [common options]
       usbphone conformance --device CMD DEVICE [--listen HOST:PORT] [common options]
       usbphone conformance --list [--case PATTERN] [--json]
  DEVICE: --serial SERIAL --measurement HEX (--master-key FILE | --device-key HEX --serial-token HEX)
  common options: [--timeout MS] [--case PATTERN] [--json] [--junit FILE]

Checks an implementation of the usbphone protocol (docs/protocol.md) from the outside: each
case is named by the section it checks, is bounded in time, and gets a verdict: pass, fail,
non-strict (allowed, not recommended), informational, or skipped (an input it needs was not
given). See docs/conformance.md.

--target: a server. What it needs: the target URL and one test device enrolled at the target,
as the registration server knows it. Business-login cases use the credentials the suite obtains
through its own registrations (their secret opened with the device key). Every registration
rotates that device's business secret (§10): use a device kept for testing. The bank cases
(§6.5) open accounts at the target's bank for line identities the suite invents: the bank must
bind them in mode 1 (directly by the ICCID, no operator).

--device: a device. The suite listens at ws://HOST:PORT/ and plays the gateway, the
registration servers (reg-primary, reg-backup) and a business server (biz-conf); it runs CMD
with the shell, fresh for each run of each case, and stops it at the case's end. CMD learns the
suite's URL from {url} in CMD and from the environment variable USBPHONE_CONFORMANCE_URL; the
device registers at <url>reg-primary. DEVICE is the device's enrollment record: the suite
completes real handshakes with it. The project's own phone:
  usbphone conformance --device 'usbphone sim --phone-only --gateway {url} --state DIR -q' ...
(its enrollment record is DIR/phone.enrollment.json, its master key DIR/master.key).

options:
  --target URL           a gateway (ws://host:port/) or a server's direct device port
  --device CMD           the device command ({url}: the suite's URL)
  --listen HOST:PORT     --device: where the suite listens (default ${DEFAULT_LISTEN}; port 0: any free
                         port; a device whose endpoints are built in needs a fixed one)
  --reg-dest NAME        the registration server's name, the dest of its frames (default reg-primary)
  --master-key FILE      the master key file (v<N> <64 hex> lines): the device's key and token are
                         derived for --serial; also enables the unknown-device case
  --key-version N        the master key version the device was made under (default the newest)
  --serial SERIAL        the test device's serial, enrolled at the target
  --device-key HEX       the device key (64 hex digits), instead of --master-key
  --serial-token HEX     the device's serial token (hex), with --device-key
  --measurement HEX      the firmware measurement the device's chip attests in its hello (64 hex
                         digits: firmwareMeasurement of its enrollment record; the target must
                         accept that firmware)
  --policy-key HEX       --target: the policy server's Ed25519 public key (64 hex digits, what the
                         phones get at the factory): the §16 case checks the signature of the
                         attack table a credReply carries (S3.11); without it, that case is skipped
  --timeout MS           longest wait for each expected frame or close (default 5000)
  --step-timeout MS      the target's step timeout, for the TIMEOUT case (default ${Limits.stepTimeoutMs})
  --case PATTERN         run (or list) only the cases whose name contains PATTERN (case-insensitive)
  --list                 print the case names by section and run nothing
  --json                 print the results (or the list) as JSON
  --junit FILE           also write the results as JUnit XML to FILE
  -h, --help             this help

Exit: 0 no case failed (non-strict, informational and skipped allowed), 1 a case failed, the
target does not answer (CONFORMANCE_UNREACHABLE) or the suite cannot listen
(CONFORMANCE_LISTEN_FAILED), 2 bad usage (CLI_BAD_ARGS, CONFORMANCE_NO_CASE).
`;


export const command: Command = {
  summary: 'check a server (--target) or a device (--device) implementation of the protocol from the outside (issue 13)',
  async run(argv) {
    try {
      const v = parseOptions('conformance', argv, OPTIONS).values;
      if (v.help) {
        process.stdout.write(HELP);
        return 0;
      }
      const { ALL_CASES } = await import('../conformance/cases.ts');
      const { DEVICE_CASES } = await import('../conformance/cases/device.ts');
      const { selectCases, runCases } = await import('../conformance/runner.ts');
      const { caseName } = await import('../conformance/suite.ts');
      const pattern = v.case as string | undefined;
      const noCase = () => new CliError('CONFORMANCE_NO_CASE', `--case '${pattern}' matches no case; 'usbphone conformance --list' names them`);
      if (v.list) {
        for (const k of ['target', 'device', 'listen', 'master-key', 'key-version', 'serial', 'device-key', 'serial-token', 'measurement', 'policy-key', 'timeout', 'step-timeout', 'junit', 'reg-dest']) {
          if (v[k] !== undefined) throw new CliError('CLI_BAD_ARGS', `--${k} does not apply to --list`);
        }
        const server = selectCases(ALL_CASES, pattern);
        const device = selectCases(DEVICE_CASES, pattern);
        if (server.length + device.length === 0) throw noCase();
        const { listText } = await import('../conformance/report.ts');
        if (v.json) {
          const row = (side: string) => (c: { section: string; title: string }) => ({ name: caseName(c), section: c.section, side });
          process.stdout.write(JSON.stringify([...server.map(row('server')), ...device.map(row('device'))]) + '\n');
        } else {
          const parts: string[] = [];
          if (server.length) parts.push(`# --target: the server's side\n\n${listText(server)}`);
          if (device.length) parts.push(`# --device: the device's side\n\n${listText(device)}`);
          process.stdout.write(parts.join('\n'));
        }
        return 0;
      }
      if (v.target !== undefined && v.device !== undefined) throw new CliError('CLI_BAD_ARGS', "give --target URL (a server) or --device CMD (a device), not both; see 'usbphone conformance --help'");
      const { textReport, jsonReport, junitReport, summaryLine } = await import('../conformance/report.ts');
      const tty = process.stderr.isTTY === true;
      const progress = (r: { verdict: string; name: string }, i: number, n: number) => {
        if (tty) process.stderr.write(`\r\x1b[K[${i}/${n}] ${r.verdict.padEnd(10)} ${r.name.slice(0, 100)}`);
      };
      let summary: import('../conformance/runner.ts').RunSummary;
      if (v.device !== undefined) {
        for (const k of ['reg-dest', 'step-timeout', 'policy-key']) {
          if (v[k] !== undefined) throw new CliError('CLI_BAD_ARGS', `--${k} applies to --target only (the suite plays the servers with --device)`);
        }
        const cases = selectCases(DEVICE_CASES, pattern);
        if (cases.length === 0) throw noCase();
        const { host, port } = listenOption(v.listen as string | undefined);
        const dev = await readTargetDevice(v);
        const { runDeviceCases, DeviceHost } = await import('../conformance/device.ts');
        // Refuse a taken port as usage before any device runs (the run listens again on it).
        try {
          await (await DeviceHost.listen(host, port)).close();
        } catch (e) {
          throw new CliError('CONFORMANCE_LISTEN_FAILED', `cannot listen on ${host}:${port}: ${(e as Error).message}`);
        }
        summary = await runDeviceCases(cases, { command: v.device as string, device: dev.device, host, port, timeoutMs: intOption(v.timeout, 'timeout', 50, 600_000, 5_000) }, progress);
      } else {
        if (v.listen !== undefined) throw new CliError('CLI_BAD_ARGS', '--listen applies to --device only');
        const cases = selectCases(ALL_CASES, pattern);
        if (cases.length === 0) throw noCase();
        const target = await readTarget(v);
        const { Conn } = await import('../conformance/wire.ts');
        try {
          (await Conn.open(target.url, [], target.timeoutMs)).close();
        } catch (e) {
          throw new CliError('CONFORMANCE_UNREACHABLE', (e as Error).message);
        }
        summary = await runCases(cases, target, progress);
      }
      if (tty) process.stderr.write('\r\x1b[K');
      if (v.junit !== undefined) {
        try {
          writeFileSync(v.junit as string, junitReport(summary));
        } catch (e) {
          throw new CliError('CLI_FILE', `--junit ${v.junit}: ${(e as Error).message}`);
        }
      }
      process.stdout.write(v.json ? jsonReport(summary) : textReport(summary));
      if (v.json) process.stderr.write(`${summaryLine(summary)}\n`);
      return summary.counts.fail > 0 ? 1 : 0;
    } catch (e) {
      return reportError('conformance', e);
    }
  },
};

type Values = ReturnType<typeof parseOptions>['values'];

async function readTargetDevice(v: Values) {
  const { MasterKeyring, deriveDeviceKey, makeSerialToken, SERIAL_RE } = await import('../protocol/keys.ts');
  const serial = v.serial as string | undefined;
  if (!serial) throw new CliError('CLI_BAD_ARGS', "--serial is required: the test device enrolled at the target; see 'usbphone conformance --help'");
  if (!SERIAL_RE.test(serial)) throw new CliError('CLI_BAD_ARGS', `--serial '${serial}' is not 1..64 of [A-Za-z0-9-]`);
  const m = v.measurement as string | undefined;
  if (!m) throw new CliError('CLI_BAD_ARGS', "--measurement is required: the firmware the test device attests (firmwareMeasurement of its enrollment record); see 'usbphone conformance --help'");
  if (!/^[0-9a-fA-F]{64}$/.test(m)) throw new CliError('CLI_BAD_ARGS', '--measurement must be 64 hex digits');
  const measurement = hexToBytes(m);
  if (v['master-key'] !== undefined) {
    if (v['device-key'] !== undefined || v['serial-token'] !== undefined) throw new CliError('CLI_BAD_ARGS', 'give --master-key, or --device-key with --serial-token, not both');
    let text: string;
    try {
      text = readFileSync(v['master-key'] as string, 'utf8');
    } catch (e) {
      throw new CliError('CLI_FILE', `--master-key ${v['master-key']}: ${(e as Error).message}`);
    }
    const ring = MasterKeyring.parse(text);
    const version = intOption(v['key-version'], 'key-version', 1, 255, ring.current);
    if (!ring.has(version)) throw new CliError('CLI_BAD_ARGS', `--key-version ${version}: the master key file has no such version`);
    const master = ring.key(version);
    return { device: { serial, key: deriveDeviceKey(master, serial), token: makeSerialToken(master, version, serial), measurement }, master: { version, key: master } };
  }
  if (v['key-version'] !== undefined) throw new CliError('CLI_BAD_ARGS', '--key-version applies to --master-key only');
  const key = v['device-key'] as string | undefined;
  const token = v['serial-token'] as string | undefined;
  if (!key || !token) throw new CliError('CLI_BAD_ARGS', "give --master-key FILE, or --device-key HEX with --serial-token HEX; see 'usbphone conformance --help'");
  if (!/^[0-9a-fA-F]{64}$/.test(key)) throw new CliError('CLI_BAD_ARGS', '--device-key must be 64 hex digits');
  if (!/^([0-9a-fA-F]{2}){42,105}$/.test(token)) throw new CliError('CLI_BAD_ARGS', '--serial-token must be 42..105 bytes in hex');
  return { device: { serial, key: hexToBytes(key), token: hexToBytes(token), measurement } };
}

/** --listen HOST:PORT (an IPv6 host in brackets), or the default. */
function listenOption(v: string | undefined): { host: string; port: number } {
  const text = v ?? DEFAULT_LISTEN;
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(text);
  if (!m || Number(m[2]) > 65535) throw new CliError('CLI_BAD_ARGS', `--listen must be HOST:PORT (port 0..65535), not '${text}'`);
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port: Number(m[2]) };
}

function readTargetSync(v: Values) {
  const url = v.target as string | undefined;
  if (!url) throw new CliError('CLI_BAD_ARGS', "--target URL (a server) or --device CMD (a device) is required; see 'usbphone conformance --help'");
  if (!/^wss?:\/\/\S+$/.test(url)) throw new CliError('CLI_BAD_ARGS', `--target '${url}' is not a ws:// or wss:// URL`);
  const regDest = (v['reg-dest'] as string | undefined) ?? 'reg-primary';
  const pk = v['policy-key'] as string | undefined;
  if (pk !== undefined && !/^[0-9a-fA-F]{64}$/.test(pk)) throw new CliError('CLI_BAD_ARGS', '--policy-key must be 64 hex digits (an Ed25519 public key)');
  if (!/^[a-z0-9][a-z0-9-]{0,31}$/.test(regDest)) throw new CliError('CLI_BAD_ARGS', `--reg-dest '${regDest}' is not a dest ([a-z0-9][a-z0-9-]{0,31})`);
  return {
    url,
    regDest,
    timeoutMs: intOption(v.timeout, 'timeout', 50, 600_000, 5_000),
    stepTimeoutMs: intOption(v['step-timeout'], 'step-timeout', 1, 600_000, Limits.stepTimeoutMs),
    ...(pk === undefined ? {} : { policyKey: hexToBytes(pk) }),
  };
}

async function readTarget(v: Values): Promise<import('../conformance/suite.ts').Target> {
  const t = readTargetSync(v);
  return { ...t, ...(await readTargetDevice(v)) };
}
