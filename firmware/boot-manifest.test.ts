// The signed boot manifest: the accepted path, and each attack a writer of the flash could try
// (a rewritten file, a rewritten file with its hash, a manifest re-signed with another key,
// a manifest truncated or garbled). RFC 8032 §7.1 test 1 checks the Ed25519 library itself.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import { ed25519 } from '@noble/curves/ed25519.js';
import { decode, encode } from '../protocol/cbor.ts';
import { signManifest, verifyManifest, verifyManifestUncached, matchesManifest, vendorPublicKey, type BootManifest } from './boot-manifest.ts';

const te = new TextEncoder();
const vendor = new Uint8Array(32).fill(0x42);
const pub = vendorPublicKey(vendor);
const files = { 'AUTORUN.INF': te.encode('[autorun]\r\nopen=UPMON.EXE\r\n'), 'UPMON.EXE': te.encode('upmon v1'), 'MAIN.EXE': te.encode('main v1') };
const manifest: BootManifest = {
  version: 1,
  entries: [
    { zone: 'cdrom', name: 'UPMON.EXE', sha256: sha256(files['UPMON.EXE']) },
    { zone: 'cdrom', name: 'AUTORUN.INF', sha256: sha256(files['AUTORUN.INF']) },
    { zone: 'disk', name: 'MAIN.EXE', sha256: sha256(files['MAIN.EXE']) },
  ],
};

test('RFC 8032 §7.1 TEST 1: the Ed25519 library gives the published key and signature', () => {
  const sk = hexToBytes('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60');
  assert.is(bytesToHex(ed25519.getPublicKey(sk)), 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a');
  assert.is(bytesToHex(ed25519.sign(new Uint8Array(0), sk)), 'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b');
});

test('a manifest signed by the vendor verifies, lists every file, and its measurement is stable', () => {
  const file = signManifest(manifest, vendor);
  const r = verifyManifest(file, pub);
  assert.ok(r.ok);
  if (!r.ok) return;
  for (const [name, data] of Object.entries(files)) assert.ok(matchesManifest(r.manifest, name === 'MAIN.EXE' ? 'disk' : 'cdrom', name, data), name);
  // Entry order does not change the signed bytes (sorted), so the measurement names the firmware.
  const again = verifyManifest(signManifest({ ...manifest, entries: [...manifest.entries].reverse() }, vendor), pub);
  assert.ok(again.ok && bytesToHex(again.measurement) === bytesToHex(r.measurement));
  assert.is(r.manifest.entries.length, 3);
});

test('attacks of a flash writer: each is refused with its code', () => {
  const file = signManifest(manifest, vendor);
  const r = verifyManifest(file, pub);
  assert.ok(r.ok);
  if (!r.ok) return;
  // 1. A rewritten program does not match its entry.
  assert.not.ok(matchesManifest(r.manifest, 'cdrom', 'UPMON.EXE', te.encode('evil upmon')));
  assert.not.ok(matchesManifest(r.manifest, 'cdrom', 'NOTLISTED.EXE', files['UPMON.EXE']), 'an unlisted file');
  assert.not.ok(matchesManifest(r.manifest, 'disk', 'UPMON.EXE', files['UPMON.EXE']), 'the right bytes in the wrong zone');
  // 2. Files, hashes and manifest rewritten consistently, signed with the attacker's own key.
  const evil: BootManifest = { version: 1, entries: [{ zone: 'cdrom', name: 'UPMON.EXE', sha256: sha256(te.encode('evil upmon')) }] };
  const forged = signManifest(evil, new Uint8Array(32).fill(0x66));
  assert.equal(verifyManifest(forged, pub), { ok: false, code: 'BOOT_BAD_SIGNATURE', reason: "BOOT.SIG is not signed by this chip's vendor key" });
  // 3. The vendor's signature kept, the body edited (a hash swapped in).
  const [body, sig] = decode(file) as [Uint8Array, Uint8Array];
  const edited = Uint8Array.from(body);
  edited[edited.length - 1]! ^= 1;
  assert.is(verifyManifest(encode([edited, sig]), pub).ok, false);
  assert.is((verifyManifest(encode([edited, sig]), pub) as { code: string }).code, 'BOOT_BAD_SIGNATURE');
  // 4. Garbage, truncation, a wrong-length signature, a wrong-length key.
  for (const bad of [new Uint8Array(0), file.subarray(0, file.length - 3), encode([body, sig.subarray(0, 63)]), encode([body]), te.encode('{"program":"UPMON.EXE"}')]) {
    const v = verifyManifest(bad, pub);
    assert.is(v.ok, false);
    assert.is((v as { code: string }).code, 'BOOT_BAD_MANIFEST');
  }
  assert.is((verifyManifest(file, pub.subarray(0, 31)) as { code: string }).code, 'BOOT_BAD_SIGNATURE');
  // 5. The factory refuses to sign nonsense.
  assert.throws(() => signManifest({ version: 1, entries: [] }, vendor), RangeError);
  assert.throws(() => signManifest({ version: 1, entries: [{ zone: 'cdrom', name: 'bad name', sha256: new Uint8Array(32) }] }, vendor), RangeError);
});

test('the cached verifyManifest agrees with the reference on every input, and a cached verdict is never served for other bytes or another key', () => {
  const file = signManifest(manifest, vendor);
  const other = vendorPublicKey(new Uint8Array(32).fill(0x43));
  const [body, sig] = decode(file) as [Uint8Array, Uint8Array];
  const inputs: Uint8Array[] = [file, new Uint8Array(0), file.subarray(0, file.length - 1), encode([body, sig.map((b, i) => (i === 5 ? b ^ 1 : b))]), signManifest(manifest, new Uint8Array(32).fill(0x66))];
  for (let i = 0; i < file.length; i += 7) {
    const f = Uint8Array.from(file);
    f[i]! ^= 0x10;
    inputs.push(f);
  }
  for (const f of inputs) {
    for (const k of [pub, other]) {
      const want = verifyManifestUncached(f, k);
      assert.equal(verifyManifest(f, k), want);
      assert.equal(verifyManifest(f, k), want, 'again, from the cache');
    }
  }
  // A caller that edits what it got back does not edit the cached verdict.
  const a = verifyManifest(file, pub);
  if (a.ok) a.measurement.fill(0);
  const b = verifyManifest(file, pub);
  assert.ok(b.ok && b.measurement.some((x) => x !== 0));
});

test.run();
