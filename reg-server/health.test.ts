// Each registration server's own health view of the business servers: one lost answer is not
// a verdict, an answer is believed at once, and one server's failed polls never change what
// another server offers (issue 10: a paused primary poisoned the backup through the store).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { HealthPoller, withHealthView } from './health.ts';
import { chooseServers } from './placement.ts';
import { createLogger, setLogLevel } from '../server-kit/log.ts';
import type { BizServerRecord, RegStore } from './store.ts';
import type { AdminCaller } from '../server-kit/admin-messages.ts';

setLogLevel('error');
const log = createLogger('test');

/** The part of the shared store the poller and placement use, shared by both "servers". */
function sharedStore(): RegStore {
  const rows: BizServerRecord[] = ['biz-east', 'biz-west'].map((name, i) => ({ name, region: i ? 'west' : 'east', url: `ws://x/${name}`, adminUrl: `http://x/${name}`, healthy: true, load: 0, checkedAt: null }));
  return {
    listServers: () => rows.map((r) => ({ ...r })),
    setServerHealth(name: string, healthy: boolean, load: number) {
      const r = rows.find((x) => x.name === name)!;
      r.healthy = healthy;
      r.load = load;
    },
    listRegions: () => [{ cidr: '127.1.0.0/16', region: 'east' }, { cidr: '127.2.0.0/16', region: 'west' }],
  } as unknown as RegStore;
}

/** An admin client whose answers the test scripts: 'ok', 'draining' or 'fail' per call. */
function scripted(plan: ('ok' | 'draining' | 'fail')[]) {
  let calls = 0;
  const caller: AdminCaller = {
    async call() {
      const p = plan[Math.min(calls++, plan.length - 1)];
      if (p === 'fail') throw new Error('ADMIN_UNREACHABLE');
      return [p === 'ok', 3, 'east'];
    },
  } as unknown as AdminCaller;
  return { client: () => caller, calls: () => calls };
}

test('one lost answer is retried at once and is no verdict; unhealthy only after consecutive failed polls; an answer is believed at once', async () => {
  const store = sharedStore();
  const s = scripted(['fail', 'ok', 'fail', 'fail', 'fail', 'fail', 'ok', 'draining']);
  const one = { ...store, listServers: async () => (await store.listServers()).slice(0, 1) } as RegStore;
  const p1 = new HealthPoller(one, s.client, log, 0, 2);
  await p1.poll(); // fail, retry ok
  assert.equal([p1.state('biz-east')!.healthy, p1.state('biz-east')!.failures, s.calls()], [true, 0, 2]);
  await p1.poll(); // fail, fail: one failed poll
  assert.equal([p1.state('biz-east')!.healthy, p1.state('biz-east')!.failures], [true, 1]);
  await p1.poll(); // fail, fail: the second in a row
  assert.equal([p1.state('biz-east')!.healthy, p1.state('biz-east')!.failures], [false, 2]);
  await p1.poll(); // ok
  assert.equal([p1.state('biz-east')!.healthy, p1.state('biz-east')!.failures], [true, 0]);
  await p1.poll(); // draining: believed at once
  assert.is(p1.state('biz-east')!.healthy, false);
});

test('two registration servers on one store: the one whose polls fail does not change what the other offers', async () => {
  const store = sharedStore();
  const paused = new HealthPoller(store, scripted(['fail']).client, log, 0, 2);
  const backup = new HealthPoller(store, scripted(['ok']).client, log, 0, 2);
  await backup.poll();
  for (let i = 0; i < 3; i++) await paused.poll();
  // The paused one's verdict reached the shared store (for operators)...
  assert.ok((await store.listServers()).every((s) => !s.healthy));
  // ...but the backup places by its own view.
  const view = withHealthView(store, backup);
  assert.equal(chooseServers('127.1.0.9', await view.listRegions(), await view.listServers()).map((s) => s.name), ['biz-east', 'biz-west']);
  assert.equal(chooseServers('127.1.0.9', await store.listRegions(), await withHealthView(store, paused).listServers()), []);
});

test.run();
