import { compileBucketConfigs } from '../lib/config/bucket-config.ts';
import { loadManifests } from '../lib/config/manifests.ts';
import { EXIT } from './exit.ts';

/** `backbeat validate`: the per-bucket replication configs the manifests compile to, or what is wrong with them (ConfigError). */
export function validate(files: string[]): number {
  const manifests = loadManifests(files);
  const configs = [...compileBucketConfigs(manifests).values()];
  process.stdout.write(`${JSON.stringify(configs, null, 2)}\n`);
  process.stderr.write(`valid: ${String(manifests.locations.size)} locations, ${String(manifests.rules.size)} rules, ${String(configs.length)} source buckets\n`);
  return EXIT.ok;
}
