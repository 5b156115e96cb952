import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Kafka, logLevel } from 'kafkajs';
// The harness's own clients get the engine's fix of kafkajs' busy timer too.
import '../../lib/queue/kafkajs-request-queue.ts';
import { requireBinary } from './binaries.ts';
import { freePort, serviceHost } from './net.ts';
import type { TestPki } from './pki.ts';
import { ManagedProcess, logTail, ComponentStartError, type ReadyCheck } from './process.ts';
import { runDir } from './run-dir.ts';
import { eventually } from './wait.ts';

const run = promisify(execFile);

export interface KafkaServer {
  brokers: string[];
  process: ManagedProcess;
  /** Stops and starts the broker again on the same port and data (a broker restart). */
  restart(): Promise<void>;
  /** SIGKILLs the broker, as a crash would, and starts it again on the same port and data. */
  crash(): Promise<void>;
  /** Starts it again after stop(), on the same port and data. */
  start(): Promise<void>;
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

/** One node of a KRaft cluster: a broker and a controller in one JVM. */
export interface KafkaNode {
  id: number;
  broker: string;
  process: ManagedProcess;
  /** SIGKILL, as a crash or a lost machine would. */
  kill(): Promise<void>;
  /** Starts it again on the same ports and data; resolves once the cluster counts it again. */
  start(): Promise<void>;
}

export interface KafkaCluster {
  brokers: string[];
  /** A secure cluster's plaintext listener of the brokers themselves, on loopback: for local servers of the test (MinIO's notifications), never for the code under test. */
  internalBrokers?: string[];
  nodes: KafkaNode[];
  stop(): Promise<void>;
}

/** A cluster whose clients must use TLS (certificates of `pki`) and SCRAM as one of `users`. */
export interface SecureKafka {
  pki: TestPki;
  users: { mechanism: 'SCRAM-SHA-256' | 'SCRAM-SHA-512'; username: string; password: string }[];
}

/** `internal`: the brokers' own listener, on a secure cluster only; `advertised`: where clients are told to connect. */
type NodePorts = { broker: number; advertised: number; controller: number; internal: number };

function plaintextListeners(p: NodePorts): string[] {
  return [
    `listeners=PLAINTEXT://${serviceHost}:${String(p.broker)},CONTROLLER://127.0.0.1:${String(p.controller)}`,
    `advertised.listeners=PLAINTEXT://${serviceHost}:${String(p.advertised)}`,
    'inter.broker.listener.name=PLAINTEXT',
    'listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT',
  ];
}

/** Clients get only SASL_SSL; brokers and controllers talk among themselves on loopback. */
function secureListeners(p: NodePorts, secure: SecureKafka): string[] {
  const scram = 'org.apache.kafka.common.security.scram.ScramLoginModule required;';
  return [
    `listeners=INTERNAL://127.0.0.1:${String(p.internal)},SASL_SSL://${serviceHost}:${String(p.broker)},CONTROLLER://127.0.0.1:${String(p.controller)}`,
    `advertised.listeners=INTERNAL://127.0.0.1:${String(p.internal)},SASL_SSL://${serviceHost}:${String(p.broker)}`,
    'inter.broker.listener.name=INTERNAL',
    'listener.security.protocol.map=CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,SASL_SSL:SASL_SSL',
    'sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512',
    `listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=${scram}`,
    `listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=${scram}`,
    'ssl.keystore.type=PEM',
    `ssl.keystore.location=${secure.pki.keystoreFile}`,
  ];
}

/**
 * A KRaft cluster of `size` nodes, each broker and controller, on free loopback ports. Internal topics
 * get min(3, size) replicas, as production would. With `secure`, clients must use TLS and SCRAM. With
 * `advertise`, a plaintext cluster tells clients to connect to the port it gives for a broker's port
 * (a proxy the test runs in front of it).
 */
export async function startKafkaCluster(name: string, size: number, secure?: SecureKafka, advertise?: (brokerPort: number) => Promise<number>): Promise<KafkaCluster> {
  const libs = requireBinary('kafkaLibs');
  const ports = await Promise.all(
    Array.from({ length: size }, async () => {
      const broker = await freePort();
      return { broker, advertised: (await advertise?.(broker)) ?? broker, controller: await freePort(), internal: secure !== undefined ? await freePort() : 0 };
    }),
  );
  const voters = ports.map((p, i) => `${String(i + 1)}@127.0.0.1:${String(p.controller)}`).join(',');
  const brokers = ports.map((p) => `${serviceHost}:${String(p.advertised)}`);
  const replicas = String(Math.min(3, size));
  // A KRaft cluster id is 16 random bytes in URL-safe base64; one starting with '-' would read as an
  // option to StorageTool (a start failing once in 64).
  const clusterId = `A${randomBytes(16).toString('base64url').slice(1)}`;
  const nodes: (KafkaNode & { ready: ReadyCheck })[] = [];
  const probes: string[] = [];
  for (const [i, p] of ports.entries()) {
    const id = i + 1;
    const dir = join(runDir(), size === 1 ? name : `${name}-${String(id)}`);
    mkdirSync(join(dir, 'data'), { recursive: true });
    writeFileSync(
      join(dir, 'server.properties'),
      [
        'process.roles=broker,controller',
        `node.id=${String(id)}`,
        `controller.quorum.voters=${voters}`,
        ...(secure === undefined ? plaintextListeners(p) : secureListeners(p, secure)),
        'controller.listener.names=CONTROLLER',
        `log.dirs=${join(dir, 'data')}`,
        'num.partitions=1',
        `default.replication.factor=${replicas}`,
        `offsets.topic.replication.factor=${replicas}`,
        'offsets.topic.num.partitions=1',
        `transaction.state.log.replication.factor=${replicas}`,
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
    try {
      const users = (secure?.users ?? []).flatMap((u) => ['--add-scram', `${u.mechanism}=[name=${u.username},password=${u.password}]`]);
      await run('java', [...javaArgs(dir, libs), 'kafka.tools.StorageTool', 'format', '-t', clusterId, '-c', join(dir, 'server.properties'), '--ignore-formatted', ...users], { timeout: 60_000 });
    } catch (err) {
      throw new ComponentStartError(`${name}: formatting the KRaft storage of node ${String(id)} failed: ${(err as Error).message}\n${logTail(logFile)}`);
    }
    const proc = new ManagedProcess({ name: size === 1 ? name : `${name}-${String(id)}`, command: 'java', args: [...javaArgs(dir, libs), 'kafka.Kafka', join(dir, 'server.properties')], env: { KAFKA_HEAP_OPTS: '' }, logFile });
    // A node is up once the cluster's metadata, asked of it, lists it among the brokers (on the
    // internal listener of a secure cluster: the harness holds no client credentials).
    const broker = brokers[i] ?? '';
    const probed = secure === undefined ? broker : `127.0.0.1:${String(p.internal)}`;
    const ready: ReadyCheck = { probe: () => brokerAnswers([probed], [id]), timeoutMs: 90_000, intervalMs: 500 };
    probes.push(probed);
    nodes.push({ id, broker, process: proc, ready, kill: () => proc.kill(), start: () => proc.start(ready) });
  }
  // The controllers need their quorum to elect a leader: every node starts at once.
  await Promise.all(nodes.map((n) => n.start()));
  // Up once every node lists every broker: a topic created while one is still fenced (a busy machine)
  // gets a replica fewer, as the product counts the brokers it sees.
  const ids = nodes.map((n) => n.id);
  await eventually(async () => {
    for (const probed of probes) assert.ok(await brokerAnswers([probed], ids), `${name}: ${probed} does not list all ${String(size)} brokers yet`);
  }, 90_000, 500);
  return {
    brokers,
    ...(secure !== undefined ? { internalBrokers: ports.map((p) => `127.0.0.1:${String(p.internal)}`) } : {}),
    nodes,
    async stop() {
      await Promise.all(nodes.map((n) => n.process.stop()));
    },
  };
}

/** A single-node KRaft Kafka (broker and controller in one JVM) on free loopback ports. */
export async function startKafka(name = 'kafka'): Promise<KafkaServer> {
  const { brokers, nodes } = await startKafkaCluster(name, 1);
  const [node] = nodes;
  if (node === undefined) throw new Error('a cluster of one has one node');
  return {
    brokers,
    process: node.process,
    async restart() {
      await node.process.stop();
      await node.start();
    },
    async crash() {
      await node.kill();
      await node.start();
    },
    start: () => node.start(),
    stop: () => node.process.stop(),
  };
}

/** True once the broker answers metadata requests, lists every node of `ids` among the brokers and knows a controller. */
async function brokerAnswers(brokers: string[], ids: number[]): Promise<boolean> {
  const admin = new Kafka({ brokers, clientId: 'harness-probe', logLevel: logLevel.NOTHING, retry: { retries: 0 } }).admin();
  try {
    await admin.connect();
    const cluster = await admin.describeCluster();
    return ids.every((id) => cluster.brokers.some((b) => b.nodeId === id)) && cluster.controller !== null;
  } catch {
    return false;
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}
