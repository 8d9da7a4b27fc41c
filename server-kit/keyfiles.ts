// Key files of a deployment. The master key is read from a file or an environment variable
// (never from a database); link and admin keys are 32 random bytes in hex. Files the
// embedded default creates are written 0600 and never logged.
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import { existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { MasterKeyring } from '../protocol/keys.ts';
import { systemRng } from '../protocol/channel.ts';
import { ImplementationError } from '../protocol/errors.ts';

export function ensureMasterKeyFile(file: string): void {
  if (existsSync(file)) return;
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, MasterKeyring.format(1, systemRng(32)), { mode: 0o600, flag: 'wx' });
}

/** From `env` (the variable's content, same format as the file) when set, else `file`. */
export function loadMasterKeyring(src: { file?: string; env?: string }): MasterKeyring {
  const fromEnv = src.env ? process.env[src.env] : undefined;
  if (fromEnv) return MasterKeyring.parse(fromEnv);
  if (!src.file) throw new ImplementationError('CFG_NO_MASTER_KEY', 'no master key file or environment variable configured');
  if (!existsSync(src.file)) throw new ImplementationError('CFG_NO_MASTER_KEY', `master key file ${src.file} does not exist`);
  return MasterKeyring.parse(readFileSync(src.file, 'utf8'));
}

/** Makes `file` (32 bytes as hex, 0600) when missing: random, or `make()`'s (a seeded simulation's). */
export function ensureKeyFile(file: string, make: () => Uint8Array = () => systemRng(32)): void {
  if (existsSync(file)) return;
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, bytesToHex(make()) + '\n', { mode: 0o600, flag: 'wx' });
}

export function readKeyFile(file: string, what: string): Uint8Array {
  if (!existsSync(file)) throw new ImplementationError('CFG_NO_KEY', `${what} file ${file} does not exist`);
  const text = readFileSync(file, 'utf8').replace(/#.*/g, '').trim();
  if (!/^[0-9a-fA-F]{64}$/.test(text)) throw new ImplementationError('CFG_BAD_KEY', `${what} file ${file} must hold 64 hex digits`);
  return hexToBytes(text);
}

/** A key given inline (hex) or as a file. */
export function keyFrom(src: { hex?: string; file?: string }, what: string): Uint8Array {
  if (src.hex) {
    if (!/^[0-9a-fA-F]{64}$/.test(src.hex)) throw new ImplementationError('CFG_BAD_KEY', `${what} must be 64 hex digits`);
    return hexToBytes(src.hex);
  }
  if (src.file) return readKeyFile(src.file, what);
  throw new ImplementationError('CFG_NO_KEY', `no ${what} configured`);
}
