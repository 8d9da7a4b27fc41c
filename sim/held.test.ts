// The held-connections driver on its own: nothing listening, every connection fails and is
// counted as failed (none open, none counted as pushed), with the reason; its processes end on close.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { holdConnections } from './held.ts';
import { ImplementationError } from '../protocol/errors.ts';

test('no gateway at the address: 60 connections over 2 processes all fail, with the reason; close ends the processes', async () => {
  const h = await holdConnections({ url: 'ws://127.0.0.1:24150/', count: 60, perProcess: 30, perIp: 10 });
  try {
    assert.is(h.processes, 2);
    assert.is(h.opened, 0);
    assert.is(h.failed, 60);
    assert.match(h.errors.join(' '), /ECONNREFUSED/);
    const c = await h.counts();
    assert.equal({ open: c.open, withPush: c.withPush, pushes: c.pushes, failed: c.failed }, { open: 0, withPush: 0, pushes: 0, failed: 60 });
  } finally {
    await h.close();
  }
});

test('a count that is not positive is refused (SIM_HOLD)', async () => {
  try {
    await holdConnections({ url: 'ws://127.0.0.1:24150/', count: 0 });
    assert.unreachable('held');
  } catch (e) {
    assert.instance(e, ImplementationError);
    assert.is((e as ImplementationError).code, 'SIM_HOLD');
  }
});

test.run();
