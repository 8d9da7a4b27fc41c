// The live page (issue 17): reads the feed (server-sent events from deploy/page-server.ts,
// messages of deploy/feed-schema.ts) and draws the phones, one phone's protocol as an SVG
// sequence diagram, the servers' health and load, and the fleet's figures with uPlot.
// Plain ES module, no framework, no build step (docs/decisions.md): the browser runs this file.
import uPlot from '/vendor/uplot/uPlot.esm.js';

const FEED_VERSION = 2;
/** The feed is taken as dropped when nothing came for this long (the hub sends health each second). */
const STALE_MS = 5000;
const MAX_ROWS = 40;
/**
 * The lifelines, left to right: the policy server beside the gateway and the registration
 * server it hands tables to, the operator beside the bank that asks it (fewest crossings).
 */
const LIFELINES = ['phone', 'gateway', 'policy', 'registration', 'business', 'operator'];
/**
 * Where each lifeline stands (px) in a diagram 1200 px wide (it fits a 1280 px window): the
 * phone and the gateway close (a relayed arrow's label sits in the middle of its whole span),
 * the widest gap for the bank's operator calls, whose CAMARA names are long.
 */
const LIFELINE_X = { phone: 100, gateway: 250, policy: 420, registration: 600, business: 800, operator: 1075 };
const DIAGRAM_W = 1200;
const SVG = 'http://www.w3.org/2000/svg';

const $ = (id) => document.getElementById(id);
const state = {
  es: null,
  watching: new URLSearchParams(location.search).get('phone'),
  /** The phone the open feed sends the trace of (its hello says; null: none). */
  subscribed: null,
  chosenByUser: false,
  trace: [],
  lastMessage: 0,
  retries: 0,
  retryTimer: null,
  stats: { t: [], logins: [], refusals: [], p50: [], p99: [] },
  charts: null,
  /** S3: the tables by version (ascending), the login counts by version, the site the charts show. */
  s3: { tables: [], choices: new Map(), site: null, siteByUser: false, charts: null },
};
const MECHS = ['password', 'otp', 'fingerprint'];
/** Each mechanism's colour and dash: colour is not the only signal. */
const MECH_STYLE = { password: { stroke: '#b3261e', dash: [] }, otp: { stroke: '#0550ae', dash: [8, 4] }, fingerprint: { stroke: '#116329', dash: [2, 3] } };

function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function svg(tag, attrs = {}, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}
const clock = (t) => (t === null ? '—' : new Date(t).toLocaleTimeString([], { hour12: false }));

/**
 * Drawing, at most once per animation frame per view (found by the CI: under an attack the feed
 * brings dozens of messages a second, and redrawing the whole diagram, table or chart for each
 * one kept the page's main thread busy for seconds on a loaded machine, so what it showed lagged
 * further and further behind the feed). A message only updates the page's state; the views it
 * touched are drawn once, from the latest state, at the next frame. A hidden tab draws nothing
 * until it is shown again (the browser runs no frames for it), then draws once.
 */
const VIEWS = ['phones', 'trace', 'health', 'fleet-charts', 'attack-table', 'attack-charts'];
const pending = new Map();
let frameAsked = false;
/** Counts for the tests: messages handled (body data-messages), draws per view (data-draws, JSON). */
const counts = { messages: 0, draws: Object.fromEntries(VIEWS.map((v) => [v, 0])) };
function later(view, draw) {
  if (!VIEWS.includes(view)) throw new Error(`no view ${view}`);
  pending.set(view, draw);
  if (frameAsked) return;
  frameAsked = true;
  requestAnimationFrame(() => {
    frameAsked = false;
    // In a fixed order: the attack table picks the site the attack charts then follow.
    const due = VIEWS.filter((v) => pending.has(v)).map((v) => [v, pending.get(v)]);
    pending.clear();
    // One view's failure does not keep the others (or the counts) from drawing; it is still
    // reported as the page's error.
    for (const [v, draw] of due) {
      counts.draws[v]++;
      try {
        draw();
      } catch (e) {
        setTimeout(() => {
          throw e;
        });
      }
    }
    document.body.dataset.messages = String(counts.messages);
    document.body.dataset.draws = JSON.stringify(counts.draws);
  });
}

