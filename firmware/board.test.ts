// UPMon and the main program on a fake Board: a virtual clock, the in-memory network of
// sim-hal.ts, an in-memory storage, and peers that are the protocol's own server machines
// (RegistrationServer, LoginServer) driven directly: no socket, no flash, no server process.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Upmon, type UpmonOutcome } from './upmon.ts';
import { MainProgram, programHash, type MainOutcome } from './main-program.ts';
import { EventLoop } from './loop.ts';
import { defaultDeviceConfig, type Board } from './board.ts';
import { Scheduler, SimNetwork, simRng, type SimConn } from './hal/sim-hal.ts';
import type { StorageResult } from './storage.ts';
import type { PhoneStorage } from './saved-login.ts';
import type { SavedLoginRecord } from './saved-login.ts';
import { softClientKeyOps, type ClientKeyOps } from '../protocol/handshake-keys.ts';
import { secretWrapKey, unwrapSecret } from '../protocol/secret-wrap.ts';
import { RegistrationServer } from '../protocol/registration.ts';
import { LoginServer } from '../protocol/login.ts';
import { passwordLoginKey } from '../protocol/channel.ts';
import { decodeEnvelope, encodeError, tablePushFrame, isSessionsFrame } from '../protocol/messages.ts';
import { deriveDeviceKey, makeSerialToken, openSerialToken, MasterKeyring } from '../protocol/keys.ts';
import { ProtocolError } from '../protocol/errors.ts';
import { signTable, tablePublicKey, decodeTableBody, type AttackTable } from '../protocol/attack-table.ts';
import { SIM_EPOCH_MS } from './hal/sim-hal.ts';
import { decode } from '../protocol/cbor.ts';
import { keepPushedTable, type PolicyConfig } from './policy-table.ts';
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex } from '@noble/hashes/utils.js';
import { useCryptoEngine } from '../protocol/crypto-engine.ts';
import { chipEngine } from './hal/node/chip-crypto.ts';

const master = simRng(1, 'board master')(32);
const ring = new MasterKeyring([[1, master]]);
const serial = 'SN-BOARD-1';
const user = 'dev-board-1';
const secret = (gen: number) => simRng(gen, 'board secret')(32);
const MAIN = new TextEncoder().encode('main program');
const biz = { name: 'biz-east', url: 'ws://biz.test:7400/', region: 'east' };

/** A peer on the in-memory network: each connection gets a fresh server machine; its frames go in, its answers come out. */
function peer(make: () => { receive(f: Uint8Array, env: ReturnType<typeof decodeEnvelope>): { send: Uint8Array[]; done?: { closeCode: number }; need?: unknown }; answer?: (a: never) => { send: Uint8Array[]; done?: { closeCode: number } }; nextSendSeq: number }, answer?: () => unknown, onConnect?: () => void, pushFirst?: Uint8Array) {
  return (conn: SimConn) => {
    onConnect?.();
    const m = make();
    let pushed = !pushFirst;
    const out = (s: { send: Uint8Array[]; done?: { closeCode: number } }) => {
      for (const f of s.send) conn.send(f);
      if (s.done) conn.close(s.done.closeCode);
    };
    conn.onMessage = (f) => {
      // A server's direct port ignores a device's `sessions` (docs/protocol.md §2.1).
      if (isSessionsFrame(f)) return;
      // The gateway's push arrives in the middle of the session, before the server's first answer.
      if (!pushed) {
        pushed = true;
        conn.send(pushFirst!);
      }
      try {
        const s = m.receive(f, decodeEnvelope(f));
        out(s);
        if (s.need) out(m.answer!(answer!() as never));
      } catch (e) {
        if (!(e instanceof ProtocolError)) throw e;
        // As a server does (S0.7): the error frame, then the close.
        conn.send(encodeError(m.nextSendSeq, 'reg', e.code, null, e.message));
        conn.close(e.closeCode, e.code);
      }
    };
  };
}

/**
 * The world's options. `countPushes` (default true): the board counts the tables pushed to it
 * (Board.tablesPushed), as the real Device does; false: a board that does not, which the main
 * program must read again before its save.
 */
