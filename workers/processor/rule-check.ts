import type { BucketReplicationConfig } from '../../lib/config/bucket-config.ts';
import { type ReplicationTask, taskDestination, type TaskDestination } from '../../lib/queue/messages.ts';

/**
 * What the rules a worker read say of one destination of a task: the destination as its rule has it
 * now (storage class and key prefix included), or why nothing is done. A task does only what a current
 * rule asks for: one queued under an earlier form of the rule, or forged by whoever can write to Kafka,
 * copies or deletes nothing the rules do not name. The tag filter is the populator's to apply (it reads
 * the tags); the processor checks the rest.
 */
export function checkAgainstRules(configs: ReadonlyMap<string, BucketReplicationConfig>, task: ReplicationTask, d: TaskDestination): { destination: TaskDestination; replicateReplicas: boolean; replicateDeleteMarkers: boolean } | { refused: string } {
  const source = `${task.source.location}/${task.source.bucket}`;
  const rule = configs.get(source)?.Rules.find((r) => r.ID === d.rule);
  if (rule === undefined) return { refused: `no rule "${d.rule}" replicates ${source}` };
  const current = rule.Destinations.find((x) => x.Id === d.id && x.Location === d.location && x.Bucket === d.bucket);
  if (current === undefined) return { refused: `rule "${d.rule}" does not send to ${d.id}` };
  if (rule.Filter.Prefix !== undefined && !task.source.key.startsWith(rule.Filter.Prefix)) return { refused: `the key is outside rule "${d.rule}"'s prefix` };
  if (task.kind === 'versionDelete' && rule.VersionDeleteReplication.Status !== 'Enabled') return { refused: `rule "${d.rule}" does not replicate version deletes` };
  if (task.kind === 'deleteMarker' && rule.DeleteMarkerReplication.Status !== 'Enabled') return { refused: `rule "${d.rule}" does not replicate delete markers` };
  return { destination: taskDestination(current, d.rule), replicateReplicas: rule.ReplicaReplication?.Status === 'Enabled', replicateDeleteMarkers: rule.DeleteMarkerReplication.Status === 'Enabled' };
}