// ---- the connection ----

function setConn(kind, text) {
  const c = $('conn');
  c.className = `conn ${kind}`;
  c.textContent = text;
  document.body.dataset.feed = kind;
}

function connect() {
  clearTimeout(state.retryTimer);
  state.es?.close();
  const url = state.watching ? `/feed?phone=${encodeURIComponent(state.watching)}` : '/feed';
  const es = new EventSource(url);
  state.es = es;
  state.trace = [];
  es.onmessage = (ev) => {
    state.lastMessage = Date.now();
    let m;
    try {
      m = JSON.parse(ev.data);
    } catch {
      return;
    }
    counts.messages++;
    handle(m);
  };
  // EventSource retries a dropped stream by itself but gives up on an error answer (503 while
  // the feed is stopped): the page retries either way, and says so.
  es.onerror = () => dropped('the feed dropped');
}

function dropped(why) {
  state.es?.close();
  state.es = null;
  state.retries++;
  const wait = Math.min(5, state.retries);
  setConn('disconnected', `⚠ Disconnected: ${why}. What is shown may be out of date. Reconnecting in ${wait} s (attempt ${state.retries})…`);
  clearTimeout(state.retryTimer);
  state.retryTimer = setTimeout(connect, wait * 1000);
}

setInterval(() => {
  if (state.es && state.lastMessage && Date.now() - state.lastMessage > STALE_MS) dropped(`nothing received for ${STALE_MS / 1000} s`);
}, 1000);

function handle(m) {
  switch (m.kind) {
    case 'hello':
      if (m.version !== FEED_VERSION) {
        state.es.close();
        state.es = null;
        setConn('disconnected', `⚠ The feed speaks version ${m.version}, this page ${FEED_VERSION}: reload the page.`);
        return;
      }
      state.retries = 0;
      // Draws asked for by the previous feed's messages are of a state this hello resets.
      pending.clear();
      state.subscribed = m.watching;
      if (m.watching) state.watching = m.watching;
      setConn('connected', '● Live: connected to the feed');
      resetStats();
      state.s3.tables = [];
      state.s3.choices = new Map();
      later('trace', drawTrace);
      return;
    case 'phones':
      return later('phones', () => drawPhones(m));
    case 'trace':
      if (m.phone !== state.watching) return;
      state.trace.push(m.item);
      if (state.trace.length > 200) state.trace.shift();
      return later('trace', drawTrace);
    case 'server':
      return addEvent(m);
    case 'health':
      return later('health', () => drawHealth(m));
    case 'stats':
      return addStats(m);
    case 'table':
      return addTable(m);
    case 'choices':
      state.s3.choices.set(m.version, m.sites);
      return later('attack-charts', drawAttackCharts);
  }
}

function watch(id, byUser) {
  if (id === state.subscribed && state.es) return;
  state.watching = id;
  state.chosenByUser = byUser;
  const u = new URL(location.href);
  u.searchParams.set('phone', id);
  history.replaceState(null, '', u);
  connect();
}

// ---- phones ----

function drawPhones(m) {
  $('phones-total').textContent = m.total > m.phones.length ? `(${m.total}, the ${m.phones.length} most recent shown)` : `(${m.total})`;
  const body = $('phones').tBodies[0];
  body.replaceChildren();
  if (!m.phones.length) {
    const tr = el('tr', { class: 'empty' });
    tr.append(el('td', { colspan: '8' }, 'No phone yet: plug one in (usbphone sim --gateway … or make sim).'));
    body.append(tr);
  }
  for (const p of m.phones) {
    const tr = el('tr', { 'data-phone': p.id });
    if (p.id === state.watching) tr.className = 'watching';
    tr.append(
      el('td', {}, p.label ? `${p.label} (${p.id})` : p.id),
      el('td', { class: `state-${p.state.replace(/ /g, '-')}`, 'data-col': 'state' }, p.state === 'refused' || p.state === 'not found' ? `✗ ${p.state}` : p.state === 'logged in' ? `✓ ${p.state}` : p.state),
      el('td', {}, clock(p.lastLogin)),
      el('td', { 'data-col': 'server' }, p.server ?? '—'),
      el('td', { 'data-col': 'gen' }, p.gen === null ? '—' : String(p.gen)),
      el('td', {}, String(p.logins)),
      el('td', { class: p.lastCode ? 'bad' : '' }, p.lastCode ? `✗ ${p.lastCode}` : '—'),
    );
    const td = el('td');
    if (p.id === state.watching) td.textContent = '▶ watching';
    else {
      const b = el('button', { type: 'button', 'aria-label': `watch the trace of phone ${p.id}` }, 'watch');
      b.addEventListener('click', () => watch(p.id, true));
      td.append(b);
    }
    tr.append(td);
    body.append(tr);
  }
  // Nobody chose yet: follow the most recently active phone; a chosen one once the feed knows it.
  const target = state.chosenByUser ? state.watching : (state.subscribed ?? m.phones[0]?.id);
  if (target && target !== state.subscribed && m.phones.some((p) => p.id === target)) watch(target, state.chosenByUser);
}

