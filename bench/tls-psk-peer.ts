// The TLS 1.3 peer of bench/login-cost.bench.ts, in its own process (as our servers are): what a
// user could run instead of our protocol. Two listeners on loopback, both TLS 1.3 with an
// external PSK (RFC 8446 §2.2, node:tls pskCallback; SHA-256 suites only, as OpenSSL requires
// for an external PSK without a hash of its own):
//   tls  a bare TLS 1.3 PSK server: reads one message, answers one, closes
//   ws   the same TLS under an HTTPS server with a WebSocket upgrade (the ws package, as our
//        gateway uses): one message each way, then close
//   plain  a WebSocket on plain HTTP, as `serve all` listens on loopback: a message whose first
//        byte is 1 is echoed, any other is taken without an answer, until the client closes (the
//        transport our login needs: one upgrade, its frames and round trips, a close handshake;
//        no crypto, no storage)
// Prints one JSON line {tls, ws, plain} with the ports, then serves until killed.
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createHttpServer } from 'node:http';
import { WebSocketServer } from 'ws';

export const PSK_CIPHERS = 'TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256';
export const PSK_IDENTITY = 'usbphone-bench';
/** The bench's fixed key: a benchmark peer, not a secret. */
export const PSK = Buffer.alloc(32, 0x42);

const tlsOpts = {
  minVersion: 'TLSv1.3' as const,
  ciphers: PSK_CIPHERS,
  pskCallback: (_s: TLSSocket, identity: string) => (identity === PSK_IDENTITY ? PSK : null),
};

if (import.meta.url === `file://${process.argv[1]}`) {
  const bare = createTlsServer(tlsOpts, (s) => {
    s.once('data', (d) => s.end(d));
    s.on('error', () => {});
  });
  const https = createHttpsServer(tlsOpts);
  const wss = new WebSocketServer({ server: https, perMessageDeflate: false, maxPayload: 64 * 1024 });
  wss.on('connection', (ws) => {
    ws.once('message', (d) => {
      ws.send(d as Buffer);
      ws.close();
    });
    ws.on('error', () => {});
  });
  const http = createHttpServer();
  const plain = new WebSocketServer({ server: http, perMessageDeflate: false, maxPayload: 64 * 1024 });
  plain.on('connection', (ws) => {
    ws.on('message', (d: Buffer) => {
      if (d[0] === 1) ws.send(d);
    });
    ws.on('error', () => {});
  });
  await Promise.all([bare, https, http].map((s) => new Promise<void>((r) => s.listen(0, '127.0.0.1', r))));
  const port = (s: { address(): unknown }) => (s.address() as { port: number }).port;
  process.stdout.write(JSON.stringify({ tls: port(bare), ws: port(https), plain: port(http) }) + '\n');
}