function world(o: { saved?: SavedLoginRecord; held?: Map<number, Uint8Array>; regUp?: boolean; found?: boolean; pendingGen?: number; firmwareRefusedBy?: ('primary' | 'backup')[]; regRounds?: number; table?: Uint8Array; policy?: PolicyConfig; pushBeforeReply?: Uint8Array; pushBeforeLogin?: Uint8Array; countPushes?: boolean; saveFails?: boolean }) {
  const sched = new Scheduler();
  const net = new SimNetwork(sched);
  const confirmed: number[] = [];
  const regConnects = { primary: 0, backup: 0 };
  const regServer = (which: 'primary' | 'backup') => peer(() => new RegistrationServer(`reg-${which}`, {
    deviceKey: (token) => {
      const id = openSerialToken(ring, token);
      return { serial: id.serial, key: deriveDeviceKey(ring.key(id.version), id.serial) };
    },
    assertFresh: () => {},
    acceptFirmware: () => {
      if (o.firmwareRefusedBy?.includes(which)) throw new ProtocolError('REG_FIRMWARE_REFUSED', 'firmware measurement 3e3e… is not accepted by this server');
    },
    recordConfirmation: () => {},
  }), () => (o.found === false ? { kind: 'not-found', reason: 'device not registered' } : { kind: 'cred', reply: { user, secret: secret(2), gen: 2, currentGen: 1, servers: [biz], ...(o.table ? { table: o.table } : {}) } }), () => regConnects[which]++, o.pushBeforeReply);
  if (o.regUp !== false) net.listen('ws://reg.test:7300', regServer('primary'));
  if (o.firmwareRefusedBy) net.listen('ws://reg.test:7301', regServer('backup'));
  // The business server holds gen 1 as current and gen 2 as pending (until a login with it).
  const keys = new Map([[1, passwordLoginKey(secret(1), user)], [o.pendingGen ?? 2, passwordLoginKey(secret(o.pendingGen ?? 2), user)]]);
  net.listen('ws://biz.test:7400', peer(() => new LoginServer('biz-east', {
    lookup: (l) => (l.user === user && keys.has(l.gen) ? { kind: 'found', key: keys.get(l.gen)!.slice(), active: true, pending: l.gen !== 1 } : { kind: 'unknown' }),
    assertFresh: () => {},
    promote: () => true,
    confirm: (_u, gen) => (confirmed.push(gen), true),
  }), undefined, undefined, o.pushBeforeLogin));

  let saved: SavedLoginRecord | null = o.saved ?? null;
  /** How many times the programs read the saved record (each a sealed read on a phone). */
  let reads = 0;
  // A chip in memory (the second implementation of the storage seam's chip half): the device
  // key and the business secrets stay in this closure; the programs get key holders only.
  let held = new Map(o.held ?? []);
  const ok = <T>(value: T): StorageResult<T> => ({ ok: true, value });
  const deviceKey = deriveDeviceKey(master, serial);
  const loginKeys = (): ClientKeyOps => {
    let inner: ClientKeyOps | null = null;
    return {
      opening: (type, seq, dest, fields) => {
        const gen = fields[2] as number;
        inner = softClientKeyOps(passwordLoginKey(held.get(gen)!, user), simRng(gen, 'board chip'));
        return inner.opening(type, seq, dest, fields);
      },
      proof: (p) => inner!.proof(p),
      abort: () => inner?.abort(),
    };
  };
  const storage: PhoneStorage = {
    readVirtualFile: () => ({ ok: false, status: 'ERR_NOT_USED' }),
    mountVirtual: () => ({ ok: false, status: 'ERR_NOT_USED' }),
    readFreeFile: (n) => (n === 'MAIN.EXE' ? ok(MAIN) : { ok: false, status: 'ERR_NOT_FOUND' }),
    readIdentity: () => ok({ serial, keyVersion: 1, serialToken: makeSerialToken(master, 1, serial) }),
    vendorKey: () => ({ ok: false, status: 'ERR_NOT_USED' }),
    attestation: () => ok({ measurement: new Uint8Array(32).fill(0x3e), version: 1 }),
    deviceKeys: () => softClientKeyOps(deviceKey, simRng(1, 'board chip')),
    loginKeys,
    importSecret: (u, gen, currentGen, wrapped) => {
      const sec = unwrapSecret(secretWrapKey(deviceKey), u, gen, wrapped);
      if (!sec) return { ok: false, status: 'SW_VERIFICATION_FAILED' };
      const keep = held.get(currentGen);
      held = new Map([[gen, sec]]);
      if (keep && currentGen !== gen) held.set(currentGen, keep);
      return ok(undefined);
    },
    retireOlder: (gen) => ((held = new Map([...held].filter(([g]) => g >= gen))), ok(undefined)),
    secrets: () => ok(held.size ? { user, gens: [...held.keys()].sort((a, b) => b - a) } : null),
    // A chip with no person layer provisioned (no finger, no seed, no clock): the bank step proves the password only.
    person: {
      personStatus: () => ok({ finger: 'empty' as const, fpSites: [], otpSites: [], clock: false }),
      fpChallenge: () => ({ ok: false, status: 'SW_NOT_FOUND' }),
      fpEnroll: () => ({ ok: false, status: 'SW_NOT_FOUND' }),
      fpKey: () => ({ ok: false, status: 'SW_NOT_FOUND' }),
      fpSign: () => ({ ok: false, status: 'SW_NOT_FOUND' }),
      otpImport: () => ({ ok: false, status: 'SW_NOT_FOUND' }),
      otpCode: () => ({ ok: false, status: 'SW_NOT_FOUND' }),
    },
    loadLogin: () => (reads++, ok(saved)),
    saveLogin: (l) => (o.saveFails ? { ok: false, status: 'ERR_WORN' } : ((saved = l), ok(undefined))),
  };
  const traces: string[] = [];
  const notices: string[] = [];
  const clock = sched.clock();
  const board: Board = {
    profile: 'usb',
    clock,
    rng: simRng(1, 'board'),
    net: net.device('10.0.0.5'),
    loop: new EventLoop(clock),
    storage,
    config: { ...defaultDeviceConfig, regRounds: o.regRounds ?? 1 },
    trace: (feature, step, detail, good = true) => void traces.push(`${feature} ${good ? 'ok' : 'FAIL'} ${step}: ${detail}`),
    notice: (t) => void notices.push(t),
    tablePush: (t) => {
      pushes++;
      keepPushedTable(board, o.policy ?? { key: null, initial: null }, t);
    },
  };
  let pushes = 0;
  if (o.countPushes !== false) Object.defineProperty(board, 'tablesPushed', { get: () => pushes });
  const cfg = { regPrimary: { url: 'ws://reg.test:7300/reg-primary', dest: 'reg-primary' }, regBackup: { url: 'ws://reg.test:7301/reg-backup', dest: 'reg-backup' }, mainProgram: 'MAIN.EXE', mainSha256: programHash(MAIN), policy: o.policy ?? { key: null, initial: null } };
  /** Plugs in: UPMon, then (unless it stopped) the main program; runs the virtual clock until both are done. */
  const run = () => {
    let up: UpmonOutcome | null = null;
    let main: MainOutcome | null = null;
    board.loop.post(() => new Upmon(board, cfg, (u) => {
      up = u;
      if (u.kind === 'registered' || u.kind === 'registration-failed') new MainProgram(board, u, (m) => (main = m)).start();
    }).start());
    sched.run();
    return { up: up as UpmonOutcome | null, main: main as MainOutcome | null };
  };
  return { run, traces, notices, confirmed, regConnects, now: () => clock.now(), saved: () => saved, reads: () => reads, gens: () => [...held.keys()].sort((a, b) => b - a) };
}