// ---- the sequence diagram ----

function drawTrace() {
  const box = $('diagram');
  $('trace-phone').textContent = state.watching ? `of phone ${state.watching}` : '(no phone chosen)';
  if (!state.watching) return;
  const items = state.trace.slice(-MAX_ROWS);
  const W = DIAGRAM_W;
  const col = (name) => LIFELINE_X[name];
  const rowH = 30;
  const top = 50;
  const H = top + Math.max(1, items.length) * rowH + 20;
  const s = svg('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': 'diagram-title', 'data-lifelines': LIFELINES.join(' ') });
  s.append(svg('title', { id: 'diagram-title' }, `Sequence diagram of phone ${state.watching}: ${items.length} latest messages and steps`));
  const defs = svg('defs');
  for (const [id, colour] of [['arrow', '#1b1f24'], ['arrow-bad', '#b3261e']]) {
    const mk = svg('marker', { id, viewBox: '0 0 10 10', refX: 10, refY: 5, markerUnits: 'userSpaceOnUse', markerWidth: 11, markerHeight: 11, orient: 'auto-start-reverse' });
    mk.append(svg('path', { d: 'M0,0 L10,5 L0,10 z', fill: colour }));
    defs.append(mk);
  }
  s.append(defs);
  for (const name of LIFELINES) {
    const x = col(name);
    s.append(svg('rect', { x: x - 60, y: 6, width: 120, height: 28, rx: 4, fill: '#f6f8fa', stroke: '#57606a' }));
    s.append(svg('text', { x, y: 25, 'text-anchor': 'middle', class: 'lifeline-head', 'data-lifeline': name, fill: '#1b1f24' }, name));
    s.append(svg('line', { x1: x, y1: 34, x2: x, y2: H - 6, stroke: '#8c959f', 'stroke-dasharray': '4 4' }));
  }
  if (!items.length) s.append(svg('text', { x: col('phone') + 20, y: top + 18, class: 'msg', fill: '#57606a' }, 'no message yet'));
  items.forEach((it, i) => {
    const y = top + i * rowH + 16;
    // A new plug-in (the autorun step) starts a new story: a rule across the lifelines.
    if (it.kind === 'step' && it.feature === 'S0.3' && i > 0) s.append(svg('line', { x1: 70, y1: y - 15, x2: W - 10, y2: y - 15, stroke: '#0550ae', 'stroke-width': 1 }));
    const cls = it.kind === 'frame' ? 'msg' : it.kind === 'call' ? 'msg call' : 'note';
    const g = svg('g', { class: it.refused ? `${cls} refused` : cls, 'data-type': it.kind === 'frame' ? it.type : it.kind === 'call' ? it.op : 'step' });
    if (it.kind === 'call') {
      // Between servers, not through the gateway: a request solid, its answer dashed back.
      const x1 = col(it.from);
      const x2 = col(it.to);
      const bad = it.refused;
      const colour = bad ? '#b3261e' : '#1b1f24';
      const what = it.answer === undefined ? it.op : `${it.answer}${it.code ? ` ${it.code}` : ''}`;
      const label = `${bad ? '✗ ' : ''}${what} · ${it.feature}`;
      const answer = it.answer !== undefined && it.from === 'operator';
      g.append(svg('title', {}, `${clock(it.t)} ${it.from} → ${it.to}: ${answer ? `${it.op}: ` : ''}${label}${it.ms !== undefined ? ` (${it.ms} ms)` : ''}${bad ? ' — refused' : ''}`));
      g.append(svg('line', { x1, y1: y, x2, y2: y, stroke: colour, 'stroke-width': bad ? 2.5 : 1.5, 'stroke-dasharray': bad ? '7 3' : answer ? '3 3' : 'none', 'marker-end': `url(#${bad ? 'arrow-bad' : 'arrow'})` }));
      g.append(svg('text', { x: (x1 + x2) / 2, y: y - 5, 'text-anchor': 'middle', fill: colour, 'font-weight': bad ? 700 : 400 }, label));
      g.append(svg('text', { x: 8, y: y + 4, fill: '#57606a', class: 'note' }, clock(it.t)));
    } else if (it.kind === 'frame') {
      const x1 = col(it.from);
      const x2 = col(it.to);
      const bad = it.refused;
      const colour = bad ? '#b3261e' : '#1b1f24';
      const via = it.from === 'policy' ? ' (pushed by the gateway)' : it.to === 'phone' || it.from === 'phone' ? ` (${it.dest})` : '';
      const label = `${bad ? '✗ ' : ''}${it.type}${it.code ? ` ${it.code}` : ''} · ${it.feature}${via}`;
      g.append(svg('title', {}, `${clock(it.t)} ${it.from} → ${it.to}: ${label}${bad ? ' — refused' : ''}`));
      g.append(svg('line', { x1, y1: y, x2, y2: y, stroke: colour, 'stroke-width': bad ? 2.5 : 1.5, 'stroke-dasharray': bad ? '7 3' : 'none', 'marker-end': `url(#${bad ? 'arrow-bad' : 'arrow'})` }));
      // The gateway relays what passes its line: a dot where the message crosses it.
      if (it.from !== 'gateway' && it.to !== 'gateway') g.append(svg('circle', { cx: col('gateway'), cy: y, r: 3.5, fill: colour }));
      const mid = (x1 + x2) / 2;
      g.append(svg('text', { x: mid, y: y - 5, 'text-anchor': 'middle', fill: colour, 'font-weight': bad ? 700 : 400 }, label));
      g.append(svg('text', { x: 8, y: y + 4, fill: '#57606a', class: 'note' }, clock(it.t)));
    } else {
      const x = col('phone');
      const text = `${it.ok ? '' : '✗ '}${it.feature} ${it.step}`;
      g.append(svg('title', {}, `${clock(it.t)} phone: ${it.feature} ${it.step}: ${it.detail}${it.ok ? '' : ' — FAILED'}`));
      g.append(svg('rect', { x: x + 8, y: y - 12, width: Math.min(600, 12 + text.length * 7.2), height: 20, rx: 3, fill: it.ok ? '#fff8c5' : '#ffebe9', stroke: it.ok ? '#9a6700' : '#b3261e' }));
      g.append(svg('text', { x: x + 14, y: y + 3, fill: it.ok ? '#1b1f24' : '#b3261e' }, text));
      g.append(svg('text', { x: 8, y: y + 4, fill: '#57606a' }, clock(it.t)));
    }
    s.append(g);
  });
  box.replaceChildren(s);
  if (state.trace.length > MAX_ROWS) box.prepend(el('p', { class: 'muted' }, `The ${MAX_ROWS} latest of ${state.trace.length} shown.`));
}

