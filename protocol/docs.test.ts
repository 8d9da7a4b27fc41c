// The protocol's documents must say what the code does: every error code of protocol/ is
// listed in docs/errors.md with its class; the CDDL of docs/protocol.md gives each message
// the type number of MsgType; its limits table gives the values of limits.ts; and every test
// cited by docs/protocol.md and docs/features.md exists under that exact name.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, readdirSync } from 'node:fs';
import { MsgType, SEALED_TYPES, DEST_RE, USER_RE, URL_RE, text } from './messages.ts';
import { SERIAL_RE } from './keys.ts';
import { Limits } from './limits.ts';
import { ERRORS, retryClass, type ErrorCode } from './errors.ts';

const root = new URL('../', import.meta.url);
const read = (p: string) => readFileSync(new URL(p, root), 'utf8');
const sources = readdirSync(new URL('protocol/', root)).filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts'));

test('docs/errors.md lists every code protocol/ can throw, with its class', () => {
  const errors = read('docs/errors.md');
  const rows = new Map<string, string>();
  for (const m of errors.matchAll(/^\| `([A-Z0-9_]+)` \| (ProtocolError|ImplementationError|TimeoutError) \|/gm)) rows.set(m[1]!, m[2]!);
  let n = 0;
  for (const f of sources) {
    const src = read(`protocol/${f}`);
    // Codes appear as string literals next to the class that carries them.
    for (const m of src.matchAll(/(ProtocolError|ImplementationError)\('([A-Z][A-Z0-9_]+)'/g)) {
      assert.is(rows.get(m[2]!), m[1], `${m[2]} (protocol/${f}) in docs/errors.md as ${m[1]}`);
      n++;
    }
    for (const m of src.matchAll(/\b(?:fail|refuse|bad)\('([A-Z][A-Z0-9_]+)'/g)) {
      assert.is(rows.get(m[1]!), 'ProtocolError', `${m[1]} (protocol/${f}) in docs/errors.md as ProtocolError`);
      n++;
    }
  }
  assert.is(rows.get('TIMEOUT'), 'TimeoutError');
  assert.ok(n > 60, `${n} throw sites`);
});

test('docs/errors.md agrees with the error table: every code, its close code, its retry class', () => {
  const errors = read('docs/errors.md');
  const rows = new Map<string, { cls: string; outcome: string }>();
  for (const m of errors.matchAll(/^\| `([A-Z0-9_]+)`[^|]*\|(.*)\|$/gm)) {
    const cells = m[2]!.split('|').map((c) => c.trim());
    rows.set(m[1]!, { cls: cells.length >= 3 ? cells[0]! : '', outcome: cells.at(-1)! });
  }
  for (const [code, spec] of Object.entries(ERRORS)) {
    const row = rows.get(code);
    assert.ok(row, `${code} has a row in docs/errors.md`);
    const closes = [...row!.outcome.matchAll(/\b(1000|1001|1002|1003|1007|1008|1009|1011|1013)\b/g)].map((m) => Number(m[1]));
    // The admin API answers over HTTP and a saved record is local: no WebSocket close.
    if (!code.startsWith('ADMIN_') && code !== 'SAVED_VERSION') assert.ok(closes.includes(spec.close), `${code}: docs say '${row!.outcome}', the table closes ${spec.close}`);
  }
  // Every ProtocolError row names a code of the table (the class carries its close code).
  for (const [code, row] of rows) if (row.cls === 'ProtocolError') assert.ok(code in ERRORS, `${code} is a ProtocolError in the docs but not in ERRORS`);
  // The retry section lists exactly the codes of each class but 'never'.
  const section = /## Retry classes\n([\s\S]*?)\n## /.exec(errors)?.[1] ?? '';
  for (const cls of ['later', 'other-server'] as const) {
    const line = new RegExp(`^- \`${cls}\`: (.*)$`, 'm').exec(section)?.[1] ?? '';
    const listed = [...line.matchAll(/`([A-Z0-9_]+)`/g)].map((m) => m[1]!).sort();
    const want = (Object.keys(ERRORS) as ErrorCode[]).filter((c) => retryClass(c) === cls).sort();
    assert.equal(listed, want, `retry class ${cls}`);
  }
  assert.is(retryClass('NO_SUCH_CODE'), 'never');
});

test('docs/protocol.md: the CDDL gives every message its MsgType number', () => {
  const doc = read('docs/protocol.md');
  const cddl = [...doc.matchAll(/```cddl\n([\s\S]*?)```/g)].map((m) => m[1]).join('\n');
  const numbered = new Map<string, number>();
  for (const m of cddl.matchAll(/^([\w-]+)\s*= \[version, (\d+), seq, dest,/gm)) numbered.set(m[1]!, Number(m[2]));
  const sealed = /^sealed-type\s*= ([\d /]+)$/m.exec(cddl)![1]!.split('/').map((x) => Number(x.trim()));
  assert.equal(sealed.sort((a, b) => a - b), [...SEALED_TYPES].sort((a, b) => a - b));
  for (const [name, t] of Object.entries(MsgType)) {
    if (SEALED_TYPES.has(t)) {
      assert.match(cddl, new RegExp(`^${name}\\s*= \\[`, 'm'), `inner message ${name} has a CDDL rule`);
    } else {
      const cddlName = name === 'error' ? 'error-frame' : name;
      assert.is(numbered.get(cddlName), t, `${cddlName} = [version, ${t}, ...]`);
    }
  }
  // ... and the table of types agrees.
  for (const [name, t] of Object.entries(MsgType)) assert.match(doc, new RegExp(`^\\| ${t} \\| ${name} \\|`, 'm'), `type table row ${t} ${name}`);
});

test('docs/protocol.md: each CDDL .regexp admits exactly what the code admits', () => {
  const cddl = [...read('docs/protocol.md').matchAll(/```cddl\n([\s\S]*?)```/g)].map((m) => m[1]).join('\n');
  const re = (name: string) => {
    const m = new RegExp(`^\\s*${name}\\s*[:=] tstr \\.regexp "([^"]+)"`, 'm').exec(cddl);
    assert.ok(m, `${name} has a .regexp`);
    return new RegExp(`^(?:${m![1]})$`); // RFC 8610 .regexp is XSD: anchored
  };
  const accepts = (f: () => unknown) => {
    try {
      f();
      return true;
    } catch {
      return false;
    }
  };
  const code: Record<string, (s: string) => boolean> = {
    dest: (s) => DEST_RE.test(s),
    user: (s) => USER_RE.test(s),
    serial: (s) => SERIAL_RE.test(s),
    localIp: (s) => accepts(() => text(s, 'ip', 45, /^[0-9a-fA-F:.]+$/)),
    url: (s) => accepts(() => text(s, 'url', 256, URL_RE)),
  };
  const samples = ['', 'a', 'A', '0', '-', 'a-', '-a', 'a_b', 'a.b', 'a b', 'reg-primary', 'SN-0000001', 'dev.1_x-Y', '127.1.0.5', '::1', 'fe80::1%eth0',
    'ws://a', 'wss://a', 'ws://', 'WS://a', 'http://a', 'ws://a b', 'ws://\u00e9', 'wss://127.0.0.1:7101/biz?x=1', 'ws:/a', '\u00e9',
    ...[31, 32, 33, 44, 45, 46, 63, 64, 65].map((n) => 'a'.repeat(n)), ...[250, 251, 252].map((n) => 'ws://' + 'a'.repeat(n)),
    ...[249, 250, 251].map((n) => 'wss://' + 'a'.repeat(n)), '1'.repeat(45), '1'.repeat(46)];
  for (const [name, f] of Object.entries(code)) {
    const r = re(name);
    for (const s of samples) assert.is(r.test(s), f(s), `${name}: ${JSON.stringify(s.length > 20 ? `${s.slice(0, 12)}...(${s.length})` : s)}`);
  }
});

test('docs/protocol.md: the limits table gives the values of limits.ts', () => {
  const doc = read('docs/protocol.md');
  for (const [k, v] of Object.entries(Limits)) {
    const m = new RegExp(`^\\| \`${k}\` \\| (\\d+) \\|`, 'm').exec(doc);
    assert.ok(m, `limit ${k} in the table`);
    assert.is(Number(m![1]), v, k);
  }
});

test('every test cited in docs/protocol.md and docs/features.md exists under that name', () => {
  let n = 0;
  for (const doc of ['docs/protocol.md', 'docs/features.md']) {
    const text = read(doc);
    // A citation: `protocol/x.test.ts`: "name", "name", ...
    for (const m of text.matchAll(/`(protocol\/[\w.]+\.test\.ts)`: ((?:"[^"]+"(?:, )?)+)/g)) {
      const src = read(m[1]!);
      for (const name of m[2]!.matchAll(/"([^"]+)"/g)) {
        assert.ok(src.includes(`test('${name[1]}'`) || src.includes(`test("${name[1]}"`), `${doc}: ${m[1]} has no test named "${name[1]}"`);
        n++;
      }
    }
  }
  assert.ok(n >= 30, `${n} citations`);
});

test.run();
