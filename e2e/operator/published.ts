import type { BucketReplicationConfig } from '../../lib/config/bucket-config.ts';
import type { KubeObject, KubeRest } from '../../lib/kube/rest.ts';
import { RELEASE } from './cluster.ts';

// What the operator has published, read from the API server as the workers' volumes are made from it:
// the ConfigMaps of the installation (locations.json, and the bucket files of every shard).

type ConfigMapObject = KubeObject & { data?: Record<string, string> };

const selector = encodeURIComponent(`app.kubernetes.io/managed-by=backbeat-operator,app.kubernetes.io/instance=${RELEASE}`);
const path = (namespace: string): string => `/api/v1/namespaces/${namespace}/configmaps`;

export interface Published {
  /** Every file of every published ConfigMap, as one folder. */
  files: Record<string, string>;
  /** Bucket configs by `location/bucket`. */
  buckets: Map<string, BucketReplicationConfig>;
  /** Each ConfigMap holding bucket files: its name, data size (keys and values) and file count. */
  shards: { name: string; bytes: number; files: number }[];
}

function view(items: ConfigMapObject[]): Published {
  const files: Record<string, string> = {};
  const shards: Published['shards'] = [];
  for (const cm of items) {
    const data = cm.data ?? {};
    Object.assign(files, data);
    const names = Object.keys(data).filter((k) => k.startsWith('bucket_'));
    if (cm.metadata.labels?.['backbeat.io/published'] === 'buckets') {
      shards.push({ name: cm.metadata.name, bytes: Object.entries(data).reduce((n, [k, v]) => n + Buffer.byteLength(k) + Buffer.byteLength(v), 0), files: names.length });
    }
  }
  const buckets = new Map<string, BucketReplicationConfig>();
  for (const [k, v] of Object.entries(files)) {
    if (!k.startsWith('bucket_')) continue;
    const c = JSON.parse(v) as BucketReplicationConfig;
    buckets.set(c.Source, c);
  }
  return { files, buckets, shards: shards.sort((a, b) => a.name.localeCompare(b.name)) };
}

export async function published(rest: KubeRest, namespace: string): Promise<Published> {
  return view((await rest.list<ConfigMapObject>(`${path(namespace)}?labelSelector=${selector}`)).items);
}

export interface PublishedWatch {
  /** Every state seen, in order, from the first list on: one per change of a published ConfigMap. */
  states: { resourceVersion: string; published: Published }[];
  stop(): void;
}

/**
 * Follows the published ConfigMaps with a watch, so that every version the API server stored is seen,
 * however briefly it lasted (a poll could miss one). `ended()`: the watch stopped early, so `states`
 * may miss some.
 */
export async function watchPublished(rest: KubeRest, namespace: string): Promise<PublishedWatch & { ended: () => boolean }> {
  const first = await rest.list<ConfigMapObject>(`${path(namespace)}?labelSelector=${selector}`);
  const current = new Map(first.items.map((cm) => [cm.metadata.name, cm]));
  const states: PublishedWatch['states'] = [{ resourceVersion: first.resourceVersion, published: view([...current.values()]) }];
  const res = await rest.stream(`${path(namespace)}?watch=1&labelSelector=${selector}&resourceVersion=${first.resourceVersion}`);
  let ended = false;
  let buffer = '';
  res.setEncoding('utf8');
  res.on('data', (chunk: string) => {
    buffer += chunk;
    for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      if (line.trim() === '') continue;
      const event = JSON.parse(line) as { type: string; object: ConfigMapObject };
      if (event.type === 'ERROR') {
        ended = true;
        continue;
      }
      if (event.type === 'DELETED') current.delete(event.object.metadata.name);
      else current.set(event.object.metadata.name, event.object);
      states.push({ resourceVersion: event.object.metadata.resourceVersion ?? '', published: view([...current.values()]) });
    }
  });
  res.on('end', () => (ended = true));
  res.on('error', () => (ended = true));
  return {
    states,
    ended: () => ended,
    stop: () => res.destroy(),
  };
}