/** S3.11's push tests: the policy server's key, the phone's policy configuration, and tables to push. */
function pushPolicy() {
  const policyPriv = simRng(1, 'policy key')(32);
  const policy: PolicyConfig = { key: tablePublicKey(policyPriv), initial: null };
  const table = (version: number): AttackTable => ({
    version, issuedAt: SIM_EPOCH_MS - 1000, expiresAt: SIM_EPOCH_MS + 86_400_000,
    sites: [{ site: 'biz-east', level: 1, floor: 'password', degreePpm: 300_000, mechs: [{ mech: 'password', ratePpm: 0 }, { mech: 'otp', ratePpm: 0 }] }],
  });
  /** `version`, signed by the policy key (a genuine table). */
  const signed = (version: number) => signTable(table(version), policyPriv);
  /** The version of a held table, or null. */
  const version = (t: Uint8Array | null | undefined) => (t ? decodeTableBody((decode(t) as Uint8Array[])[0]!).version : null);
  return { policy, table, signed, version };
}

test("programHash (UPMon's check of the main program, S0.10): the engine's SHA-256, the same hex as noble's reference, on the default engine and on the chip's (node:crypto)", () => {
  const progs = [new Uint8Array(0), MAIN, simRng(3, 'program')(70_000)];
  const reference = (b: Uint8Array) => bytesToHex(sha256(b));
  for (const b of progs) assert.is(programHash(b), reference(b));
  const before = useCryptoEngine(chipEngine);
  try {
    for (const b of progs) assert.is(programHash(b), reference(b), 'chip engine');
  } finally {
    useCryptoEngine(before);
  }
});

