import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { createBlobAccount, type BlobAccount } from '../../lib/azure/account.ts';
import { freePort, serviceHost } from './net.ts';
import { ManagedProcess } from './process.ts';
import { runDir } from './run-dir.ts';
import { testSecret } from './secrets.ts';

/** Azurite's blob service: one storage account of the run's own name and key, on loopback. */
export interface TestBlobServer {
  accountName: string;
  accountKey: string;
  /** The account's blob service URL (Azurite's path style: http://host:port/<account>). */
  endpoint: string;
  account(): BlobAccount;
  stop(): Promise<void>;
}

/**
 * Azurite (the npm package, a devDependency) serving blobs on loopback, with telemetry off (it would
 * otherwise send usage data out), data under the run folder, and one account whose key is made here.
 */
export async function startAzurite(options: { name: string }): Promise<TestBlobServer> {
  const dir = join(runDir(), `azurite-${options.name}`);
  mkdirSync(dir, { recursive: true });
  const accountName = `bb${options.name.replace(/[^a-z0-9]/g, '')}`.slice(0, 24);
  const accountKey = testSecret(randomBytes(32).toString('base64'));
  const port = await freePort();
  const main = createRequire(import.meta.url).resolve('azurite/dist/src/blob/main.js');
  const endpoint = `http://${serviceHost}:${String(port)}/${accountName}`;
  const account = (): BlobAccount => createBlobAccount({ accountName, endpoint, credentials: { accountKey } });
  const probe = account();
  const proc = new ManagedProcess({
    name: `azurite-${options.name}`,
    command: process.execPath,
    args: [main, '--blobHost', serviceHost, '--blobPort', String(port), '--location', dir, '--disableTelemetry', '--skipApiVersionCheck'],
    env: { AZURITE_ACCOUNTS: `${accountName}:${accountKey}` },
    logFile: join(dir, 'azurite.log'),
  });
  await proc.start({
    probe: async () => {
      try {
        await probe.service.getProperties();
        return true;
      } catch {
        return false;
      }
    },
    timeoutMs: 60_000,
    intervalMs: 250,
  });
  return { accountName, accountKey, endpoint, account, stop: () => proc.stop() };
}
