// One HTTP(S) POST whose whole answer must arrive within a deadline and a size bound: what the
// admin client (admin-rpc.ts) and the operator client (operator-client.ts) both need from a
// server-to-server call. Failures are data (BoundedPostError.kind); each client turns them
// into its own codes.
import { request as httpRequest, type Agent as HttpAgent } from 'node:http';
import { request as httpsRequest, type Agent as HttpsAgent } from 'node:https';

export type PostFailure = 'timeout' | 'network' | 'too-large' | 'lost';

export class BoundedPostError extends Error {
  override readonly name = 'BoundedPostError';
  /** `network`: no connection or a refused one (`code`: the socket/TLS error code); `lost`: mid-answer. */
  constructor(readonly kind: PostFailure, readonly code: string | undefined, message: string) {
    super(message);
  }
}

export interface BoundedPost {
  url: URL;
  /** Path and query (default the URL's). */
  path?: string;
  agent: HttpAgent | HttpsAgent;
  headers: Record<string, string | number>;
  body: Uint8Array | string;
  /** Milliseconds for connecting, the answer and its whole body. */
  timeoutMs: number;
  /** Largest body accepted, bytes. */
  maxBytes: number;
}

/** Resolves with the status and the whole body; rejects with BoundedPostError. */
export function boundedPost(o: BoundedPost): Promise<{ status: number; body: Uint8Array }> {
  return new Promise((resolve, reject) => {
    if (o.timeoutMs <= 0) return reject(new BoundedPostError('timeout', undefined, 'no time left'));
    const tls = o.url.protocol === 'https:';
    let settled = false;
    const done = (e: BoundedPostError | null, r?: { status: number; body: Uint8Array }) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (e) {
        req.destroy();
        reject(e);
      } else resolve(r!);
    };
    const req = (tls ? httpsRequest : httpRequest)({
      agent: o.agent as never, method: 'POST', host: o.url.hostname.replace(/^\[|\]$/g, ''), port: o.url.port || (tls ? 443 : 80),
      path: o.path ?? o.url.pathname + o.url.search, headers: { 'content-length': Buffer.byteLength(o.body), ...o.headers },
    });
    const timer = setTimeout(() => done(new BoundedPostError('timeout', undefined, `no answer within ${o.timeoutMs} ms`)), o.timeoutMs);
    req.on('error', (e: NodeJS.ErrnoException) => done(new BoundedPostError('network', e.code, e.code ?? e.message)));
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > o.maxBytes) return done(new BoundedPostError('too-large', undefined, `answer larger than ${o.maxBytes} bytes`));
        chunks.push(c);
      });
      res.on('end', () => done(null, { status: res.statusCode ?? 0, body: new Uint8Array(Buffer.concat(chunks)) }));
      res.on('error', (e) => done(new BoundedPostError('lost', undefined, `connection lost mid-answer (${e.message})`)));
      res.on('aborted', () => done(new BoundedPostError('lost', undefined, 'connection lost mid-answer')));
    });
    req.end(o.body);
  });
}