const prior: SavedLoginRecord = { user, servers: [biz], lastServer: 'biz-east', table: null };
const held1 = () => new Map([[1, secret(1)]]);

test('registration, save, login with the new secret, confirmation: on a fake board, driven by the protocol server machines', () => {
  const w = world({ saved: prior, held: held1() });
  const { up, main } = w.run();
  assert.is(up?.kind, 'registered');
  assert.equal(main, { ok: true, server: 'biz-east', gen: 2, via: 'registration' });
  assert.equal(w.confirmed, [2], 'the business server saw the confirmation of gen 2');
  assert.equal(w.gens(), [2], 'the older generation retired once the server acknowledged the newer');
  assert.equal(w.traces.map((t) => t.split(' ').slice(0, 2).join(' ')), ['S0.4 ok', 'S0.5 ok', 'S0.8 ok', 'S0.10 ok', 'S0.11 ok', 'S0.14 ok', 'S0.11 ok']);
});

test('no registration server: the saved login is used (S0.13); an unknown device gets the "not registered" notice (S0.9)', () => {
  const w = world({ saved: prior, held: held1(), regUp: false });
  const { up, main } = w.run();
  assert.is(up?.kind, 'registration-failed');
  assert.equal(main, { ok: true, server: 'biz-east', gen: 1, via: 'saved' });
  assert.ok(w.traces.some((t) => t.startsWith('S0.13 ok saved login')), w.traces.join('\n'));

  const nf = world({ found: false });
  assert.equal(nf.run(), { up: { kind: 'not-found', reason: 'device not registered' }, main: null });
  assert.equal(nf.notices, ['This phone is not registered: device not registered']);
});

test('S0.10: a credential reply whose record the flash refuses to save: the new secret is not used (registration-failed), the main program logs in with the saved copy', () => {
  const w = world({ saved: prior, held: held1(), saveFails: true });
  const { up, main } = w.run();
  assert.equal(up?.kind === 'registration-failed' ? up.reason : up, 'could not save credentials (ERR_WORN)');
  assert.ok(w.traces.some((t) => t.startsWith('S0.10 FAIL save credentials: flash refused the save (ERR_WORN)')), w.traces.join('\n'));
  assert.ok(main?.ok && main.via === 'saved', w.traces.join('\n'));
  assert.equal(w.saved(), prior, 'the saved record is the one before');
});

test('a login refused by the business server falls back to the older secret; the newer one is kept, nothing retired', () => {
  // The business server never received gen 2 (its pending slot holds gen 3): the device's new secret is refused.
  const w = world({ saved: prior, held: held1(), pendingGen: 3 });
  const { main } = w.run();
  assert.equal(main, { ok: true, server: 'biz-east', gen: 1, via: 'registration' });
  assert.ok(w.traces.some((t) => /^S0\.11 FAIL login biz-east: gen 2 failed: BIZ_AUTH_FAILED/.test(t)), w.traces.join('\n'));
  // The newer generation is kept: the server may still accept it (issue 9: only older ones are retired).
  assert.equal(w.gens(), [2, 1]);
});

