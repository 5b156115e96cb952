import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../lib/log/logger.ts';
import { KubeError, type KubeRest } from '../lib/kube/rest.ts';

export interface LeaseOptions {
  rest: KubeRest;
  namespace: string;
  name: string;
  /** Unique per operator process (the pod name, plus a random part). */
  identity: string;
  durationSeconds?: number;
  logger: Logger;
}

interface Lease {
  metadata: { name: string; resourceVersion?: string };
  spec: { holderIdentity?: string; leaseDurationSeconds?: number; renewTime?: string; acquireTime?: string; leaseTransitions?: number };
}

const microTime = (d = new Date()): string => d.toISOString().replace('Z', '000Z');

/**
 * One active operator at a time (coordination.k8s.io Lease). A candidate takes the lease when it is free
 * or its holder stopped renewing for leaseDurationSeconds; the leader renews every sixth of that, and
 * gives it up when no renewal succeeded for two thirds of it (its own event loop's stalls not counted,
 * up to the whole duration). The resourceVersion makes each take or renewal a compare-and-swap, so two
 * candidates never both win.
 */
export class LeaderLease {
  private readonly options: LeaseOptions;
  private readonly path: string;
  private readonly duration: number;
  private renewing: NodeJS.Timeout | undefined;

  constructor(options: LeaseOptions) {
    this.options = options;
    this.path = `/apis/coordination.k8s.io/v1/namespaces/${options.namespace}/leases`;
    this.duration = options.durationSeconds ?? 15;
  }

  /** Tries once; true when this process holds the lease afterwards. */
  private async tryTake(): Promise<boolean> {
    const { rest, identity, name } = this.options;
    const now = new Date();
    const current = await rest.find<Lease>(`${this.path}/${name}`);
    if (current === undefined) {
      try {
        await rest.create(this.path, { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name }, spec: { holderIdentity: identity, leaseDurationSeconds: this.duration, acquireTime: microTime(now), renewTime: microTime(now), leaseTransitions: 0 } });
        return true;
      } catch (err) {
        if (err instanceof KubeError && err.code === 409) return false;
        throw err;
      }
    }
    const { spec } = current;
    const held = spec.holderIdentity !== undefined && spec.holderIdentity !== '' && spec.holderIdentity !== identity;
    const expires = Date.parse(spec.renewTime ?? '1970-01-01T00:00:00Z') + (spec.leaseDurationSeconds ?? this.duration) * 1000;
    if (held && expires > now.getTime()) return false;
    const taking = spec.holderIdentity !== identity;
    try {
      await rest.replace(`${this.path}/${name}`, {
        ...current,
        spec: {
          ...spec,
          holderIdentity: identity,
          leaseDurationSeconds: this.duration,
          renewTime: microTime(now),
          ...(taking ? { acquireTime: microTime(now), leaseTransitions: (spec.leaseTransitions ?? 0) + 1 } : {}),
        },
      });
      return true;
    } catch (err) {
      if (err instanceof KubeError && err.code === 409) return false;
      throw err;
    }
  }

  /** Waits until this process leads, then renews; `onLost` is called once if a renewal fails for too long. */
  async acquire(signal: AbortSignal, onLost: () => void): Promise<void> {
    const { logger } = this.options;
    let logged = false;
    while (!signal.aborted) {
      const taken = await this.tryTake().catch((err: unknown) => {
        logger.warn('lease check failed', { error: (err as Error).message });
        return false;
      });
      if (taken) break;
      if (!logged) logger.info('waiting for the lease: another operator leads', { lease: this.options.name });
      logged = true;
      await sleep((this.duration * 1000) / 3, undefined, { signal }).catch(() => undefined);
    }
    if (signal.aborted) return;
    logger.info('leading', { lease: this.options.name, identity: this.options.identity });
    // Counted from when a successful renewal was sent, and checked before each attempt: a renewal that
    // hangs must not keep this process leading past the point where another may take over.
    let lastRenewal = Date.now();
    /** When the renewal under way was sent, and why the last one failed: what a lost lease is told with. */
    let inFlight: number | undefined;
    let lastError: string | undefined;
    const period = (this.duration * 1000) / 6;
    const expiry = this.duration * 1000;
    // The event loop's own stalls (a long pass on a starved CPU): this process did nothing meanwhile, so
    // they do not count against the renewal deadline. Only the lease's expiry, after which another may
    // take it, does; before that, the renewal this tick sends settles it (a compare-and-swap).
    let lastTick = lastRenewal;
    let stalls: { start: number; ms: number }[] = [];
    this.renewing = setInterval(() => {
      const now = Date.now();
      if (now - lastTick > 2 * period) stalls.push({ start: lastTick + period, ms: now - lastTick - period });
      lastTick = now;
      stalls = stalls.filter((x) => x.start >= lastRenewal);
      const stalledMs = stalls.reduce((n, x) => n + x.ms, 0);
      if (now - lastRenewal > expiry || now - lastRenewal - stalledMs > expiry * (2 / 3)) {
        clearInterval(this.renewing);
        logger.error('lease lost', { lease: this.options.name, msSinceRenewal: now - lastRenewal, stalledMs, renewalPendingMs: inFlight === undefined ? undefined : now - inFlight, lastError });
        onLost();
        return;
      }
      if (inFlight !== undefined) return;
      inFlight = now;
      void this.tryTake()
        .then(
          (ok) => {
            if (ok) lastRenewal = now;
            else lastError = 'another process holds it';
          },
          (err: unknown) => {
            lastError = (err as Error).message;
          },
        )
        .finally(() => {
          inFlight = undefined;
        });
    }, period);
  }

  /** Gives the lease up, so that a successor need not wait for it to expire. */
  async release(): Promise<void> {
    clearInterval(this.renewing);
    const current = await this.options.rest.find<Lease>(`${this.path}/${this.options.name}`).catch(() => undefined);
    if (current?.spec.holderIdentity !== this.options.identity) return;
    await this.options.rest.replace(`${this.path}/${this.options.name}`, { ...current, spec: { ...current.spec, holderIdentity: '', renewTime: microTime(new Date(0)) } }).catch(() => undefined);
  }
}
