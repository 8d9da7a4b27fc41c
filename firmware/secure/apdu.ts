// Command and response APDUs of the secure controller (ISO/IEC 7816-4 §5.1): a command is
// CLA INS P1 P2 [Lc data] [Le], a response is [data] SW1 SW2. Short (Lc/Le one byte) and
// extended (Lc = 00 hi lo, Le = 00 hi lo / hi lo) lengths, cases 1 to 4. The controller's
// commands and status words are listed in docs/flash-layout.md §"Secure controller".
//
// Not emulated: logical channels and secure messaging bits of CLA, command chaining,
// GET RESPONSE (61xx), the T=0/T=1 transport.

/** Proprietary class byte (ISO 7816-4 §5.4.1: b8 set = proprietary). */
export const CLA = 0x80;

/** Instruction bytes of the controller's command set. */
export const Ins = {
  /** GET DATA (ISO 7816-4 §11.4.3): P1P2 names the object (DataObject). */
  getData: 0xca,
  /** Opening of a handshake under a key slot: P1 = slot. */
  hsOpen: 0x10,
  /** The server's proof checked, the finish MAC and the session traffic keys out. */
  hsFinish: 0x12,
  /** A business secret the registration server wrapped for this chip, imported into a slot. */
  importSecret: 0x20,
  /** Retire the business secrets older than one a server has just accepted. */
  retireOlder: 0x22,
  /** S3.3 fingerprint: a fresh single-use challenge for the paired sensor's next reading. */
  fpChallenge: 0x30,
  /** S3.3 fingerprint: enrol the finger of a sealed reading (replaces any template, drops every fingerprint key). */
  fpEnroll: 0x32,
  /** S3.3 fingerprint: the site's fingerprint public key (made on first use) and its attestation. */
  fpKey: 0x34,
  /** S3.3 fingerprint: match a sealed reading, then sign the site's challenge. */
  fpSign: 0x36,
  /** S3.3 one-time code: import a site's TOTP seed wrapped by the site. */
  otpImport: 0x40,
  /** S3.3 one-time code: the site's code for the chip's own current time. */
  otpCode: 0x42,
  /** READ / WRITE of a host record (the saved login, without secrets): P1 = record id. */
  readRecord: 0xb0,
  writeRecord: 0xd0,
} as const;

/** Objects of GET DATA (P1P2). */
export const DataObject = {
  identity: 0x0001,
  slots: 0x0002,
  /** The vendor's Ed25519 public key from the fuses (public). */
  vendorKey: 0x0003,
  /** [measurement, manifest version] of the boot files measured at power-on. */
  bootMeasurement: 0x0004,
  /** S3.3: [finger state, [sites with a fingerprint key], [sites with a TOTP seed], has a clock] (public: no key bytes). */
  personStatus: 0x0005,
} as const;

/** Status words (ISO 7816-4 §5.6, the interindustry values). */
export const SW = {
  ok: 0x9000,
  verificationFailed: 0x6300,
  memoryFailure: 0x6581,
  wrongLength: 0x6700,
  securityNotSatisfied: 0x6982,
  blocked: 0x6983,
  conditionsNotSatisfied: 0x6985,
  wrongData: 0x6a80,
  notEnoughMemory: 0x6a84,
  wrongP1P2: 0x6a86,
  notFound: 0x6a88,
  insNotSupported: 0x6d00,
  claNotSupported: 0x6e00,
  noDiagnosis: 0x6f00,
} as const;
export type SW = (typeof SW)[keyof typeof SW];

const swNames = new Map<number, string>(Object.entries(SW).map(([k, v]) => [v, `SW_${k.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`]));
/** 'SW_OK', 'SW_SECURITY_NOT_SATISFIED', ...: what the storage seam reports as a status. */
export function swName(sw: number): string {
  return swNames.get(sw) ?? `SW_${sw.toString(16).toUpperCase().padStart(4, '0')}`;
}

