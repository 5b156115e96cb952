import { blobDestinationProblem } from '../azure/names.ts';
import type { Manifests } from './manifests.ts';
import { AZURE_DESTINATION_ONLY, AZURE_NEEDS_ACCOUNT, BUCKET_NAME_RULES, DESTINATION_IS_SOURCE, DESTINATIONS_UNIQUE, ENDPOINT_PLAIN, JOURNAL_NEEDS_A_SOURCE, KMS_KEY_NEEDS_KMS, ENDPOINT_USERINFO, TAG_KEY_TWICE, USERINFO, WEBHOOK_NEEDS_KAFKA } from './schema.ts';
import type { Problem } from './validate.ts';

const userinfo = new RegExp(USERINFO);

/**
 * The checks a single schema cannot express: the CEL rules of schema.ts (which the API server enforces
 * for the operator), with their messages (e2e/operator/crds.test.ts pairs each rule with its check
 * here), and references between resources.
 */
export function checkSemantics(m: Manifests, fileOf: (resource: string) => string | undefined): Problem[] {
  const problems: Problem[] = [];
  const at = (resource: string, path: string, message: string): void => {
    const file = fileOf(resource);
    problems.push({ ...(file !== undefined ? { file } : {}), resource, path, message });
  };

  for (const [name, location] of m.locations) {
    if (location.spec.endpoint !== undefined && userinfo.test(location.spec.endpoint)) at(`Location/${name}`, 'spec.endpoint', ENDPOINT_USERINFO);
    if (location.spec.endpoint?.startsWith('http://') === true && location.spec.insecure !== true) at(`Location/${name}`, 'spec.endpoint', ENDPOINT_PLAIN);
    const journal = location.spec.journal;
    if (journal !== undefined && journal.kafka === undefined && journal.scan === undefined) {
      at(`Location/${name}`, 'spec.journal', JOURNAL_NEEDS_A_SOURCE);
    }
    if (journal?.webhook !== undefined && journal.kafka === undefined) at(`Location/${name}`, 'spec.journal.webhook', WEBHOOK_NEEDS_KAFKA);
    if ((location.spec.type === 'azure') !== (location.spec.azure !== undefined)) at(`Location/${name}`, 'spec.azure', AZURE_NEEDS_ACCOUNT);
    if (location.spec.type === 'azure' && (journal !== undefined || location.spec.transient)) at(`Location/${name}`, 'spec', AZURE_DESTINATION_ONLY);
  }

  for (const [name, rule] of m.rules) {
    const resource = `ReplicationRule/${name}`;
    const { source, destinations } = rule.spec;
    const sourceLocation = m.locations.get(source.location);
    if (sourceLocation === undefined) {
      at(resource, 'spec.source.location', `unknown Location "${source.location}"`);
    } else if (sourceLocation.spec.type === 'azure') {
      at(resource, 'spec.source.location', `Location "${source.location}" is type: azure, a destination only`);
    } else if (sourceLocation.spec.journal === undefined) {
      at(resource, 'spec.source.location', `Location "${source.location}" has no spec.journal, so its changes cannot be observed`);
    }
    if (rule.spec.replicateVersionDeletes && sourceLocation?.spec.transient === true) {
      // The GC permanently deletes each replicated version from a transient source: replicating those
      // deletions would remove the very replicas it verified.
      at(resource, 'spec.replicateVersionDeletes', `cannot be true: Location "${source.location}" is a transient source, whose versions the GC deletes once replicated`);
    }
    const bucketName = (path: string, name: string): void => {
      const broken = BUCKET_NAME_RULES.find((r) => r.refuses(name));
      if (broken !== undefined) at(resource, path, broken.message);
    };
    bucketName('spec.source.bucket', source.bucket);
    const keys = (rule.spec.filter?.tags ?? []).map((t) => t.key);
    if (new Set(keys).size < keys.length) at(resource, 'spec.filter.tags', TAG_KEY_TWICE);
    const seen = new Map<string, number>();
    destinations.forEach((d, i) => {
      const path = `spec.destinations[${i}]`;
      bucketName(`${path}.bucket`, d.bucket);
      const target = m.locations.get(d.location);
      if (target === undefined) at(resource, `${path}.location`, `unknown Location "${d.location}"`);
      const blob = target?.spec.type === 'azure' ? blobDestinationProblem(d) : undefined;
      if (blob !== undefined) at(resource, `${path}.${blob.path}`, blob.message);
      if (d.location === source.location && d.bucket === source.bucket) {
        at(resource, path, DESTINATION_IS_SOURCE);
      }
      if (d.kmsKeyId !== undefined && d.serverSideEncryption !== 'aws:kms') at(resource, `${path}.kmsKeyId`, KMS_KEY_NEEDS_KMS);
      const id = `${d.location}/${d.bucket}`;
      const first = seen.get(id);
      if (first !== undefined) at(resource, path, `${DESTINATIONS_UNIQUE}: duplicate of spec.destinations[${first}] (${id})`);
      else seen.set(id, i);
    });
  }
  return problems;
}
