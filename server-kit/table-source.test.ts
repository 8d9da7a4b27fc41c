// server-kit/table-source.ts's statedTableVersion and TableSource.version (S3.11; issue 17):
// the version a signed table states, read for logs and the live page without checking the
// signature (the phone checks it); anything that is not a readable table is null, never a throw.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ed25519 } from '@noble/curves/ed25519.js';
import { signTable, type AttackTable } from '../protocol/attack-table.ts';
import { encode } from '../protocol/cbor.ts';
import { statedTableVersion, TableSource } from './table-source.ts';
import { createLogger, setLogSink } from './log.ts';

setLogSink(() => {});
const key = ed25519.utils.randomSecretKey();
const table = (version: number): AttackTable => ({
  version, issuedAt: 1_000, expiresAt: 4_000,
  sites: [{ site: 'biz-east', level: 1, floor: 'password', degreePpm: 300_000, mechs: [{ mech: 'password', ratePpm: 0 }] }],
});

test('statedTableVersion: the version of a signed table; null for bytes that are not one', () => {
  assert.is(statedTableVersion(signTable(table(7), key)), 7);
  // Signed by another key: still read (the phone, not this, refuses it).
  assert.is(statedTableVersion(signTable(table(8), ed25519.utils.randomSecretKey())), 8);
  for (const bad of [new Uint8Array(0), new Uint8Array([0xff, 0x00]), encode(['x', new Uint8Array(64)]), encode([encode(['not a table', 1, 2, 3, []]), new Uint8Array(64)]), new Uint8Array(100_000)]) {
    assert.is(statedTableVersion(bad), null);
  }
});

test('TableSource.version: the version of the table held, kept across a failed poll', async () => {
  let answer: Uint8Array | Error = signTable(table(3), key);
  const client = { call: async () => { if (answer instanceof Error) throw answer; return answer; } };
  const src = new TableSource({ client: client as never, log: createLogger('test') });
  assert.is(src.version(), null);
  await src.refresh();
  assert.is(src.version(), 3);
  answer = new Error('policy server down');
  await src.refresh();
  assert.is(src.version(), 3);
  answer = signTable(table(4), key);
  await src.refresh();
  assert.is(src.version(), 4);
  src.close();
});

test.run();
