import { execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createS3Client } from '../../lib/s3/client.ts';
import { requireBinary } from './binaries.ts';
import { freePort, httpGet, serviceHost } from './net.ts';
import { ManagedProcess } from './process.ts';
import { runDir } from './run-dir.ts';
import type { TestS3Server } from './seaweed.ts';
import { testSecret } from './secrets.ts';
import { eventually } from './wait.ts';

const run = promisify(execFile);

/**
 * A throwaway Ceph cluster on loopback: one monitor, one OSD keeping its objects in memory (memstore), and
 * radosgw, without cephx (nothing but this run can reach it), from Debian's packages that `make deps`
 * unpacked. The monitor and the gateway listen on ports of the run's block; the OSD binds where Ceph
 * picks (127.0.0.1 only).
 */
export async function startRgw(options: { name: string }): Promise<TestS3Server> {
  const root = requireBinary('rgwRoot');
  const dir = join(runDir(), `rgw-${options.name}`);
  for (const d of ['mon', 'osd', 'run', 'log', 'rgw']) mkdirSync(join(dir, d), { recursive: true });
  const [monPort, rgwPort] = [await freePort(), await freePort()];
  const lib = join(root, 'usr/lib/x86_64-linux-gnu');
  const conf = join(dir, 'ceph.conf');
  const fsid = randomUUID();
  writeFileSync(
    conf,
    [
      '[global]',
      `fsid = ${fsid}`,
      `mon host = v2:127.0.0.1:${String(monPort)}`,
      'mon initial members = a',
      'public addr = 127.0.0.1',
      'auth cluster required = none',
      'auth service required = none',
      'auth client required = none',
      'osd pool default size = 1',
      'osd pool default min size = 1',
      'osd pool default pg num = 8',
      'osd pool default pgp num = 8',
      'mon allow pool size one = true',
      'mon warn on pool no redundancy = false',
      'osd objectstore = memstore',
      'memstore device bytes = 1073741824',
      `osd data = ${join(dir, 'osd')}`,
      `mon data = ${join(dir, 'mon')}`,
      `run dir = ${join(dir, 'run')}`,
      // One socket per process: radosgw-admin runs beside radosgw under the same name.
      `admin socket = ${join(dir, 'run')}/$name.$pid.asok`,
      `log file = ${join(dir, 'log')}/$name.log`,
      `erasure code dir = ${join(lib, 'ceph/erasure-code')}`,
      `plugin dir = ${join(lib, 'ceph')}`,
      `osd class dir = ${join(lib, 'rados-classes')}`,
      '[client.rgw]',
      // Without it the gateway loops on get_initial_auth_request returned -13 (research: real-node-and-s3.md).
      'ms mon client mode = crc secure',
      // Where the test node's pods reach it too (127.0.0.1 elsewhere).
      `rgw frontends = beast endpoint=${serviceHost}:${String(rgwPort)}`,
      `rgw data = ${join(dir, 'rgw')}`,
      '',
    ].join('\n'),
  );
  const env = { LD_LIBRARY_PATH: [lib, join(lib, 'ceph'), join(root, 'lib/x86_64-linux-gnu')].join(':'), PYTHONPATH: join(root, 'usr/lib/python3/dist-packages') };
  const bin = (b: string): string => join(root, 'usr/bin', b);
  const tool = (b: string, args: string[]): Promise<{ stdout: string }> => run(bin(b), args, { env: { ...process.env, ...env }, timeout: 30_000 });
  const daemon = (name: string, b: string, args: string[]): ManagedProcess => new ManagedProcess({ name: `rgw-${options.name}-${name}`, command: bin(b), args: ['-f', '-c', conf, ...args], env, logFile: join(dir, 'log', `${name}.out`) });

  const monmap = join(dir, 'monmap');
  await tool('monmaptool', ['--create', '--add', 'a', `v2:127.0.0.1:${String(monPort)}`, '--fsid', fsid, monmap]);
  await tool('ceph-mon', ['--mkfs', '-i', 'a', '--monmap', monmap, '-c', conf]);
  const mon = daemon('mon', 'ceph-mon', ['-i', 'a']);
  const ceph = (args: string[]): Promise<{ stdout: string }> => tool('ceph', ['-c', conf, '--connect-timeout', '5', ...args]);
  await mon.start({ probe: async () => (await ceph(['mon', 'stat'])).stdout.includes('quorum'), timeoutMs: 60_000, intervalMs: 500 });
  const osdUuid = randomUUID();
  const id = (await ceph(['osd', 'create', osdUuid])).stdout.trim();
  await tool('ceph-osd', ['-c', conf, '-i', id, '--mkfs', '--osd-uuid', osdUuid]);
  const osd = daemon('osd', 'ceph-osd', ['-i', id]);
  await osd.start({ probe: async () => (await ceph(['osd', 'stat'])).stdout.includes('1 up'), timeoutMs: 60_000, intervalMs: 500 });
  const gateway = daemon('radosgw', 'radosgw', ['-n', 'client.rgw']);
  const endpoint = `http://${serviceHost}:${String(rgwPort)}`;
  await gateway.start({ probe: async () => (await httpGet(`${endpoint}/`)).status === 200, timeoutMs: 90_000, intervalMs: 500 });
  const credentials = { accessKeyId: `rgw${randomBytes(6).toString('hex')}`, secretAccessKey: testSecret(randomBytes(18).toString('base64url')) };
  // The user's pools are made on first use: retried while the gateway finishes its own set-up.
  await eventually(() => tool('radosgw-admin', ['-c', conf, '-n', 'client.rgw', 'user', 'create', '--uid=tester', '--display-name=tester', `--access-key=${credentials.accessKeyId}`, `--secret-key=${credentials.secretAccessKey}`]), 30_000, 1_000);
  return {
    name: options.name,
    endpoint,
    region: 'us-east-1',
    credentials,
    client: () => createS3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials }),
    async stop() {
      await gateway.stop();
      await osd.stop();
      await mon.stop();
    },
  };
}
