// The layering rules of docs/architecture.md §"Folders", checked on the real import graph of
// every non-test .ts file (relative imports and node:* imports, `import type` included: a
// type import is still a dependency a reader must follow). The checker itself is tested on
// synthetic graphs, so a rule that can never fire is caught too.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, dirname, relative, normalize } from 'node:path';

const root = join(import.meta.dirname, '..');
/**
 * path (relative to the root, '/'-separated) -> what it imports: other files by path, or
 * 'node:x'. A lazy import (`import('...')`, loaded when called) is marked with a leading '~':
 * it obeys the layering rules but cannot close a cycle, since both modules are loaded by
 * then (cli/main.ts loads its subcommands so, and they import its Command type).
 */
type Graph = Map<string, string[]>;
const lazy = (to: string) => to.startsWith('~');
const target = (to: string) => to.replace(/^~/, '');

const ROLES = ['gateway', 'reg-server', 'biz-server', 'policy-server', 'operator-server'];
/** The folders that may compose several roles (and import anything). */
const COMPOSERS = ['deploy', 'sim', 'cli', 'bench'];
const top = (p: string) => p.split('/')[0]!;

function sources(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules' || name.startsWith('.')) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) sources(p, out);
    else if (name.endsWith('.ts') && !name.endsWith('.test.ts')) out.push(relative(root, p).split('\\').join('/'));
  }
  return out;
}

/** Every `from '...'` / `import '...'` specifier of a file, and `import('...')` ones marked '~' (comments stripped). */
export function specifiers(src: string): string[] {
  const code = src.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  return [...code.matchAll(/(?:\bfrom\s*|(\bimport\s*\(\s*)|^\s*import\s+)['"]([^'"]+)['"]/gm)].map((m) => (m[1] ? '~' : '') + m[2]!);
}

function realGraph(): Graph {
  const g: Graph = new Map();
  for (const f of sources(root)) {
    const deps: string[] = [];
    for (const spec of specifiers(readFileSync(join(root, f), 'utf8'))) {
      const s = target(spec);
      const mark = lazy(spec) ? '~' : '';
      if (s.startsWith('node:')) deps.push(mark + s);
      else if (s.startsWith('.')) deps.push(mark + normalize(join(dirname(f), s)).split('\\').join('/'));
    }
    g.set(f, deps);
  }
  return g;
}

/** Every rule broken by one import edge, as readable lines. */
function edgeViolations(from: string, to: string): string[] {
  const a = top(from);
  const bad = (why: string) => [`${from} -> ${to}: ${why}`];
  if (to.startsWith('node:')) {
    // Firmware code runs on the device: only its host tools and the node HAL touch node:*.
    if (a === 'firmware' && !from.startsWith('firmware/host/') && !from.startsWith('firmware/hal/node/')) return bad('firmware imports no node:* module outside firmware/host/ and firmware/hal/node/');
    return [];
  }
  const b = top(to);
  if (a === b) return [];
  if (a === 'protocol') return bad('protocol/ imports nothing of ours outside protocol/');
  if (a === 'server-kit' && b !== 'protocol') return bad('server-kit/ imports only protocol/ and itself');
  if (a === 'firmware' && b !== 'protocol') return bad('firmware/ imports only firmware/ and protocol/');
  // The conformance suite treats its target as a black box: the wire, and nothing of a server.
  if (a === 'conformance' && b !== 'protocol') return bad('conformance/ imports only conformance/ and protocol/');
  if (ROLES.includes(a) && ROLES.includes(b)) return bad('a role folder never imports another role folder');
  if (!COMPOSERS.includes(a) && COMPOSERS.includes(b)) return bad(`only ${COMPOSERS.join(', ')} compose roles; nothing imports them`);
  return [];
}

/** Cycles of the graph (Tarjan's strongly connected components of more than one file, or a self-import). */
function cycles(g: Graph): string[][] {
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const on = new Set<string>();
  const out: string[][] = [];
  const visit = (v: string): void => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    on.add(v);
    for (const w of g.get(v) ?? []) {
      if (lazy(w) || !g.has(w)) continue;
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        on.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || (g.get(v) ?? []).includes(v)) out.push(scc.sort());
    }
  };
  for (const v of [...g.keys()].sort()) if (!idx.has(v)) visit(v);
  return out;
}

/** Firmware code that runs on the device (not its node HAL, not its host tools). */
const deviceCode = (f: string) => top(f) === 'firmware' && !f.startsWith('firmware/host/') && !f.startsWith('firmware/hal/node/');

/**
 * The firmware's device code reaches no node:* module through any chain of imports, lazy ones
 * included, not only by its own imports: protocol/ holds a node-only module
 * (protocol/native-crypto.ts, shared by the servers and the node HAL), which only the node
 * HAL, the host tools and the other folders may reach. One line per device-code file and
 * node:* module, with the chain that reaches it.
 */
function reachesNode(g: Graph): string[] {
  const out: string[] = [];
  for (const start of [...g.keys()].filter(deviceCode).sort()) {
    const via = new Map<string, string>([[start, '']]);
    const queue = [start];
    while (queue.length) {
      const v = queue.shift()!;
      for (const w of (g.get(v) ?? []).map(target)) {
        if (via.has(w)) continue;
        via.set(w, v);
        if (w.startsWith('node:')) {
          const chain = [w];
          for (let x = v; x; x = via.get(x)!) chain.unshift(x);
          // The direct edge is reported by edgeViolations already.
          if (chain.length > 2) out.push(`${chain.join(' -> ')}: firmware device code reaches a node:* module`);
        } else queue.push(w);
      }
    }
  }
  return out;
}

