// tickCorker: messages written in one turn leave together, unchanged and in order, and the
// socket is released by the end of the turn (nothing waits for a later write or a timer).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createServer, connect, type Socket, type AddressInfo } from 'node:net';
import { tickCorker } from './tick-cork.ts';

async function pair(): Promise<{ a: Socket; b: Socket; close(): void }> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const accepted = new Promise<Socket>((r) => server.once('connection', r));
  const a = connect((server.address() as AddressInfo).port, '127.0.0.1');
  await new Promise((r) => a.once('connect', r));
  const b = await accepted;
  return { a, b, close: () => (a.destroy(), b.destroy(), server.close()) };
}

test('writes in one turn are held, then flushed in order at the end of the turn', async () => {
  const { a, b, close } = await pair();
  try {
    const hold = tickCorker(a);
    const got: Buffer[] = [];
    b.on('data', (d: Buffer) => got.push(d));
    for (let i = 0; i < 50; i++) {
      hold();
      a.write(Uint8Array.of(i));
    }
    assert.is(a.writableCorked, 1, 'held during the turn');
    await new Promise((r) => setImmediate(r));
    assert.is(a.writableCorked, 0, 'released at the end of the turn');
    // A second turn holds again.
    hold();
    a.write(Uint8Array.of(50));
    assert.is(a.writableCorked, 1);
    await new Promise((r) => setImmediate(r));
    assert.is(a.writableCorked, 0);
    for (let i = 0; i < 100 && Buffer.concat(got).length < 51; i++) await new Promise((r) => setTimeout(r, 5));
    assert.equal([...Buffer.concat(got)], Array.from({ length: 51 }, (_, i) => i));
  } finally {
    close();
  }
});

test('a destroyed socket is left alone', async () => {
  const { a, close } = await pair();
  a.destroy();
  tickCorker(a)();
  assert.is(a.writableCorked, 0);
  close();
});

test.run();