// ---- servers ----

function drawHealth(m) {
  const body = $('servers').tBodies[0];
  body.replaceChildren();
  for (const s of m.servers) {
    const tr = el('tr');
    tr.append(
      el('td', {}, s.name),
      el('td', {}, s.role),
      el('td', { class: s.running ? 'good' : 'bad' }, s.running ? '✓ yes' : '✗ stopped'),
      el('td', { class: s.linkUp === false ? 'bad' : '' }, s.linkUp === null ? '—' : s.linkUp ? 'up' : '✗ down'),
      el('td', {}, s.sessions === null ? '—' : String(s.sessions)),
    );
    body.append(tr);
  }
  const l = m.load;
  $('load').textContent = `This process: ${l.rssMiB} MiB resident, ${l.heapMiB} MiB heap, CPU ${l.cpuPercent} %, event-loop delay p99 ${l.eventLoopP99Ms} ms; ${l.connections} device connection(s) at the gateway.`;
}

function addEvent(m) {
  const list = $('events');
  const bad = m.code || /refused|not found|unhealthy|down|fallback/.test(m.event);
  const text = `${clock(m.t)} ${m.server}: ${bad ? '✗ ' : ''}${m.event}${m.code ? ` ${m.code}` : ''}${m.user ? `, ${m.user}` : ''}${m.gen !== undefined ? `, generation ${m.gen}` : ''}${m.phone ? ` (phone ${m.phone})` : ''}`;
  const li = el('li', bad ? { class: 'bad' } : {}, text);
  list.prepend(li);
  while (list.children.length > 50) list.lastChild.remove();
}

