import { bytesToHex } from '@noble/hashes/utils.js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { inspect } from 'node:util';
import { Fuses } from './fuses.ts';
import { ImplementationError } from '../../protocol/errors.ts';

const huk = Uint8Array.from({ length: 32 }, (_, i) => 0xa0 + i);
const uid = Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8);
const hukHex = bytesToHex(huk);

test('fuses file round trip (golden text)', () => {
  const f = new Fuses(huk, uid);
  const text = f.toFile();
  assert.match(text, /^# usbphone fuses/);
  assert.ok(text.includes(`usbphone-fuses v1\nuid 0102030405060708\nhuk ${hukHex}\ncheck `));
  const g = Fuses.parse(text);
  assert.equal(g.uniqueId(), uid);
  assert.equal(g.deriveKey('usbphone/v1 identity'), f.deriveKey('usbphone/v1 identity'));
});

test('a damaged or malformed fuses file is refused with FUSES_BAD_FILE', () => {
  const good = new Fuses(huk, uid).toFile();
  const bad = [
    '',
    'hello',
    good.replace('uid 01', 'uid 00'),
    good.replace(/huk [0-9a-f]+/, 'huk 00'),
    good.replace(/check [0-9a-f]+/, 'check 00000000'),
    good + 'uid 0102030405060708\n',
    good + 'extra line\n',
    'x'.repeat(5000),
  ];
  for (const t of bad) assert.throws(() => Fuses.parse(t), (e: unknown) => e instanceof ImplementationError && e.code === 'FUSES_BAD_FILE');
});

test('the HUK never shows in JSON, toString, util.inspect; keys differ per label and per chip', () => {
  const f = new Fuses(huk, uid);
  for (const s of [JSON.stringify(f), String(f), inspect(f), JSON.stringify({ f })]) assert.not.ok(s.includes(hukHex) || s.includes(hukHex.slice(0, 16)), s);
  assert.not.equal(f.deriveKey('a'), f.deriveKey('b'));
  assert.not.equal(f.deriveKey('a'), new Fuses(new Uint8Array(32), uid).deriveKey('a'));
  assert.is(f.deriveKey('a').length, 32);
  assert.throws(() => f.deriveKey(''), TypeError);
  assert.throws(() => new Fuses(new Uint8Array(31), uid), RangeError);
  assert.throws(() => new Fuses(huk, new Uint8Array(7)), RangeError);
  let n = 0;
  const g = Fuses.generate((k) => Uint8Array.from({ length: k }, () => n++));
  assert.is(bytesToHex(g.uniqueId()), '2021222324252627');
});

test.run();
