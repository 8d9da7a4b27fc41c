// Test support for the gateway's own tests: stub upstream servers on the real link protocol
// (server-kit/host.ts) that record each session and echo or swallow its frames, and the device
// side's small waits (an error frame's code with the close code, a connection in sequence).
import * as assert from 'uvu/assert';
import { startHost, type Host } from '../server-kit/host.ts';
import { linkKeyFor } from '../server-kit/link.ts';
import { FrameSocket } from '../server-kit/test-device.ts';
import type { SessionTransport } from '../server-kit/session.ts';
import { encodeEnvelope, decodeEnvelope, parseError, isSessionsFrame, sessionsFrame, MsgType } from '../protocol/messages.ts';

/** A `finish` envelope to `dest` (any 32 bytes will do for a stub), a frame any upstream takes. */
export const finish = (dest: string, seq = 0, fill = 0): Uint8Array => encodeEnvelope(MsgType.finish, seq, dest, [new Uint8Array(32).fill(fill)]);

/** One link session a stub upstream saw: its transport (observed IP, send, close), the frames, whether it closed. */
export interface StubSession { dest: string; t: SessionTransport; frames: Uint8Array[]; closed: boolean }

/**
 * A stub upstream named `name` with the link key of `root` (unless `linkKey`): every session is
 * pushed on `sessions`; each frame is recorded, told to `onFrame`, and echoed back when `reply`.
 */
export function stubUpstream(root: Uint8Array, name: string, o: { reply: boolean; sessions: StubSession[]; linkKey?: Uint8Array; onFrame?: (s: StubSession, f: Uint8Array) => void }): Promise<Host> {
  return startHost({
    name, host: '127.0.0.1', devicePort: null, linkPort: 0, linkKey: o.linkKey ?? linkKeyFor(root, name),
    factory: (t) => {
      const s: StubSession = { dest: name, t, frames: [], closed: false };
      o.sessions.push(s);
      return {
        onFrame(f) {
          s.frames.push(f);
          o.onFrame?.(s, f);
          if (o.reply) t.send(f);
        },
        onClose() {
          s.closed = true;
        },
      };
    },
  });
}

/** The code of the first error frame among `frames` (frames that do not decode are skipped), or null. */
export function errorCodeOf(frames: Uint8Array[]): string | null {
  for (const f of frames) {
    try {
      const env = decodeEnvelope(f);
      if (env.type === MsgType.error) return parseError(env.body).code;
    } catch {
      /* not an envelope: not the error frame */
    }
  }
  return null;
}

/** Waits for the connection's close: the code of the error frame before it (if any) and the close code. */
export async function closedWith(s: FrameSocket): Promise<{ code: string | null; close: number }> {
  const c = await s.closed();
  return { code: errorCodeOf(c.frames), close: c.code };
}

/** A device connection to `url` that asked for sessions in sequence (docs/protocol.md §2.1) and got the answer. */
export async function inSequence(url: string): Promise<FrameSocket> {
  const s = await FrameSocket.connect(url);
  s.send(sessionsFrame());
  assert.ok(isSessionsFrame((await s.frame()).frame), 'the gateway answers sessions');
  return s;
}

/** Polls `ok` every 5 ms until it holds; throws naming `what` after `ms`. */
export async function until(ok: () => boolean, ms = 3_000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`${what}: not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
