import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ListBucketsCommand, type S3Client } from '@aws-sdk/client-s3';
import { createS3Client, type S3Credentials } from '../../lib/s3/client.ts';
import { requireBinary } from './binaries.ts';
import { freePort, serviceHost } from './net.ts';
import { ManagedProcess } from './process.ts';
import { runDir } from './run-dir.ts';
import { testSecret } from './secrets.ts';

/** An S3 server of the suites other than MinIO: an endpoint on loopback with its own credentials. */
export interface TestS3Server {
  name: string;
  endpoint: string;
  region: string;
  credentials: S3Credentials;
  client(): S3Client;
  stop(): Promise<void>;
}

/**
 * SeaweedFS' all-in-one `weed mini` (master, volume, filer, S3 gateway) on loopback, every port it opens
 * chosen here (its defaults are fixed numbers, and gRPC ports default to http + 10000, outside the run's
 * block), telemetry off, WebDAV and the extra catalogs off. It takes no S3 bucket notifications: as a
 * source it is read by listing scans.
 */
export async function startSeaweed(options: { name: string }): Promise<TestS3Server> {
  const binary = requireBinary('weed');
  const dir = join(runDir(), `seaweed-${options.name}`);
  mkdirSync(join(dir, 'data'), { recursive: true });
  const credentials = { accessKeyId: `admin-${options.name}`, secretAccessKey: testSecret(randomBytes(18).toString('base64url')) };
  const config = join(dir, 's3.json');
  writeFileSync(config, JSON.stringify({ identities: [{ name: 'admin', credentials: [{ accessKey: credentials.accessKeyId, secretKey: credentials.secretAccessKey }], actions: ['Admin', 'Read', 'Write', 'List', 'Tagging'] }] }), { mode: 0o600 });
  const ports: Record<string, number> = {};
  for (const p of ['master.port', 'master.port.grpc', 'volume.port', 'volume.port.grpc', 'filer.port', 'filer.port.grpc', 's3.port', 's3.port.grpc', 'admin.port', 'admin.port.grpc']) ports[p] = await freePort();
  const args = [
    // glog writes its own files to the machine's temporary folder unless told to use stderr (our log file).
    '-logtostderr',
    'mini',
    `-dir=${join(dir, 'data')}`,
    `-ip=${serviceHost}`,
    `-ip.bind=${serviceHost}`,
    `-s3.config=${config}`,
    '-master.telemetry=false',
    '-webdav=false',
    '-admin.ui=false',
    '-admin.port.legacy=0',
    '-s3.port.iceberg=0',
    '-s3.port.lance=0',
    `-filer.localSocket=${join(dir, 'filer.sock')}`,
    `-s3.localSocket=${join(dir, 's3.sock')}`,
    ...Object.entries(ports).map(([flag, port]) => `-${flag}=${String(port)}`),
  ];
  const endpoint = `http://${serviceHost}:${String(ports['s3.port'])}`;
  const client = (): S3Client => createS3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials });
  const probeClient = client();
  const proc = new ManagedProcess({ name: `seaweed-${options.name}`, command: binary, args, env: {}, logFile: join(dir, 'weed.log') });
  // Up once the gateway answers a signed request: it listens before the filer behind it is ready.
  await proc.start({
    probe: async () => {
      try {
        await probeClient.send(new ListBucketsCommand({}));
        return true;
      } catch {
        return false;
      }
    },
    timeoutMs: 60_000,
    intervalMs: 250,
  });
  return { name: options.name, endpoint, region: 'us-east-1', credentials, client, stop: () => proc.stop() };
}
