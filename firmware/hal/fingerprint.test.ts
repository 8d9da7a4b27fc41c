// The fingerprint sensor model and the chip's matching rule (S3.3): the false-accept and
// false-reject rates measured over seeded trials (the figures in docs/firmware.md come from
// here), and the sensor's sealing: a reading opens only in the paired chip, for the challenge
// it was taken for.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  SimFingerprintSensor, NoiseSource, fingerFromSeed, readingOf, sealReading, SIGMA_GOOD, SIGMA_POOR, POOR_RATE, TEMPLATE_DIM, SEALED_READING_BYTES, CHALLENGE_BYTES,
} from './fingerprint.ts';
import { matchScore, matches, openReading, MATCH_THRESHOLD } from '../secure/fingerprint-match.ts';
import { keystreamRng } from '../../protocol/seeded-rng.ts';

const bytes = (r: Int8Array) => new Uint8Array(r.buffer, r.byteOffset, r.length);
/** A reading as the sensor takes it: a poor placement with probability POOR_RATE. */
const take = (finger: ReturnType<typeof fingerFromSeed>, n: NoiseSource) => bytes(readingOf(finger, n.next() < POOR_RATE ? SIGMA_POOR : SIGMA_GOOD, n));

test('matching rule, impostors: 0 false accepts in 100,000 trials of another finger against an enrolled one (FAR < 3e-5 at 95 %)', () => {
  const n = new NoiseSource('far');
  const trials = 100_000;
  let accepts = 0;
  let max = -1;
  let sum = 0;
  let enrolled = take(fingerFromSeed('owner-0'), n);
  for (let i = 0; i < trials; i++) {
    // 1,000 enrolled fingers, 100 impostor fingers against each, every impostor a new finger.
    if (i % 100 === 0) enrolled = take(fingerFromSeed(`owner-${i / 100}`), n);
    const s = matchScore(enrolled, take(fingerFromSeed(`impostor-${i}`), n));
    if (s >= MATCH_THRESHOLD) accepts++;
    max = Math.max(max, s);
    sum += s;
  }
  console.log(`  FAR: ${accepts} / ${trials} impostor trials accepted; impostor score mean ${(sum / trials).toFixed(4)}, max ${max.toFixed(4)} (threshold ${MATCH_THRESHOLD})`);
  assert.is(accepts, 0);
  // The margin is real, not luck: the highest impostor score stays well below the threshold.
  assert.ok(max < 0.45, `max impostor score ${max}`);
});

test('matching rule, genuine: the false-reject rate over 20,000 readings of the enrolled finger is stated and bounded (poor placements)', () => {
  const n = new NoiseSource('frr');
  const trials = 20_000;
  let rejects = 0;
  let good = 0;
  let goodRejects = 0;
  let enrolled: Uint8Array = new Uint8Array(0);
  let finger = fingerFromSeed('g-0');
  for (let i = 0; i < trials; i++) {
    // 200 people, each enrolled once with a good placement, then 100 readings as the sensor takes them.
    if (i % 100 === 0) {
      finger = fingerFromSeed(`g-${i / 100}`);
      enrolled = bytes(readingOf(finger, SIGMA_GOOD, n));
    }
    const poor = n.next() < POOR_RATE;
    const ok = matches(enrolled, bytes(readingOf(finger, poor ? SIGMA_POOR : SIGMA_GOOD, n)));
    if (!ok) rejects++;
    if (!poor) {
      good++;
      if (!ok) goodRejects++;
    }
  }
  const frr = rejects / trials;
  console.log(`  FRR: ${rejects} / ${trials} genuine readings rejected (${(frr * 100).toFixed(2)} %); of good placements ${goodRejects} / ${good}`);
  // Every good placement matches; the rejects are the poor placements (3 % of readings).
  assert.is(goodRejects, 0);
  assert.ok(frr > 0.01 && frr < 0.05, `FRR ${frr}`);
});

test('matching rule: a blank, short or foreign-length reading scores 0; the score is symmetric and 1 for the same bytes', () => {
  const r = bytes(readingOf(fingerFromSeed('x'), SIGMA_GOOD, new NoiseSource('s')));
  assert.is(matchScore(r, new Uint8Array(TEMPLATE_DIM)), 0);
  assert.is(matchScore(new Uint8Array(TEMPLATE_DIM), r), 0);
  assert.is(matchScore(r, r.subarray(1)), 0);
  assert.is(matchScore(r, new Uint8Array(TEMPLATE_DIM + 1)), 0);
  assert.ok(Math.abs(matchScore(r, r) - 1) < 1e-12);
  const q = bytes(readingOf(fingerFromSeed('x'), SIGMA_GOOD, new NoiseSource('t')));
  assert.is(matchScore(r, q), matchScore(q, r));
  // Scaling a reading does not change its direction: a brute "louder" reading is no better.
  const negated = Uint8Array.from(r, (b) => (-((b << 24) >> 24)) & 0xff);
  assert.ok(matchScore(r, negated) < -0.99);
});

test('the sensor: seeded (same seed, same readings), no finger gives nothing, a reading opens only in the paired chip for its own challenge', () => {
  const key = new Uint8Array(32).fill(3);
  const rng = keystreamRng('sensor test');
  const c1 = rng(CHALLENGE_BYTES), c2 = rng(CHALLENGE_BYTES);
  const a = new SimFingerprintSensor({ pairingKey: key, seed: 1 });
  const b = new SimFingerprintSensor({ pairingKey: key, seed: 1 });
  assert.is(a.capture(c1), null, 'no finger on the sensor');
  const f = fingerFromSeed('owner');
  a.place(f);
  b.place(f);
  const s1 = a.capture(c1)!;
  assert.is(s1.length, SEALED_READING_BYTES);
  assert.equal(s1, b.capture(c1)!, 'replays from its seed');
  const r = openReading(key, c1, s1);
  assert.ok(r);
  // Bound to its challenge: for another one (a replay), under another key (another chip), altered: nothing.
  assert.is(openReading(key, c2, s1), null);
  assert.is(openReading(new Uint8Array(32).fill(4), c1, s1), null);
  for (const i of [0, 30, SEALED_READING_BYTES - 1]) {
    const t = Uint8Array.from(s1);
    t[i]! ^= 1;
    assert.is(openReading(key, c1, t), null, `byte ${i}`);
  }
  assert.is(openReading(key, c1, s1.subarray(1)), null);
  // The bytes on the way hold no feature of the finger in clear.
  const clear = bytes(readingOf(f, 0, new NoiseSource('z')));
  assert.not.ok(Buffer.from(s1).includes(Buffer.from(clear.subarray(0, 8))));
  // Misuse by the firmware: a challenge of the wrong size gives no reading (the model does not throw).
  assert.is(a.capture(new Uint8Array(23)), null);
  assert.throws(() => new SimFingerprintSensor({ pairingKey: new Uint8Array(31), seed: 1 }), RangeError);
  assert.throws(() => new SimFingerprintSensor({ pairingKey: key, seed: 1, poorRate: 2 }), RangeError);
  // sealReading refuses a challenge of the wrong size.
  assert.throws(() => sealReading(key, new Uint8Array(8), new Int8Array(TEMPLATE_DIM)), RangeError);
  a.place(null);
  assert.is(a.capture(c2), null, 'finger taken off');
});

test.run();
