// Generates docs/vectors/attack-table.json:  npx tsx docs/vectors/generate-attack-table.ts
//
// A fixed policy key (SHA-256 of a label), one sample table signed with it, and the phone's
// verdict on a set of inputs (good, forged, altered, stale, expired, malformed). Ed25519
// signatures are deterministic (RFC 8032 §5.1.6), so running this again gives the same file
// byte for byte. protocol/attack-table.test.ts checks the file against the code both ways.
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sha256 } from '@noble/hashes/sha2.js';
import { ed25519 } from '@noble/curves/ed25519.js';
import { bytesToHex as hex } from '@noble/hashes/utils.js';
import { decode, encode } from '../../protocol/cbor.ts';
import { signTable, tablePublicKey, verifyTable, encodeTableBody, TABLE_CBOR_LIMITS, type AttackTable } from '../../protocol/attack-table.ts';
import { toJson, diag } from '../../protocol/cbor-json.ts';

const te = new TextEncoder();
export const vectorKey = () => sha256(te.encode('usbphone/v1 test vector policy key'));
export const otherKey = () => sha256(te.encode('usbphone/v1 test vector forger key'));

export const sampleTable: AttackTable = {
  version: 7,
  issuedAt: 1_800_000_000_000,
  expiresAt: 1_800_000_000_000 + 2 * 3_600_000,
  sites: [
    { site: 'biz-east', level: 3, floor: 'password', degreePpm: 100_000, mechs: [{ mech: 'password', ratePpm: 800_000 }, { mech: 'otp', ratePpm: 150_000 }, { mech: 'fingerprint', ratePpm: 50_000 }] },
    { site: 'biz-west', level: 1, floor: 'otp', degreePpm: 300_000, mechs: [{ mech: 'password', ratePpm: 0 }, { mech: 'otp', ratePpm: 0 }, { mech: 'fingerprint', ratePpm: 0 }] },
  ],
};

export function attackTableVectors() {
  const sk = vectorKey();
  const signed = signTable(sampleTable, sk);
  const body = encodeTableBody(sampleTable);
  const forgedSig = encode([body, ed25519.sign(body, otherKey())]);
  const altered = Uint8Array.from(signed);
  altered[altered.length - 70]! ^= 0x01; // a byte of the body (the signature is the last 64)
  const now = sampleTable.issuedAt + 60_000;
  const cases = [
    { name: 'good, first table', hex: hex(signed), have: null, now },
    { name: 'good, newer than held', hex: hex(signed), have: 6, now },
    { name: 'stale: same version as held', hex: hex(signed), have: 7, now },
    { name: 'stale: older than held', hex: hex(signed), have: 9, now },
    { name: 'expired', hex: hex(signed), have: null, now: sampleTable.expiresAt },
    { name: 'forged: signed by another key', hex: hex(forgedSig), have: null, now },
    { name: 'altered body', hex: hex(altered), have: null, now },
    { name: 'truncated', hex: hex(signed.subarray(0, signed.length - 1)), have: null, now },
    { name: 'not a signed table', hex: hex(encode(['x'])), have: null, now },
  ].map((c) => {
    const r = verifyTable(Uint8Array.from(Buffer.from(c.hex, 'hex')), tablePublicKey(sk), c.now, c.have);
    return { ...c, expect: r.ok ? 'ok' : r.code };
  });
  return {
    description: 'The signed attack statistics table (docs/protocol.md §"Attack statistics table"): signed = [body, Ed25519(policyKey, body)]. privateKey is the RFC 8032 32-byte seed. Each case: the bytes a phone receives, the version it holds (null: none), its clock, and its verdict.',
    privateKey: hex(sk),
    publicKey: hex(tablePublicKey(sk)),
    table: sampleTable,
    body: { hex: hex(body), value: toJson(decode(body, TABLE_CBOR_LIMITS)), diag: diag(decode(body, TABLE_CBOR_LIMITS)) },
    signed: hex(signed),
    cases,
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const dir = dirname(fileURLToPath(import.meta.url));
  writeFileSync(join(dir, 'attack-table.json'), JSON.stringify(attackTableVectors(), null, 2) + '\n');
  console.log('wrote docs/vectors/attack-table.json');
}