/** Every violation of the graph: bad edges, imports of files that do not exist, cycles. */
export function violations(g: Graph): string[] {
  const out: string[] = [];
  for (const [from, deps] of g) {
    for (const to of deps.map(target)) {
      if (!to.startsWith('node:') && !g.has(to)) out.push(`${from} -> ${to}: no such source file`);
      out.push(...edgeViolations(from, to));
    }
  }
  out.push(...reachesNode(g));
  for (const c of cycles(g)) out.push(`import cycle: ${c.join(' <-> ')}`);
  return out;
}

test('the checker fires on each deliberately bad import of a synthetic graph', () => {
  const ok: [string, string[]][] = [
    ['protocol/a.ts', ['protocol/b.ts']], ['protocol/b.ts', []],
    ['server-kit/s.ts', ['protocol/a.ts', 'node:http']],
    ['reg-server/r.ts', ['server-kit/s.ts', 'protocol/a.ts']], ['biz-server/z.ts', ['server-kit/s.ts']],
    ['firmware/p.ts', ['protocol/a.ts', 'firmware/q.ts']], ['firmware/q.ts', []],
    ['firmware/hal/node/n.ts', ['node:net']], ['firmware/host/h.ts', ['node:fs']],
    ['deploy/d.ts', ['reg-server/r.ts', 'biz-server/z.ts', 'firmware/p.ts']], ['sim/x.ts', ['deploy/d.ts']],
    ['conformance/c.ts', ['protocol/a.ts', 'node:fs']], ['cli/k.ts', ['~conformance/c.ts']],
    // protocol/n.ts: a node-only module of protocol/, reached by the node HAL and a server-kit file.
    ['protocol/n.ts', ['node:crypto', 'protocol/b.ts']], ['firmware/hal/node/c.ts', ['protocol/n.ts', 'node:crypto']], ['server-kit/e.ts', ['protocol/n.ts']],
  ];
  assert.equal(violations(new Map(ok)), []);
  // A lazy import back does not close a cycle; a static one does (checked below).
  assert.equal(violations(new Map([...ok, ['sim/y.ts', ['~sim/x.ts']], ['sim/x.ts', ['deploy/d.ts', 'sim/y.ts']]])), []);
  const bad: [string, string, RegExp][] = [
    ['protocol/b.ts', 'server-kit/s.ts', /protocol\/ imports nothing/],
    ['server-kit/s.ts', 'reg-server/r.ts', /server-kit\/ imports only/],
    ['reg-server/r.ts', 'biz-server/z.ts', /role folder never imports another/],
    ['firmware/q.ts', 'node:fs', /firmware imports no node/],
    ['firmware/q.ts', 'deploy/d.ts', /firmware\/ imports only/],
    ['conformance/c.ts', 'server-kit/s.ts', /conformance\/ imports only/],
    ['conformance/c.ts', 'reg-server/r.ts', /conformance\/ imports only/],
    ['reg-server/r.ts', 'deploy/d.ts', /only deploy, sim, cli, bench compose/],
    ['firmware/q.ts', 'firmware/p.ts', /import cycle: firmware\/p\.ts <-> firmware\/q\.ts/],
    ['reg-server/r.ts', '~biz-server/z.ts', /role folder never imports another/],
    ['protocol/b.ts', 'protocol/gone.ts', /no such source file/],
    // A node-only module of protocol/ is for the node HAL and the hosts, not the device code.
    ['firmware/q.ts', 'protocol/n.ts', /firmware\/q\.ts -> protocol\/n\.ts -> node:crypto: firmware device code reaches a node/],
    ['firmware/q.ts', '~protocol/n.ts', /firmware\/q\.ts -> protocol\/n\.ts -> node:crypto: firmware device code reaches a node/],
    ['protocol/a.ts', 'protocol/n.ts', /firmware\/p\.ts -> protocol\/a\.ts -> protocol\/n\.ts -> node:crypto: firmware device code/],
    ['firmware/q.ts', 'firmware/hal/node/n.ts', /firmware\/q\.ts -> firmware\/hal\/node\/n\.ts -> node:net: firmware device code/],
  ];
  for (const [from, to, want] of bad) {
    const g = new Map(ok.map(([k, v]) => [k, [...v]]));
    g.get(from)!.push(to);
    const v = violations(g);
    assert.ok(v.some((x) => want.test(x)), `${from} -> ${to}: expected ${want}, got ${JSON.stringify(v)}`);
  }
});

test('specifiers: static, type-only, side-effect and dynamic imports; none from comments', () => {
  const src = `import a from './a.ts';\nimport type { B } from "../b.ts";\nimport './c.ts';\nconst d = await import('./d.ts');\n// import x from './x.ts';\n/* from './y.ts' */\nexport { e } from './e.ts';`;
  assert.equal(specifiers(src), ['./a.ts', '../b.ts', './c.ts', '~./d.ts', './e.ts']);
});

test('the real tree keeps every layering rule and has no import cycle', () => {
  const g = realGraph();
  assert.ok(g.size > 80, `${g.size} source files`);
  assert.ok(g.has('firmware/upmon.ts') && g.get('firmware/device.ts')!.includes('firmware/upmon.ts'));
  assert.equal(violations(g), []);
});

test.run();