test('a registration server that refuses for good (retry class never) is not asked again: both refuse -> no more rounds, the saved login at once; one refuses -> the other is still asked', () => {
  // Old behaviour: REG_FIRMWARE_REFUSED from both, and UPMon went on for every round with backoffs (3 rounds = 6 attempts).
  const both = world({ saved: prior, held: held1(), firmwareRefusedBy: ['primary', 'backup'], regRounds: 3 });
  const r = both.run();
  assert.equal(both.regConnects, { primary: 1, backup: 1 }, 'each server asked once');
  assert.is(r.up?.kind, 'registration-failed');
  assert.match((r.up as { reason: string }).reason, /both registration servers refused this phone \(REG_FIRMWARE_REFUSED\)/);
  assert.equal(r.main, { ok: true, server: 'biz-east', gen: 1, via: 'saved' }, 'the saved login still works (S0.13)');

  // The primary refuses, the backup accepts that firmware: the backup registers the phone.
  const one = world({ saved: prior, held: held1(), firmwareRefusedBy: ['primary'], regRounds: 3 });
  assert.is(one.run().up?.kind, 'registered');
  assert.equal(one.regConnects, { primary: 1, backup: 1 });

  // Only the backup refuses: the primary answers first and registers the phone.
  const ok = world({ saved: prior, held: held1(), firmwareRefusedBy: ['backup'], regRounds: 3 });
  assert.is(ok.run().up?.kind, 'registered');
  assert.equal(ok.regConnects, { primary: 1, backup: 0 });
});

test('S3.11: the attack table of a credential reply is kept only when the policy server signed it, it is newer and not expired; the held one stays otherwise', () => {
  const policyPriv = simRng(1, 'policy key')(32);
  const key = tablePublicKey(policyPriv);
  const day = 86_400_000;
  const table = (version: number, expiresAt = SIM_EPOCH_MS + day): AttackTable => ({
    version, issuedAt: SIM_EPOCH_MS - day, expiresAt,
    sites: [{ site: 'biz-east', level: 1, floor: 'password', degreePpm: 300_000, mechs: [{ mech: 'password', ratePpm: 900_000 }, { mech: 'otp', ratePpm: 100_000 }, { mech: 'fingerprint', ratePpm: 0 }] }],
  });
  const policy: PolicyConfig = { key, initial: null };
  const heldVersion = (w: { saved: () => SavedLoginRecord | null }) => {
    const t = w.saved()?.table;
    return t ? decodeTableBody((decode(t) as Uint8Array[])[0]!).version : null;
  };
  const v5 = signTable(table(5), policyPriv);

  const fresh = world({ saved: prior, held: held1(), table: v5, policy });
  assert.is(fresh.run().up?.kind, 'registered');
  assert.is(heldVersion(fresh), 5, 'accepted and saved in the sealed record');
  assert.ok(fresh.traces.some((t) => t.startsWith('S3.11 ok attack table: table v5')), fresh.traces.join('\n'));

  const cases: [string, Uint8Array, string][] = [
    ['forged (another key)', signTable(table(9), simRng(2, 'not the policy key')(32)), 'TABLE_BAD_SIGNATURE'],
    ['stale (older than held)', signTable(table(4), policyPriv), 'TABLE_STALE'],
    ['expired', signTable(table(6, SIM_EPOCH_MS - 1), policyPriv), 'TABLE_EXPIRED'],
    ['altered after signing', Uint8Array.from(v5, (b, i) => (i === 20 ? b ^ 1 : b)), 'TABLE_'],
  ];
  for (const [what, bytes, code] of cases) {
    const w = world({ saved: { ...prior, table: v5 }, held: held1(), table: bytes, policy });
    assert.is(w.run().up?.kind, 'registered', what);
    assert.is(heldVersion(w), 5, `${what}: the held table stays`);
    assert.ok(w.traces.some((t) => t.startsWith(`S3.11 FAIL attack table: refused (${code}`)), `${what}: ${w.traces.join('\n')}`);
  }
  // The very table it holds, again (every registration hands on the latest): kept, said so, not a failure.
  const same = world({ saved: { ...prior, table: v5 }, held: held1(), table: v5, policy });
  assert.is(same.run().up?.kind, 'registered');
  assert.is(heldVersion(same), 5);
  assert.ok(same.traces.some((t) => t.startsWith('S3.11 ok attack table: the table it holds, unchanged')), same.traces.join('\n'));
  // A phone without the policy key trusts no table.
  const keyless = world({ saved: prior, held: held1(), table: v5 });
  keyless.run();
  assert.is(heldVersion(keyless), null);
});

