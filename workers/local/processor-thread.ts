import { Writable } from 'node:stream';
import { parentPort, workerData } from 'node:worker_threads';
import { compileBucketConfigs } from '../../lib/config/bucket-config.ts';
import { loadManifests } from '../../lib/config/manifests.ts';
import { createLogger } from '../../lib/log/logger.ts';
import { createMetrics } from '../../lib/metrics.ts';
import { kafkaQueue } from '../../lib/queue/kafka.ts';
import { queueNames } from '../../lib/queue/messages.ts';
import type { ThreadReport, ThreadRequest, ThreadSetup } from './processor-threads.ts';
import { startProcessors } from './processors.ts';
import { connector } from '../worker/build.ts';

// One worker thread of local mode's processors (processor-threads.ts starts them): the processors of
// every destination, on a Kafka client of its own, consumers of the same groups as the other threads'.
// It reads the manifests itself (what a thread is given must be cloneable: no clients, no functions).

const setup = workerData as ThreadSetup;
const port = parentPort;
if (port === null) throw new Error('processor-thread.ts runs as a worker thread of local mode');

// Lines (redacted here) go to the main thread, which writes them where its own go.
const lines = new Writable({
  write(chunk: Buffer, _encoding, done) {
    port.postMessage({ type: 'log', line: chunk.toString() } satisfies ThreadReport);
    done();
  },
});
const logger = createLogger({ component: 'backbeat', stream: lines }).child({ role: 'processor', thread: setup.index });
const manifests = loadManifests(setup.files);
const queue = kafkaQueue({ brokers: setup.brokers, clientId: `backbeat-local-${String(setup.index)}`, logger, ...(setup.kafkaSecurity !== undefined ? { security: setup.kafkaSecurity } : {}) });
const metrics = createMetrics();
const base = { queue, names: queueNames(setup.prefix), metrics, logger, buckets: compileBucketConfigs(manifests, new Map(setup.starts)), locations: manifests.locations, ...connector(manifests.locations, manifests) };
const processors = await startProcessors(base, setup.locations, { concurrency: setup.concurrency, retry: setup.retry });

port.on('message', (request: ThreadRequest) => {
  void (async () => {
    if (request.type === 'stop') {
      await Promise.all([...processors.values()].map((p) => p.close()));
      port.postMessage({ type: 'stopped' } satisfies ThreadReport);
      port.close();
      return;
    }
    port.postMessage({
      type: 'state',
      id: request.id,
      processors: [...processors.entries()].map(([location, p]) => ({ location, paused: p.paused, ...(p.pause?.until !== undefined ? { until: p.pause.until } : {}), settled: p.settled, counters: { ...p.counters } })),
      metrics: await metrics.registry.getMetricsAsJSON(),
    } satisfies ThreadReport);
  })();
});
port.postMessage({ type: 'ready' } satisfies ThreadReport);