export interface Command {
  cla: number;
  ins: number;
  p1: number;
  p2: number;
  data: Uint8Array;
  /** Expected response length; 0 = none (case 1/3), 256 / 65536 = "as much as there is". */
  le: number;
}

/** Largest data field either way: extended length. */
export const MAX_DATA = 65535;

/** Encodes a command APDU; extended lengths when data or le need them. Throws RangeError on misuse. */
export function encodeCommand(c: { ins: number; p1?: number; p2?: number; data?: Uint8Array; le?: number; cla?: number }): Uint8Array {
  const data = c.data ?? new Uint8Array(0);
  const le = c.le ?? 0;
  if (data.length > MAX_DATA || le < 0 || le > 65536) throw new RangeError('APDU: data or Le too long');
  const head = [c.cla ?? CLA, c.ins, c.p1 ?? 0, c.p2 ?? 0];
  const extended = data.length > 255 || le > 256;
  const out: number[] = [...head];
  if (data.length) {
    if (extended) out.push(0, data.length >> 8, data.length & 0xff);
    else out.push(data.length);
  }
  const body = Uint8Array.from(out);
  let tail: number[] = [];
  if (le) {
    const v = le === (extended ? 65536 : 256) ? 0 : le;
    tail = extended ? (data.length ? [v >> 8, v & 0xff] : [0, v >> 8, v & 0xff]) : [v];
  }
  const r = new Uint8Array(body.length + data.length + tail.length);
  r.set(body);
  r.set(data, body.length);
  r.set(tail, body.length + data.length);
  return r;
}

/** Parses a command APDU (ISO 7816-4 §5.1 cases 1-4, short and extended); null if malformed. */
export function parseCommand(a: Uint8Array): Command | null {
  if (!(a instanceof Uint8Array) || a.length < 4) return null;
  const [cla, ins, p1, p2] = [a[0]!, a[1]!, a[2]!, a[3]!];
  const n = a.length - 4;
  const b = a.subarray(4);
  const empty = new Uint8Array(0);
  if (n === 0) return { cla, ins, p1, p2, data: empty, le: 0 }; // case 1
  if (n === 1) return { cla, ins, p1, p2, data: empty, le: b[0] || 256 }; // case 2S
  if (b[0] !== 0) {
    // Short: Lc then data, then maybe Le.
    const lc = b[0]!;
    if (n === 1 + lc) return { cla, ins, p1, p2, data: b.slice(1, 1 + lc), le: 0 }; // 3S
    if (n === 2 + lc) return { cla, ins, p1, p2, data: b.slice(1, 1 + lc), le: b[1 + lc] || 256 }; // 4S
    return null;
  }
  if (n === 3) return { cla, ins, p1, p2, data: empty, le: ((b[1]! << 8) | b[2]!) || 65536 }; // 2E
  if (n < 3) return null;
  const lc = (b[1]! << 8) | b[2]!;
  if (lc === 0) return null;
  if (n === 3 + lc) return { cla, ins, p1, p2, data: b.slice(3, 3 + lc), le: 0 }; // 3E
  if (n === 5 + lc) return { cla, ins, p1, p2, data: b.slice(3, 3 + lc), le: ((b[3 + lc]! << 8) | b[4 + lc]!) || 65536 }; // 4E
  return null;
}

export function encodeResponse(data: Uint8Array, sw: number): Uint8Array {
  const r = new Uint8Array(data.length + 2);
  r.set(data);
  r[data.length] = sw >> 8;
  r[data.length + 1] = sw & 0xff;
  return r;
}

export function parseResponse(r: Uint8Array): { data: Uint8Array; sw: number } {
  if (r.length < 2) return { data: new Uint8Array(0), sw: SW.noDiagnosis };
  return { data: r.slice(0, r.length - 2), sw: (r[r.length - 2]! << 8) | r[r.length - 1]! };
}
