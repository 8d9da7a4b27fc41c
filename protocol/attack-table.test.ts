// The signed attack statistics table (S3.10, S3.11) and the smart client's choice (S3.1):
// golden vectors both ways, the phone's refusals (forged, stale, expired, malformed), a table
// of hostile tables, the choice for given tables, random among equals checked over many seeded
// draws, and no table ever sending a phone below a site's floor.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { ed25519 } from '@noble/curves/ed25519.js';
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import {
  signTable, verifyTable, tablePublicKey, encodeTableBody, decodeTableBody, chooseMechanism, uniformIndex, initialTable, checkTable,
  MECH_STRENGTH, PPM, TableLimits, TABLE_LABEL, type AttackTable, type SiteEntry,
} from './attack-table.ts';
import { encode, decode } from './cbor.ts';
import { ProtocolError, ERRORS } from './errors.ts';
import { MECHANISMS, type Mechanism } from './messages.ts';
import { keystreamRng, scriptedRng } from './seeded-rng.ts';
import { attackTableVectors, sampleTable, vectorKey } from '../docs/vectors/generate-attack-table.ts';

const vectors = JSON.parse(readFileSync(new URL('../docs/vectors/attack-table.json', import.meta.url), 'utf8'));
const sk = vectorKey();
const pk = tablePublicKey(sk);
const T0 = 1_800_000_000_000;

const site = (name: string, rates: Partial<Record<Mechanism, number>>, floor: Mechanism = 'password', level = 1, degreePpm = 300_000): SiteEntry => ({
  site: name, level, floor, degreePpm,
  mechs: (Object.keys(rates) as Mechanism[]).sort((a, b) => MECH_STRENGTH[a] - MECH_STRENGTH[b]).map((mech) => ({ mech, ratePpm: rates[mech]! })),
});
const table = (sites: SiteEntry[], version = 1): AttackTable => ({ version, issuedAt: T0, expiresAt: T0 + 3_600_000, sites });
const malformedCode = (e: unknown) => e instanceof ProtocolError && (e.code === 'TABLE_MALFORMED' || e.code.startsWith('CBOR_'));

test('golden vectors: the file is what the code makes, the signature checks with the bare primitive', () => {
  assert.equal(JSON.parse(JSON.stringify(attackTableVectors())), vectors, 'regenerate with npx tsx docs/vectors/generate-attack-table.ts');
  assert.is(bytesToHex(pk), vectors.publicKey);
  const signed = hexToBytes(vectors.signed);
  const [body, sig] = decode(signed, { maxFrameBytes: 1 << 20, maxDepth: 2, maxArrayItems: 2, maxMapEntries: 0, maxStringBytes: 1 << 20, maxItems: 3 }) as [Uint8Array, Uint8Array];
  assert.is(bytesToHex(body), vectors.body.hex);
  assert.ok(ed25519.verify(sig, body, hexToBytes(vectors.publicKey)));
  // Both ways: the table encodes to the body, the body decodes to the table.
  assert.is(bytesToHex(encodeTableBody(sampleTable)), vectors.body.hex);
  assert.equal(decodeTableBody(body), sampleTable);
  assert.is((decode(body, { maxFrameBytes: 1 << 20, maxDepth: 5, maxArrayItems: 64, maxMapEntries: 0, maxStringBytes: 64, maxItems: 100 }) as unknown[])[0], TABLE_LABEL);
});

test('the phone verdict on each vector case (good, stale, expired, forged, altered, malformed)', () => {
  const want: Record<string, string> = {
    'good, first table': 'ok', 'good, newer than held': 'ok', 'stale: same version as held': 'TABLE_STALE', 'stale: older than held': 'TABLE_STALE',
    expired: 'TABLE_EXPIRED', 'forged: signed by another key': 'TABLE_BAD_SIGNATURE', 'altered body': 'TABLE_BAD_SIGNATURE', truncated: 'TABLE_MALFORMED', 'not a signed table': 'TABLE_MALFORMED',
  };
  assert.is(vectors.cases.length, Object.keys(want).length);
  for (const c of vectors.cases) {
    const r = verifyTable(hexToBytes(c.hex), pk, c.now, c.have);
    assert.is(r.ok ? 'ok' : r.code, want[c.name], c.name);
    assert.is(c.expect, want[c.name], `${c.name} in the file`);
    if (r.ok) assert.equal(r.table, sampleTable);
    else assert.ok(r.code in ERRORS, r.code);
  }
});

