import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Kafka, logLevel } from 'kafkajs';
import { requireBinary } from './binaries.ts';
import { freePort } from './net.ts';
import { ManagedProcess, logTail, ComponentStartError } from './process.ts';
import { runDir } from './run-dir.ts';

const run = promisify(execFile);

export interface KafkaServer {
  brokers: string[];
  process: ManagedProcess;
  /** Stops and starts the broker again on the same port and data (a broker restart). */
  restart(): Promise<void>;
  /** SIGKILLs the broker, as a crash would, and starts it again on the same port and data. */
  crash(): Promise<void>;
  stop(): Promise<void>;
}

function javaArgs(dir: string, libs: string): string[] {
  return [
    '-Xms128m',
    '-Xmx512m',
    '-XX:+UseSerialGC',
    '-XX:TieredStopAtLevel=1', // faster start-up; a test broker needs no peak throughput
    '-Djava.awt.headless=true',
    `-Dlog4j.configuration=file:${join(dir, 'log4j.properties')}`,
    '-cp',
    `${libs}/*`,
  ];
}

/** A single-node KRaft Kafka (broker and controller in one JVM) on free loopback ports. */
export async function startKafka(name = 'kafka'): Promise<KafkaServer> {
  const libs = requireBinary('kafkaLibs');
  const dir = join(runDir(), name);
  mkdirSync(join(dir, 'data'), { recursive: true });
  const [port, controllerPort] = [await freePort(), await freePort()];
  writeFileSync(
    join(dir, 'server.properties'),
    [
      'process.roles=broker,controller',
      'node.id=1',
      `controller.quorum.voters=1@127.0.0.1:${controllerPort}`,
      `listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controllerPort}`,
      `advertised.listeners=PLAINTEXT://127.0.0.1:${port}`,
      'controller.listener.names=CONTROLLER',
      'inter.broker.listener.name=PLAINTEXT',
      'listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT',
      `log.dirs=${join(dir, 'data')}`,
      'num.partitions=1',
      'default.replication.factor=1',
      'offsets.topic.replication.factor=1',
      'offsets.topic.num.partitions=1',
      'transaction.state.log.replication.factor=1',
      'transaction.state.log.min.isr=1',
      'transaction.state.log.num.partitions=1',
      'group.initial.rebalance.delay.ms=0',
      'auto.create.topics.enable=false',
      '',
    ].join('\n'),
  );
  writeFileSync(
    join(dir, 'log4j.properties'),
    [
      'log4j.rootLogger=WARN, stdout',
      'log4j.appender.stdout=org.apache.log4j.ConsoleAppender',
      'log4j.appender.stdout.layout=org.apache.log4j.PatternLayout',
      'log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n',
      'log4j.logger.kafka.server.KafkaServer=INFO',
      'log4j.logger.kafka.server.BrokerServer=INFO',
      '',
    ].join('\n'),
  );
  const logFile = join(dir, 'kafka.log');
  // A KRaft cluster id is 16 random bytes in URL-safe base64; one starting with '-' would read as an
  // option to StorageTool (a start failing once in 64).
  const clusterId = `A${randomBytes(16).toString('base64url').slice(1)}`;
  try {
    await run(
      'java',
      [...javaArgs(dir, libs), 'kafka.tools.StorageTool', 'format', '-t', clusterId, '-c', join(dir, 'server.properties'), '--ignore-formatted'],
      { timeout: 60_000 },
    );
  } catch (err) {
    throw new ComponentStartError(`${name}: formatting the KRaft storage failed: ${(err as Error).message}\n${logTail(logFile)}`);
  }
  const proc = new ManagedProcess({
    name,
    command: 'java',
    args: [...javaArgs(dir, libs), 'kafka.Kafka', join(dir, 'server.properties')],
    env: { KAFKA_HEAP_OPTS: '' },
    logFile,
  });
  const brokers = [`127.0.0.1:${port}`];
  const ready = { probe: () => brokerAnswers(brokers), timeoutMs: 90_000, intervalMs: 500 };
  await proc.start(ready);
  return {
    brokers,
    process: proc,
    async restart() {
      await proc.stop();
      await proc.start(ready);
    },
    async crash() {
      await proc.kill();
      await proc.start(ready);
    },
    stop: () => proc.stop(),
  };
}

/** True once the broker answers metadata requests and its controller has registered it. */
async function brokerAnswers(brokers: string[]): Promise<boolean> {
  const admin = new Kafka({ brokers, clientId: 'harness-probe', logLevel: logLevel.NOTHING, retry: { retries: 0 } }).admin();
  try {
    await admin.connect();
    const cluster = await admin.describeCluster();
    return cluster.brokers.length > 0 && cluster.controller !== null;
  } catch {
    return false;
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}
