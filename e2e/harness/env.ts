import { startAzurite, type TestBlobServer } from './azurite.ts';
import { startKafka, type KafkaServer } from './kafka.ts';
import { startKube, type KubeControlPlane } from './kube.ts';
import { startMinio, type MinioOptions, type MinioServer } from './minio.ts';
import { startNode, type KubeNode } from './node.ts';
import { existingRunDir, removeRunDir } from './run-dir.ts';
import { startRgw } from './rgw.ts';
import { startSeaweed, type TestS3Server } from './seaweed.ts';
import { secretsInLogs } from './secrets.ts';

// The test environment of one test run. Kafka and the Kubernetes control plane are shared by every suite
// (each suite uses its own topics, groups and namespaces); MinIO servers are started per suite, as sites.

const started: { stop(): Promise<void> }[] = [];
let kafka: Promise<KafkaServer> | undefined;
let kube: Promise<KubeControlPlane> | undefined;
let node: Promise<KubeNode> | undefined;

function track<T extends { stop(): Promise<void> }>(component: Promise<T>): Promise<T> {
  return component.then((c) => {
    started.push(c);
    return c;
  });
}

export function sharedKafka(): Promise<KafkaServer> {
  kafka ??= track(startKafka());
  return kafka;
}

export function sharedKube(): Promise<KubeControlPlane> {
  kube ??= track(startKube());
  return kube;
}

/** The run's Kubernetes node (harness/node.ts), started by the first suite that needs it. */
export function sharedNode(): Promise<KubeNode> {
  node ??= track(startNode());
  return node;
}

export function minio(options: MinioOptions): Promise<MinioServer> {
  return track(startMinio(options));
}

export function seaweed(options: { name: string }): Promise<TestS3Server> {
  return track(startSeaweed(options));
}

export function azurite(options: { name: string }): Promise<TestBlobServer> {
  return track(startAzurite(options));
}

export function rgw(options: { name: string }): Promise<TestS3Server> {
  return track(startRgw(options));
}

/**
 * Stops every component started in this run, newest first, and removes the run folder; fails when a
 * log of the run (the components', the workers', the pods') holds a secret of the run.
 */
export async function stopAll(): Promise<void> {
  while (started.length > 0) await started.pop()?.stop();
  kafka = undefined;
  kube = undefined;
  node = undefined;
  const dir = existingRunDir();
  const leaks = dir !== undefined ? secretsInLogs(dir) : [];
  removeRunDir();
  if (leaks.length > 0) throw new Error(`secrets of the run in its logs:\n${leaks.join('\n')}`);
}