test('refusals: forged, stale (older or equal version), expired; the first valid table needs no held version', () => {
  const t = table([site('biz-east', { password: 0, otp: 0 })], 5);
  const good = signTable(t, sk);
  assert.ok(verifyTable(good, pk, T0, null).ok);
  assert.ok(verifyTable(good, pk, T0, 4).ok);
  for (const have of [5, 6, 1e9]) assert.is((verifyTable(good, pk, T0, have) as { code: string }).code, 'TABLE_STALE');
  assert.is((verifyTable(good, pk, t.expiresAt, null) as { code: string }).code, 'TABLE_EXPIRED');
  assert.ok(verifyTable(good, pk, t.expiresAt - 1, null).ok);
  // A forger who rewrites the rates (to push phones onto a weak mechanism) cannot sign them.
  const forged = signTable({ ...t, version: 6, sites: [site('biz-east', { password: 0, otp: PPM })] }, hexToBytes('11'.repeat(32)));
  assert.is((verifyTable(forged, pk, T0, 5) as { code: string }).code, 'TABLE_BAD_SIGNATURE');
  // Wrong public key sizes and types are a bad signature, never a throw.
  for (const k of [new Uint8Array(31), new Uint8Array(33), 'pk' as unknown as Uint8Array]) assert.is((verifyTable(good, k, T0, null) as { code: string }).code, 'TABLE_BAD_SIGNATURE');
  for (const b of [new Uint8Array(0), 'x' as unknown as Uint8Array, new Uint8Array(TableLimits.maxTableBytes + 1)]) assert.is((verifyTable(b, pk, T0, null) as { code: string }).code, 'TABLE_MALFORMED');
});

test("a table verified once is not a pass for another: the same body under another signature or key, a changed body, and the cache's bound", () => {
  const t = table([site('biz-east', { password: 0, otp: 0 })], 7);
  const good = signTable(t, sk);
  assert.ok(verifyTable(good, pk, T0, null).ok);
  assert.ok(verifyTable(good, pk, T0, null).ok, 'verified again (from the cache)');
  const [body, sig] = decode(good) as [Uint8Array, Uint8Array];
  // The attacker's tries after the genuine table was verified: its body with a flipped signature, its
  // signature on a changed body, the genuine pair under another key.
  const badSig = Uint8Array.from(sig);
  badSig[0]! ^= 1;
  assert.is((verifyTable(encode([body, badSig]), pk, T0, null) as { code: string }).code, 'TABLE_BAD_SIGNATURE');
  const otherBody = encodeTableBody({ ...t, sites: [site('biz-east', { password: 0, otp: PPM })] });
  assert.is((verifyTable(encode([otherBody, sig]), pk, T0, null) as { code: string }).code, 'TABLE_BAD_SIGNATURE');
  assert.is((verifyTable(good, tablePublicKey(hexToBytes('22'.repeat(32))), T0, null) as { code: string }).code, 'TABLE_BAD_SIGNATURE');
  // Past the bound (64 kept), the first table is checked in full again and still verifies.
  for (let v = 100; v < 170; v++) assert.ok(verifyTable(signTable(table([site('biz-east', { password: 0, otp: 0 })], v), sk), pk, T0, null).ok);
  assert.ok(verifyTable(good, pk, T0, null).ok);
});

