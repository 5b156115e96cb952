import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { API_GROUP } from '../lib/config/schema.ts';
import { loadKubeConfig } from '../lib/kube/client.ts';
import { kubeRest } from '../lib/kube/rest.ts';
import type { Logger } from '../lib/log/logger.ts';
import { follow } from '../lib/queue/follow.ts';
import { kafkaQueue } from '../lib/queue/kafka.ts';
import type { QueueAdmin, QueueConsumer } from '../lib/queue/queue.ts';
import { Figures, installationTopics, parseMessage, queueNames } from '../lib/queue/messages.ts';
import { healthServer, listenOn } from '../lib/http/health.ts';
import { LeaderLease } from './lease.ts';
import { operatorMetrics } from './metrics.ts';
import { PassFailed, Reconciler } from './reconciler.ts';
import { watchCollection } from './watch.ts';
import { MANAGED_BY, type WorkerSettings } from './workers.ts';
import type { KafkaSecurity } from '../lib/queue/kafka-security.ts';

export interface OperatorOptions {
  namespace: string;
  settings: Omit<WorkerSettings, 'owner'>;
  /** How the operator itself reaches Kafka (the workers mount the same, `settings.kafkaMounts`). */
  kafkaSecurity?: KafkaSecurity;
  /** The operator's own Deployment, owner of everything it creates. */
  ownerDeployment?: string;
  kubeconfig?: string;
  /** Full pass this often even without a change: probes, figures, lag. */
  resyncMs?: number;
  scaleDownDelayMs?: number;
  listenHost?: string;
  listenPort?: number;
  logger: Logger;
}

export interface OperatorRun {
  url: string;
  /** Resolves when the operator stops by itself (the lease was lost). */
  done: Promise<void>;
  stop(): Promise<void>;
}

/** How often the Secrets of Locations that are not Ready are read again. */
const SECRET_POLL_MS = 1_000;
/** The longest wait before a pass checks again what is not Ready (the resync may be longer). */
const RECHECK_MAX_MS = 30_000;

/**
 * The control plane: waits for the Lease, then reconciles on every change of a Location, ReplicationRule
 * or owned Deployment, and every resyncMs. Passes never overlap; a failed pass is retried with backoff.
 */
