// The live page's routes on the gateway's operator port (beside /healthz and /metrics):
//   GET /                 page/index.html
//   GET /page.js, /page.css
//   GET /vendor/uplot/... uPlot's ES module and CSS, served as is from node_modules
//   GET /feed[?phone=IP]  the hub's messages as server-sent events (text/event-stream)
// Read-only: nothing the page sends changes anything but which phone's trace it receives.
// The page loads only these files (Content-Security-Policy 'self'), no inline script.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import type { FeedHub } from './feed-hub.ts';
import type { FeedMessage } from './feed-schema.ts';

const pageDir = join(dirname(fileURLToPath(import.meta.url)), '..', 'page');
const uplotDir = dirname(createRequire(import.meta.url).resolve('uplot/dist/uPlot.esm.js'));

/** Path -> [file, content type]: the only files served. */
const FILES: Record<string, [string, string]> = {
  '/': [join(pageDir, 'index.html'), 'text/html; charset=utf-8'],
  '/index.html': [join(pageDir, 'index.html'), 'text/html; charset=utf-8'],
  '/page.js': [join(pageDir, 'page.js'), 'text/javascript; charset=utf-8'],
  '/page.css': [join(pageDir, 'page.css'), 'text/css; charset=utf-8'],
  '/vendor/uplot/uPlot.esm.js': [join(uplotDir, 'uPlot.esm.js'), 'text/javascript; charset=utf-8'],
  '/vendor/uplot/uPlot.min.css': [join(uplotDir, 'uPlot.min.css'), 'text/css; charset=utf-8'],
};

export interface PageLimits {
  /** Open feeds at once; more get 503. */
  maxFeeds: number;
  /** Bytes queued to one feed before it is dropped as a slow reader (its page reconnects). */
  maxQueuedBytes: number;
  /** A comment line this often keeps proxies and the page's watchdog content. */
  heartbeatMs: number;
}
export const PageDefaults: PageLimits = { maxFeeds: 16, maxQueuedBytes: 1 << 20, heartbeatMs: 5_000 };

const IP_RE = /^[0-9a-fA-F.:]{2,45}$/;
const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};

/** The operator-port routes of the page and its feed (for GatewayConfig.operatorRoutes). */
export function pageRoutes(hub: FeedHub, limits: Partial<PageLimits> = {}): { routes: (req: IncomingMessage, res: ServerResponse) => boolean; feeds(): number } {
  const L = { ...PageDefaults, ...limits };
  const cache = new Map<string, Buffer>();
  const open = new Set<ServerResponse>();
  hub.onClose(() => {
    for (const res of open) res.end();
    open.clear();
  });

  const feed = (req: IncomingMessage, res: ServerResponse, url: URL) => {
    if (!hub.isOpen || open.size >= L.maxFeeds) {
      res.writeHead(503, { 'content-type': 'text/plain', 'retry-after': '1', ...SECURITY_HEADERS }).end(hub.isOpen ? 'too many feeds open\n' : 'the feed is stopped\n');
      return;
    }
    const phone = url.searchParams.get('phone');
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no', ...SECURITY_HEADERS });
    res.write('retry: 1000\n\n');
    open.add(res);
    const write = (m: FeedMessage) => {
      if (res.writableLength > L.maxQueuedBytes) return void res.destroy();
      res.write(`data: ${JSON.stringify(m)}\n\n`);
    };
    const unsubscribe = hub.subscribe(write, { phone: phone && IP_RE.test(phone) ? phone : null });
    const beat = setInterval(() => res.write(': beat\n\n'), L.heartbeatMs);
    beat.unref();
    const end = () => {
      clearInterval(beat);
      unsubscribe?.();
      open.delete(res);
    };
    res.once('close', end);
    req.socket.setTimeout(0);
  };

  const routes = (req: IncomingMessage, res: ServerResponse): boolean => {
    const url = new URL(req.url ?? '/', 'http://page.invalid');
    if (url.pathname === '/feed') {
      if (req.method !== 'GET') return void res.writeHead(405, { allow: 'GET' }).end(), true;
      feed(req, res, url);
      return true;
    }
    // Browsers ask for it unbidden; there is none.
    if (url.pathname === '/favicon.ico') return void res.writeHead(204).end(), true;
    const f = FILES[url.pathname];
    if (!f) return false;
    if (req.method !== 'GET' && req.method !== 'HEAD') return void res.writeHead(405, { allow: 'GET, HEAD' }).end(), true;
    let body = cache.get(f[0]);
    if (!body) cache.set(f[0], (body = readFileSync(f[0])));
    res.writeHead(200, { 'content-type': f[1], 'content-length': body.length, 'cache-control': 'no-cache', ...SECURITY_HEADERS });
    res.end(req.method === 'HEAD' ? undefined : body);
    return true;
  };
  return { routes, feeds: () => open.size };
}
