// Password rotation at every successful registration (S0.14), the registration side:
//   1. a fresh 32-byte secret; its login key passwordLoginKey(secret, user)
//   2. installPending at a business server (admin API), with a rotation id so a retried call
//      is idempotent; the business server keeps current untouched
//   3. record the generations in the registration store
//   4. (caller) reply to the device with {secret, gen: pendingGen, currentGen}
// A crash or a lost message between any two steps leaves the business server's current
// generation untouched, and the device still holds that secret: nothing can lock it out.
import { passwordLoginKey, systemRng, type Rng } from '../protocol/channel.ts';
import { ProtocolError, CloseCode, TimeoutError } from '../protocol/errors.ts';
import { AdminClient, AdminError } from '../server-kit/admin-rpc.ts';
import type { Logger } from '../server-kit/log.ts';
import type { BizServerRecord, Device, RegStore } from './store.ts';

export type RotationStep = 'beforeInstall' | 'afterInstall' | 'afterRecord';
export const ROTATION_STEPS: readonly RotationStep[] = ['beforeInstall', 'afterInstall', 'afterRecord'];

export interface RotationDeps {
  store: RegStore;
  adminClient(server: BizServerRecord): AdminClient;
  pendingTtlMs: number;
  log: Logger;
  rng?: Rng;
  now?: () => number;
  /** Fault injection for tests: awaited at each step (may never resolve, or throw). */
  pauseAt?: (step: RotationStep) => void | Promise<void>;
}

export interface Rotation { secret: Uint8Array; gen: number; currentGen: number; installedAt: string }

export async function rotate(deps: RotationDeps, device: Device, servers: readonly BizServerRecord[]): Promise<Rotation> {
  const rng = deps.rng ?? systemRng;
  const now = deps.now ?? Date.now;
  const secret = rng(32);
  const key = passwordLoginKey(secret, device.user);
  const rotationId = rng(16);
  const expiresAt = now() + deps.pendingTtlMs;
  await deps.pauseAt?.('beforeInstall');
  let result: { currentGen: number; pendingGen: number } | null = null;
  let installedAt = '';
  try {
    for (const s of servers) {
      const client = deps.adminClient(s);
      // One retry with the same rotation id: if the first call took effect but its answer
      // was lost, the retry returns the same generations instead of installing another.
      for (let attempt = 0; attempt < 2 && !result; attempt++) {
        try {
          const v = await client.call('installPending', [device.user, key, expiresAt, rotationId]);
          if (!Array.isArray(v) || v.length !== 2 || !Number.isSafeInteger(v[0]) || !Number.isSafeInteger(v[1]) || (v[1] as number) <= (v[0] as number)) {
            throw new AdminError('ADMIN_BAD_RESPONSE', 'installPending answered a malformed result');
          }
          result = { currentGen: v[0] as number, pendingGen: v[1] as number };
          installedAt = s.name;
        } catch (e) {
          const transient = e instanceof TimeoutError || (e instanceof AdminError && (e.code === 'ADMIN_UNREACHABLE' || e.code === 'ADMIN_HTTP'));
          deps.log.warn('installPending failed', { server: s.name, code: (e as { code?: string }).code ?? 'ERROR', attempt, user: device.user });
          if (!transient) break;
        }
      }
      if (result) break;
    }
  } finally {
    key.fill(0);
  }
  if (!result) {
    secret.fill(0);
    throw new ProtocolError('REG_BIZ_UNAVAILABLE', 'no business server accepted the new password; keep the saved one', CloseCode.tryAgainLater);
  }
  await deps.pauseAt?.('afterInstall');
  deps.store.recordRotation(device.serial, result.currentGen, result.pendingGen, now());
  await deps.pauseAt?.('afterRecord');
  return { secret, gen: result.pendingGen, currentGen: result.currentGen, installedAt };
}
