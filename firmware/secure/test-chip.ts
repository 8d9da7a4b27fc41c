// A phone's secure controller for the S3.3 tests (firmware/secure/person.test.ts,
// firmware/person-proof.test.ts): a factory image on a flash chip behind the real bus, a
// business secret imported as the registration server would wrap it, the controller's own
// NVM and clock, and a business login run through the chip against the real server
// handshake. Test support only: no program imports it.
import { FlashChip } from '../flash/chip.ts';
import { CowBacking } from '../flash/backing.ts';
import { Fuses } from '../flash/fuses.ts';
import { DeviceBus } from '../flash/bus.ts';
import { parseTable } from '../zones/layout.ts';
import { buildImage } from '../factory/image.ts';
import { TEST_VENDOR_KEY, TEST_VENDOR_PUB } from '../factory/test-vendor.ts';
import { MasterKeyring, deriveDeviceKey } from '../../protocol/keys.ts';
import { ClientHandshake, ServerHandshake, passwordLoginKey, type SecureChannel } from '../../protocol/channel.ts';
import { decodeEnvelope, MsgType, parseLogin, loginOpening, parseServerProof } from '../../protocol/messages.ts';
import { secretWrapKey, wrapSecret } from '../../protocol/secret-wrap.ts';
import { keystreamRng } from '../../protocol/seeded-rng.ts';
import { SeClient } from './client.ts';
import { memoryNvm } from './nvm.ts';
import { SENSOR_PAIRING_LABEL } from '../hal/fingerprint.ts';

export const MASTER = new Uint8Array(32).fill(7);
export const SERIAL = 'SN-0000001';
export const USER = 'u-person-1';
export const GEN = 1;
export const SECRET = new Uint8Array(32).fill(0x5b);
/** The login key the bank stores for (USER, GEN): what wraps the TOTP seed and attests fingerprint keys. */
export const LOGIN_KEY = passwordLoginKey(SECRET, USER);
export const FUSES = new Fuses(new Uint8Array(32).fill(0x11), Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8), TEST_VENDOR_PUB);
/** The key the factory gives the phone's fingerprint sensor (the chip derives the same from its fuses). */
export const PAIRING_KEY = FUSES.deriveKey(SENSOR_PAIRING_LABEL);

const built = buildImage({ vendorKey: TEST_VENDOR_KEY, serial: SERIAL, fuses: FUSES, keyring: new MasterKeyring([[1, MASTER]]) });
const table = (() => {
  const p = parseTable(built.image);
  if (!p.ok) throw new Error('bad table');
  return p.table;
})();

/**
 * A fresh phone chip holding SECRET for USER generation GEN. `now`: the controller's clock
 * (Unix ms; a test moves it), null for a chip without one.
 */
export function personChip(o: { now?: (() => number) | null; seed?: string } = {}) {
  const chip = new FlashChip({ backing: new CowBacking(built.image, 4096), seed: 1 });
  const nvm = memoryNvm();
  const bus = new DeviceBus(chip, FUSES, table, keystreamRng(`person chip ${o.seed ?? ''}`), nvm, o.now === undefined ? () => 1_700_000_000_000 : o.now);
  const se = new SeClient((a) => bus.se.transmit(a));
  const wrapped = wrapSecret(secretWrapKey(deriveDeviceKey(MASTER, SERIAL)), USER, GEN, SECRET, keystreamRng('person wrap'));
  const r = se.importSecret(USER, GEN, 0, wrapped);
  if (!r.ok) throw new Error(`import: ${r.status}`);
  return { chip, bus, nvm, se, raw: bus.se };
}

/**
 * A business login of the chip's user through the chip (login key inside) against the real
 * server handshake: both ends' channels, for their exporters.
 */
export function businessSession(se: SeClient, seed: string): { client: SecureChannel; server: SecureChannel } {
  const dest = 'biz-east';
  const client = new ClientHandshake(dest, se.loginKeyOps(), keystreamRng(`${seed} client`));
  const server = new ServerHandshake(dest, keystreamRng(`${seed} server`));
  const login = client.opening(MsgType.login, ['password', USER, GEN, new Map()]);
  const lenv = decodeEnvelope(login);
  server.acceptOpening(login, lenv, loginOpening(parseLogin(lenv.body)), LOGIN_KEY);
  server.requireVerifiedOpening();
  const ack = server.clear(MsgType.loginAck, []);
  client.receiveClear(ack, decodeEnvelope(ack));
  const proof = server.proof(MsgType.loginOk);
  const penv = decodeEnvelope(proof);
  const { finish, channel } = client.acceptProof(proof, penv, parseServerProof(penv.body));
  return { client: channel, server: server.acceptFinish(finish, decodeEnvelope(finish)) };
}
