// Counts kept on the hot path and added to their prom-client counter when it is read: every read
// (a scrape, get()) shows what per-call incs would have shown, never a count twice or lost.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Registry, Counter } from 'prom-client';
import { Tally } from './tally.ts';
import { ServerMetrics } from './metrics.ts';
import { GatewayMetrics } from '../gateway/metrics.ts';
import { MsgType } from '../protocol/messages.ts';

test('a tallied counter reads as the counter incremented call by call, across reads and adds between them', async () => {
  const registry = new Registry();
  const tally = new Tally<string>((k) => ({ kind: k }));
  const folded: Counter = new Counter({ name: 'folded_total', help: 'x', labelNames: ['kind'], registers: [registry], collect: () => tally.fold(folded) });
  const plain = new Counter({ name: 'plain_total', help: 'x', labelNames: ['kind'], registers: [registry] });
  const values = async (c: Counter) => Object.fromEntries((await c.get()).values.map((v) => [v.labels.kind, v.value]));
  const add = (k: string, n: number) => {
    for (let i = 0; i < n; i++) {
      tally.add(k);
      plain.inc({ kind: k });
    }
  };
  add('a', 3);
  add('b', 1);
  assert.equal(await values(folded), await values(plain));
  assert.equal(await values(folded), { a: 3, b: 1 });
  // Read again with nothing new: the same, not doubled.
  assert.equal(await values(folded), { a: 3, b: 1 });
  add('a', 2);
  add('c', 5);
  const text = await registry.metrics();
  assert.match(text, 'folded_total{kind="a"} 5');
  assert.match(text, 'folded_total{kind="c"} 5');
  assert.equal(await values(folded), await values(plain));
});

test('the servers\' sessions and events and the gateway\'s frames are tallied: a scrape shows each count once, with its labels', async () => {
  const m = new ServerMetrics('biz-east');
  m.session('link');
  m.session('link');
  m.event('login_ok');
  m.event('login_refused', 'BIZ_BAD_MAC');
  m.event('login_refused', 'BIZ_BAD_MAC');
  let text = await m.text();
  assert.match(text, 'usbphone_server_sessions_total{via="link",server="biz-east"} 2');
  assert.match(text, 'usbphone_server_events_total{event="login_refused",code="BIZ_BAD_MAC",server="biz-east"} 2');
  assert.match(text, 'usbphone_server_events_total{event="login_ok",code="",server="biz-east"} 1');
  m.event('login_ok');
  text = await m.text();
  assert.match(text, 'usbphone_server_events_total{event="login_ok",code="",server="biz-east"} 2');
  assert.match(text, 'usbphone_server_sessions_total{via="link",server="biz-east"} 2');

  const g = new GatewayMetrics(false);
  g.frameIn(MsgType.hello);
  g.frameIn(null);
  g.frameIn(1.5);
  g.frameOut(MsgType.helloReply);
  g.frameOut(-1);
  const gt = await g.registry.metrics();
  assert.match(gt, 'usbphone_gateway_frames_in_total{type="hello"} 1');
  assert.match(gt, 'usbphone_gateway_frames_in_total{type="invalid"} 2');
  assert.match(gt, 'usbphone_gateway_frames_out_total{type="helloReply"} 1');
  assert.match(gt, 'usbphone_gateway_frames_out_total{type="invalid"} 1');
});

test.run();
