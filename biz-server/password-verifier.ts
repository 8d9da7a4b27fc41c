// The person's password at the bank (S4.1): stored only as a slow salted verifier, scrypt
// (RFC 7914) from node:crypto, run on libuv's thread pool (async, off the event loop).
// Parameters: OWASP Password Storage Cheat Sheet (2025) lists scrypt N=2^17, r=8, p=1 as
// its first choice (128 MiB and ~0.1-0.5 s per hash on a server core); docs/decisions.md
// says why and docs/benchmarks.md gives the measured cost.
//
// The stored form describes itself, so the parameters can change without a migration (a
// verifier keeps the parameters it was made with):
//   $scrypt$ln=17,r=8,p=1$<salt, base64 no padding>$<32-byte hash, base64 no padding>
// (the PHC string format's layout, as passlib writes scrypt). A stored value that does not
// parse, or asks for parameters outside the bounds below (a tampered row that would make the
// server allocate gigabytes), is a corrupt row, never verified.
//
// A verifier for an unknown login name: verify() against DUMMY, one made at start with the
// same parameters, so an unknown name costs what a wrong password does (issue 10's rule,
// applied to people).
import { scrypt as scryptCb, randomBytes, timingSafeEqual } from 'node:crypto';
import { ImplementationError } from '../protocol/errors.ts';
import { corrupt } from '../server-kit/sqlite.ts';

export interface ScryptParams {
  /** log2 of N, the CPU/memory cost. */
  ln: number;
  r: number;
  p: number;
}
/** OWASP's scrypt row: N = 2^17, r = 8, p = 1 (128 MiB per hash). */
export const OWASP_SCRYPT: ScryptParams = { ln: 17, r: 8, p: 1 };
/** Bounds a stored verifier's parameters must keep (a row asking for more is corrupt). */
const BOUNDS = { ln: [10, 20], r: [1, 32], p: [1, 16] } as const;
const SALT_BYTES = 16;
const HASH_BYTES = 32;
const FORMAT = /^\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/]{22})\$([A-Za-z0-9+/]{43})$/;

function checkParams(p: ScryptParams): boolean {
  return (Object.keys(BOUNDS) as (keyof ScryptParams)[]).every((k) => Number.isInteger(p[k]) && p[k] >= BOUNDS[k][0] && p[k] <= BOUNDS[k][1]);
}

function scrypt(password: Uint8Array, salt: Uint8Array, p: ScryptParams): Promise<Buffer> {
  const N = 2 ** p.ln;
  // scrypt needs 128 * N * r bytes (RFC 7914 §5 ROMix); node refuses above maxmem (32 MiB by default).
  const maxmem = 128 * N * p.r + 4 * 1024 * 1024;
  return new Promise((resolve, reject) => scryptCb(password, salt, HASH_BYTES, { N, r: p.r, p: p.p, maxmem }, (e, k) => (e ? reject(e) : resolve(k))));
}

const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64').replace(/=+$/, '');

/**
 * Hashes and verifies passwords with one parameter set; at most `concurrency` hashes run at
 * once (each holds 128 * N * r bytes: two at OWASP's parameters are 256 MiB), the rest wait.
 */
/** More hashes asked for than may wait (PasswordHasher maxWaiting): the bank answers BANK_BUSY (retry later). */
export class HasherBusy extends Error {
  override readonly name = 'HasherBusy';
}

export class PasswordHasher {
  readonly params: ScryptParams;
  #dummy: Promise<string>;
  #running = 0;
  readonly #waiting: (() => void)[] = [];