test('S3.11 push: a table the gateway pushes into a session is kept when valid, refused when not; the session goes on undisturbed', () => {
  const { policy, table, signed, version } = pushPolicy();
  for (const [what, pushed, expectVersion, trace] of [
    ['a newer table', signed(7), 7, /^S3\.11 ok attack table pushed: table v7 from the gateway accepted/],
    ['a forged one', signTable(table(9), simRng(2, 'other')(32)), 5, /^S3\.11 FAIL attack table pushed: refused \(TABLE_BAD_SIGNATURE/],
    ['an older one', signed(3), 5, /^S3\.11 FAIL attack table pushed: refused \(TABLE_STALE/],
  ] as const) {
    // The registration server's first answer is preceded by the gateway's push (seq 0, outside the session).
    const w = world({ saved: { ...prior, table: signed(5) }, held: held1(), policy, pushBeforeReply: tablePushFrame(pushed) });
    const { up, main } = w.run();
    assert.is(up?.kind, 'registered', `${what}: the registration went on`);
    assert.ok(main?.ok, `${what}: the login went on`);
    assert.is(version(w.saved()?.table), expectVersion, what);
    assert.ok(w.traces.some((t) => trace.test(t)), `${what}: ${w.traces.join('\n')}`);
  }
});

test("S3.11 push during the business login: the table kept meanwhile is not rolled back by the login's own save (S0.12 writes the newer of the two; found by sim/attack-table.test.ts)", () => {
  const { policy, signed, version } = pushPolicy();
  for (const [what, pushed, expectVersion] of [
    ['a newer table pushed', signed(7), 7],
    ['an older one pushed (refused)', signed(3), 5],
  ] as const) {
    // Logging in after a registration, and with the saved copy (no registration server: the main
    // program read the record itself); on a board that counts the pushes and on one that does not.
    for (const [how, regUp, countPushes] of [['after a registration', true, true], ['from the saved copy', false, true], ['on a board that does not count pushes', true, false]] as const) {
      // A record whose last server is not the one this login uses: the login saves (S0.12).
      const w = world({ saved: { ...prior, lastServer: null, table: signed(5) }, held: held1(), policy, regUp, countPushes, pushBeforeLogin: tablePushFrame(pushed) });
      const { main } = w.run();
      const why = `${what}, ${how}: ${w.traces.join('\n')}`;
      assert.ok(main?.ok, why);
      assert.is(w.saved()?.lastServer, 'biz-east', `${why}: the login was saved`);
      assert.is(version(w.saved()?.table), expectVersion, why);
    }
  }
});

test('S0.10, S0.12 with S3.11 (issue 15): UPMon does not read back the record it saved; with no table pushed since the main program got its login, its save does not read the sealed record again; a push in between, or a board that does not count them, makes it read', () => {
  const { policy, signed } = pushPolicy();
  const reads = (o: { pushBeforeLogin?: Uint8Array; countPushes?: boolean; regUp?: boolean }) => {
    const w = world({ saved: { ...prior, lastServer: null, table: signed(5) }, held: held1(), policy, ...o });
    const { main } = w.run();
    assert.ok(main?.ok, w.traces.join('\n'));
    assert.is(w.saved()?.lastServer, 'biz-east', 'the login was saved');
    return w.reads();
  };
  // After a registration: UPMon reads the record before its write (1); its write verified the
  // slot byte for byte, so it does not read it back, and the login's save reads nothing.
  assert.is(reads({}), 1, 'registration: no read back, no read for the login\'s save');
  // From the saved copy: the main program's own read (1).
  assert.is(reads({ regUp: false }), 1, 'saved copy: no read for the login\'s save');
  // A push during the login: keepPushedTable's read, then the save's (2 more), kept or refused.
  assert.is(reads({ pushBeforeLogin: tablePushFrame(signed(7)) }), 3);
  assert.is(reads({ pushBeforeLogin: tablePushFrame(signed(3)) }), 3);
  assert.is(reads({ regUp: false, pushBeforeLogin: tablePushFrame(signed(7)) }), 3);
  // A board that does not count pushes: read before every save, as before.
  assert.is(reads({ countPushes: false }), 2);
});

test.run();
