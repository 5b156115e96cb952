import assert from 'node:assert/strict';
import { createWriteStream, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { dump } from 'js-yaml';
import { createLogger } from '../../lib/log/logger.ts';
import { startLocal, type LocalOptions, type LocalRun } from '../../workers/local/local.ts';
import { sharedKafka } from '../harness/env.ts';
import { runDir } from '../harness/run-dir.ts';
import { eventually } from '../harness/wait.ts';

// Local mode on manifests written for one suite, for the suites that pair S3 servers.

/** Local mode on these manifests and the shared Kafka, its log and state in the run folder. */
export async function startOn(dir: string, prefix: string, more: Partial<LocalOptions> = {}): Promise<LocalRun> {
  return startLocal({
    files: [dir],
    logger: createLogger({ component: 'backbeat', stream: createWriteStream(join(runDir(), `${prefix}.log`)) }),
    brokers: (await sharedKafka()).brokers,
    stateDir: join(runDir(), `state-${prefix}`),
    prefix,
    retry: { baseDelayMs: 100, maxDelayMs: 1_000 },
    ...more,
  });
}

/** A folder of these manifests and one ReplicationRule per spec (named `<name>-<i>`). */
export function manifests(name: string, docs: string[], rules: Record<string, unknown>[]): string {
  const dir = join(runDir(), `manifests-${name}`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'all.yaml'), [...docs, ...rules.map((spec, i) => dump({ apiVersion: 'backbeat.io/v1alpha1', kind: 'ReplicationRule', metadata: { name: `${name}-${String(i)}` }, spec }))].join('---\n'));
  return dir;
}

/** Waits until the status of a version says COMPLETED. */
export const completedIn = (local: () => LocalRun) => (location: string, bucket: string, key: string, versionId?: string): Promise<void> =>
  eventually(() => {
    const [v] = local().status.lookup(location, bucket, key, versionId);
    assert.equal(v?.state, 'COMPLETED', `${location}/${bucket}/${key}: ${JSON.stringify(v)}`);
  }, 90_000);
