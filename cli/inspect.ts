// `usbphone inspect`: what a factory or security engineer wants to know about a flash image
// (compare ESP-IDF nvs_tool.py, littlefs readtree.py). The engine is
// firmware/factory/inspect.ts; this file reads files, prints, and maps outcomes to exit codes.
import { readFileSync, statSync, existsSync } from 'node:fs';
import type { Command } from './main.ts';
import { Fuses } from '../firmware/flash/fuses.ts';
import { loadWear } from '../firmware/host/file-backing.ts';
import { MasterKeyring } from '../protocol/keys.ts';
import { inspectImage, INSPECT_MAX_BYTES, SECTOR_BYTES, type InspectReport } from '../firmware/factory/inspect.ts';
import { ZoneFlag, TABLE_MAGIC } from '../firmware/zones/layout.ts';
import { CliError, reportError, hexOf } from './flash-common.ts';
import { parseOptions } from './args.ts';
import { ImplementationError } from '../protocol/errors.ts';
import { hexToBytes } from '@noble/hashes/utils.js';

export const OPTIONS = {
  fuses: { type: 'string' },
  'vendor-pub': { type: 'string' },
  'master-key': { type: 'string' },
  zone: { type: 'string' },
  wear: { type: 'boolean' },
  'wear-file': { type: 'string' },
  check: { type: 'boolean' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

const HELP = `usage: usbphone inspect IMAGE [options]

Prints the partition table, each zone (hidden-zone records: metadata always, contents only
with the fuses; record-store slots; the ISO listing and AUTORUN.INF; the FAT directory), a
wear summary, and a scan that no secret known to the inspector appears in plaintext.

options:
  --fuses FILE        the chip's fuses: open the sealed records and scan for their secrets
  --master-key FILE   also check that the serial token opens under the master key
  --zone Z            only the hidden, virtual or free zone (the table is always read)
  --wear              a wear summary (erases in all, the most-worn sector, sectors near
                      their endurance, and the maximum and total per zone) from the wear
                      sidecar IMAGE.wear that 'usbphone sim' keeps (a raw image carries none)
  --wear-file FILE    the wear sidecar to read (implies --wear)
  --vendor-pub HEX     the vendor's Ed25519 public key (64 hex) to check the signed boot
                      manifest BOOT.SIG with when no --fuses are given (--fuses carry it)
  --check             integrity mode: exit 0 clean, 1 problems found (each named with
                      its offset), 2 unusable input
  --json              the whole report as JSON
  -h, --help          this help

exit codes: 0 inspected (with --check: and clean), 1 problems found (--check), 2 bad usage
or unusable input (missing or truncated file, not a flash image, zones out of range or
overlapping, absurd sizes; each named with the file)
`;

const kib = (n: number) => (n % 1024 === 0 ? `${n / 1024} KiB` : `${n} B`);

export const command: Command = {
  summary: 'inspect and check a flash image: zones, records, slots, wear, secrets in plaintext',
  async run(argv) {
    try {
      const parsed = parseOptions('inspect', argv, OPTIONS, { positionals: true });
      const a = parsed.values as Record<string, string | undefined> & { wear?: boolean; check?: boolean; json?: boolean; help?: boolean };
      if (a.help) {
        process.stdout.write(HELP);
        return 0;
      }
      if (parsed.positionals.length !== 1) throw new CliError('CLI_BAD_ARGS', `exactly one IMAGE file expected${parsed.positionals.length ? `, not ${parsed.positionals.length}` : ''}; see 'usbphone inspect --help'`);
      const path = parsed.positionals[0]!;
      if (a.zone !== undefined && !['hidden', 'virtual', 'free'].includes(a.zone)) throw new CliError('CLI_BAD_ARGS', `--zone must be hidden, virtual or free, not '${a.zone}'`);
      if (!existsSync(path)) throw new CliError('INSPECT_NO_FILE', `${path}: no such file`);
      const st = statSync(path);
      if (st.isDirectory()) throw new CliError('CLI_FILE', `${path} is a directory, not a flash image`);
      if (st.size > INSPECT_MAX_BYTES) throw new CliError('INSPECT_TOO_BIG', `${path}: ${st.size} bytes is larger than any supported chip (1 GiB)`);
      const img = new Uint8Array(readInput(path, 'image', () => readFileSync(path)));
      if (img.length < TABLE_MAGIC.length || TABLE_MAGIC.some((b, i) => img[i] !== b)) {
        throw new CliError('LAYOUT_BAD_MAGIC', `${path}: not a flash image (no "UPPT" partition table at address 0${img.length < 64 * 1024 ? `; ${img.length} bytes` : ''})`);
      }
      const fuses = a.fuses ? readInput(a.fuses, 'fuses file', () => Fuses.parse(readFileSync(a.fuses!, 'utf8'))) : null;
      const keyring = a['master-key'] ? readInput(a['master-key'], 'master key file', () => MasterKeyring.parse(readFileSync(a['master-key']!, 'utf8'))) : undefined;
      const wantWear = a.wear === true || a['wear-file'] !== undefined;
      const wearPath = a['wear-file'] ?? path + '.wear';
      const wear = wantWear ? loadWear(wearPath, Math.floor(img.length / SECTOR_BYTES)) : null;
      if (a['wear-file'] !== undefined && !wear) throw new CliError('INSPECT_BAD_WEAR', `${wearPath}: not a wear sidecar for this image`);

      const vp = a['vendor-pub'];
      if (vp !== undefined && !/^[0-9a-fA-F]{64}$/.test(vp)) throw new CliError('CLI_BAD_ARGS', '--vendor-pub must be 64 hex digits (an Ed25519 public key)');
      const vendorPub = vp ? hexToBytes(vp) : null;
      const r = inspectImage(img, { fuses, vendorPub, wear, keyring, zone: a.zone as 'hidden' | 'virtual' | 'free' | undefined });
      if (r.fatal) {
        if (a.json) process.stdout.write(JSON.stringify(r, replacer, 2) + '\n');
        throw new CliError(r.fatal.code, `${path}: ${r.fatal.message}${r.fatal.offset ? ` (at ${hexOf(r.fatal.offset)})` : ''}`);
      }
      if (!wantWear) r.wear = { available: false, note: 'not requested (--wear)' };
      else if (!wear) r.wear = { available: false, note: `a raw image carries no erase counters; no wear sidecar at ${wearPath}` };
      if (a.json) process.stdout.write(JSON.stringify(r, replacer, 2) + '\n');
      else process.stdout.write(render(path, r, a.check === true));
      if (a.check) return r.problems.length ? 1 : 0;
      return 0;
    } catch (e) {
      return reportError('inspect', e);
    }
  },
};

/** Reads an input file; a failure names the file (and what it should be). */
function readInput<T>(path: string, what: string, read: () => T): T {
  try {
    if (existsSync(path) && statSync(path).isDirectory()) throw new CliError('CLI_FILE', `${what} ${path} is a directory`);
    return read();
  } catch (e) {
    if (e instanceof CliError) throw e;
    if (e instanceof ImplementationError) throw new CliError(e.code, `${what} ${path}: ${e.message.replace(/^[A-Z_]+: /, '')}`);
    throw new CliError('CLI_FILE', `${what} ${path}: ${(e as Error).message}`);
  }
}

function replacer(_k: string, v: unknown): unknown {
  return v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v;
}

export function render(path: string, r: InspectReport, check: boolean): string {
  const L: string[] = [];
  const t = r.table!;
  L.push(`${path}: ${r.image.bytes} bytes, ${t.blockBytes / 1024} KiB blocks, sha256 ${r.image.sha256}`);
  L.push(`partition table @0x000000: version ${t.version}, ${t.entries.length} zones, CRC-32 ${t.crcOk ? 'ok' : 'MISMATCH'}`);
  L.push(`  ${'zone'.padEnd(8)} ${'offset'.padEnd(9)} ${'end'.padEnd(9)} ${'size'.padEnd(10)} flags`);
  for (const z of t.zones) {
    const f = [z.flags & ZoneFlag.HOST_VISIBLE && 'host-visible', z.flags & ZoneFlag.HOST_WRITABLE && 'host-writable', z.flags & ZoneFlag.VENDOR_ONLY && 'vendor-only', z.flags & ZoneFlag.CHECKSUMMED && `checksummed (${z.usedBytes} bytes, crc ${hexOf(z.contentCrc, 8)})`].filter(Boolean).join(', ');
    L.push(`  ${z.name.padEnd(8)} ${hexOf(z.offset).padEnd(9)} ${hexOf(z.end).padEnd(9)} ${kib(z.size).padEnd(10)} ${f}`);
  }
  if (r.hidden) {
    const h = r.hidden;
    const id = h.identity;
    L.push(`hidden zone: vendor path only`);
    L.push(`  identity record @${hexOf(id.offset)}: ${id.state}${id.state === 'sealed' ? ` (CRC-32 ok, ${id.bodyBytes} bytes sealed)` : id.problem ? ` (${id.problem})` : ''}`);
    if (id.opened) {
      const o = id.opened;
      L.push(`    opened with the fuses: serial ${o.serial}, key version ${o.keyVersion}, unique id ${o.uniqueId}, serial token ${o.serialTokenBytes} bytes${o.serialTokenOpens === undefined ? '' : o.serialTokenOpens ? ' (opens under the master key)' : ' (DOES NOT open under the master key)'}, device key sha256 ${o.deviceKeySha256Prefix}...`);
    } else if (id.openStatus) L.push(`    with the fuses: ${id.openStatus}`);
    else if (id.state === 'sealed') L.push(`    contents: sealed (give --fuses to open)`);
    for (const s of h.stores) {
      if (s.slots.every((x) => x.state === 'empty')) {
        L.push(`  record store "${s.name}": ${s.slots.length} slots, all empty`);
        continue;
      }
      L.push(`  record store "${s.name}": ${s.slots.length} slots`);
      for (const x of s.slots) {
        const info = x.state === 'empty' ? '' : ` seq ${x.seq ?? '?'}${x.length !== undefined ? ` ${x.length} bytes` : ''}${x.problem ? ` (${x.problem})` : ''}`;
        L.push(`    slot ${x.index} @${hexOf(x.absOffset)}  ${x.state.padEnd(7)}${info}${x.current ? '   <- current' : ''}`);
      }
    }
  }
  if (r.virtual) {
    const v = r.virtual;
    const z = t.zones.find((x) => x.name === 'virtual')!;
    L.push(`virtual zone @${hexOf(z.offset)}: ISO 9660 "${v.volumeId}", ${v.volumeBlocks} blocks of 2048 B${v.checksumOk === null ? '' : v.checksumOk ? ', matches its factory CRC-32' : ', DIFFERS from its factory CRC-32'}`);
    for (const f of v.files) L.push(`  ${f.name.padEnd(12)} ${String(f.size).padStart(8)} bytes  lba ${f.lba}`);
    if (v.autorun !== null) {
      L.push('  AUTORUN.INF:');
      for (const line of v.autorun.split(/\r?\n/).filter(Boolean)) L.push(`    ${line}`);
    }
  }
  if (r.free) {
    const f = r.free;
    const z = t.zones.find((x) => x.name === 'free')!;
    const g = f.geometry;
    L.push(g ? `free zone @${hexOf(z.offset)}: FAT${g.fatType} "${g.label}", ${g.clusters} clusters of ${g.sectorsPerCluster * 512} B, ${f.freeBytes} bytes free` : `free zone @${hexOf(z.offset)}: no readable FAT file system`);
    for (const e of f.files) L.push(`  ${e.name.padEnd(12)} ${String(e.size).padStart(8)} bytes  cluster ${e.cluster}`);
  }
  const b = r.boot;
  if (!b.checked) L.push(`boot manifest: not checked (${b.note})`);
  else if (b.ok) L.push(`boot manifest: signature ok, firmware v${b.version}, measurement ${b.measurement}, ${b.files!.length} files match (${b.files!.join(', ')})`);
  else L.push('boot manifest: DOES NOT VERIFY (see problems)');
  if (r.secrets.checked) L.push(`secret scan: ${r.secrets.findings.length ? `${r.secrets.findings.length} FOUND in plaintext` : 'no secret in plaintext'} (looked for: ${r.secrets.needles.join(', ')})`);
  else L.push('secret scan: skipped (give --fuses so the inspector knows the secrets)');
  const w = r.wear;
  if (w.available) {
    L.push(`wear: ${w.sectors} sectors, ${w.totalErases} erases, max ${w.maxErases} (sector ${w.maxSector}, ${hexOf(w.maxSector! * SECTOR_BYTES)}), mean ${w.meanErases!.toFixed(2)}, endurance ${w.endurance}, ${w.atRisk!.length} sectors at >= 80%`);
    for (const z of w.perZone!) L.push(`  ${z.zone.padEnd(8)} max ${z.maxErases}, total ${z.totalErases}`);
  } else L.push(`wear: ${w.note}`);
  // A clean check without the signature is said as such (found by review: read as verified).
  if (r.problems.length === 0) L.push(check ? (b.checked ? 'check: clean' : 'check: clean, but the boot manifest signature was not checked (give --fuses or --vendor-pub)') : 'problems: none');
  else {
    L.push(`${check ? 'check' : 'problems'}: ${r.problems.length} problem${r.problems.length > 1 ? 's' : ''}`);
    for (const p of r.problems) L.push(`  ${hexOf(p.offset)} ${p.zone}: ${p.message}`);
  }
  return L.join('\n') + '\n';
}
