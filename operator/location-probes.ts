import type { Secret } from '../lib/config/schema.ts';
import type { KubeObject } from '../lib/kube/rest.ts';
import type { LocationCheck } from './locations.ts';
import type { LocationObject } from './rule-checks.ts';

/**
 * The last probe of each Location, reused by the passes that follow it closely (a rule applied, a
 * status written): a Location is probed again when its spec or its Secret changed, when it was not
 * Ready, when a rule names a bucket its listing lacked (one just created), or once its probe is
 * `maxAgeMs` old, which is how an endpoint that went down turns Ready=False at the next resync. The
 * clients of the probes kept are the passes' clients; one is let go when its Location is probed again
 * or gone.
 */
export class LocationProbes {
  private readonly last = new Map<string, { key: string; at: number; check: LocationCheck }>();
  private readonly maxAgeMs: number;
  private readonly now: () => number;

  constructor(maxAgeMs: number, now: () => number = Date.now) {
    this.maxAgeMs = maxAgeMs;
    this.now = now;
  }

  /** The Location's probe: the last one while it still holds, else a new one made by `probe`. */
  async check(location: LocationObject, secret: (Secret & KubeObject) | undefined, named: Iterable<string>, probe: () => Promise<LocationCheck>): Promise<LocationCheck> {
    const name = location.metadata.name;
    const key = `${location.metadata.uid ?? ''}/${String(location.metadata.generation ?? 0)}/${secret?.metadata.uid ?? ''}/${secret?.metadata.resourceVersion ?? ''}`;
    const kept = this.last.get(name);
    if (kept !== undefined && kept.key === key && kept.check.condition.status === 'True' && this.now() - kept.at < this.maxAgeMs && [...named].every((b) => kept.check.buckets?.has(b) === true)) return kept.check;
    const check = await probe();
    kept?.check.client?.destroy();
    this.last.set(name, { key, at: this.now(), check });
    return check;
  }

  /** Lets go of the probes of Locations not in `names` (deleted). */
  keep(names: ReadonlySet<string>): void {
    for (const [name, kept] of this.last) {
      if (names.has(name)) continue;
      kept.check.client?.destroy();
      this.last.delete(name);
    }
  }
}
