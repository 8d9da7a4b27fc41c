import { bytesToHex } from '@noble/hashes/utils.js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { inspect } from 'node:util';
import { Fuses } from './fuses.ts';
import { ImplementationError } from '../../protocol/errors.ts';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { nobleEngine, useCryptoEngine } from '../../protocol/crypto-engine.ts';
import { chipEngine } from '../hal/node/chip-crypto.ts';

const huk = Uint8Array.from({ length: 32 }, (_, i) => 0xa0 + i);
const uid = Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8);
const hukHex = bytesToHex(huk);
const vpk = Uint8Array.from({ length: 32 }, (_, i) => 0x40 + i);

test('fuses file round trip (golden text)', () => {
  const f = new Fuses(huk, uid, vpk);
  const text = f.toFile();
  assert.match(text, /^# usbphone fuses/);
  assert.ok(text.includes(`usbphone-fuses v2\nuid 0102030405060708\nhuk ${hukHex}\nvpk ${bytesToHex(vpk)}\ncheck `));
  const g = Fuses.parse(text);
  assert.equal(g.uniqueId(), uid);
  assert.equal(g.deriveKey('usbphone/v1 identity'), f.deriveKey('usbphone/v1 identity'));
  assert.equal(g.vendorPublicKey(), vpk);
});

test('a damaged or malformed fuses file is refused with FUSES_BAD_FILE', () => {
  const good = new Fuses(huk, uid, vpk).toFile();
  const bad = [
    '',
    'hello',
    good.replace('uid 01', 'uid 00'),
    good.replace(/huk [0-9a-f]+/, 'huk 00'),
    good.replace(/check [0-9a-f]+/, 'check 00000000'),
    good.replace(/vpk [0-9a-f]+/, `vpk ${bytesToHex(vpk).replace(/^40/, '41')}`),
    good.replace(/vpk [0-9a-f]+\n/, ''),
    good + 'uid 0102030405060708\n',
    good + 'extra line\n',
    'x'.repeat(5000),
  ];
  for (const t of bad) assert.throws(() => Fuses.parse(t), (e: unknown) => e instanceof ImplementationError && e.code === 'FUSES_BAD_FILE');
});

test('a v1 fuses file (before the signed boot: no vendor key) is refused with FUSES_BAD_FILE saying what to do', () => {
  const v1 = `usbphone-fuses v1\nuid 0102030405060708\nhuk ${hukHex}\ncheck 00000000\n`;
  assert.throws(() => Fuses.parse(v1), (e: unknown) => e instanceof ImplementationError && e.code === 'FUSES_BAD_FILE' && /predates the signed boot/.test(e.message) && /build a new device/.test(e.message));
  assert.throws(() => new Fuses(huk, uid, new Uint8Array(31)), RangeError);
});

test('the HUK never shows in JSON, toString, util.inspect; keys differ per label and per chip', () => {
  const f = new Fuses(huk, uid, vpk);
  for (const s of [JSON.stringify(f), String(f), inspect(f), JSON.stringify({ f })]) assert.not.ok(s.includes(hukHex) || s.includes(hukHex.slice(0, 16)), s);
  assert.not.equal(f.deriveKey('a'), f.deriveKey('b'));
  assert.not.equal(f.deriveKey('a'), new Fuses(new Uint8Array(32), uid, vpk).deriveKey('a'));
  assert.is(f.deriveKey('a').length, 32);
  assert.throws(() => f.deriveKey(''), TypeError);
  assert.throws(() => new Fuses(new Uint8Array(31), uid, vpk), RangeError);
  assert.throws(() => new Fuses(huk, new Uint8Array(7), vpk), RangeError);
  let n = 0;
  const g = Fuses.generate((k) => Uint8Array.from({ length: k }, () => n++), vpk);
  assert.is(bytesToHex(g.uniqueId()), '2021222324252627');
});

test("deriveKey is HKDF-SHA256(HUK, 'usbphone/v1 fuse-kdf', label) on either engine (noble's hkdf the reference), repeated derivations alike", () => {
  for (const e of [nobleEngine, chipEngine]) {
    const was = useCryptoEngine(e);
    try {
      const f = new Fuses(huk, uid, vpk);
      for (const [label, n] of [['usbphone/v1 identity', 32], ['a', 32], ['record store 1', 64], ['b', 7]] as const) {
        const want = hkdf(sha256, huk, new TextEncoder().encode('usbphone/v1 fuse-kdf'), new TextEncoder().encode(label), n);
        assert.equal(f.deriveKey(label, n), want, `${e.name} ${label}`);
        assert.equal(f.deriveKey(label, n), want, `${e.name} ${label}, again`);
        // A caller wipes its copy after use: the chip's own is untouched.
        f.deriveKey(label, n).fill(0);
        assert.equal(f.deriveKey(label, n), want, `${e.name} ${label}, after a caller wiped its copy`);
      }
      assert.not.equal(new Fuses(huk.map((b) => b ^ 1), uid, vpk).deriveKey('a'), f.deriveKey('a'), 'another HUK, another key');
    } finally {
      useCryptoEngine(was);
    }
  }
});

test.run();
