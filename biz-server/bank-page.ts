// The account page in a browser (S4.7, S4.8): GET /bank/page/<token>, the token a bankPage
// handed the phone (32 random bytes, base64url; short-lived, good for this page only, kept
// in the store as a hash). Everything it prints is escaped; the page loads nothing else
// (CSP default-src 'none'), is never cached and sends no Referer. Unknown token: 404;
// expired: 401; any other path: 404; any other method: 405.
import type { IncomingMessage, ServerResponse, RequestListener } from 'node:http';
import type { Bank } from './bank.ts';
import type { LineIds } from '../protocol/bank-messages.ts';

export const PAGE_PATH = '/bank/page/';
const TOKEN_RE = /^[A-Za-z0-9_-]{43}$/;

/** HTML escaping of text and attribute values (the five characters that matter). */
export function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const HEADERS = {
  'content-type': 'text/html; charset=utf-8',
  'cache-control': 'no-store',
  'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'",
  'referrer-policy': 'no-referrer',
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
};

function doc(title: string, body: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title>` +
    '<style>body{font:15px system-ui,sans-serif;margin:2em;max-width:40em}table{border-collapse:collapse}td,th{padding:.2em .8em;text-align:left;border-bottom:1px solid #ddd}</style>' +
    `</head><body>${body}</body></html>\n`;
}

function idRows(ids: LineIds): string {
  const rows: [string, string][] = ids.idKind === 'card' ? [['bank card', ids.cardId]] : [['ICCID', ids.iccid], ['IMSI', ids.imsi], ['phone number', ids.msisdn ?? '(not bound)']];
  return rows.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`).join('');
}

/** The request handler of the bank's HTTP port. */
export function bankPageHandler(bank: Bank): RequestListener {
  return (req: IncomingMessage, res: ServerResponse) => {
    const send = (status: number, title: string, body: string, extra: Record<string, string> = {}) => {
      res.writeHead(status, { ...HEADERS, ...extra });
      res.end(req.method === 'HEAD' ? undefined : doc(title, body));
    };
    const path = (req.url ?? '').split('?')[0]!;
    if (!path.startsWith(PAGE_PATH)) return send(404, 'Not found', '<h1>Not found</h1>');
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'Method not allowed', '<h1>Method not allowed</h1>', { allow: 'GET, HEAD' });
    const t = path.slice(PAGE_PATH.length);
    void (TOKEN_RE.test(t) ? bank.page(Buffer.from(t, 'base64url')) : Promise.resolve(null)).then(
      (page) => {
        if (page === null) return send(404, 'Not found', '<h1>No such page</h1><p>This link is not valid.</p>');
        if (page === 'expired') return send(401, 'Expired', '<h1>This link has expired</h1><p>Log in again on the phone for a new one.</p>');
        const logins = page.lastLogins.map((l) => `<tr><td>${esc(new Date(l.at).toISOString())}</td><td>mode ${l.mode}</td></tr>`).join('');
        send(200, 'Your account', `<h1>Your account</h1><p>Account <strong id="account">${esc(page.account)}</strong></p>` +
          `<h2>Bound line</h2><table id="binding">${idRows(page.ids)}<tr><th>bound at</th><td>${esc(new Date(page.boundAt).toISOString())}</td></tr></table>` +
          `<h2>Last logins</h2><table id="logins">${logins}</table>`);
      },
      // The store failed (a corrupt row, PostgreSQL unreachable): nothing of it to the browser.
      () => send(500, 'Error', '<h1>Something went wrong</h1><p>Try again later.</p>'),
    );
  };
}
