// A business secret wrapped for one phone's chip (issue 9; docs/protocol.md §6.2): the
// registration server puts the new secret in the credential reply as
//
//   wrapped = sealBox(HKDF(K_dev, "usbphone/v1 secret wrap", "wrap"), secret,
//                     aad = CBOR ["usbphone/v1 wrapped secret", user, gen])
//
// so it crosses the host computer only under a key that the phone's secure element (K_dev in
// its device-key slot) and the registration servers (K_dev from the master key) can derive.
// The channel keys leave the chip, so the host can read the reply: it sees this box, not the
// secret. The AAD binds user and generation: a box opens only for the login it was made for.
import { kdf } from './keys.ts';
import { encode } from './cbor.ts';
import { sealBox, openBox, BOX_OVERHEAD } from './sealed-box.ts';
import { SECRET_BYTES, WRAPPED_SECRET_BYTES } from './messages.ts';
import type { Rng } from './rng.ts';

export const SECRET_WRAP_LABEL = 'usbphone/v1 secret wrap';
export { WRAPPED_SECRET_BYTES };
if (WRAPPED_SECRET_BYTES !== SECRET_BYTES + BOX_OVERHEAD) throw new Error('WRAPPED_SECRET_BYTES disagrees with the sealed box');

/** The wrap key of a device (32 bytes; wipe it after use). */
export function secretWrapKey(deviceKey: Uint8Array): Uint8Array {
  return kdf(deviceKey, SECRET_WRAP_LABEL, 'wrap');
}

export function secretWrapAad(user: string, gen: number): Uint8Array {
  return encode(['usbphone/v1 wrapped secret', user, gen]);
}

/** Wraps `secret` (32 bytes) for the chip whose wrap key is `wrapKey`. */
export function wrapSecret(wrapKey: Uint8Array, user: string, gen: number, secret: Uint8Array, rng: Rng): Uint8Array {
  if (secret.length !== SECRET_BYTES) throw new RangeError(`a business secret is ${SECRET_BYTES} bytes`);
  return sealBox(wrapKey, secret, secretWrapAad(user, gen), rng);
}

/** The secret, or null when the box was not made for this chip, user and generation (or was altered). */
export function unwrapSecret(wrapKey: Uint8Array, user: string, gen: number, wrapped: Uint8Array): Uint8Array | null {
  if (wrapped.length !== WRAPPED_SECRET_BYTES) return null;
  return openBox(wrapKey, wrapped, secretWrapAad(user, gen));
}
