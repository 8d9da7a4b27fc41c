// Password rotation at registration (S0.14), the registration side:
//   1. a fresh 32-byte secret, its login key passwordLoginKey(secret, user), and the secret
//      sealed for the registration servers (key derived from the master key; AAD binds the
//      serial, user and rotation id)
//   2. installPending at a business server (admin API), with a rotation id (a retried call is
//      idempotent). In one transaction the business store either keeps a usable pending
//      generation and returns its sealed secret (re-issue), or makes the new key the pending
//      generation. Current is never touched.
//   3. record the generations in the registration store
//   4. (caller) reply {secret, gen: pendingGen, currentGen} to the device
//
// Why no lost reply, crash, retry or race can lock the device out: the business server's
// current generation changes only when a device logs in with the pending secret, so the
// device holds it; a pending generation is replaced only once it is no longer usable (it was
// used, or expired while a current one exists), never while a device may hold it as its only
// working secret. Re-issuing instead of rotating again is what protects a device that has
// not logged in yet, and the decision is atomic at the business store, so two registrations
// racing (a retry while the first is still running) cannot undo each other.
import { concatBytes, utf8ToBytes } from '@noble/hashes/utils.js';
import { sealBox, openBox } from '../protocol/sealed-box.ts';
import { passwordLoginKey, systemRng, type Rng } from '../protocol/channel.ts';
import { kdf, type MasterKeyring } from '../protocol/keys.ts';
import { ProtocolError, TimeoutError } from '../protocol/errors.ts';
import { AdminError } from '../server-kit/admin-rpc.ts';
import { corrupt } from '../server-kit/sqlite.ts';
import { adminCall, type AdminCaller, type InstallPendingResult } from '../server-kit/admin-messages.ts';
import type { Logger } from '../server-kit/log.ts';
import type { BizServerRecord, Device, RegStore } from './store.ts';

export type RotationStep = 'beforeInstall' | 'afterInstall' | 'afterRecord';
export const ROTATION_STEPS: readonly RotationStep[] = ['beforeInstall', 'afterInstall', 'afterRecord'];


export interface RotationDeps {
  store: RegStore;
  ring: MasterKeyring;
  adminClient(server: BizServerRecord): AdminCaller;
  pendingTtlMs: number;
  log: Logger;
  rng?: Rng;
  now?: () => number;
  /** Fault injection for tests: awaited at each step (may never resolve, or throw). */
  pauseAt?: (step: RotationStep) => void | Promise<void>;
}

/**
 * `pendingReissues`: how many times this pending generation was issued again without a login
 * using it (0 for a new one). The session raises REISSUE_ALARM and beyond in its log and
 * metrics: a device whose every login with the new password fails (issue 9).
 */
export interface Rotation { secret: Uint8Array; gen: number; currentGen: number; reissued: boolean; installedAt: string; pendingReissues: number }

/** Re-issues of one pending secret from which on the registration server raises an alarm. */
export const REISSUE_ALARM = 5;

function sealKey(ring: MasterKeyring, d: Device): Uint8Array {
  return kdf(ring.key(d.keyVersion), 'usbphone/v1 pending secret', utf8ToBytes(d.serial));
}
const sealAad = (d: Device, rotationId: Uint8Array) => concatBytes(utf8ToBytes(`${d.serial}/${d.user}/`), rotationId);

/** The secret sealed for the registration servers: a sealed box (protocol/sealed-box.ts). */
export function sealSecret(ring: MasterKeyring, d: Device, rotationId: Uint8Array, secret: Uint8Array, rng: Rng = systemRng): Uint8Array {
  return sealBox(sealKey(ring, d), secret, sealAad(d, rotationId), rng);
}

/** Opens a sealed secret the business store returned; one that does not open is corrupt. */
export function openSealedSecret(ring: MasterKeyring, d: Device, rotationId: Uint8Array, sealed: Uint8Array): Uint8Array {
  const s = openBox(sealKey(ring, d), sealed, sealAad(d, rotationId));
  if (!s || s.length !== 32) return corrupt(`pending secret of ${d.serial}`, 'the sealed secret does not open');
  return s;
}

export async function rotate(deps: RotationDeps, device: Device, servers: readonly BizServerRecord[]): Promise<Rotation> {
  const rng = deps.rng ?? systemRng;
  const now = deps.now ?? Date.now;
  const secret = rng(32);
  const key = passwordLoginKey(secret, device.user);
  const rotationId = rng(16);
  const sealed = sealSecret(deps.ring, device, rotationId, secret, rng);
  const expiresAt = now() + deps.pendingTtlMs;
  await deps.pauseAt?.('beforeInstall');
  let result: InstallPendingResult | null = null;
  let installedAt = '';
  try {
    // At most three servers, so a registration answers within the device's step timeout
    // even when the admin API is unreachable everywhere (3 s per attempt).
    for (const s of servers.slice(0, 3)) {
      const client = deps.adminClient(s);
      // One retry with the same rotation id: if the first call took effect but its answer
      // was lost, the retry returns the same generation instead of installing another.
      for (let attempt = 0; attempt < 2 && !result; attempt++) {
        try {
          result = await adminCall(client, 'installPending', { user: device.user, loginKey: key, sealed, expiresAt, rotationId });
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
    throw new ProtocolError('REG_BIZ_UNAVAILABLE', 'no business server accepted the new password; keep the saved one');
  }
  await deps.pauseAt?.('afterInstall');
  if (result.installed) {
    await deps.store.recordRotation(device.serial, result.currentGen, result.pendingGen, now());
    await deps.pauseAt?.('afterRecord');
    return { secret, gen: result.pendingGen, currentGen: result.currentGen, reissued: false, installedAt, pendingReissues: 0 };
  }
  secret.fill(0);
  const previous = openSealedSecret(deps.ring, device, result.rotationId, result.sealed);
  const pendingReissues = await deps.store.recordReissue(device.serial, result.currentGen, result.pendingGen, now());
  await deps.pauseAt?.('afterRecord');
  return { secret: previous, gen: result.pendingGen, currentGen: result.currentGen, reissued: true, installedAt, pendingReissues };
}
