// One registration session (S0.5, S0.7-S0.9, S0.14), the server side:
//   hello [token, nC, mac] -> helloReply (proof)      mutual authentication on the device key
//   finish                 -> sealed channel (READY)
//   pwConfirm [gen]        -> pwConfirmAck [gen]      optional, once, before credRequest
//   credRequest [serial, localIp] -> credReply (+ rotation) | notFound; then close 1000
// (docs/protocol.md §6.2)
import { ServerHandshake } from '../protocol/channel.ts';
import { MsgType, parseHello, helloOpening, parseCredRequest, parsePwConfirm, credReplyBody, type Envelope } from '../protocol/messages.ts';
import { openSerialToken, deriveDeviceKey, type MasterKeyring } from '../protocol/keys.ts';
import { ProtocolError, CloseCode } from '../protocol/errors.ts';
import type { ReplayCache } from '../protocol/replay.ts';
import { ServerSession, type SessionOptions, type SessionTransport } from '../server-kit/session.ts';
import { chooseServers } from './placement.ts';
import { rotate, type RotationDeps } from './rotation.ts';
import type { RegStore } from './store.ts';

export interface RegSessionDeps extends RotationDeps {
  store: RegStore;
  ring: MasterKeyring;
  replay: ReplayCache;
}

type State = 'hello' | 'finish' | 'cred' | 'busy' | 'done';

export class RegSession extends ServerSession {
  #state: State = 'hello';
  #serial = '';
  #confirmed = false;

  constructor(t: SessionTransport, opts: SessionOptions, private readonly deps: RegSessionDeps) {
    super(t, opts);
  }

  protected override cleanup(): void {
    super.cleanup();
    this.#state = 'done';
  }

  protected async step(frame: Uint8Array, env: Envelope): Promise<void> {
    switch (this.#state) {
      case 'hello':
        if (env.type !== MsgType.hello) this.unexpected(env, this.#state);
        return this.#hello(frame, env);
      case 'finish':
        this.ch = this.hs!.acceptFinish(frame, env);
        this.#state = 'cred';
        return;
      case 'cred':
        if (env.type === MsgType.pwConfirm && !this.#confirmed) return this.#pwConfirm(env);
        if (env.type !== MsgType.credRequest) this.unexpected(env, this.#state);
        return this.#cred(env);
      default:
        this.unexpected(env, this.#state);
    }
  }

  #hello(frame: Uint8Array, env: Envelope): void {
    const h = parseHello(env.body);
    const { version, serial } = openSerialToken(this.deps.ring, h.token);
    const key = deriveDeviceKey(this.deps.ring.key(version), serial);
    const hs = (this.hs = new ServerHandshake(this.opts.name));
    hs.acceptOpening(frame, env, helloOpening(h), key);
    key.fill(0);
    hs.requireVerifiedOpening();
    // After the MAC: an unauthenticated hello cannot fill the cache (docs/protocol.md §8).
    this.deps.replay.assertFresh(h.mac);
    this.#serial = serial;
    this.send(hs.proof(MsgType.helloReply));
    this.#state = 'finish';
  }

  /** The device says it uses generation `gen` (docs/protocol.md §6.2): recorded, acknowledged. */
  #pwConfirm(env: Envelope): void {
    const { gen } = parsePwConfirm(this.ch!.open(env));
    this.#confirmed = true;
    this.deps.store.recordConfirmation(this.#serial, gen);
    this.opts.log.info('generation confirmed', { serial: this.#serial, gen });
    this.opts.metrics?.event('generation_confirmed');
    this.send(this.ch!.seal(MsgType.pwConfirmAck, [gen]));
  }

  async #cred(env: Envelope): Promise<void> {
    const req = parseCredRequest(this.ch!.open(env));
    if (req.serial !== this.#serial) throw new ProtocolError('MSG_BAD_FIELD', 'credRequest.serial differs from the serial of the hello');
    this.#state = 'busy';
    const ip = this.transport.observedIp;
    const device = this.deps.store.getDevice(req.serial);
    if (!device || device.status !== 'active') {
      // S0.9: "not found", sealed for this (genuine) device; then the session ends normally.
      this.opts.log.info('device not found', { code: 'REG_NOT_FOUND', serial: req.serial, disabled: device?.status === 'disabled', ip });
      this.opts.metrics?.event('device_not_found');
      this.send(this.ch!.seal(MsgType.notFound, [device ? 'device disabled' : 'device not registered']));
      this.end(CloseCode.normal, 'REG_NOT_FOUND');
      return;
    }
    const choices = chooseServers(ip, this.deps.store.listRegions(), this.deps.store.listServers());
    if (choices.length === 0) throw new ProtocolError('REG_NO_BIZ_SERVER', 'no healthy business server');
    const r = await rotate(this.deps, device, choices);
    if (this.ended) {
      // The device went away while we rotated: nothing to send; the business server keeps
      // its current generation, so the device's saved secret still works.
      r.secret.fill(0);
      return;
    }
    this.send(this.ch!.seal(MsgType.credReply, credReplyBody({
      user: device.user,
      secret: r.secret,
      gen: r.gen,
      currentGen: r.currentGen,
      servers: choices.map((s) => ({ name: s.name, url: s.url, region: s.region })),
    })));
    r.secret.fill(0);
    this.opts.metrics?.event(r.reissued ? 'credentials_reissued' : 'credentials_issued');
    this.opts.log.info('credentials issued', {
      serial: device.serial, user: device.user, gen: r.gen, currentGen: r.currentGen, ip, via: this.transport.via,
      region: choices[0]!.region, first: choices[0]!.name, reissued: r.reissued, installedAt: r.installedAt, localIp: req.localIp,
    });
    this.end(CloseCode.normal, 'done');
  }
}
