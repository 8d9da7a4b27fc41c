// What the capture tests search for: a secret in every encoding it could leak in (UTF-8,
// UTF-16 both ways, hex both cases, base64 at each alignment), as latin1 strings to find in a
// latin1 view of captured bytes. Used by sim/capture.test.ts (the serial, the TOTP seed, the
// fingerprint template) and sim/bank-scenarios.test.ts (the person's password and its verifier).
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** The encodings of `s` to look for, as latin1 strings (each byte one char). */
export function encodings(s: string): { what: string; needle: string }[] {
  return byteEncodings(Buffer.from(s, 'utf8'), s);
}

/**
 * The encodings of the bytes `b` (a key, a seed, a template): raw, hex both cases, base64 at
 * each alignment; with `text`, UTF-16 of that text too.
 */
export function byteEncodings(b: Uint8Array, text?: string): { what: string; needle: string }[] {
  const u8 = Buffer.from(b);
  const s = text ?? '';
  const out = [
    { what: text === undefined ? 'raw bytes' : 'UTF-8', needle: u8.toString('latin1') },
    ...(text === undefined ? [] : [
      { what: 'UTF-16LE', needle: Buffer.from(s, 'utf16le').toString('latin1') },
      { what: 'UTF-16BE', needle: Buffer.from(s, 'utf16le').swap16().toString('latin1') },
    ]),
    { what: 'hex', needle: u8.toString('hex') },
    { what: 'HEX', needle: u8.toString('hex').toUpperCase() },
  ];
  // Base64 at each of the three alignments: drop the characters the neighbouring bytes change.
  for (let k = 0; k < 3; k++) {
    const b64 = Buffer.concat([Buffer.alloc(k), u8]).toString('base64');
    // A base64 character holds 6 bits: those that hold only serial bits are the core.
    const start = Math.ceil((k * 8) / 6);
    const end = Math.floor(((k + u8.length) * 8) / 6);
    out.push({ what: `base64 (offset ${k})`, needle: b64.slice(start, end) });
  }
  return out;
}


/** Every file below `dir` (a state directory the capture tests search). */
export function filesUnder(dir: string): string[] {
  const files: string[] = [];
  const walk = (d: string) => {
    for (const n of readdirSync(d)) {
      const p = join(d, n);
      if (statSync(p).isDirectory()) walk(p);
      else files.push(p);
    }
  };
  walk(dir);
  return files;
}

/**
 * Every WebSocket payload this process sends from now on, until restore(): what the capture
 * tests search (the ws library's send, patched; text frames as UTF-8, fragmented as one).
 */
export function captureWebSocketSends(ws: { prototype: { send: (...a: never[]) => unknown } }): { sent: Buffer[]; restore(): void } {
  const sent: Buffer[] = [];
  const proto = ws.prototype as unknown as { send: (...a: unknown[]) => unknown };
  const original = proto.send;
  proto.send = function (this: unknown, data: unknown, ...rest: unknown[]) {
    if (data instanceof Uint8Array) sent.push(Buffer.from(data));
    else if (typeof data === 'string') sent.push(Buffer.from(data, 'utf8'));
    else if (Array.isArray(data)) sent.push(Buffer.concat(data as Buffer[]));
    return original.call(this, data, ...rest);
  };
  return { sent, restore: () => void (proto.send = original) };
}