  /**
   * @param maxWaiting hashes that may wait for a turn; one more is refused at once (HasherBusy)
   *   rather than queued without bound (found by review: 60 parallel logins from one device
   *   timed out 45 and left their work queued). Default 8: at ~2 s a hash and 2 at a time, the
   *   last one waits ~8 s, inside a session's step timeout.
   */
  constructor(params: ScryptParams = OWASP_SCRYPT, private readonly concurrency = 2, private readonly maxWaiting = 8) {
    if (!checkParams(params)) throw new ImplementationError('BANK_BAD_SCRYPT', `scrypt parameters ${JSON.stringify(params)} outside ${JSON.stringify(BOUNDS)}`);
    this.params = { ...params };
    // Made once, from a password nobody knows.
    this.#dummy = this.hash(randomBytes(24).toString('base64'));
    this.#dummy.catch(() => {});
  }

  /** A new verifier of `password` (random salt), in the stored form. */
  async hash(password: string): Promise<string> {
    const salt = randomBytes(SALT_BYTES);
    const k = await this.#run(() => scrypt(Buffer.from(password, 'utf8'), salt, this.params));
    const out = `$scrypt$ln=${this.params.ln},r=${this.params.r},p=${this.params.p}$${b64(salt)}$${b64(k)}`;
    k.fill(0);
    return out;
  }

  /**
   * Whether `password` matches `stored` (null: an unknown name, checked against the dummy
   * verifier at the same cost, and false). STORE_CORRUPT_ROW for a stored value that does
   * not parse or is out of bounds.
   */
  async verify(password: Uint8Array | string, stored: string | null): Promise<boolean> {
    const v = stored ?? (await this.#dummy);
    const m = FORMAT.exec(v);
    if (!m) corrupt('bank account verifier', 'not a $scrypt$ verifier');
    const p = { ln: Number(m[1]), r: Number(m[2]), p: Number(m[3]) };
    if (!checkParams(p)) corrupt('bank account verifier', 'scrypt parameters out of bounds');
    const salt = Buffer.from(m[4]!, 'base64');
    const want = Buffer.from(m[5]!, 'base64');
    const pw = typeof password === 'string' ? Buffer.from(password, 'utf8') : Buffer.from(password);
    const k = await this.#run(() => scrypt(pw, salt, p));
    pw.fill(0);
    const ok = timingSafeEqual(k, want);
    k.fill(0);
    return ok && stored !== null;
  }

  async #run<T>(f: () => Promise<T>): Promise<T> {
    if (this.#running >= this.concurrency) {
      if (this.#waiting.length >= this.maxWaiting) throw new HasherBusy(`${this.#waiting.length} password checks already wait`);
      await new Promise<void>((r) => this.#waiting.push(r));
    }
    this.#running++;
    try {
      return await f();
    } finally {
      this.#running--;
      this.#waiting.shift()?.();
    }
  }
}

/** NIST SP 800-63B §3.1.1.2: at least 8 characters, and not a commonly used one. A small list of the commonest (the top of the public breach-corpus lists). */
const COMMON = new Set([
  'password', 'password1', 'password123', '12345678', '123456789', '1234567890', '12345678910', 'qwertyuiop', 'qwerty123', 'iloveyou',
  '11111111', '00000000', '87654321', 'abcd1234', 'abc12345', 'sunshine', 'princess', 'football', 'baseball', 'welcome1', 'welcome123',
  'letmein1', 'passw0rd', 'p@ssw0rd', 'p@ssword', 'trustno1', 'superman', 'starwars', 'dragon123', 'monkey123', 'whatever', 'qazwsxedc',
  '1q2w3e4r', '1qaz2wsx', 'zaq12wsx', 'aa123456', 'asdfghjkl', 'changeme', 'computer', 'internet', 'secret123', 'admin123', 'master123',
]);
export const MIN_PASSWORD_CHARS = 8;

/** Why a password may not be chosen, or null when it may (the name is the person's login name). */
export function weakPassword(password: string, name: string): string | null {
  const chars = [...password].length;
  if (chars < MIN_PASSWORD_CHARS) return `at least ${MIN_PASSWORD_CHARS} characters are needed`;
  const lower = password.toLowerCase();
  if (COMMON.has(lower)) return 'this password is one of the most common ones';
  if (lower === name.toLowerCase()) return 'the password may not be the login name';
  return null;
}
