// What the secure controller costs a login, measured side by side:  npx tsx bench/secure.bench.ts
//
//   chip      a whole registration handshake, both sides, the device's half through the chip's
//             APDUs (HS OPEN, HS FINISH: CBOR in, CBOR out, the same key math inside), over a
//             flash chip model with the factory image
//   memory    the same handshake with the device key in memory (softClientKeyOps): what the
//             phone did before issue 9
//
// Rounds of the two alternate (the machine is shared); the ratio is the median of each round
// pair's ratio. Issue 9's bound: the chip calls must not cost more than 20 % of the fleet's
// logins/s; a handshake is a fraction of a login, so the ratio here bounds that from above.
import { ClientHandshake, ServerHandshake } from '../protocol/channel.ts';
import { decodeEnvelope, parseHello, helloOpening, parseServerProof, MsgType } from '../protocol/messages.ts';
import { deriveDeviceKey, openSerialToken, MasterKeyring } from '../protocol/keys.ts';
import { keystreamRng } from '../protocol/seeded-rng.ts';
import { FlashChip } from '../firmware/flash/chip.ts';
import { CowBacking } from '../firmware/flash/backing.ts';
import { Fuses } from '../firmware/flash/fuses.ts';
import { DeviceBus } from '../firmware/flash/bus.ts';
import { parseTable } from '../firmware/zones/layout.ts';
import { buildImage } from '../firmware/factory/image.ts';
import { SeClient } from '../firmware/secure/client.ts';
import { TEST_VENDOR_KEY, TEST_VENDOR_PUB } from '../firmware/factory/test-vendor.ts';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 15);
const ROUND_MS = Number(process.env.BENCH_ROUND_MS ?? 150);

const master = new Uint8Array(32).fill(7);
const ring = new MasterKeyring([[1, master]]);
const fuses = new Fuses(new Uint8Array(32).fill(0x11), Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8), TEST_VENDOR_PUB);
const serial = 'SN-BENCH-1';
const { image } = buildImage({ serial, fuses, keyring: ring, vendorKey: TEST_VENDOR_KEY });
const p = parseTable(image);
if (!p.ok) throw new Error('table');
const bus = new DeviceBus(new FlashChip({ backing: new CowBacking(image) }), fuses, p.table, keystreamRng('bench chip'));
const se = new SeClient((a) => bus.se.transmit(a));
const id = se.identity();
if (!id.ok) throw new Error('identity');
const token = id.value.serialToken;
const measured = se.attestation();
if (!measured.ok) throw new Error('measurement');
const measurement = measured.value.measurement;
const deviceKey = deriveDeviceKey(master, serial);
const rc = keystreamRng('bench client');
const rs = keystreamRng('bench server');

/** One registration handshake; the client's key half from `keys`. */
function handshake(keys: () => ConstructorParameters<typeof ClientHandshake>[1]): void {
  const client = new ClientHandshake('reg-primary', keys(), rc);
  const server = new ServerHandshake('reg-primary', rs);
  const hello = client.opening(MsgType.hello, [token, measurement]);
  const henv = decodeEnvelope(hello);
  const h = parseHello(henv.body);
  const { version, serial: s } = openSerialToken(ring, h.token);
  server.acceptOpening(hello, henv, helloOpening(h), deriveDeviceKey(ring.key(version), s));
  server.requireVerifiedOpening();
  const proof = server.proof(MsgType.helloReply);
  const penv = decodeEnvelope(proof);
  const { finish } = client.acceptProof(proof, penv, parseServerProof(penv.body));
  server.acceptFinish(finish, decodeEnvelope(finish));
}

function rate(fn: () => void): number {
  let n = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < ROUND_MS) {
    fn();
    n++;
  }
  return (n * 1000) / (performance.now() - t0);
}

const chip = () => handshake(() => se.deviceKeyOps());
const memory = () => handshake(() => deviceKey);
for (let i = 0; i < 200; i++) (chip(), memory());
const rows: { chip: number; memory: number }[] = [];
for (let r = 0; r < ROUNDS; r++) rows.push({ chip: rate(chip), memory: rate(memory) });
const med = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
const ratio = med(rows.map((x) => x.memory / x.chip));
console.log(`registration handshake, both sides: chip ${med(rows.map((x) => x.chip)).toFixed(0)}/s, key in memory ${med(rows.map((x) => x.memory)).toFixed(0)}/s; chip / memory cost ${ratio.toFixed(2)}x (${ROUNDS} alternating rounds of ${ROUND_MS} ms)`);
