// What the gateway checks on every device frame before forwarding it (S0.7): binary, within
// the size limit, strict CBOR within the protocol limits, a well-formed envelope, a type a
// device may send, and the clear handshake bodies' shapes; sealed bodies must at least be
// byte strings holding a tag (the gateway cannot open them: only the server can). Nothing
// that fails any check is forwarded.
import { decodeEnvelope, parseHello, parseLogin, parseFinish, parseError, parseSessionEnd, MsgType, type Envelope } from '../protocol/messages.ts';
import { ProtocolError, CloseCode } from '../protocol/errors.ts';

/** Types a device may send; the rest are server-to-device only. */
export const DEVICE_TYPES: ReadonlySet<number> = new Set([
  MsgType.hello, MsgType.finish, MsgType.credRequest, MsgType.login, MsgType.pwConfirm, MsgType.error,
  // The bank's requests (S4, protocol/bank.ts), sealed on the business login's channel.
  MsgType.bankRegister, MsgType.bankLogin, MsgType.bankRebind,
  // Sessions in sequence (docs/protocol.md §2.1): to the gateway itself, never forwarded.
  MsgType.sessions, MsgType.sessionEnd,
]);

export function validateDeviceFrame(frame: Uint8Array, isBinary: boolean, maxFrameBytes: number): Envelope {
  if (!isBinary) throw new ProtocolError('GW_TEXT_FRAME', 'frames are binary CBOR, not text');
  if (frame.length > maxFrameBytes) throw new ProtocolError('GW_FRAME_TOO_LARGE', `frame of ${frame.length} bytes > ${maxFrameBytes}`);
  const env = decodeEnvelope(frame);
  if (!DEVICE_TYPES.has(env.type)) throw new ProtocolError('GW_BAD_DIRECTION', `type ${env.type} is not sent by devices`);
  switch (env.type) {
    case MsgType.hello:
      parseHello(env.body);
      break;
    case MsgType.login:
      parseLogin(env.body);
      break;
    case MsgType.finish:
      parseFinish(env.body);
      break;
    case MsgType.error:
      parseError(env.body);
      break;
    case MsgType.sessions:
      if (env.seq !== 0 || env.dest !== 'gateway' || !Array.isArray(env.body) || env.body.length !== 0) throw new ProtocolError('MSG_BAD_FIELD', 'sessions is [1, 51, 0, "gateway", []]');
      break;
    case MsgType.sessionEnd: {
      // A device ends a session only normally, with [1000, ""] (§2.1 rule 4): the connection goes
      // on after it, so a body that says anything else was altered on the way (or is a bug).
      const e = parseSessionEnd(env);
      if (e.code !== CloseCode.normal || e.reason !== '') throw new ProtocolError('MSG_BAD_FIELD', 'a device\'s sessionEnd is [1000, ""]');
      break;
    }
    default:
      if (!(env.body instanceof Uint8Array) || env.body.length < 16) throw new ProtocolError('GW_BAD_BODY', 'a sealed body must be a byte string holding at least a tag');
  }
  return env;
}

/** The type of a frame the gateway forwards from a server, read from its first bytes. */
export function peekType(frame: Uint8Array): number {
  // [1, type, ...]: 0x85 0x01 then the type as a uint (one byte, or 0x18 + one byte).
  if (frame.length < 3 || frame[0] !== 0x85 || frame[1] !== 0x01) return -1;
  const t = frame[2]!;
  if (t < 24) return t;
  return t === 0x18 && frame.length > 3 ? frame[3]! : -1;
}
