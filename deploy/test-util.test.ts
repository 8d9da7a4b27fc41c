// The tests' own helpers where a mistake would show up only as a rare flake: onFreePort.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createServer, type Server } from 'node:net';
import { onFreePort, isAddrInUse } from './test-util.ts';

const listen = (port: number) =>
  new Promise<Server>((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(port, '127.0.0.1', () => resolve(s));
  });
const close = (s: Server) => new Promise((r) => s.close(r));

test('onFreePort: a port another process took between the pick and the listen is replaced by another one', async () => {
  const tried: number[] = [];
  const held: Server[] = [];
  try {
    const s = await onFreePort(async (port) => {
      tried.push(port);
      // The race, made to happen on the first two tries: someone else listens there first.
      if (tried.length <= 2) held.push(await listen(port));
      return listen(port);
    });
    assert.is(tried.length, 3);
    assert.is(new Set(tried).size, 3, 'a new port each time');
    assert.is((s.address() as { port: number }).port, tried[2]);
    await close(s);
  } finally {
    for (const h of held) await close(h);
  }
});

test('onFreePort: bounded, and any other failure is thrown at once', async () => {
  let n = 0;
  const held: Server[] = [];
  try {
    await onFreePort(async (port) => {
      n++;
      held.push(await listen(port));
      return listen(port);
    }, 3).then(() => assert.unreachable('started'), (e) => assert.ok(isAddrInUse(e), String(e)));
    assert.is(n, 3);
  } finally {
    for (const h of held) await close(h);
  }
  n = 0;
  await onFreePort(async () => {
    n++;
    throw new Error('bad configuration');
  }).then(() => assert.unreachable('started'), (e) => assert.is((e as Error).message, 'bad configuration'));
  assert.is(n, 1);
  assert.ok(isAddrInUse(new Error('serve exited 1: usbphone serve: listen EADDRINUSE: address already in use 127.0.0.1:5')));
  assert.not.ok(isAddrInUse(new Error('ECONNREFUSED')));
});

test.run();
