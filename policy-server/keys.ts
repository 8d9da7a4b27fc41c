// The policy server's Ed25519 key pair (RFC 8032): the private key is a 32-byte seed in a key
// file of the state directory (64 hex digits, 0600, server-kit/keyfiles.ts), made once on first
// start; the public key is what the factory provisions in each phone, which checks every
// attack table with it (protocol/attack-table.ts verifyTable). Deploy calls ensurePolicyKey.
import { bytesToHex } from '@noble/hashes/utils.js';
import { ensureKeyFile, readKeyFile } from '../server-kit/keyfiles.ts';
import { tablePublicKey } from '../protocol/attack-table.ts';

export const POLICY_KEY_FILE = 'policy.key';

export interface PolicyKey {
  /** The 32-byte seed; never logged, never sent. */
  privateKey: Uint8Array;
  /** The 32-byte public key the phones hold. */
  publicKey: Uint8Array;
}

/** Makes `file` (a new random seed, 0600) if it does not exist, and reads the pair from it. */
export function ensurePolicyKey(file: string): PolicyKey {
  ensureKeyFile(file);
  return readPolicyKey(file);
}

/** Reads the pair from `file` (CFG_NO_KEY / CFG_BAD_KEY when missing or malformed). */
export function readPolicyKey(file: string): PolicyKey {
  const privateKey = readKeyFile(file, 'policy key');
  return { privateKey, publicKey: tablePublicKey(privateKey) };
}

/** The public key in hex: what the factory image is given. */
export function policyPublicKeyHex(file: string): string {
  return bytesToHex(readPolicyKey(file).publicKey);
}
