// OAuth2 client credentials (RFC 6749 §4.4) for the operator's API: client authentication
// and the bearer tokens it issues (RFC 6750).
//
// Tokens are signed, not stored: `payload "." tag`, payload = base64url(JSON {v, sub, scope,
// exp, jti}), tag = base64url(HMAC-SHA256(tokenKey, "usbphone/v1 operator token|" payload)).
// So the server keeps no token table (nothing to bound, nothing lost on a restart, several
// operator processes can share the key), and a token is checked with one HMAC. Each use also
// re-reads the client: a client removed or stripped of a scope loses it at once, not at the
// token's expiry. The token is opaque to the client (RFC 6749 §1.4): only its lifetime and
// scope are promised (the token response).
//
// Client secrets are 256-bit random values made by enrollment; only their SHA-256 is stored
// and compared in constant time (a slow hash protects guessable passwords, not these).
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { utf8ToBytes, bytesToHex } from '@noble/hashes/utils.js';
import { equalBytes } from '@noble/ciphers/utils.js';
import { ImplementationError } from '../protocol/errors.ts';
import type { OperatorStore, OAuthClient } from './store.ts';

/** Default token lifetime: short, the client fetches another when it lapses. */
export const TOKEN_TTL_SEC = 300;
/** A token longer than this is refused before any work. */
export const TOKEN_MAX_CHARS = 1_024;
const TOKEN_RE = /^[A-Za-z0-9_-]{1,960}\.[A-Za-z0-9_-]{43}$/;
const TAG_LABEL = 'usbphone/v1 operator token|';

export interface TokenClaims { sub: string; scopes: string[]; exp: number; jti: string }

const b64u = (b: Uint8Array) => Buffer.from(b).toString('base64url');

/** SHA-256 of a client secret as stored. */
export function secretHash(secret: string): Uint8Array {
  return sha256(utf8ToBytes(secret));
}

/** A new client secret: 32 random bytes, base64url (43 characters). */
export function newClientSecret(rng: (n: number) => Uint8Array): string {
  return b64u(rng(32));
}

export class TokenIssuer {
  readonly #key: Uint8Array;
  readonly #ttlSec: number;
  readonly #now: () => number;
  readonly #rng: (n: number) => Uint8Array;
  constructor(key: Uint8Array, opts: { ttlSec?: number; now?: () => number; rng: (n: number) => Uint8Array }) {
    if (!(key instanceof Uint8Array) || key.length !== 32) throw new ImplementationError('OP_BAD_TOKEN_KEY', 'the token key is 32 bytes');
    this.#key = key;
    this.#ttlSec = opts.ttlSec ?? TOKEN_TTL_SEC;
    if (!Number.isInteger(this.#ttlSec) || this.#ttlSec < 1 || this.#ttlSec > 86_400) throw new ImplementationError('OP_BAD_TOKEN_KEY', 'token lifetime must be 1..86400 s');
    this.#now = opts.now ?? Date.now;
    this.#rng = opts.rng;
  }

  get ttlSec(): number {
    return this.#ttlSec;
  }

  #tag(payload: string): string {
    return b64u(hmac(sha256, this.#key, utf8ToBytes(TAG_LABEL + payload)));
  }

  issue(clientId: string, scopes: string[]): { token: string; expiresIn: number } {
    const exp = Math.floor(this.#now() / 1000) + this.#ttlSec;
    const payload = b64u(utf8ToBytes(JSON.stringify({ v: 1, sub: clientId, scope: scopes.join(' '), exp, jti: bytesToHex(this.#rng(8)) })));
    return { token: `${payload}.${this.#tag(payload)}`, expiresIn: this.#ttlSec };
  }

  /** The claims of a token this issuer made and that has not expired; null otherwise (no reason: UNAUTHENTICATED). */
  verify(token: string): TokenClaims | null {
    if (token.length > TOKEN_MAX_CHARS || !TOKEN_RE.test(token)) return null;
    const dot = token.indexOf('.');
    const payload = token.slice(0, dot);
    // Authenticate before parsing anything the caller sent.
    if (!equalBytes(utf8ToBytes(this.#tag(payload)), utf8ToBytes(token.slice(dot + 1)))) return null;
    let c: { v?: unknown; sub?: unknown; scope?: unknown; exp?: unknown; jti?: unknown };
    try {
      c = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
    } catch {
      return null;
    }
    if (c.v !== 1 || typeof c.sub !== 'string' || typeof c.scope !== 'string' || typeof c.jti !== 'string') return null;
    if (typeof c.exp !== 'number' || !Number.isSafeInteger(c.exp) || c.exp * 1000 <= this.#now()) return null;
    return { sub: c.sub, scopes: c.scope === '' ? [] : c.scope.split(' '), exp: c.exp, jti: c.jti };
  }
}

/** The client whose id and secret these are, or null (unknown id and wrong secret alike). */
export async function authenticateClient(store: OperatorStore, clientId: string, secret: string): Promise<OAuthClient | null> {
  const c = await store.getClient(clientId);
  // Hash even for an unknown id, so the answer takes the same time either way.
  const h = secretHash(secret);
  return c && equalBytes(h, c.secretSha256) ? c : null;
}
