// Shared by the server tests: a fresh state directory per stack, removed afterwards.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, createServer } from 'node:net';
import { startStack, type Stack, type StackOptions } from './stack.ts';
import { setLogLevel } from '../server-kit/log.ts';
import { SCRIPTED_FIRMWARE_HEX } from '../server-kit/test-device.ts';
import { dropStackSchemas } from './stack-schemas.ts';

export function tempDir(prefix = 'usbphone-test-'): { dir: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A stack on ephemeral ports in a temp state directory; stop() also removes the directory. */
export async function testStack(opts: Partial<StackOptions> = {}): Promise<Stack> {
  if (!process.env.USBPHONE_LOG_LEVEL) setLogLevel('error');
  const t = tempDir();
  const stack = await startStack({ stateDir: t.dir, gatewayPort: 0, ...opts });
  // The scripted device (server-kit/test-device.ts) has no chip; its fixed measurement is
  // accepted here as a factory would enroll its firmware. Phones' images bring their own.
  await stack.regStore.addFirmware(SCRIPTED_FIRMWARE_HEX, 0);
  const stop = stack.stop.bind(stack);
  stack.stop = async () => {
    await stop();
    // On PostgreSQL (STORE_URL or opts.store) the stores' schemas go with the state directory.
    const c = stack.store.choice;
    if (c.kind === 'postgres' && stack.store.prefix) await dropStackSchemas(c.url, stack.store.prefix);
    t.remove();
  };
  return stack;
}

/**
 * Polls `read` until `ok` holds (or `timeoutMs` passes) and returns the last value: for state a
 * server changes after the client has moved on (a business login's promotion happens when the
 * server takes the client's finish, which the client does not wait for).
 */
export async function eventually<T>(read: () => T | Promise<T>, ok: (v: T) => boolean, timeoutMs = 3_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  let v = await read();
  while (!ok(v) && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 10));
    v = await read();
  }
  return v;
}

/** True for a listen error saying the port is taken (the error itself, or a message naming it). */
export function isAddrInUse(e: unknown): boolean {
  return (e as { code?: unknown } | null)?.code === 'EADDRINUSE' || /EADDRINUSE/.test(e instanceof Error ? e.message : String(e));
}

/** A port nobody listened on a moment ago on 127.0.0.1: by the time it is used, another process may have it. */
async function portFreeJustNow(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve, reject) => (s.once('error', reject), s.listen(0, '127.0.0.1', () => resolve())));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

/**
 * For what must be told its port before it listens (the port is written first into another
 * server's configuration or into a phone's image): `start(port)` with a port that was free a
 * moment ago and, when it fails because the port was taken meanwhile (EADDRINUSE: tests run in
 * parallel), again with another port, at most `attempts` times. `start` undoes its own partial
 * work before it throws. Wherever the order allows, listen on port 0 and read the port instead.
 */
export async function onFreePort<T>(start: (port: number) => Promise<T>, attempts = 5): Promise<T> {
  for (let i = 1; ; i++) {
    const port = await portFreeJustNow();
    try {
      return await start(port);
    } catch (e) {
      if (i >= attempts || !isAddrInUse(e)) throw e;
    }
  }
}

/**
 * A port on 127.0.0.1 proven closed just now (the kernel gave it, it was closed, a connection to
 * it was then refused), for a test of "nothing listens there": a fixed port may be anybody's.
 * Throws after `attempts` ports that something took meanwhile.
 */
export async function closedPort(attempts = 5): Promise<number> {
  for (let i = 1; ; i++) {
    const port = await portFreeJustNow();
    const refused = await new Promise<boolean>((resolve) => {
      const c = connect(port, '127.0.0.1');
      c.once('connect', () => (c.destroy(), resolve(false)));
      c.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'));
    });
    if (refused) return port;
    if (i >= attempts) throw new Error(`no port proven closed in ${attempts} tries`);
  }
}