// ---- fleet charts (uPlot) ----

function resetStats() {
  for (const k of Object.keys(state.stats)) state.stats[k] = [];
}

function addStats(m) {
  const s = state.stats;
  s.t.push(m.t / 1000);
  s.logins.push(m.loginsPerSec);
  s.refusals.push(m.refusalsPerSec);
  s.p50.push(m.p50Ms);
  s.p99.push(m.p99Ms);
  if (s.t.length > 300) for (const k of Object.keys(s)) s[k].shift();
  later('fleet-charts', drawCharts);
}

function drawCharts() {
  const s = state.stats;
  const width = Math.max(320, $('fleet-view').clientWidth - 10);
  if (!state.charts) {
    const axes = [{ stroke: '#1b1f24', grid: { stroke: '#eaeef2' } }, { stroke: '#1b1f24', grid: { stroke: '#eaeef2' } }];
    const base = { width, height: 200, axes, cursor: { show: true }, legend: { show: true } };
    state.charts = {
      rate: new uPlot({ ...base, series: [{}, { label: 'logins/s', stroke: '#116329', width: 2 }, { label: 'refusals/s', stroke: '#b3261e', width: 2, dash: [6, 4] }] }, [s.t, s.logins, s.refusals], $('chart-rate')),
      latency: new uPlot({ ...base, series: [{}, { label: 'p50 ms', stroke: '#0550ae', width: 2, spanGaps: false }, { label: 'p99 ms', stroke: '#8250df', width: 2, dash: [6, 4], spanGaps: false }] }, [s.t, s.p50, s.p99], $('chart-latency')),
    };
    return;
  }
  state.charts.rate.setData([s.t, s.logins, s.refusals]);
  state.charts.latency.setData([s.t, s.p50, s.p99]);
}

// ---- attacks (S3): the table per site, rates and choices per table version (uPlot) ----

const pct = (ppm) => `${(ppm / 10000).toFixed(1)} %`;

function addTable(m) {
  const s3 = state.s3;
  s3.tables = s3.tables.filter((t) => t.version !== m.version);
  s3.tables.push(m);
  s3.tables.sort((a, b) => a.version - b.version);
  if (s3.tables.length > 120) s3.tables.shift();
  // Tables may come out of order (a page that opens late gets the kept ones first): the newest is drawn.
  later('attack-table', () => {
    const newest = state.s3.tables[state.s3.tables.length - 1];
    if (newest) drawAttackTable(newest);
  });
  later('attack-charts', drawAttackCharts);
}