test('hostile tables: each refused by the signer and, signed anyway, by the phone (TABLE_MALFORMED)', () => {
  const ok = site('biz-east', { password: 1, otp: 2 });
  const bad: [string, AttackTable][] = [
    ['unsorted sites', table([site('b', { otp: 0 }), site('a', { otp: 0 })])],
    ['duplicate site', table([ok, ok])],
    ['site name not a dest', table([site('Biz East', { otp: 0 })])],
    ['long site name', table([site('a'.repeat(33), { otp: 0 })])],
    ['level 0', table([{ ...ok, level: 0 }])],
    ['level beyond max', table([{ ...ok, level: TableLimits.maxLevel + 1 }])],
    ['degree above 1', table([{ ...ok, degreePpm: PPM + 1 }])],
    ['negative rate', table([{ ...ok, mechs: [{ mech: 'password', ratePpm: -1 }] }])],
    ['rates above 1 together', table([site('a', { password: 600_000, otp: 600_000 })])],
    ['unknown mechanism', table([{ ...ok, mechs: [{ mech: 'sms' as Mechanism, ratePpm: 0 }] }])],
    ['mechanisms unsorted', table([{ ...ok, mechs: [{ mech: 'otp', ratePpm: 0 }, { mech: 'password', ratePpm: 0 }] }])],
    ['mechanism twice', table([{ ...ok, mechs: [{ mech: 'otp', ratePpm: 0 }, { mech: 'otp', ratePpm: 0 }] }])],
    ['no mechanism', table([{ ...ok, mechs: [] }])],
    ['no mechanism reaches the floor', table([site('a', { password: 0, otp: 0 }, 'fingerprint')])],
    ['unknown floor', table([{ ...ok, floor: 'none' as Mechanism }])],
    ['expiry not after issue', { ...table([ok]), expiresAt: T0 }],
    ['fractional version', { ...table([ok]), version: 1.5 }],
    ['too many sites', table(Array.from({ length: TableLimits.maxSites + 1 }, (_, i) => site(`s${String(i).padStart(4, '0')}`, { otp: 0 })))],
  ];
  for (const [why, t] of bad) {
    assert.throws(() => signTable(t, sk), malformedCode, `signer: ${why}`);
    assert.throws(() => checkTable(t), malformedCode, why);
  }
  // The same faults in a body signed with the right key (a policy-server bug): still refused.
  const signRaw = (body: unknown) => {
    const b = encode(body as never);
    return encode([b, ed25519.sign(b, sk)]);
  };
  const rawBad: [string, unknown][] = [
    ['wrong label', ['usbphone/v1 boot manifest', 1, T0, T0 + 1, []]],
    ['short body', [TABLE_LABEL, 1, T0, T0 + 1]],
    ['site as a map', [TABLE_LABEL, 1, T0, T0 + 1, [new Map([['site', 'a']])]]],
    ['rate as text', [TABLE_LABEL, 1, T0, T0 + 1, [['a', 1, 'otp', 0, [['otp', '0']]]]]],
    ['negative version', [TABLE_LABEL, -1, T0, T0 + 1, []]],
    ['unsorted', [TABLE_LABEL, 1, T0, T0 + 1, [['b', 1, 'otp', 0, [['otp', 0]]], ['a', 1, 'otp', 0, [['otp', 0]]]]]],
  ];
  for (const [why, body] of rawBad) assert.is((verifyTable(signRaw(body), pk, T0, null) as { code: string }).code, 'TABLE_MALFORMED', why);
  // A float anywhere in the body (the profile has none).
  const withFloat = hexToBytes('85' + bytesToHex(encode(TABLE_LABEL)) + 'fb3ff8000000000000' + bytesToHex(encode(T0)) + bytesToHex(encode(T0 + 1)) + '80');
  assert.is((verifyTable(encode([withFloat, ed25519.sign(withFloat, sk)]), pk, T0, null) as { code: string }).code, 'TABLE_MALFORMED');
});

test('the largest table (1024 sites, longest names, 3 mechanisms) signs and verifies within the size limit', () => {
  const sites = Array.from({ length: TableLimits.maxSites }, (_, i) => site(`${String(i).padStart(4, '0')}${'x'.repeat(28)}`, { password: 333_333, otp: 333_333, fingerprint: 333_333 }, 'fingerprint', 16, PPM));
  const signed = signTable(table(sites), sk);
  assert.ok(signed.length <= TableLimits.maxTableBytes, `${signed.length} bytes`);
  const r = verifyTable(signed, pk, T0, null);
  assert.ok(r.ok && r.table.sites.length === TableLimits.maxSites);
});

test('chooseMechanism: the lowest attack rate at or above the floor; no table or no entry: the strongest offered', () => {
  const rng = keystreamRng('choose');
  const t = table([
    site('a', { password: 700_000, otp: 200_000, fingerprint: 100_000 }),
    site('b', { password: 100_000, otp: 500_000, fingerprint: 400_000 }),
    // The least attacked is the password, but the floor is otp: never the password.
    site('c', { password: 0, otp: 600_000, fingerprint: 400_000 }, 'otp'),
    site('d', { password: 0, otp: 0 }, 'otp'),
  ]);
  assert.is(chooseMechanism(t, 'a', rng), 'fingerprint');
  assert.is(chooseMechanism(t, 'b', rng), 'password');
  assert.is(chooseMechanism(t, 'c', rng), 'fingerprint');
  assert.is(chooseMechanism(t, 'd', rng), 'otp');
  assert.is(chooseMechanism(null, 'a', rng), 'fingerprint');
  assert.is(chooseMechanism(null, 'a', rng, ['password', 'otp']), 'otp');
  assert.is(chooseMechanism(t, 'unknown-site', rng, ['password']), 'password');
  // The initial table of the configuration: all zero, so random; a deterministic answer needs a tie-free table.
  const init = initialTable({ sites: [{ site: 'biz-east', mechanisms: ['otp', 'password'], floor: 'password', degree: 0.3 }] }, T0, T0 + 1);
  assert.equal(init.sites[0], { site: 'biz-east', level: 1, floor: 'password', degreePpm: 300_000, mechs: [{ mech: 'password', ratePpm: 0 }, { mech: 'otp', ratePpm: 0 }] });
  for (const j of [null, {}, { sites: [{ site: 'x', mechanisms: ['sms'], floor: 'otp', degree: 0.1 }] }, { sites: [{ site: 'x', mechanisms: ['otp'], floor: 'otp', degree: 2 }] }]) {
    assert.throws(() => initialTable(j, T0, T0 + 1), malformedCode, JSON.stringify(j));
  }
});

