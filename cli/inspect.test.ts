// The image and inspect commands as a user runs them: real processes, exit codes, one-line
// errors with their code and no stack trace.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseTable, encodeTable, zoneOf, ZoneType } from '../firmware/zones/layout.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dir = mkdtempSync(join(tmpdir(), 'cli-'));
const img = join(dir, 'phone.img'), fusesPath = join(dir, 'phone.fuses'), keyPath = join(dir, 'master.key'), vendorPath = join(dir, 'vendor.key');

function run(...args: string[]) {
  const r = spawnSync(process.execPath, [join(root, 'bin/usbphone.js'), ...args], { encoding: 'utf8', cwd: root });
  return { code: r.status, out: r.stdout, err: r.stderr };
}
function noStack(err: string) {
  assert.not.match(err, /\n\s+at /, 'no stack trace');
  assert.ok(err.trim().split('\n').length === 1, `one line: ${err}`);
}
function variant(name: string, f: (b: Uint8Array) => Uint8Array | void): string {
  const b = new Uint8Array(readFileSync(img));
  const out = f(b) ?? b;
  const p = join(dir, name);
  writeFileSync(p, out);
  return p;
}

test('image: creates master key and fuses (0600), prints the enrollment record, reproducible with the same fuses', () => {
  const r = run('image', '--serial', 'SN-0000001', '--out', img, '--fuses', fusesPath, '--master-key', keyPath, '--vendor-key', vendorPath, '--json');
  assert.is(r.code, 0, r.err);
  const e = JSON.parse(r.out);
  assert.is(e.serial, 'SN-0000001');
  assert.is(e.deviceKey, undefined);
  assert.match(r.err, /created a fresh master key/);
  assert.match(r.err, /generated fuses/);
  assert.is(statSync(fusesPath).mode & 0o777, 0o600);
  assert.is(statSync(keyPath).mode & 0o777, 0o600);
  assert.match(r.err, /created a fresh vendor signing key/);
  assert.is(statSync(vendorPath).mode & 0o777, 0o600);
  assert.match(e.firmwareMeasurement, /^[0-9a-f]{64}$/);
  const first = readFileSync(img);
  const again = run('image', '--serial', 'SN-0000001', '--out', img, '--fuses', fusesPath, '--master-key', keyPath, '--vendor-key', vendorPath, '--json', '--show-device-key');
  assert.is(again.code, 0, again.err);
  assert.ok(readFileSync(img).equals(first), 'byte-identical image');
  assert.match(JSON.parse(again.out).deviceKey, /^[0-9a-f]{64}$/);
  const human = run('image', '--serial', 'SN-0000001', '--out', img, '--fuses', fusesPath, '--master-key', keyPath, '--vendor-key', vendorPath);
  assert.match(human.out, /unique id\s+[0-9a-f]{16}/);
  assert.not.match(human.out, /device key/);
});

test('image: bad usage exits 2 with one line and a code', () => {
  for (const [args, code] of [
    [['image', '--out', img], 'CLI_BAD_ARGS'],
    [['image', '--serial', 'x y', '--out', join(dir, 'z.img'), '--fuses', fusesPath, '--master-key', keyPath, '--vendor-key', vendorPath], 'KEY_BAD_SERIAL'],
    [['image', '--serial', 'S1', '--out', join(dir, 'z.img'), '--fuses', fusesPath, '--master-key', keyPath, '--vendor-key', vendorPath, '--reg-primary', 'http://a/b'], 'IMAGE_BAD_URL'],
    [['image', '--bogus'], 'CLI_BAD_ARGS'],
  ] as const) {
    const r = run(...args);
    assert.is(r.code, 2, r.err);
    assert.ok(r.err.includes(`(${code})`), r.err);
    noStack(r.err);
  }
  assert.is(run('image', '--help').code, 0);
  assert.is(run('inspect', '--help').code, 0);
});