export async function startOperator(options: OperatorOptions): Promise<OperatorRun> {
  const { logger, namespace } = options;
  const rest = kubeRest(loadKubeConfig(options.kubeconfig));
  const names = queueNames(options.settings.prefix);
  const { replicationFactor } = options.settings;
  const queue = kafkaQueue({
    brokers: options.settings.brokers,
    clientId: 'backbeat-operator',
    logger,
    ...(replicationFactor !== undefined ? { replicationFactor } : {}),
    ...(options.kafkaSecurity !== undefined ? { security: options.kafkaSecurity } : {}),
  });
  let reconciler: Reconciler | undefined;
  const { registry, passes } = operatorMetrics({ leading: () => leading && !stopped(), readiness: () => reconciler?.readiness ?? [] });

  const stopper = new AbortController();
  // A function, so that TypeScript does not narrow it across awaits.
  const stopped = (): boolean => stopper.signal.aborted;
  let leading = false;
  const server = healthServer({
    ready: () => !stopper.signal.aborted,
    metrics: async () => ({ contentType: registry.contentType, body: await registry.metrics() }),
  });
  const url = await listenOn(server, options.listenPort ?? 0, options.listenHost ?? '127.0.0.1');

  let resolveDone: () => void = () => undefined;
  const done = new Promise<void>((resolve) => (resolveDone = resolve));
  const lease = new LeaderLease({ rest, namespace, name: `${options.settings.name}-operator`, identity: `${process.env['POD_NAME'] ?? hostname()}-${randomUUID().slice(0, 8)}`, logger });
  let cleanup: (() => Promise<void>) | undefined;

  const run = async (): Promise<void> => {
    await lease.acquire(stopper.signal, () => {
      logger.error('stopping: no longer the leader');
      resolveDone();
    });
    if (stopped()) return;
    leading = true;
    const owner = options.ownerDeployment === undefined ? undefined : await rest.find(`/apis/apps/v1/namespaces/${namespace}/deployments/${options.ownerDeployment}`);
    if (options.ownerDeployment !== undefined && owner === undefined) logger.warn('own Deployment not found: worker Deployments get no owner', { deployment: options.ownerDeployment });

    // Kafka is reached in the background, retried until it answers: Locations and rules are reconciled
    // meanwhile, and what needs Kafka (topics, lag) is retried by the passes.
    const figures = new Map<string, Figures>();
    // One record per status partition (`<figuresKey> #<partition>`): the rule's figures are their sum.
    const byPartition = new Map<string, Map<string, Figures>>();
    let admin: QueueAdmin | undefined;
    let figuresConsumer: QueueConsumer | undefined;
    const kafka = (async () => {
      for (let backoff = 1_000; !stopped(); backoff = Math.min(backoff * 2, 30_000)) {
        try {
          admin ??= await queue.admin();
          await admin.ensureTopics(installationTopics(names, options.settings.partitions, []));
          figuresConsumer = await follow(queue, names.figures, (m) => {
            try {
              const at = m.key?.lastIndexOf(' #') ?? -1;
              if (m.key === null || m.value === null || at < 0) return;
              const key = m.key.slice(0, at);
              const parts = byPartition.get(key) ?? new Map<string, Figures>();
              byPartition.set(key, parts.set(m.key, parseMessage(Figures, m.value)));
              const sum = (k: 'replicated' | 'pending' | 'failed'): number => [...parts.values()].reduce((n, f) => n + f[k], 0);
              const latest = [...parts.values()].reduce((a, b) => (a.at > b.at ? a : b));
              figures.set(key, { ...latest, replicated: sum('replicated'), pending: sum('pending'), failed: sum('failed') });
            } catch {
              // a record we cannot read carries no figures
            }
          }, `${names.figures}-operator-${randomUUID()}`);
          return;
        } catch (err) {
          logger.warn('Kafka not reachable yet; retrying', { error: (err as Error).message, retryInMs: backoff });
          await sleep(backoff, undefined, { signal: stopper.signal }).catch(() => undefined);
        }
      }
    })();
    reconciler = new Reconciler({
      rest,
      namespace,
      names,
      admin: () => {
        if (admin === undefined) throw new Error('Kafka not reached yet');
        return admin;
      },
      logger,
      figures,
      settings: { ...options.settings, ...(owner?.metadata.uid !== undefined ? { owner: { apiVersion: 'apps/v1', kind: 'Deployment', name: owner.metadata.name, uid: owner.metadata.uid } } : {}) },
      ...(options.scaleDownDelayMs !== undefined ? { scaleDownDelayMs: options.scaleDownDelayMs } : {}),
    });

    // A nudge sets `wanted`; one loop runs passes while nudged, so passes never overlap.
    let wanted = true;
    let wake: () => void = () => undefined;
    const nudge = (): void => {
      wanted = true;
      wake();
    };
    // Something not Ready for a reason outside Kubernetes (a bucket created, versioning enabled, an
    // endpoint back) is checked again soon, not only at the resync: after a tenth of the time it has
    // been waiting (1 s at least, RECHECK_MAX_MS at most), however many other passes ran meanwhile.
    let waitingSince: number | undefined;
    let recheckTimer: NodeJS.Timeout | undefined;
    const loop = (async () => {
      let backoff = 1_000;
      while (!stopped()) {
        if (!wanted) await new Promise<void>((resolve) => (wake = resolve));
        if (stopped()) break;
        wanted = false;
        // Let a burst of events (kubectl apply -f dir/) settle into one pass.
        await sleep(200);
        const started = Date.now();
        try {
          const { again } = await reconciler.reconcile();
          passes.inc({ result: 'ok' });
          if (again) wanted = true;
          clearTimeout(recheckTimer);
          waitingSince = [...reconciler.readiness.values()].some((r) => !r) ? (waitingSince ?? Date.now()) : undefined;
          if (waitingSince !== undefined) recheckTimer = setTimeout(nudge, Math.min(Math.max((Date.now() - waitingSince) / 10, 1_000), RECHECK_MAX_MS));
          logger.debug('reconcile pass done', { durationMs: Date.now() - started });
          backoff = 1_000;
        } catch (err) {
          passes.inc({ result: 'error' });
          // Rules still waiting for their checks go on at once; what failed is retried by those passes too.
          const again = err instanceof PassFailed && err.again;
          logger.error('reconcile failed; retrying', { error: (err as Error).message, durationMs: Date.now() - started, retryInMs: again ? 0 : backoff });
          if (!again) {
            await sleep(backoff, undefined, { signal: stopper.signal }).catch(() => undefined);
            backoff = Math.min(backoff * 2, 10_000);
          }
          wanted = true;
        }
      }
    })();
    const ticker = setInterval(nudge, options.resyncMs ?? 15_000);
    // A Secret a Location waits for (missing, unlabelled, a key missing or wrong): fixed, it is seen within a second.
    const secretsPoll = setInterval(() => {
      void (async () => {
        for (const [name, version] of reconciler?.awaitedSecrets ?? []) {
          // (Unreadable now: the next pass reads it anyway.)
          const now = await rest.find(`/api/v1/namespaces/${namespace}/secrets/${encodeURIComponent(name)}`).catch(() => null);
          if (now === null || (now?.metadata.resourceVersion ?? '') === version) continue;
          nudge();
          return;
        }
      })();
    }, SECRET_POLL_MS);
    const base = `/apis/${API_GROUP}/v1alpha1/namespaces/${namespace}`;
    const owned = `labelSelector=${encodeURIComponent(`app.kubernetes.io/managed-by=${MANAGED_BY}`)}`;
    const watches = [
      watchCollection({ rest, path: `${base}/locations`, onChange: nudge, logger }),
      watchCollection({ rest, path: `${base}/replicationrules`, onChange: nudge, logger }),
      // The label selector rides along on the list and the watch of the owned Deployments.
      watchCollection({ rest: withQuery(rest, owned), path: `/apis/apps/v1/namespaces/${namespace}/deployments`, onChange: nudge, logger }),
    ];
    logger.info('operator reconciling', { namespace, installation: options.settings.name });
    cleanup = async () => {
      watches.forEach((w) => {
        w.stop();
      });
      clearInterval(ticker);
      clearInterval(secretsPoll);
      clearTimeout(recheckTimer);
      wake();
      await loop;
      await kafka;
      await figuresConsumer?.close();
      await admin?.close();
    };
  };
  const started = run().catch((err: unknown) => {
    logger.error('operator failed to start', { error: (err as Error).message });
    resolveDone();
  });

  return {
    url,
    done,
    async stop() {
      stopper.abort();
      await started;
      await cleanup?.();
      if (leading) await lease.release();
      server.close();
      server.closeAllConnections();
    },
  };
}

/** The same client with a query string added to list and watch paths. */
function withQuery(rest: ReturnType<typeof kubeRest>, query: string): ReturnType<typeof kubeRest> {
  const add = (path: string): string => `${path}${path.includes('?') ? '&' : '?'}${query}`;
  return { ...rest, list: (path) => rest.list(add(path)), stream: (path) => rest.stream(add(path)) };
}
