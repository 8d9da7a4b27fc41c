// The Node HAL's randomness: nodeRng's pool hands each byte out once (issue 15).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { nodeRng } from './node-hal.ts';

test('nodeRng: fresh arrays of the asked length, across pool refills and direct draws; no two draws share bytes (no 8-byte window repeats in 2 MiB); the bytes look uniform', () => {
  const seen = new Set<string>();
  const counts = new Array<number>(256).fill(0);
  let total = 0;
  const sizes = [0, 1, 8, 12, 16, 24, 32, 33, 64, 255, 256, 257, 1000, 4096, 5000];
  const draws: Uint8Array[] = [];
  for (let k = 0; total < 2 * 1024 * 1024; k++) {
    const n = sizes[k % sizes.length]!;
    const b = nodeRng(n);
    assert.ok(b instanceof Uint8Array && b.length === n && b.byteOffset === 0 && b.buffer.byteLength === n, `a fresh array of ${n} bytes`);
    draws.push(b);
    total += n;
  }
  for (const b of draws) {
    for (const x of b) counts[x]!++;
    for (let i = 0; i + 8 <= b.length; i += 8) {
      const w = Buffer.from(b.buffer, b.byteOffset + i, 8).toString('hex');
      assert.not.ok(seen.has(w), 'an 8-byte window handed out twice');
      seen.add(w);
    }
  }
  // Each byte value ~total/256 times; a chi-square over 255 degrees of freedom far beyond 400 would mean a broken pool.
  const e = total / 256;
  const chi = counts.reduce((a, c) => a + (c - e) ** 2 / e, 0);
  assert.ok(chi < 400, `chi-square ${chi.toFixed(0)}`);
  // A draw is its own copy: changing it changes no later draw.
  const a = nodeRng(16);
  a.fill(0);
  assert.not.equal(nodeRng(16), a);
});

test('nodeRng: a length that is not a whole number >= 0 is refused (RangeError) and the pool is untouched: the next draws are not wiped or repeated bytes', () => {
  const before = nodeRng(64);
  for (const bad of [-4, -1, NaN, 1.5, Infinity, -Infinity]) assert.throws(() => nodeRng(bad), (e: unknown) => e instanceof RangeError, String(bad));
  assert.is(nodeRng(0).length, 0);
  const after = [nodeRng(4), nodeRng(32), nodeRng(200)];
  assert.equal(after.map((b) => b.length), [4, 32, 200]);
  // Wiped bytes handed out again would be zeros: 236 random bytes are never all zero in a row of 8.
  const all = new Uint8Array([...before, ...after.flatMap((b) => [...b])]);
  for (let i = 0; i + 8 <= all.length; i++) assert.ok(all.subarray(i, i + 8).some((x) => x !== 0), `eight zero bytes at ${i}: wiped pool bytes handed out`);
});

test.run();
