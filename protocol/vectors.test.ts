// Golden vectors (docs/vectors/*.json), both directions:
//  - decoding the bytes gives the values (and their diagnostic notation);
//  - encoding the values gives the bytes: keys re-derived, handshakes re-run by the real code
//    with the recorded nonces, sealed frames re-sealed, messages re-encoded.
// The key schedule's intermediates are recomputed here from the bare primitives, as
// docs/protocol.md §"Key schedule" states them, and must match the files too.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { sha256 } from '@noble/hashes/sha2.js';
import { hkdf, extract, expand } from '@noble/hashes/hkdf.js';
import { hmac } from '@noble/hashes/hmac.js';
import { encode, decode, type CborValue } from './cbor.ts';
import { ClientHandshake, ServerHandshake, SecureChannel, passwordLoginKey, exporterSecret } from './channel.ts';
import { secretWrapKey, unwrapSecret } from './secret-wrap.ts';
import { xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { deriveDeviceKey, makeSerialToken, openSerialToken, MasterKeyring } from './keys.ts';
import { bytesToHex as hex, hexToBytes as h } from '@noble/hashes/utils.js';
import { decodeEnvelope, encodeEnvelope, MsgType, parseHello, parseLogin, helloOpening, loginOpening, parseServerProof, isSessionsFrame, peekSessionEnd, sessionEndFrame, sessionsFrame } from './messages.ts';
import { ProtocolError, ERRORS } from './errors.ts';
import { scriptedRng } from './seeded-rng.ts';
import { RegistrationClient, RegistrationServer } from './registration.ts';
import { LoginClient, LoginServer } from './login.ts';
import { BankMessages } from './bank-messages.ts';
import { toJson, fromJson, diag, type Json } from './cbor-json.ts';
import { buildVectors, fromDeviceVerdict, parsedVerdict } from '../docs/vectors/generate.ts';

const load = (name: string) => JSON.parse(readFileSync(new URL(`../docs/vectors/${name}`, import.meta.url), 'utf8'));
const te = new TextEncoder();
const H = (ikm: Uint8Array, salt: Uint8Array | string, info: string) => hkdf(sha256, ikm, typeof salt === 'string' ? te.encode(salt) : salt, te.encode(info), 32);
const lp = (f: Uint8Array) => [Uint8Array.of(f.length >>> 24, (f.length >>> 16) & 255, (f.length >>> 8) & 255, f.length & 255), f];
const cat = (...p: Uint8Array[]) => Uint8Array.from(p.flatMap((x) => [...x]));

/** A value both ways: bytes -> value and diag; value -> bytes. */
function bothWays(label: string, x: string, value: Json, d: string): void {
  const v = decode(h(x));
  assert.equal(toJson(v), value, `${label}: decode`);
  assert.is(diag(v), d, `${label}: diag`);
  assert.is(hex(encode(fromJson(value))), x, `${label}: encode`);
}

test('keys.json: device keys, serial tokens and login keys re-derive to the recorded bytes', () => {
  const k = load('keys.json');
  assert.ok(k.deviceKeys.length >= 3);
  for (const c of k.deviceKeys) {
    const master = h(c.masterKey);
    assert.is(hex(deriveDeviceKey(master, c.serial)), c.deviceKey, c.serial);
    assert.is(hex(makeSerialToken(master, c.version, c.serial)), c.serialToken, c.serial);
    assert.is(hex(H(master, 'usbphone/v1 device-key', c.serial)), c.deviceKey);
    assert.is(hex(H(master, 'usbphone/v1 serial-token', 'key')), c.serialTokenKey);
    assert.is(hex(hmac(sha256, h(c.serialTokenKey), te.encode('nonce' + c.serial)).subarray(0, 24)), c.serialTokenNonce);
    assert.is(c.serialToken.slice(0, 2), c.version.toString(16).padStart(2, '0'));
    assert.is(c.serialToken.slice(2, 50), c.serialTokenNonce);
    // ... and the other way: the token opens to the serial under the master key of its version.
    assert.equal(openSerialToken(new MasterKeyring([[c.version, master]]), h(c.serialToken)), { version: c.version, serial: c.serial });
  }
  for (const c of k.loginKeys) {
    assert.is(hex(passwordLoginKey(h(c.secret), c.user)), c.loginKey);
    assert.is(hex(H(h(c.secret), 'usbphone/v1 biz-login password', c.user)), c.loginKey);
  }
  // The secret wrapped for the chip, recomputed from raw primitives, then opened by the code.
  for (const c of k.secretWraps) {
    assert.is(hex(H(h(c.deviceKey), 'usbphone/v1 secret wrap', 'wrap')), c.wrapKey);
    assert.is(hex(encode(['usbphone/v1 wrapped secret', c.user, c.gen])), c.aad);
    assert.is(c.nonce + hex(xchacha20poly1305(h(c.wrapKey), h(c.nonce), h(c.aad)).encrypt(h(c.secret))), c.wrapped);
    assert.is(hex(unwrapSecret(secretWrapKey(h(c.deviceKey)), c.user, c.gen, h(c.wrapped))!), c.secret);
  }
});

for (const file of ['handshake-hello.json', 'handshake-hello-notfound.json', 'handshake-login.json']) {
  const v = load(file);
  const kind = v.frames[0].name as 'hello' | 'login';
  const dest: string = v.inputs.dest;
  const key = h(v.inputs.key);
  const nC = h(v.inputs.clientNonce);
  const nS = h(v.inputs.serverNonce);

  test(`${file}: every frame decodes to its recorded value`, () => {
    for (const f of v.frames) {
      bothWays(f.name, f.hex, f.value, f.diag);
      const env = decodeEnvelope(h(f.hex));
      assert.is(env.seq, f.seq);
    }
    for (const s of v.sealed) bothWays(`${s.name} inner`, s.innerHex, s.inner, s.innerDiag);
  });

  test(`${file}: the inputs re-derive the key; the code, given the recorded nonces, sends the same frames`, () => {
    if (kind === 'hello') {
      const master = h(v.inputs.masterKey);
      assert.is(hex(deriveDeviceKey(master, v.inputs.serial)), v.inputs.key);
      assert.is(hex(makeSerialToken(master, v.inputs.version, v.inputs.serial)), v.inputs.serialToken);
    } else {
      assert.is(hex(passwordLoginKey(h(v.inputs.secret), v.inputs.user)), v.inputs.key);
    }
    const fields: CborValue[] = kind === 'hello' ? [h(v.inputs.serialToken), h(v.inputs.measurement)] : [v.inputs.mech, v.inputs.user, v.inputs.gen, new Map()];
    const client = new ClientHandshake(dest, key, scriptedRng([nC]));
    const server = new ServerHandshake(dest, scriptedRng([nS]));
    const sent: Uint8Array[] = [];
    const opening = client.opening(kind === 'hello' ? MsgType.hello : MsgType.login, fields);
    sent.push(opening);
    const oenv = decodeEnvelope(opening);
    if (kind === 'hello') {
      const x = parseHello(oenv.body);
      server.acceptOpening(opening, oenv, helloOpening(x), key);
    } else {
      const x = parseLogin(oenv.body);
      server.acceptOpening(opening, oenv, loginOpening(x), key);
      const ack = server.clear(MsgType.loginAck, []);
      client.receiveClear(ack, decodeEnvelope(ack));
      sent.push(ack);
    }
    server.requireVerifiedOpening();
    const proof = server.proof(kind === 'hello' ? MsgType.helloReply : MsgType.loginOk);
    sent.push(proof);
    const penv = decodeEnvelope(proof);
    const { finish, channel: c } = client.acceptProof(proof, penv, parseServerProof(penv.body));
    sent.push(finish);
    const s = server.acceptFinish(finish, decodeEnvelope(finish));
    assert.equal(sent.map(hex), v.frames.map((f: { hex: string }) => f.hex));

    // Sealed frames, in the order they were sent, from the channels the handshake made ...
    for (const m of v.sealed) {
      const [from, to] = m.direction === 'c2s' ? [c, s] : [s, c];
      assert.is(from.nextSendSeq, m.seq, `${m.name} seq`);
      assert.is(hex(from.seal(m.type, fromJson(m.inner))), m.frame, m.name);
      assert.equal(toJson(to.open(decodeEnvelope(h(m.frame)))), m.inner, `${m.name} opens`);
    }
    // ... and from channels built on the recorded traffic keys alone.
    const c2s = h(v.schedule.trafficKeyC2S);
    const s2c = h(v.schedule.trafficKeyS2C);
    for (const m of v.sealed) {
      const ch = m.direction === 'c2s' ? new SecureChannel('client', dest, c2s.slice(), s2c.slice(), m.seq, 0) : new SecureChannel('server', dest, s2c.slice(), c2s.slice(), m.seq, 0);
      assert.is(hex(ch.seal(m.type, fromJson(m.inner))), m.frame, `${m.name} from the recorded key`);
    }
  });

  test(`${file}: the key schedule restated from the spec gives the recorded intermediates`, () => {
    const sc = v.schedule;
    const frames: Uint8Array[] = v.frames.map((f: { hex: string }) => h(f.hex));
    const proofIdx = kind === 'hello' ? 1 : 2;
    const openingType = kind === 'hello' ? MsgType.hello : MsgType.login;
    const proofType = kind === 'hello' ? MsgType.helloReply : MsgType.loginOk;
    const fields: CborValue[] = kind === 'hello' ? [h(v.inputs.serialToken), h(v.inputs.measurement)] : [v.inputs.mech, v.inputs.user, v.inputs.gen, new Map()];

    assert.is(hex(H(key, 'usbphone/v1', 'usbphone/v1 opening mac')), sc.openingMacKey);
    assert.is(hex(encode(['usbphone/v1 opening', openingType, 0, dest, [...fields, nC]])), sc.openingMacInput);
    assert.is(hex(hmac(sha256, h(sc.openingMacKey), h(sc.openingMacInput))), sc.openingMac);
    assert.is(hex(encode([1, openingType, 0, dest, [...fields, nC, h(sc.openingMac)]])), v.frames[0].hex);

    const before = cat(...frames.slice(0, proofIdx).flatMap(lp));
    assert.is(hex(before), sc.transcriptBeforeProof);
    const pseq = proofIdx - 1;
    assert.is(hex(encode(['usbphone/v1 proof', proofType, pseq, dest, nS])), sc.proofInput);
    assert.is(hex(sha256(cat(before, h(sc.proofInput)))), sc.th1);
    assert.is(hex(H(key, cat(nC, nS), 'usbphone/v1 server proof')), sc.serverProofKey);
    assert.is(hex(hmac(sha256, h(sc.serverProofKey), h(sc.th1))), sc.serverProofMac);
    assert.is(hex(encode([1, proofType, pseq, dest, [nS, h(sc.serverProofMac)]])), v.frames[proofIdx].hex);

    const th2 = sha256(cat(before, ...lp(frames[proofIdx]!)));
    assert.is(hex(th2), sc.th2);
    assert.is(hex(H(key, cat(nC, nS), 'usbphone/v1 client proof')), sc.clientProofKey);
    assert.is(hex(hmac(sha256, h(sc.clientProofKey), th2)), sc.clientProofMac);
    assert.is(hex(encode([1, MsgType.finish, 1, dest, [h(sc.clientProofMac)]])), v.frames[proofIdx + 1].hex);
    assert.is(hex(H(key, th2, 'usbphone/v1 traffic c2s')), sc.trafficKeyC2S);
    assert.is(hex(H(key, th2, 'usbphone/v1 traffic s2c')), sc.trafficKeyS2C);

    for (const m of v.sealed) {
      assert.is(hex(encode([1, m.type, m.seq, dest])), m.aad, `${m.name} aad`);
      assert.is(m.nonce, '00000000' + m.seq.toString(16).padStart(16, '0'), `${m.name} nonce`);
      const env = decodeEnvelope(h(m.frame));
      assert.equal([env.type, env.seq, env.dest], [m.type, m.seq, dest]);
    }
  });
}

test('the exchange machines, given the recorded nonces, send exactly the recorded frames (registration "not found", business login)', () => {
  // Registration: hello, helloReply, finish + credRequest, notFound; the server's answer is the recorded one.
  const r = load('handshake-hello-notfound.json');
  const key = h(r.inputs.key);
  const client = new RegistrationClient({ dest: r.inputs.dest, deviceKey: key, serialToken: h(r.inputs.serialToken), measurement: h(r.inputs.measurement), serial: r.sealed[0].inner[0], localIp: r.sealed[0].inner[1], rng: scriptedRng([h(r.inputs.clientNonce)]) });
  const server = new RegistrationServer(r.inputs.dest, { deviceKey: () => ({ serial: r.inputs.serial, key: key.slice() }), assertFresh: () => {}, acceptFirmware: () => {}, recordConfirmation: () => {} }, scriptedRng([h(r.inputs.serverNonce)]));
  const sent: Uint8Array[] = [];
  const toServer = (fs: Uint8Array[]) => fs.flatMap((f) => (sent.push(f), server.receive(f, decodeEnvelope(f)).send));
  const reply = toServer(client.start().send);
  const afterProof = client.receive((sent.push(reply[0]!), reply[0]!));
  assert.is(afterProof.event, 'authenticated');
  assert.equal(toServer(afterProof.send), []);
  const nf = server.answer({ kind: 'not-found', reason: r.sealed[1].inner[0] });
  sent.push(nf.send[0]!);
  assert.equal(client.receive(nf.send[0]!).done, { kind: 'not-found', reason: 'no device with this serial' });
  assert.equal(sent.map(hex), [r.frames[0].hex, r.frames[1].hex, r.frames[2].hex, r.sealed[0].frame, r.sealed[1].frame]);

  // Business login: login, loginAck, loginOk, finish.
  const l = load('handshake-login.json');
  const lc = new LoginClient({ dest: l.inputs.dest, user: l.inputs.user, gen: l.inputs.gen, secret: h(l.inputs.secret), mech: l.inputs.mech, rng: scriptedRng([h(l.inputs.clientNonce)]) });
  const ls = new LoginServer(l.inputs.dest, { lookup: () => ({ kind: 'found', key: h(l.inputs.key), active: true, pending: false }), assertFresh: () => {}, promote: () => true, confirm: () => true }, scriptedRng([h(l.inputs.serverNonce)]));
  const login = lc.start().send[0]!;
  const answer = ls.receive(login, decodeEnvelope(login));
  assert.is(answer.event?.kind, 'verified');
  assert.is(lc.receive(answer.send[0]!).event, 'acknowledged');
  const proved = lc.receive(answer.send[1]!);
  assert.is(proved.event, 'logged-in');
  assert.equal([login, ...answer.send, ...proved.send].map(hex), l.frames.map((f: { hex: string }) => f.hex));
});

test('handshake-login.json: the exporter (§5.4) recomputed from the recorded traffic keys and th2, by the primitives and by the channel', () => {
  const v = load('handshake-login.json');
  const s = v.schedule;
  assert.ok(v.exporters.length >= 2);
  const x = extract(sha256, cat(h(s.trafficKeyC2S), h(s.trafficKeyS2C)), h(s.th2));
  assert.is(hex(x), s.exporterSecret);
  assert.is(hex(exporterSecret(h(s.trafficKeyC2S), h(s.trafficKeyS2C), h(s.th2))), s.exporterSecret);
  const client = new SecureChannel('client', v.inputs.dest, h(s.trafficKeyC2S), h(s.trafficKeyS2C), 2, 2, undefined, h(s.exporterSecret));
  const server = new SecureChannel('server', v.inputs.dest, h(s.trafficKeyS2C), h(s.trafficKeyC2S), 2, 2, undefined, h(s.exporterSecret));
  for (const e of v.exporters) {
    assert.is(hex(expand(sha256, x, te.encode('usbphone/v1 exporter ' + e.label), e.length)), e.value, e.label);
    assert.is(hex(client.exporter(e.label, e.length)), e.value, `${e.label}: client`);
    assert.is(hex(server.exporter(e.label, e.length)), e.value, `${e.label}: server`);
  }
});

test('messages.json: every message type, both ways', () => {
  const v = load('messages.json');
  const names = new Set<string>();
  for (const f of v.frames) {
    bothWays(f.name, f.hex, f.value, f.diag);
    const env = decodeEnvelope(h(f.hex));
    assert.is(env.type, f.type);
    assert.is(hex(encodeEnvelope(env.type, env.seq, env.dest, env.body)), f.hex);
    names.add(f.name.split(' ')[0]!);
  }
  for (const f of v.sealedInner) {
    bothWays(f.name, f.hex, f.value, f.diag);
    const type = f.name.split(' ')[0]!;
    names.add(type);
    // The bank's messages through their own codec too: decoded by the strict parser, encoded back to the same bytes.
    const codec = (BankMessages as Record<string, { decode(v: CborValue): unknown; encode(x: never): CborValue }>)[type];
    if (codec) assert.is(hex(encode(codec.encode(codec.decode(decode(h(f.hex))) as never))), f.hex, `${f.name} through BankMessages`);
  }
  // Every message type has a vector.
  assert.equal([...names].sort(), Object.keys(MsgType).sort());
});

test('docs/vectors/*.json are what docs/vectors/generate.ts writes (its expected verdicts checked against the code as it generates)', () => {
  for (const [name, v] of Object.entries(buildVectors())) assert.equal(load(name), JSON.parse(JSON.stringify(v)), `${name}: regenerate with npx tsx docs/vectors/generate.ts`);
});

interface SessionCheck { name: string; hex: string; value?: Json; diag?: string; parsed?: string | { n: number; dest: string; code: number; reason: string }; fromDevice: string }

test('messages.json sessionChecks (§2.1): sessions and sessionEnd frames, accepted and refused, give their recorded value and verdicts', () => {
  const cases: SessionCheck[] = load('messages.json').sessionChecks;
  const verdicts = new Set<string>();
  for (const c of cases) {
    const frame = h(c.hex);
    // bytes -> value -> bytes, when the bytes are deterministic CBOR at all.
    if (c.value !== undefined) bothWays(c.name, c.hex, c.value, c.diag!);
    else assert.throws(() => decode(frame), (e: unknown) => e instanceof ProtocolError && e.code === c.fromDevice, `${c.name}: not deterministic CBOR`);
    // The gateway's check of a device's frame.
    assert.is(fromDeviceVerdict(frame), c.fromDevice, `${c.name}: fromDevice`);
    const type = frame[3];
    if (type === MsgType.sessionEnd) {
      assert.ok(c.parsed !== undefined, `${c.name}: a sessionEnd states its parsed verdict`);
      assert.equal(parsedVerdict(frame), c.parsed, `${c.name}: parsed`);
      // The device's cheap peek agrees with the parser: an end, or nothing.
      assert.equal(peekSessionEnd(frame), typeof c.parsed === 'object' ? c.parsed : null, `${c.name}: peekSessionEnd`);
      // What the CDDL accepts, the code sends as these very bytes.
      if (typeof c.parsed === 'object') assert.is(hex(sessionEndFrame(c.parsed.n, c.parsed.dest, c.parsed.code, c.parsed.reason)), c.hex, `${c.name}: sessionEndFrame`);
    } else {
      assert.is(type, MsgType.sessions, c.name);
      assert.is(c.parsed, undefined, c.name);
      // The device takes as the gateway's answer exactly what the gateway takes from a device.
      assert.is(isSessionsFrame(frame), c.fromDevice === 'ok', `${c.name}: isSessionsFrame`);
      if (c.fromDevice === 'ok') assert.is(hex(sessionsFrame()), c.hex);
    }
    for (const v of [c.fromDevice, c.parsed]) if (typeof v === 'string' && v !== 'ok') (assert.ok(v in ERRORS, `${c.name}: ${v} is a code of the error table`), verdicts.add(v));
  }
  // The cases the brief of these vectors asks for are there: a valid sessions, the normal end, and
  // refused ends (a reason on 1000, another code, wrong types, extra fields, a non-normal end with a reason).
  const by = (name: string) => cases.find((c) => c.name.startsWith(name));
  assert.is(by('sessions')?.fromDevice, 'ok');
  assert.equal(by('sessionEnd normal')?.value, [1, 52, 1, 'reg-primary', [1000, '']]);
  assert.is(by('sessionEnd normal')?.fromDevice, 'ok');
  assert.is(by('sessionEnd [1000, "done"]')?.fromDevice, 'MSG_BAD_FIELD');
  assert.is(by('sessionEnd [1001, ""]')?.fromDevice, 'MSG_BAD_FIELD');
  assert.is(by('sessionEnd [1011, "GW_UPSTREAM_LOST"]')?.fromDevice, 'MSG_BAD_FIELD');
  assert.equal(by('sessionEnd [1011, "GW_UPSTREAM_LOST"]')?.parsed, { n: 1, dest: 'reg-primary', code: 1011, reason: 'GW_UPSTREAM_LOST' });
  assert.is(by('sessionEnd [1000, "", 0]')?.fromDevice, 'MSG_BAD_SHAPE');
  assert.equal([...verdicts].sort(), ['CBOR_FLOAT', 'CBOR_NOT_DETERMINISTIC', 'MSG_BAD_FIELD', 'MSG_BAD_SHAPE']);
  // Only the normal end passes the gateway's check among the ends.
  assert.equal(cases.filter((c) => c.fromDevice === 'ok').map((c) => c.name), ['sessions', 'sessionEnd normal [1000, ""]']);
});

test.run();
