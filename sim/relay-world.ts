// Test support: a world (sim/world.ts) whose phones reach its gateway only through a relay
// (sim/relay.ts) that plays a party on the path: an old gateway, a man in the middle, an idle
// sweep's race. The set-up the tests of such a party share, in one place: the relay starts
// first (the world advertises the relay's URL to its phones, so nothing reaches the gateway
// around it) and learns the gateway's URL once the world has started; the relay, the world and
// the state directory are stopped and removed afterwards whatever the test did.
import { startWorld, type World, type WorldOptions } from './world.ts';
import { makeTempDir, removeTempDir } from './lifetime.ts';

/** What a test's relay must offer: the URL the phones use (`Relay.url`, ending in '/') and its stop. */
export interface RelayLike {
  url: string;
  close(): Promise<void>;
}

/**
 * Runs `run(world, relay)` on a world behind the relay `makeRelay` starts. `makeRelay` gets the
 * gateway's URL as a function (`ws://127.0.0.1:PORT/`, empty until the world has started: the
 * relay asks it per connection, as `startRelay`'s target does). `name` names the temporary state
 * directory; `device` is the phones' configuration (WorldOptions.device). Returns what `run` returns.
 */
export async function withWorldBehindRelay<R extends RelayLike, T>(
  name: string,
  makeRelay: (gateway: () => string) => Promise<R>,
  device: WorldOptions['device'],
  run: (world: World, relay: R) => Promise<T>,
): Promise<T> {
  const dir = makeTempDir(name);
  let gatewayUrl = '';
  let relay: R | null = null;
  let world: World | null = null;
  try {
    relay = await makeRelay(() => gatewayUrl);
    world = await startWorld({ stateDir: dir, gatewayPort: 0, advertisedUrl: relay.url, ...(device ? { device } : {}) });
    gatewayUrl = world.stack.gatewayUrl.replace(/\/?$/, '/');
    return await run(world, relay);
  } finally {
    await relay?.close();
    await world?.stop();
    removeTempDir(dir);
  }
}
