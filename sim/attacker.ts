// The attackers of the S3 stories (sim/attack-scenarios.ts): a password-guessing bot on its own
// loopback address (127.66.x.y: no phone of a world has one, sim/world.ts phoneIp) opens one
// WebSocket per guess through the gateway and sends a login opening of one mechanism to one
// site, as a phone's would look on the wire (docs/protocol.md §"Login"): the mechanism and the
// user in clear, a nonce and a MAC it cannot compute (random bytes). The site refuses each
// guess; the gateway counts the openings (S3.4) before any server has looked at them.
// Not emulated: a bot that completes the handshake (it has no device key), TLS, IPv6 /64s.
import { WebSocket } from 'ws';
import { randomBytes } from 'node:crypto';
import { encodeEnvelope, MsgType, type Mechanism } from '../protocol/messages.ts';

/** The address of attacker `i` (0..65535): 127.66.0.1, 127.66.0.2, ... */
export function attackerIp(i: number): string {
  if (!Number.isInteger(i) || i < 0 || i > 65_535) throw new RangeError(`attackerIp: i = ${i}`);
  return `127.66.${Math.floor(i / 254)}.${1 + (i % 254)}`;
}

/** One guess's login opening [mech, user, gen, ext, nonce, mac] for `site` (the MAC is random: a guess). */
export function guessFrame(site: string, mech: Mechanism, user = 'admin'): Uint8Array {
  return encodeEnvelope(MsgType.login, 0, site, [mech, user, 1, new Map(), randomBytes(32), randomBytes(32)]);
}

/**
 * `n` guesses from `ip` at `site` with `mech`, one connection each, all at once; resolves when
 * the gateway has answered or closed every one (each socket is then terminated), or after
 * `timeoutMs` (then the ones left are terminated). Returns how many were sent.
 */
export async function loginBurst(gatewayUrl: string, ip: string, site: string, mech: Mechanism, n: number, timeoutMs = 5_000): Promise<number> {
  const one = () =>
    new Promise<number>((resolve) => {
      const ws = new WebSocket(gatewayUrl, { localAddress: ip, perMessageDeflate: false, handshakeTimeout: timeoutMs });
      let sent = 0;
      const end = () => {
        clearTimeout(timer);
        ws.terminate();
        resolve(sent);
      };
      const timer = setTimeout(end, timeoutMs);
      ws.on('open', () => {
        ws.send(guessFrame(site, mech), (err) => {
          if (!err) sent = 1;
        });
      });
      // The first answer (the site's refusal) or a close: the gateway has taken the opening.
      ws.on('message', end);
      ws.on('close', end);
      ws.on('error', end);
    });
  const r = await Promise.all(Array.from({ length: n }, one));
  return r.reduce((a, b) => a + b, 0);
}

/**
 * Bots at `ips` guessing `mech` at `site` in bursts of `burst` every `everyMs`, until stop().
 * `sent` counts the guesses sent so far.
 */
export function startAttack(gatewayUrl: string, ips: readonly string[], site: string, mech: Mechanism, burst: number, everyMs: number): { stop(): Promise<void>; readonly sent: number } {
  let stopped = false;
  let sent = 0;
  const loops = ips.map(async (ip) => {
    while (!stopped) {
      const t0 = Date.now();
      sent += await loginBurst(gatewayUrl, ip, site, mech, burst);
      const wait = everyMs - (Date.now() - t0);
      if (wait > 0 && !stopped) await new Promise((r) => setTimeout(r, wait));
    }
  });
  return {
    get sent() {
      return sent;
    },
    async stop() {
      stopped = true;
      await Promise.all(loops);
    },
  };
}
