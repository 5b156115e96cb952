import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { compileBucketConfigs } from '../lib/config/bucket-config.ts';
import { loadManifests } from '../lib/config/manifests.ts';
import { publishConfig } from '../lib/config/published.ts';
import { ruleStarts } from '../workers/local/rule-starts.ts';
import { freePort, httpGet } from '../e2e/harness/net.ts';
import { logTail, type ManagedProcess } from '../e2e/harness/process.ts';
import { writeBenchManifests, type Contender } from './contenders.ts';
import { backbeatProcess, cpuSeconds, peakRss } from './process.ts';

// `make bench BENCH='--processors 1,2,4'`: backbeat as the operator runs it on Kubernetes, one process per
// worker role (scanner, status, and N processor replicas of the destination, one consumer group), on
// Kafka, from the config the operator would publish. What processor replicas add, on this machine's
// cores. Timed from the scanner's start (the others already running, as pods are when a rule is applied);
// CPU and memory are every process's, start-up included.

/**
 * The published config and mounted Secrets of the bench's manifests, as a worker pod sees them: the
 * bucket configs and locations in `config/`, each Secret a folder of files in `credentials/`.
 */
function publish(manifestsDir: string, dir: string): { configDir: string; credentialsDir: string } {
  const manifests = loadManifests([manifestsDir]);
  const configs = compileBucketConfigs(manifests, ruleStarts(join(dir, 'state'), manifests.rules.keys()));
  const configDir = join(dir, 'config');
  const credentialsDir = join(dir, 'credentials');
  mkdirSync(configDir, { recursive: true });
  for (const [file, text] of Object.entries(publishConfig([...manifests.locations.values()], configs.values()))) writeFileSync(join(configDir, file), text);
  for (const [name, secret] of manifests.secrets) {
    mkdirSync(join(credentialsDir, name), { recursive: true });
    for (const [key, value] of Object.entries(secret.stringData ?? {})) writeFileSync(join(credentialsDir, name, key), value);
  }
  return { configDir, credentialsDir };
}

/**
 * backbeat's worker roles as separate processes on Kafka, `processors` replicas of the destination's
 * processor. Done when the status role's API counts every object COMPLETED; CPU and peak memory are the
 * sums over the processes.
 */
export function workersContender(brokers: string[], processors: number): Contender {
  const name = `backbeat workers, ${String(processors)} processor${processors > 1 ? 's' : ''}`;
  return {
    name,
    describe: ({ concurrency }) => `backbeat worker --role scanner|status|processor (×${String(processors)}) --concurrency ${String(concurrency)} --brokers <kafka>, one process each (as the operator's Deployments), timed from the scanner's start`,
    async run(job) {
      const { configDir, credentialsDir } = publish(writeBenchManifests(job), job.dir);
      const prefix = `bench-${job.targetBucket}`;
      const statusUrl = `http://127.0.0.1:${String(await freePort())}`;
      const procs: ManagedProcess[] = [];
      /** Starts a role's process, ready once its /healthz answers. */
      const role = async (which: string, extra: string[], listen?: string): Promise<void> => {
        const where = listen ?? `127.0.0.1:${String(await freePort())}`;
        const args = ['worker', '--role', which, ...extra, '--config', configDir, '--credentials', credentialsDir, '--brokers', brokers.join(','), '--prefix', prefix, '--listen', where, '--concurrency', String(job.concurrency)];
        const label = `${which}-${String(procs.length)}`;
        const proc = backbeatProcess({ name: `${prefix}-${label}`, args, logFile: join(job.dir, `${label}.log`) });
        procs.push(proc);
        await proc.start({ probe: async () => (await httpGet(`http://${where}/healthz`)).status === 200, timeoutMs: 60_000, intervalMs: 100 });
      };
      try {
        // Processors and status running first, as pods are before a rule is applied: the clock starts
        // with the scanner, whose start is the backfill.
        await Promise.all([...Array.from({ length: processors }, () => role('processor', ['--location', 'dst'])), role('status', ['--state-dir', join(job.dir, 'status-state')], statusUrl.slice('http://'.length))]);
        const started = performance.now();
        await role('scanner', ['--location', 'src']);
        let seconds = 0;
        let failure: string | undefined;
        for (;;) {
          const res = await httpGet(`${statusUrl}/v1/summary`).catch(() => undefined);
          if (res?.status === 200) {
            const summary = JSON.parse(res.body) as Record<string, number>;
            if ((summary.FAILED ?? 0) > 0) failure = `${String(summary.FAILED)} objects FAILED`;
            if ((summary.COMPLETED ?? 0) >= job.objects || failure !== undefined) {
              seconds = (performance.now() - started) / 1000;
              break;
            }
          }
          if (performance.now() - started > 30 * 60_000) failure = 'not done in 30 minutes';
          if (failure !== undefined) break;
          await new Promise((r) => setTimeout(r, 20));
        }
        if (failure !== undefined) throw new Error(`${name}: ${failure}\n${procs.map((p) => logTail(p.spec.logFile)).join('\n')}`);
        return { seconds, peakRssBytes: procs.reduce((sum, p) => sum + peakRss(p.pid), 0), cpuSeconds: procs.reduce((sum, p) => sum + cpuSeconds(p.pid), 0) };
      } finally {
        await Promise.all(procs.map((p) => p.stop()));
      }
    },
  };
}