test('random among equals: uniform over many seeded draws (chi-square), all-zero table included', () => {
  // Fixed seeds: the draws are the same on every run, so this cannot flake; the bound is the
  // chi-square critical value at p = 0.001 (2 degrees of freedom: 13.82; 1: 10.83), which a
  // biased choice (e.g. modulo bias or always the first) exceeds by orders of magnitude.
  const cases: [SiteEntry, Mechanism[], number][] = [
    [site('z', { password: 0, otp: 0, fingerprint: 0 }), ['password', 'otp', 'fingerprint'], 13.82],
    [site('z', { password: 500_000, otp: 250_000, fingerprint: 250_000 }), ['otp', 'fingerprint'], 10.83],
    [site('z', { password: 0, otp: 0, fingerprint: 0 }, 'otp'), ['otp', 'fingerprint'], 10.83],
  ];
  for (const [i, [entry, equals, bound]] of cases.entries()) {
    const rng = keystreamRng(`chi-square ${i}`);
    const n = 30_000;
    const counts = new Map<Mechanism, number>();
    for (let k = 0; k < n; k++) {
      const m = chooseMechanism(table([entry]), 'z', rng);
      counts.set(m, (counts.get(m) ?? 0) + 1);
    }
    assert.equal([...counts.keys()].sort(), [...equals].sort(), `only the equals are chosen (case ${i})`);
    const e = n / equals.length;
    const chi2 = equals.reduce((s, m) => s + ((counts.get(m) ?? 0) - e) ** 2 / e, 0);
    assert.ok(chi2 < bound, `case ${i}: chi-square ${chi2.toFixed(2)} >= ${bound}`);
  }
});

test('uniformIndex rejects the top of the 32-bit range (no modulo bias) and checks n', () => {
  // n = 3: 2^32 - 1 is at or above floor(2^32/3)*3, so it is drawn again.
  const rng = scriptedRng([Uint8Array.of(255, 255, 255, 255), Uint8Array.of(0, 0, 0, 5)]);
  assert.is(uniformIndex(rng, 3), 2);
  for (const n of [0, -1, 1.5, 2 ** 33]) assert.throws(() => uniformIndex(keystreamRng(1), n), RangeError);
});

test('no table sends a phone below the floor of a site: 2,000 random valid tables, every choice at or above it', () => {
  const rng = keystreamRng('floor property');
  const byte = () => rng(1)[0]!;
  for (let k = 0; k < 2_000; k++) {
    const offered = MECHANISMS.filter(() => byte() & 1);
    if (offered.length === 0) offered.push(MECHANISMS[byte() % 3]!);
    const top = Math.max(...offered.map((m) => MECH_STRENGTH[m]));
    const floors = MECHANISMS.filter((m) => MECH_STRENGTH[m] <= top);
    const floor = floors[byte() % floors.length]!;
    // Rates that favour the weakest: the pull to go below the floor is as strong as it gets.
    let left = PPM;
    const rates: Partial<Record<Mechanism, number>> = {};
    for (const m of [...offered].sort((a, b) => MECH_STRENGTH[b] - MECH_STRENGTH[a])) {
      const r = MECH_STRENGTH[m] < MECH_STRENGTH[floor] ? 0 : Math.min(left, (byte() << 12) % (PPM + 1));
      rates[m] = r;
      left -= r;
    }
    const signed = signTable(table([site('s', rates, floor)], k + 1), sk);
    const r = verifyTable(signed, pk, T0, k);
    assert.ok(r.ok);
    const m = chooseMechanism(r.ok ? r.table : null, 's', rng);
    assert.ok(MECH_STRENGTH[m] >= MECH_STRENGTH[floor], `table ${k}: chose ${m} below floor ${floor}`);
    assert.ok(offered.includes(m), `table ${k}: chose ${m}, not offered`);
  }
});

test.run();