test('inspect: a factory image is clean; with fuses it opens the identity and finds no plaintext secret', () => {
  const r = run('inspect', img, '--fuses', fusesPath, '--master-key', keyPath, '--check');
  assert.is(r.code, 0, r.out + r.err);
  assert.match(r.out, /check: clean/);
  assert.match(r.out, /opened with the fuses: serial SN-0000001/);
  assert.match(r.out, /open=UPMON\.EXE/);
  assert.match(r.out, /MAIN\.EXE/);
  assert.match(r.out, /no secret in plaintext/);
  assert.match(r.out, /record store "login": 4 slots, all empty/);
  const w = run('inspect', img, '--wear');
  assert.is(w.code, 0);
  assert.match(w.out, /a raw image carries no erase counters/);
  const j = JSON.parse(run('inspect', img, '--json', '--zone', 'virtual').out);
  assert.is(j.hidden, null);
  assert.ok(j.virtual.files.some((f: { name: string }) => f.name === 'AUTORUN.INF'));
  const noFuses = run('inspect', img);
  assert.match(noFuses.out, /contents: sealed \(give --fuses to open\)/);
  assert.not.match(noFuses.out, /SN-0000001/);
});

test('inspect --check finds a flipped bit in each zone\'s metadata: exit 1, named with its offset', () => {
  const b0 = new Uint8Array(readFileSync(img));
  const p = parseTable(b0);
  if (!p.ok) throw new Error('table');
  const h = zoneOf(p.table, ZoneType.HIDDEN), v = zoneOf(p.table, ZoneType.VIRTUAL), f = zoneOf(p.table, ZoneType.FREE);
  const cases: [string, number, RegExp][] = [
    ['table', 16 + 24 + 12, /table: partition table CRC-32 mismatch/], // virtual entry's usedBytes
    ['hidden', h.offset + 40, /hidden: identity record CRC-32 mismatch/],
    ['virtual', v.offset + 16 * 2048 + 156 + 2, /virtual: /], // root directory extent in the PVD
    ['free', f.offset + 4096 + 4, /free: FAT 2 differs from FAT 1/], // FAT 1 (at sector 8: its own flash sector), cluster 2-3
  ];
  for (const [zone, off, re] of cases) {
    const path = variant(`flip-${zone}.img`, (b) => {
      b[off]! ^= 0x04;
    });
    const r = run('inspect', path, '--check');
    assert.is(r.code, 1, `${zone}: ${r.out}${r.err}`);
    assert.match(r.out, re);
    assert.match(r.out, /0x[0-9a-f]{6} /);
  }
  // A flipped bit in a sealed record-store slot is named too.
  const withSlot = variant('slot.img', (b) => {
    b[h.offset + 2 * 4096] = 0x00; // garbage in slot 0 of "login"
  });
  const r = run('inspect', withSlot, '--check', '--zone', 'hidden');
  assert.is(r.code, 1);
  assert.match(r.out, /record store "login" slot 0/);
});

test('inspect --check: a one-byte edit of MAIN.EXE (fsck.fat still clean) is an integrity finding against UPMON.CFG\'s hash: exit 1', () => {
  const clean = run('inspect', img, '--check');
  assert.is(clean.code, 0, clean.out + clean.err);
  const b0 = new Uint8Array(readFileSync(img));
  const p = parseTable(b0);
  if (!p.ok) throw new Error('table');
  const f = zoneOf(p.table, ZoneType.FREE);
  const main = new TextEncoder().encode('usbphone MAIN v1');
  let at = -1;
  for (let i = f.offset; i < f.offset + f.size && at < 0; i += 512) if (main.every((x, k) => b0[i + k] === x)) at = i;
  assert.ok(at > 0, 'MAIN.EXE data found');
  const path = variant('main-edit.img', (b) => {
    b[at + 9] = 0x4e; // "MAIN" -> "NAIN": same size, same chain
  });
  const r = run('inspect', path, '--check');
  assert.is(r.code, 1, r.out + r.err);
  assert.match(r.out, /main program MAIN\.EXE does not match the SHA-256 in UPMON\.CFG/);
});