function drawAttackTable(m) {
  $('attacks-version').textContent = `(table v${m.version}, issued ${clock(m.issuedAt)}, valid until ${clock(m.expiresAt)})`;
  const body = $('attack-table').tBodies[0];
  body.replaceChildren();
  for (const s of m.sites) {
    const tr = el('tr', { 'data-site': s.site });
    const top = Math.max(0, ...s.mechs.map((x) => x.ratePpm));
    tr.append(el('th', { scope: 'row' }, s.site), el('td', { 'data-col': 'level' }, String(s.level)), el('td', {}, s.floor), el('td', {}, pct(s.degreePpm)));
    for (const mech of MECHS) {
      const r = s.mechs.find((x) => x.mech === mech);
      const hot = r && top > 0 && r.ratePpm === top;
      tr.append(el('td', { 'data-mech': mech, class: hot ? 'bad' : '' }, r ? `${hot ? '▲ ' : ''}${pct(r.ratePpm)}` : 'not offered'));
    }
    const a = s.attacks;
    tr.append(el('td', { 'data-col': 'attacks' }, a.total ? `${a.total} (${MECHS.filter((x) => a[x]).map((x) => `${x} ${a[x]}`).join(', ')})` : '0'));
    body.append(tr);
  }
  // The charts follow the site chosen, else the most attacked one, else the first.
  const pick = $('attack-site');
  const names = m.sites.map((s) => s.site);
  if (pick.options.length !== names.length || [...pick.options].some((o, i) => o.value !== names[i])) {
    pick.replaceChildren(...names.map((n) => el('option', { value: n }, n)));
  }
  if (!state.s3.siteByUser || !names.includes(state.s3.site)) {
    const hot = [...m.sites].sort((a, b) => b.attacks.total - a.attacks.total)[0];
    state.s3.site = hot && hot.attacks.total > 0 ? hot.site : (state.s3.site && names.includes(state.s3.site) ? state.s3.site : names[0] ?? null);
  }
  pick.value = state.s3.site ?? '';
}

$('attack-site').addEventListener('change', (e) => {
  state.s3.site = e.target.value;
  state.s3.siteByUser = true;
  later('attack-charts', drawAttackCharts);
});

function attackSeries() {
  const s3 = state.s3;
  const versions = s3.tables.map((t) => t.version);
  const rates = MECHS.map((mech) => s3.tables.map((t) => {
    const r = t.sites.find((x) => x.site === s3.site)?.mechs.find((x) => x.mech === mech);
    return r ? r.ratePpm / 10000 : null;
  }));
  const logins = MECHS.map((mech) => versions.map((v) => {
    const c = s3.choices.get(v);
    if (!c) return null;
    return c.find((x) => x.site === s3.site)?.logins[mech] ?? 0;
  }));
  return { versions, rates, logins };
}

function drawAttackCharts() {
  const s3 = state.s3;
  const { versions, rates, logins } = attackSeries();
  $('chart-attack-rate').dataset.versions = String(versions.length);
  $('chart-choices').dataset.versions = String([...s3.choices.keys()].length);
  const width = Math.max(320, Math.floor($('attacks-view').clientWidth / 2) - 30);
  if (!s3.charts) {
    const axes = [{ stroke: '#1b1f24', grid: { stroke: '#eaeef2' }, label: 'table version', values: (u, vals) => vals.map((v) => (Number.isInteger(v) ? `v${v}` : '')) }, { stroke: '#1b1f24', grid: { stroke: '#eaeef2' } }];
    const series = (unit) => [{ label: 'table' }, ...MECHS.map((mech) => ({ label: `${mech} ${unit}`, stroke: MECH_STYLE[mech].stroke, dash: MECH_STYLE[mech].dash, width: 2, points: { show: true, size: 6 }, spanGaps: false }))];
    const base = { width, height: 200, axes, cursor: { show: true }, legend: { show: true } };
    s3.charts = {
      rate: new uPlot({ ...base, scales: { y: { range: [0, 100] } }, series: series('%') }, [versions, ...rates], $('chart-attack-rate')),
      choices: new uPlot({ ...base, series: series('logins') }, [versions, ...logins], $('chart-choices')),
    };
    return;
  }
  s3.charts.rate.setData([versions, ...rates]);
  s3.charts.choices.setData([versions, ...logins]);
}

window.addEventListener('resize', () => {
  if (state.s3.charts) {
    const w = Math.max(320, Math.floor($('attacks-view').clientWidth / 2) - 30);
    state.s3.charts.rate.setSize({ width: w, height: 200 });
    state.s3.charts.choices.setSize({ width: w, height: 200 });
  }
  if (!state.charts) return;
  const width = Math.max(320, $('fleet-view').clientWidth - 10);
  state.charts.rate.setSize({ width, height: 200 });
  state.charts.latency.setSize({ width, height: 200 });
});

if (state.watching) state.chosenByUser = true;
connect();
