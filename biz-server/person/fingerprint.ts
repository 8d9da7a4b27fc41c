// The site's verifier of fingerprint proofs (S3.3, match-on-chip): the signature the phone's
// chip made with the site's fingerprint key (Ed25519, RFC 8032) over FP_DOMAIN || 0x00 ||
// the session's channel binding (protocol/person.ts, docs/protocol.md §5.4, §17). The
// challenge is what the site's own end of the channel exports, never a value the phone
// sends: a signature made for another session does not verify here.
import { ed25519 } from '@noble/curves/ed25519.js';
import { equalBytes } from '@noble/ciphers/utils.js';
import { fingerprintMessage, fingerprintKeyAttestation, BINDING_BYTES, FP_PUBLIC_KEY_BYTES, FP_SIGNATURE_BYTES, FP_ATTEST_BYTES } from '../../protocol/person.ts';

export type FingerprintVerdict = { ok: true } | { ok: false; code: 'PERSON_PROOF_FAILED' };

/**
 * Whether `signature` is the account's fingerprint key's signature over this session's
 * `challenge` (SecureChannel.exporter(PERSON_BINDING_LABEL) on the site's side).
 * `publicKey`: what the site stored at registration (32 bytes). Anything malformed is
 * PERSON_PROOF_FAILED too; the function never throws at a peer's bytes.
 */
export function verifyFingerprint(publicKey: Uint8Array, challenge: Uint8Array, signature: Uint8Array): FingerprintVerdict {
  const fail: FingerprintVerdict = { ok: false, code: 'PERSON_PROOF_FAILED' };
  if (!(publicKey instanceof Uint8Array) || publicKey.length !== FP_PUBLIC_KEY_BYTES) return fail;
  if (!(challenge instanceof Uint8Array) || challenge.length !== BINDING_BYTES) return fail;
  if (!(signature instanceof Uint8Array) || signature.length !== FP_SIGNATURE_BYTES) return fail;
  try {
    // zip215: false: the strict RFC 8032 / FIPS 186-5 rules (no non-canonical encodings).
    return ed25519.verify(signature, fingerprintMessage(challenge), publicKey, { zip215: false }) ? { ok: true } : fail;
  } catch {
    return fail;
  }
}

/**
 * At the site's registration of the mechanism: whether `publicKey` comes from the chip that
 * holds the account's business secret (its attestation is a MAC under the login key the site
 * stores, which the phone's host never holds). A key whose attestation fails must not be
 * stored: a hostile host could otherwise register a key of its own.
 */
export function verifyFingerprintKey(loginKey: Uint8Array, site: string, user: string, publicKey: Uint8Array, attestation: Uint8Array): boolean {
  if (!(publicKey instanceof Uint8Array) || publicKey.length !== FP_PUBLIC_KEY_BYTES) return false;
  if (!(attestation instanceof Uint8Array) || attestation.length !== FP_ATTEST_BYTES) return false;
  return equalBytes(fingerprintKeyAttestation(loginKey, site, user, publicKey), attestation);
}
