// How the test vectors write CBOR values in JSON, and in CBOR diagnostic notation
// (RFC 8949 §8), so that a reader of docs/vectors/*.json can see every value and a test can
// rebuild it exactly:
//   integer -> JSON number        text -> JSON string        true/false/null -> themselves
//   bytes   -> {"bytes": "<hex>"} array -> JSON array        map -> {"map": [[key, value], ...]}
// Map entries are listed in their deterministic (encoded) order.
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import type { CborValue } from './cbor.ts';

export type Json = number | string | boolean | null | Json[] | { bytes: string } | { map: [Json, Json][] };

export function toJson(v: CborValue): Json {
  if (v instanceof Uint8Array) return { bytes: bytesToHex(v) };
  if (Array.isArray(v)) return v.map(toJson);
  if (v instanceof Map) return { map: [...v].map(([k, x]) => [k, toJson(x)] as [Json, Json]) };
  if (typeof v === 'bigint') return Number(v);
  return v;
}

export function fromJson(j: Json): CborValue {
  if (Array.isArray(j)) return j.map(fromJson);
  if (j !== null && typeof j === 'object') {
    if ('bytes' in j) return hexToBytes(j.bytes);
    return new Map(j.map.map(([k, x]) => [k as number | string, fromJson(x)]));
  }
  return j;
}

/** CBOR diagnostic notation (RFC 8949 §8) of a value of this profile. */
export function diag(v: CborValue): string {
  if (v instanceof Uint8Array) return `h'${bytesToHex(v)}'`;
  if (Array.isArray(v)) return `[${v.map(diag).join(', ')}]`;
  if (v instanceof Map) return `{${[...v].map(([k, x]) => `${diag(k)}: ${diag(x)}`).join(', ')}}`;
  if (typeof v === 'string') return JSON.stringify(v);
  return String(v);
}