test('inspect: unusable input exits 2 with a clear one-line message, no stack trace', () => {
  const b0 = new Uint8Array(readFileSync(img));
  const p = parseTable(b0);
  if (!p.ok) throw new Error('table');
  const table = p.table;
  const withTable = (mut: (t: typeof table) => void) => (b: Uint8Array) => {
    const t = structuredClone(table);
    mut(t);
    // Encode by hand so encodeTable's own validation does not stop us.
    const enc = encodeTable(table);
    const dv = new DataView(enc.buffer);
    t.entries.forEach((e, i) => {
      dv.setUint32(16 + i * 24 + 4, e.offset, true);
      dv.setUint32(16 + i * 24 + 8, e.size, true);
    });
    dv.setUint32(12, t.chipBytes, true);
    b.set(enc, 0);
  };
  const cases: [string, string, RegExp][] = [
    [variant('trunc.img', (b) => b.subarray(0, 4 * 1024 * 1024)), 'INSPECT_TRUNCATED', /truncated/],
    [variant('odd.img', (b) => b.subarray(0, b.length - 100)), 'INSPECT_TRUNCATED', /truncated/],
    [variant('tiny.img', (b) => b.subarray(0, 1000)), 'INSPECT_TRUNCATED', /too small/],
    [variant('magic.img', (b) => void (b[0] = 0x00)), 'LAYOUT_BAD_MAGIC', /magic/],
    [variant('overlap.img', withTable((t) => (t.entries[1]!.offset = t.entries[0]!.offset))), 'LAYOUT_ZONE_OVERLAP', /overlaps/],
    [variant('range.img', withTable((t) => (t.entries[2]!.size += 0x10000))), 'LAYOUT_ZONE_RANGE', /past the chip/],
    [variant('absurd.img', withTable((t) => (t.chipBytes = 0xfff00000))), 'LAYOUT_BAD_SIZE', /absurd/],
    [join(dir, 'missing.img'), 'INSPECT_NO_FILE', /no such file/],
  ];
  for (const [path, code, re] of cases) {
    const r = run('inspect', path, '--check');
    assert.is(r.code, 2, `${code}: ${r.out}${r.err}`);
    assert.ok(r.err.includes(`(${code})`), r.err);
    assert.match(r.err, re);
    noStack(r.err);
  }
  const r = run('inspect', img, '--zone', 'nowhere');
  assert.is(r.code, 2);
  const bf = join(dir, 'bad.fuses');
  writeFileSync(bf, 'nonsense');
  const r2 = run('inspect', img, '--fuses', bf);
  assert.is(r2.code, 2);
  assert.ok(r2.err.includes('(FUSES_BAD_FILE)'), r2.err);
  noStack(r2.err);
});

test.after(() => rmSync(dir, { recursive: true, force: true }));
test('inspect --check verifies the signed boot manifest: clean with the fuses or --vendor-pub; a one-byte edit of MAIN.EXE or another vendor key is an integrity finding (exit 1)', () => {
  const fuses = readFileSync(fusesPath, 'utf8');
  const vpk = /vpk ([0-9a-f]{64})/.exec(fuses)![1]!;
  const clean = run('inspect', img, '--check', '--fuses', fusesPath);
  assert.is(clean.code, 0, clean.out + clean.err);
  assert.match(clean.out, /boot manifest: signature ok, firmware v1, measurement [0-9a-f]{64}, 4 files match/);
  assert.is(run('inspect', img, '--check', '--vendor-pub', vpk).code, 0);
  // Without any vendor key the manifest is not checked, and says so.
  assert.match(run('inspect', img).out, /boot manifest: not checked \(no vendor public key/);
  // A one-byte edit of the main program: fsck.fat finds nothing, the signed manifest does.
  const t = parseTable(new Uint8Array(readFileSync(img)));
  assert.ok(t.ok);
  const free = zoneOf(t.ok ? t.table : (null as never), ZoneType.FREE);
  const edited = variant('main-edit.img', (b) => {
    const at = b.subarray(free.offset).findIndex((_, i, a) => a[i] === 0x75 && a[i + 1] === 0x73 && a[i + 2] === 0x62 && a[i + 9] === 0x4d && a[i + 10] === 0x41); // "usbphone MAIN"
    assert.ok(at > 0);
    b[free.offset + at + 12]! ^= 0x01;
  });
  const bad = run('inspect', edited, '--check', '--vendor-pub', vpk);
  assert.is(bad.code, 1, bad.out);
  assert.match(bad.out, /boot manifest: free zone MAIN.EXE does not match the signed manifest.*BOOT_HASH_MISMATCH/);
  // The right image checked against another vendor's key: BOOT_BAD_SIGNATURE.
  const other = run('inspect', img, '--check', '--vendor-pub', 'ab'.repeat(32));
  assert.is(other.code, 1);
  assert.match(other.out, /BOOT_BAD_SIGNATURE/);
  const r = run('inspect', img, '--vendor-pub', 'xyz');
  assert.is(r.code, 2);
  noStack(r.err);
});

test.run();
