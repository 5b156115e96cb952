import { createHash } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as k8s from '@kubernetes/client-node';
import { freePort, httpGet } from './net.ts';
import { ManagedProcess, type ReadyCheck } from './process.ts';
import { runDir } from './run-dir.ts';

// A stand-in kubelet (and Deployment controller) for runs without the test node (harness/node.ts needs
// root): `make demo-operator`, and the operator e2e when the suites run with NODE=0 or as another user. It polls
// a namespace's Deployments and runs each pod template's containers as local processes, restarts them
// when they exit, rolls them to a new template the way the Deployment's strategy says, and reports the
// Deployments' status.
//
// Rollouts follow the Deployment controller. RollingUpdate (maxSurge, maxUnavailable, minReadySeconds)
// starts new pods up to replicas + maxSurge, and terminates an old pod only while replicas - maxUnavailable
// pods stay available; pods of every older template, intermediate ones included, are old. Recreate
// terminates every old pod and starts the new ones once all of them have exited. A terminating pod gets
// SIGTERM and runs until it exits, or until its terminationGracePeriodSeconds end in SIGKILL; as in a
// cluster, RollingUpdate does not count it, so its replacement may start while it still runs. The status
// carries what `kubectl rollout status` reads: observedGeneration, updated/ready/available replicas and
// the Progressing condition, which turns False once progressDeadlineSeconds pass without progress.
//
// Departures from a cluster, all of them deliberate:
// - There are no ReplicaSet or Pod objects in the API: the runner keeps the pods (see `pods()`), named
//   `<deployment>-<template hash>-<n>`, so `kubectl get pods` and `rollout history/undo` find nothing. A
//   template applied again (a rollback) gets back its pods that still run. Replicas added in the middle of
//   a rollout all go to the newest template (no proportional scaling). `spec.paused` is ignored.
// - Pods share the host's network: env vars named in `portEnv` get a fresh free port per process, and
//   `status.podIP` is 127.0.0.1.
// - The one liberty taken with the pod spec: configMap/secret/projected/emptyDir volumes are files in a per-pod
//   folder, and each volumeMount's mountPath, wherever it starts a path in the (expanded) args and env
//   values, is rewritten to that folder. Paths elsewhere (e.g. built into the program) are not mapped.
// - There are no images: `command` is required (no ENTRYPOINT to fall back on), `workingDir` is ignored
//   and every process runs in `cwd`, and inherits this process's environment under the container's.
// - A change of a referenced ConfigMap or Secret rolls the pods like a template change (a cluster would
//   update mounted files in place and leave env vars stale).
// - Readiness is probed (readinessProbe.httpGet) until the process first answers, not afterwards; a
//   process that is not ready within 60 s is stopped and restarted, as a failing livenessProbe would be.
// - Init containers, probes other than httpGet, lifecycle hooks and other volume types are not supported.

export interface PodRunnerOptions {
  kubeconfig: string;
  namespace: string;
  /** cwd of every process: where the image's WORKDIR (/app) is laid out (image-app.ts), or the repository root. */
  cwd: string;
  /**
   * What a pod running as `serviceAccount` gets to reach the API server (a KUBECONFIG with its token),
   * where the kubelet would mount the account's token; nothing for a pod that opts out of it.
   */
  accountEnv?: (serviceAccount: string) => Promise<Record<string, string>>;
  /**
   * Env var names whose value is replaced by a fresh free port per process, before $(VAR) expansion:
   * the pods share one network namespace here. Default ['BACKBEAT_PORT'].
   */
  portEnv?: string[];
  /** Default 500. A pod that becomes ready or exits triggers a poll at once. */
  pollMs?: number;
}

/** One container of a pod (pods usually have one). */
export interface RunningPod {
  deployment: string;
  /** `<deployment>-<templateHash>-<n>`, unique among the pods that run. */
  name: string;
  /** Names the pod template, and the ConfigMap and Secret data it refers to, that the pod was made from. */
  templateHash: string;
  container: string;
  /** portEnv var name → the port assigned to this process. */
  ports: Record<string, number>;
  process: ManagedProcess;
  /** Started, answered its readiness probe, still running, and not terminating. */
  ready: boolean;
  /** Sent SIGTERM: the process runs until it exits or its grace period ends. */
  terminating: boolean;
  /** How many times the process exited by itself (and was restarted). */
  restarts: number;
}

export interface PodRunner {
  /**
   * The containers of the current pods of one Deployment or of all, oldest template first, then by index;
   * with `includeTerminating`, also those of pods that are terminating but still running.
   */
  pods(deployment?: string, query?: { includeTerminating?: boolean }): RunningPod[];
  /** Stops polling and terminates every pod, and waits for them. */
  stop(): Promise<void>;
}

const READY_TIMEOUT_MS = 60_000;
const BACKOFF_MS = 1_000;
const MAX_BACKOFF_MS = 10_000;
const DEFAULT_GRACE_SECONDS = 30;
/** progressDeadlineSeconds that means "none" (math.MaxInt32, as the API writes it). */
const NO_DEADLINE = 2_147_483_647;

type Data = Map<string, Buffer>;

/** The namespace's ConfigMaps and Secrets at one poll, as bytes (missing objects are absent). */
interface Sources {
  configMaps: Map<string, Data>;
  secrets: Map<string, Data>;
}

interface Container {
  name: string;
  process: ManagedProcess;
  ports: Record<string, number>;
  probe: ReadyCheck['probe'];
  ready: boolean;
  /** When the running process answered its probe: availability counts minReadySeconds from here. */
  readySince: number | undefined;
  restarts: number;
}

/** Per Deployment, what a cluster keeps in its ReplicaSets and Pods. */
interface Rollout {
  /** Pods by name, terminating ones included until they have exited. */
  pods: Map<string, Pod>;
  /** Template identity → when it was first seen (a counter): old templates are scaled down oldest first. */
  age: Map<string, number>;
  /** The newest template's identity, and how many pods it wants: its ReplicaSet's spec.replicas. */
  target: string | undefined;
  wanted: number;
  /** A new template that the status has not announced yet (Progressing: NewReplicaSetCreated). */
  announce: boolean;
}

class PodSpecError extends Error {
  override name = 'PodSpecError';
}

export interface RollingLimits {
  maxSurge: number;
  maxUnavailable: number;
}

/**
 * maxSurge and maxUnavailable as pod counts, resolved as the Deployment controller does
 * (ResolveFenceposts, MaxUnavailable): a percentage of replicas, rounded up for surge and down for
 * unavailable; when both come to 0 (the API refuses 0 and 0 as written, rounding can still get there),
 * maxUnavailable is 1; never more unavailable than replicas. An absent value is the API's default, 25%.
 */
export function rollingLimits(rolling: k8s.V1RollingUpdateDeployment | undefined, replicas: number): RollingLimits {
  const scaled = (field: string, value: number | string, round: (x: number) => number): number => {
    if (typeof value === 'number') return value;
    const percent = /^(\d+)%$/.exec(value)?.[1];
    if (percent === undefined) throw new PodSpecError(`spec.strategy.rollingUpdate.${field} "${value}" is neither an integer nor a percentage`);
    return round((Number(percent) * replicas) / 100);
  };
  const maxSurge = scaled('maxSurge', rolling?.maxSurge ?? '25%', Math.ceil);
  const maxUnavailable = scaled('maxUnavailable', rolling?.maxUnavailable ?? '25%', Math.floor);
  return { maxSurge, maxUnavailable: Math.min(maxSurge === 0 && maxUnavailable === 0 ? 1 : maxUnavailable, replicas) };
}

function isRecreate(d: k8s.V1Deployment): boolean {
  const type = d.spec?.strategy?.type ?? 'RollingUpdate';
  if (type !== 'Recreate' && type !== 'RollingUpdate') throw new PodSpecError(`spec.strategy.type "${type}" is neither RollingUpdate nor Recreate`);
  return type === 'Recreate';
}

export async function runPods(options: PodRunnerOptions): Promise<PodRunner> {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(options.kubeconfig);
  const apps = kc.makeApiClient(k8s.AppsV1Api);
  const core = kc.makeApiClient(k8s.CoreV1Api);
  const { namespace } = options;
  const portEnv = options.portEnv ?? ['BACKBEAT_PORT'];
  const pollMs = options.pollMs ?? 500;

  const rollouts = new Map<string, Rollout>();
  const stopping = new Set<Promise<void>>();
  const lastError = new Map<string, string>();
  const abort = new AbortController();
  let ages = 0;
  // A pod that became ready or exited: poll again without waiting out pollMs, as a controller's watch
  // would. Aborted during a poll, `wake` makes the next wait end at once; stop() aborts it too.
  let wake = new AbortController();
  const nudge = (): void => wake.abort();

  /** Logs an error unless it is the same as the last one under that key (a poll repeats them). */
  function report(key: string, err: unknown): void {
    const message = err instanceof Error ? err.message : String(err);
    if (lastError.get(key) === message) return;
    lastError.set(key, message);
    console.error(`[pods] ${namespace}/${key}: ${message}`);
  }

  const live = (r: Rollout): Pod[] => [...r.pods.values()].filter((p) => !p.stopping);

  /** SIGTERM, and the pod stays in `r.pods` (terminating) until its processes have exited. */
  function terminate(r: Rollout, pod: Pod): void {
    if (pod.stopping) return;
    const done = pod.stop().finally(() => {
      r.pods.delete(pod.name);
      stopping.delete(done);
      nudge();
    });
    stopping.add(done);
  }

  /**
   * One sync of the Deployment controller's RollingUpdate (rolloutRolling): the newest template's pods
   * scaled up within maxSurge, then old pods terminated within maxUnavailable, unavailable ones first
   * and the oldest template first. Pods being terminated are not counted, and the newest template counts
   * the pods it wants whether they could be created or not, as the controller counts ReplicaSets'
   * spec.replicas. Returns whether it changed anything.
   */
  function rollStep(r: Rollout, identity: string, replicas: number, limits: RollingLimits, minReadyMs: number): boolean {
    const now = Date.now();
    const available = (p: Pod): boolean => p.available(now, minReadyMs);
    const old = live(r).filter((p) => p.identity !== identity);
    let changed = false;
    if (r.wanted > replicas) {
      r.wanted = replicas;
      changed = true;
    } else if (r.wanted < replicas) {
      const room = replicas + limits.maxSurge - (r.wanted + old.length);
      if (room > 0) {
        r.wanted += Math.min(room, replicas - r.wanted);
        changed = true;
      }
    }
    if (old.length === 0) return changed;
    const minAvailable = replicas - limits.maxUnavailable;
    const newAvailable = live(r).filter((p) => p.identity === identity && available(p)).length;
    let cleanup = r.wanted + old.length - minAvailable - Math.max(0, r.wanted - newAvailable);
    if (cleanup <= 0) return changed;
    const oldestFirst = old.sort((a, b) => (r.age.get(a.identity) ?? 0) - (r.age.get(b.identity) ?? 0) || deletionOrder(a, b));
    for (const p of oldestFirst) {
      if (cleanup > 0 && !p.stopping && !available(p)) {
        terminate(r, p);
        cleanup--;
        changed = true;
      }
    }
    let spare = live(r).filter(available).length - minAvailable;
    for (const p of oldestFirst) {
      if (spare > 0 && !p.stopping) {
        terminate(r, p);
        spare--;
        changed = true;
      }
    }
    return changed;
  }

  async function reconcile(d: k8s.V1Deployment, name: string, identity: string, sources: Sources): Promise<void> {
    const template = d.spec?.template ?? {};
    const replicas = d.spec?.replicas ?? 1;
    let r = rollouts.get(name);
    if (r === undefined) rollouts.set(name, (r = { pods: new Map(), age: new Map(), target: undefined, wanted: 0, announce: false }));
    if (r.target !== identity) {
      r.target = identity;
      // A template seen before (a rollback) takes back those of its pods that still run.
      r.wanted = live(r).filter((p) => p.identity === identity).length;
      r.announce = true;
      if (!r.age.has(identity)) r.age.set(identity, ages++);
    }
    if (isRecreate(d)) {
      for (const p of live(r)) if (p.identity !== identity) terminate(r, p);
      // The new pods wait until every old pod has exited.
      if (![...r.pods.values()].some((p) => p.identity !== identity)) r.wanted = replicas;
    } else {
      const limits = rollingLimits(d.spec?.strategy?.rollingUpdate, replicas);
      const minReadyMs = (d.spec?.minReadySeconds ?? 0) * 1000;
      // The controller syncs again after each step; here the steps run until one changes nothing (each
      // one scales up or terminates a pod, so a few do; the bound turns a bug into an error, not a hang).
      for (let steps = 0; rollStep(r, identity, replicas, limits, minReadyMs); steps++) {
        if (steps > 2 * (replicas + r.pods.size) + 10) throw new Error(`the rollout of ${name} does not settle (a bug in pods.ts)`);
      }
    }
    // The newest template's ReplicaSet: its pods follow `wanted`. Scale-down takes pods that are not ready
    // first, then the highest-numbered.
    const current = live(r).filter((p) => p.identity === identity);
    for (const p of current.sort(deletionOrder).slice(0, Math.max(0, current.length - r.wanted))) terminate(r, p);
    const hash = templateHash(identity);
    for (let count = current.length; count < r.wanted; count++) {
      let index = 0;
      while (r.pods.has(`${name}-${hash}-${index}`)) index++;
      const podName = `${name}-${hash}-${index}`;
      const pod = await preparePod({ namespace, deployment: name, podName, index, identity, templateHash: hash, template, sources, options, portEnv });
      r.pods.set(podName, pod);
      pod.run(report, nudge);
    }
    for (const id of r.age.keys()) if (id !== identity && ![...r.pods.values()].some((p) => p.identity === id)) r.age.delete(id);
    lastError.delete(name);
  }

  async function writeStatus(d: k8s.V1Deployment, name: string, identity: string): Promise<void> {
    const r = rollouts.get(name);
    const all = r === undefined ? [] : [...r.pods.values()];
    const current = all.filter((p) => !p.stopping);
    const now = Date.now();
    const minReadyMs = (d.spec?.minReadySeconds ?? 0) * 1000;
    const available = current.filter((p) => p.available(now, minReadyMs)).length;
    const counts = {
      observedGeneration: d.metadata?.generation ?? 0,
      replicas: current.length,
      updatedReplicas: current.filter((p) => p.identity === identity).length,
      readyReplicas: current.filter((p) => p.ready).length,
      availableReplicas: available,
      // As the controller counts it: the pods wanted, created or not, less the available ones.
      unavailableReplicas: Math.max(0, (r?.wanted ?? 0) + current.filter((p) => p.identity !== identity).length - available),
      terminatingReplicas: all.length - current.length,
    };
    const conditions = deploymentConditions(d, counts, { announce: r?.announce ?? false, replicaSet: `${name}-${templateHash(identity)}`, now });
    const old = d.status ?? {};
    const oldCounts = old as Partial<Record<keyof typeof counts, number>>;
    const same =
      (Object.keys(counts) as (keyof typeof counts)[]).every((k) => (oldCounts[k] ?? 0) === counts[k]) &&
      JSON.stringify(conditions) === JSON.stringify((old.conditions ?? []).map(condition));
    if (!same) {
      // A merge patch of the status subresource: no resourceVersion, so no conflict with spec updates.
      await apps.patchNamespacedDeploymentStatus(
        { name, namespace, body: { status: { ...counts, conditions } } },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
      );
    }
    if (r !== undefined) r.announce = false;
  }

  async function poll(): Promise<void> {
    const [list, configMaps, secrets] = await Promise.all([
      apps.listNamespacedDeployment({ namespace }),
      core.listNamespacedConfigMap({ namespace }),
      core.listNamespacedSecret({ namespace }),
    ]);
    lastError.delete('(poll)');
    const sources: Sources = {
      configMaps: new Map(configMaps.items.map((cm) => [cm.metadata?.name ?? '', configMapData(cm)])),
      secrets: new Map(secrets.items.map((s) => [s.metadata?.name ?? '', base64Data(s.data)])),
    };
    const seen = new Map<string, string>(); // Deployment name → template identity
    for (const d of list.items) {
      const name = d.metadata?.name;
      if (name === undefined || d.metadata?.deletionTimestamp !== undefined) continue;
      const identity = templateIdentity(d.spec?.template ?? {}, sources);
      seen.set(name, identity);
      try {
        await reconcile(d, name, identity, sources);
      } catch (err) {
        report(name, err);
      }
    }
    for (const [name, r] of rollouts) {
      if (seen.has(name)) continue;
      r.target = undefined; // a Deployment created again under this name starts a new rollout
      for (const p of r.pods.values()) terminate(r, p);
      if (r.pods.size === 0) rollouts.delete(name);
    }
    for (const d of list.items) {
      const name = d.metadata?.name;
      const identity = seen.get(name ?? '');
      if (name === undefined || identity === undefined) continue;
      try {
        await writeStatus(d, name, identity);
      } catch (err) {
        // 409: the Deployment changed meanwhile, the next poll writes again; 404: it is gone, the next
        // poll terminates its pods.
        if (!(err instanceof k8s.ApiException && (err.code === 409 || err.code === 404))) report(`${name} status`, err);
      }
    }
  }

  await poll(); // a wrong kubeconfig or namespace fails here, not in the background
  const loop = (async () => {
    for (;;) {
      await sleep(pollMs, undefined, { signal: wake.signal }).catch(() => undefined);
      if (abort.signal.aborted) return;
      wake = new AbortController();
      try {
        await poll();
      } catch (err) {
        report('(poll)', err);
      }
    }
  })();

  return {
    pods(deployment, query) {
      const out: RunningPod[] = [];
      for (const [name, r] of rollouts) {
        if (deployment !== undefined && name !== deployment) continue;
        const sorted = [...r.pods.values()].sort((a, b) => (r.age.get(a.identity) ?? 0) - (r.age.get(b.identity) ?? 0) || a.index - b.index);
        for (const p of sorted) {
          if (p.stopping && query?.includeTerminating !== true) continue;
          for (const c of p.containers) {
            out.push({
              deployment: name,
              name: p.name,
              templateHash: p.templateHash,
              container: c.name,
              ports: { ...c.ports },
              process: c.process,
              ready: !p.stopping && c.ready && c.process.running,
              terminating: p.stopping,
              restarts: c.restarts,
            });
          }
        }
      }
      return out;
    },
    async stop() {
      abort.abort();
      wake.abort();
      await loop;
      for (const r of rollouts.values()) for (const p of r.pods.values()) terminate(r, p);
      await Promise.all([...stopping]);
    },
  };
}

/** The order in which a ReplicaSet deletes its pods, in short: those not ready first, then the highest-numbered. */
function deletionOrder(a: Pod, b: Pod): number {
  return Number(a.ready) - Number(b.ready) || b.index - a.index;
}

interface Condition {
  type: string;
  status: string;
  reason: string;
  message: string;
  lastUpdateTime: string;
  lastTransitionTime: string;
}

/** Seconds, as the API writes times. */
function apiTime(t: Date | string | number | undefined): string {
  return t === undefined ? '' : new Date(t).toISOString().replace(/\.\d+Z$/, 'Z');
}

function condition(c: k8s.V1DeploymentCondition): Condition {
  return { type: c.type, status: c.status, reason: c.reason ?? '', message: c.message ?? '', lastUpdateTime: apiTime(c.lastUpdateTime), lastTransitionTime: apiTime(c.lastTransitionTime) };
}

interface StatusCounts {
  observedGeneration: number;
  replicas: number;
  updatedReplicas: number;
  readyReplicas: number;
  availableReplicas: number;
}

/**
 * The Available and Progressing conditions as the Deployment controller sets them (calculateStatus,
 * syncRolloutStatus), from the status in the API and the new counts. `kubectl rollout status` fails when
 * Progressing turns False with ProgressDeadlineExceeded.
 */
function deploymentConditions(d: k8s.V1Deployment, counts: StatusCounts, ctx: { announce: boolean; replicaSet: string; now: number }): Condition[] {
  const now = apiTime(ctx.now);
  let conditions = (d.status?.conditions ?? []).map(condition);
  const get = (type: string): Condition | undefined => conditions.find((c) => c.type === type);
  /** SetDeploymentCondition: no change for the same status and reason; lastTransitionTime kept for the same status. */
  const set = (c: Pick<Condition, 'type' | 'status' | 'reason' | 'message'>): void => {
    const current = get(c.type);
    if (current?.status === c.status && current.reason === c.reason) return;
    conditions = [...conditions.filter((x) => x.type !== c.type), { ...c, lastUpdateTime: now, lastTransitionTime: current?.status === c.status ? current.lastTransitionTime : now }];
  };
  const replicas = d.spec?.replicas ?? 1;
  const rs = `ReplicaSet "${ctx.replicaSet}"`;
  if (ctx.announce) set({ type: 'Progressing', status: 'True', reason: 'NewReplicaSetCreated', message: `Created new replica set "${ctx.replicaSet}"` });
  const maxUnavailable = isRecreate(d) || replicas === 0 ? 0 : rollingLimits(d.spec?.strategy?.rollingUpdate, replicas).maxUnavailable;
  if (counts.availableReplicas >= replicas - maxUnavailable) set({ type: 'Available', status: 'True', reason: 'MinimumReplicasAvailable', message: 'Deployment has minimum availability.' });
  else set({ type: 'Available', status: 'False', reason: 'MinimumReplicasUnavailable', message: 'Deployment does not have minimum availability.' });

  const deadline = d.spec?.progressDeadlineSeconds;
  if (deadline === undefined || deadline === NO_DEADLINE) return conditions.filter((c) => c.type !== 'Progressing');
  const progressing = get('Progressing');
  if (counts.replicas === counts.updatedReplicas && progressing?.reason === 'NewReplicaSetAvailable') return conditions;
  const old = d.status ?? {};
  const complete = counts.updatedReplicas === replicas && counts.replicas === replicas && counts.availableReplicas === replicas && counts.observedGeneration >= (d.metadata?.generation ?? 0);
  const progressed =
    counts.updatedReplicas > (old.updatedReplicas ?? 0) ||
    counts.replicas - counts.updatedReplicas < (old.replicas ?? 0) - (old.updatedReplicas ?? 0) ||
    counts.readyReplicas > (old.readyReplicas ?? 0) ||
    counts.availableReplicas > (old.availableReplicas ?? 0);
  if (complete) set({ type: 'Progressing', status: 'True', reason: 'NewReplicaSetAvailable', message: `${rs} has successfully progressed.` });
  else if (progressed) {
    // Unlike set(): every bit of progress moves lastUpdateTime, from which the deadline counts.
    const since = progressing?.status === 'True' ? progressing.lastTransitionTime : now;
    conditions = [...conditions.filter((c) => c.type !== 'Progressing'), { type: 'Progressing', status: 'True', reason: 'ReplicaSetUpdated', message: `${rs} is progressing.`, lastUpdateTime: now, lastTransitionTime: since }];
  } else if (progressing !== undefined && progressing.reason !== 'NewReplicaSetAvailable' && Date.parse(progressing.lastUpdateTime) + deadline * 1000 < ctx.now) {
    set({ type: 'Progressing', status: 'False', reason: 'ProgressDeadlineExceeded', message: `${rs} has timed out progressing.` });
  }
  return conditions;
}

/** A pod: its containers, each supervised as restartPolicy Always would. */
class Pod {
  readonly deployment: string;
  readonly namespace: string;
  readonly name: string;
  readonly index: number;
  readonly identity: string;
  readonly templateHash: string;
  /** terminationGracePeriodSeconds, in ms: from SIGTERM to SIGKILL. */
  readonly graceMs: number;
  readonly containers: Container[];
  /** Terminating: no longer counted, but its processes run until they have exited. */
  stopping = false;
  private readonly abort = new AbortController();
  private supervisors: Promise<void>[] = [];

  constructor(fields: Pick<Pod, 'deployment' | 'namespace' | 'name' | 'index' | 'identity' | 'templateHash' | 'graceMs' | 'containers'>) {
    this.deployment = fields.deployment;
    this.namespace = fields.namespace;
    this.name = fields.name;
    this.index = fields.index;
    this.identity = fields.identity;
    this.templateHash = fields.templateHash;
    this.graceMs = fields.graceMs;
    this.containers = fields.containers;
  }

  /** Every container answered its probe and runs; a terminating pod is not ready, as in a cluster. */
  get ready(): boolean {
    return !this.stopping && this.containers.every((c) => c.ready && c.process.running);
  }

  /** Ready for at least minReadySeconds. */
  available(now: number, minReadyMs: number): boolean {
    return this.ready && this.containers.every((c) => c.readySince !== undefined && now - c.readySince >= minReadyMs);
  }

  /** `changed` is called when a container becomes ready or exits. */
  run(report: (key: string, err: unknown) => void, changed: () => void): void {
    this.supervisors = this.containers.map((c) => this.supervise(c, report, changed));
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.abort.abort();
    await Promise.all(this.containers.map((c) => c.process.stop(this.graceMs)));
    await Promise.all(this.supervisors);
  }

  private async supervise(c: Container, report: (key: string, err: unknown) => void, changed: () => void): Promise<void> {
    const signal = this.abort.signal;
    let backoff = BACKOFF_MS;
    // (a method call, not this.stopping: TS would narrow the field across the awaits)
    const stopped = (): boolean => signal.aborted;
    while (!stopped()) {
      const startedAt = Date.now();
      try {
        // Not ready in time: ManagedProcess stops it and throws; it is retried after the backoff.
        await c.process.start({ probe: c.probe, timeoutMs: READY_TIMEOUT_MS, intervalMs: 250 });
        c.ready = true;
        c.readySince = Date.now();
        changed();
        while (c.process.running) await sleep(200, undefined, { signal });
      } catch (err) {
        if (!stopped()) report(`${this.name}/${c.name}`, err);
      }
      const wasReady = c.ready;
      c.ready = false;
      c.readySince = undefined;
      if (stopped()) return;
      if (wasReady) changed();
      c.restarts++;
      // As the kubelet does, forget the backoff once a run has lasted a while.
      if (Date.now() - startedAt > 60_000) backoff = BACKOFF_MS;
      const how = c.process.exitStatus === undefined ? 'did not start' : `exited (${String(c.process.exitStatus)})`;
      console.error(`[pods] ${this.namespace}/${this.name}/${c.name} ${how}, restart ${c.restarts} in ${backoff} ms`);
      try {
        await sleep(backoff, undefined, { signal });
      } catch {
        return; // stopped
      }
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
    }
  }
}

interface PodContext {
  namespace: string;
  deployment: string;
  podName: string;
  index: number;
  identity: string;
  templateHash: string;
  template: k8s.V1PodTemplateSpec;
  sources: Sources;
  options: PodRunnerOptions;
  portEnv: string[];
}

/** Resolves the pod template into processes (not started) and writes its volumes. */
async function preparePod(ctx: PodContext): Promise<Pod> {
  const spec = ctx.template.spec;
  if (spec === undefined || spec.containers.length === 0) throw new PodSpecError('the pod template has no containers');
  for (const c of spec.containers) {
    if (c.command === undefined || c.command.length === 0) {
      throw new PodSpecError(`container ${c.name} has no command: there is no image here to take an ENTRYPOINT from`);
    }
  }
  const podDir = join(runDir(), 'pods', ctx.namespace, ctx.podName);
  const volumes = new Map<string, string>();
  // A new pod (never a restarted container) starts with fresh volumes, emptyDir included.
  rmSync(podDir, { recursive: true, force: true });
  for (const v of spec.volumes ?? []) {
    const dir = join(podDir, 'volumes', v.name);
    mkdirSync(dir, { recursive: true });
    if (v.configMap !== undefined) writeVolume(dir, 'ConfigMap', v.configMap.name ?? '', ctx.sources.configMaps, v.configMap);
    else if (v.secret !== undefined) writeVolume(dir, 'Secret', v.secret.secretName ?? '', ctx.sources.secrets, v.secret);
    else if (v.projected !== undefined) {
      for (const p of v.projected.sources ?? []) {
        if (p.configMap !== undefined) writeVolume(dir, 'ConfigMap', p.configMap.name ?? '', ctx.sources.configMaps, p.configMap);
        else if (p.secret !== undefined) writeVolume(dir, 'Secret', p.secret.name ?? '', ctx.sources.secrets, p.secret);
        else throw new PodSpecError(`volume ${v.name}: only configMap and secret projections are supported`);
      }
    } else if (v.emptyDir === undefined) throw new PodSpecError(`volume ${v.name}: only configMap, secret, projected and emptyDir volumes are supported`);
    volumes.set(v.name, dir);
  }
  const containers: Container[] = [];
  for (const c of spec.containers) {
    const where = `container ${c.name}`;
    const mounts = (c.volumeMounts ?? []).map((m): [string, string] => {
      const dir = volumes.get(m.name);
      if (dir === undefined) throw new PodSpecError(`${where}: volumeMount of unknown volume ${m.name}`);
      return [m.mountPath.replace(/(.)\/+$/, '$1'), m.subPath !== undefined && m.subPath !== '' ? join(dir, m.subPath) : dir];
    });
    const mapPaths = pathMapper(mounts);
    const { env, ports, originals } = await containerEnv(c, ctx);
    const vars = new Map(Object.entries(env));
    const [program = '', ...rest] = [...(c.command ?? []), ...(c.args ?? [])].map((a) => mapPaths(expand(a, vars)));
    const command = program === 'node' ? process.execPath : program;
    const processEnv = Object.fromEntries(Object.entries(env).map(([k, v]) => [k, mapPaths(v)]));
    const name = `${ctx.namespace}-${ctx.podName}-${c.name}`;
    containers.push({
      name: c.name,
      process: new ManagedProcess({ name, command, args: rest, env: processEnv, cwd: ctx.options.cwd, logFile: join(runDir(), `${name}.log`) }),
      ports,
      probe: readinessProbe(c, originals),
      ready: false,
      readySince: undefined,
      restarts: 0,
    });
  }
  const graceMs = (spec.terminationGracePeriodSeconds ?? DEFAULT_GRACE_SECONDS) * 1000;
  return new Pod({ deployment: ctx.deployment, namespace: ctx.namespace, name: ctx.podName, index: ctx.index, identity: ctx.identity, templateHash: ctx.templateHash, graceMs, containers });
}

/**
 * The container's environment: envFrom, then env in order (a `value` may refer to the variables defined
 * before it, as in Kubernetes), the portEnv variables getting a fresh port, then `accountEnv`.
 */
async function containerEnv(
  c: k8s.V1Container,
  ctx: PodContext,
): Promise<{ env: Record<string, string>; ports: Record<string, number>; originals: Map<number, number> }> {
  const vars = new Map<string, string>([['HOSTNAME', ctx.podName]]);
  const ports: Record<string, number> = {};
  const originals = new Map<number, number>(); // the original value of a portEnv var → its port
  const define = async (name: string, value: string): Promise<void> => {
    if (ctx.portEnv.includes(name)) {
      // freePort never hands out one port twice in a run: two live pods never share one.
      const port = await freePort();
      ports[name] = port;
      if (/^\d+$/.test(value)) originals.set(Number(value), port);
      value = String(port);
    }
    vars.set(name, value);
  };
  for (const from of c.envFrom ?? []) {
    const ref = from.configMapRef ?? from.secretRef;
    const kind = from.configMapRef !== undefined ? 'ConfigMap' : 'Secret';
    const data = (kind === 'ConfigMap' ? ctx.sources.configMaps : ctx.sources.secrets).get(ref?.name ?? '');
    if (data === undefined) {
      if (ref?.optional === true) continue;
      throw new PodSpecError(`container ${c.name}: envFrom ${kind} "${ref?.name ?? ''}" not found`);
    }
    for (const [k, v] of data) await define(`${from.prefix ?? ''}${k}`, v.toString('utf8'));
  }
  for (const e of c.env ?? []) {
    const value = e.valueFrom === undefined ? expand(e.value ?? '', vars) : envSource(e.name, e.valueFrom, c, ctx);
    if (value !== undefined) await define(e.name, value);
  }
  const pod = ctx.template.spec;
  if (ctx.options.accountEnv !== undefined && pod?.automountServiceAccountToken !== false) {
    for (const [k, v] of Object.entries(await ctx.options.accountEnv(pod?.serviceAccountName ?? 'default'))) vars.set(k, v);
  }
  return { env: Object.fromEntries(vars), ports, originals };
}

/** The value of an env var's valueFrom; undefined when an optional source is missing. */
function envSource(name: string, from: k8s.V1EnvVarSource, c: k8s.V1Container, ctx: PodContext): string | undefined {
  const where = `container ${c.name}, env ${name}`;
  if (from.fieldRef !== undefined) return fieldValue(from.fieldRef.fieldPath, ctx, where);
  const ref = from.configMapKeyRef ?? from.secretKeyRef;
  if (ref === undefined) throw new PodSpecError(`${where}: only fieldRef, configMapKeyRef and secretKeyRef are supported`);
  const kind = from.configMapKeyRef !== undefined ? 'ConfigMap' : 'Secret';
  const value = (kind === 'ConfigMap' ? ctx.sources.configMaps : ctx.sources.secrets).get(ref.name ?? '')?.get(ref.key);
  if (value !== undefined) return value.toString('utf8');
  if (ref.optional === true) return undefined;
  throw new PodSpecError(`${where}: key "${ref.key}" of ${kind} "${ref.name ?? ''}" not found`);
}

function fieldValue(path: string, ctx: PodContext, where: string): string {
  switch (path) {
    case 'metadata.name':
      return ctx.podName;
    case 'metadata.namespace':
      return ctx.namespace;
    case 'status.podIP':
    case 'status.hostIP':
      return '127.0.0.1';
    case 'spec.nodeName':
      return 'localhost';
    case 'spec.serviceAccountName':
      return ctx.template.spec?.serviceAccountName ?? 'default';
  }
  const m = /^metadata\.(labels|annotations)\['(.*)'\]$/.exec(path);
  if (m?.[1] === 'labels' && m[2] === 'pod-template-hash') return ctx.templateHash; // the label a ReplicaSet adds
  if (m?.[1] !== undefined && m[2] !== undefined) return ctx.template.metadata?.[m[1] as 'labels' | 'annotations']?.[m[2]] ?? '';
  throw new PodSpecError(`${where}: fieldRef ${path} is not supported`);
}

/**
 * Kubernetes `$(VAR)` expansion: a defined variable is replaced, an undefined one stays as written,
 * `$$` is a literal `$` (so `$$(VAR)` gives `$(VAR)`).
 */
export function expand(text: string, vars: ReadonlyMap<string, string>): string {
  return text.replace(/\$(?:\$|\(([^)]*)\))/g, (match, name: string | undefined) => (name === undefined ? '$' : (vars.get(name) ?? match)));
}

/**
 * Rewrites each mountPath where it starts a path — at the start of the text or after a space, quote,
 * `=`, `:`, `,` or `;`, and followed by `/`, the end or such a separator — to its local folder. One pass,
 * longest mountPath first, so a mapped path is never mapped again.
 */
function pathMapper(mounts: [string, string][]): (text: string) => string {
  if (mounts.length === 0) return (text) => text;
  const local = new Map(mounts);
  const alternatives = [...local.keys()].sort((a, b) => b.length - a.length).map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  const re = new RegExp(`(?<=^|[\\s'"=:,;])(${alternatives.join('|')})(?=$|/|[\\s'"=:,;])`, 'g');
  return (text) => text.replace(re, (path: string) => local.get(path) ?? path);
}

/** Writes a configMap/secret volume's files: every key, or only `items` (key → path). */
function writeVolume(
  dir: string,
  kind: 'ConfigMap' | 'Secret',
  name: string,
  objects: Map<string, Data>,
  source: { items?: k8s.V1KeyToPath[]; optional?: boolean; defaultMode?: number },
): void {
  const data = objects.get(name);
  if (data === undefined) {
    if (source.optional === true) return;
    throw new PodSpecError(`${kind} "${name}" not found`);
  }
  const items: k8s.V1KeyToPath[] = source.items ?? [...data.keys()].map((key) => ({ key, path: key }));
  for (const item of items) {
    const content = data.get(item.key);
    if (content === undefined) {
      if (source.optional === true) continue;
      throw new PodSpecError(`key "${item.key}" of ${kind} "${name}" not found`);
    }
    const file = join(dir, item.path);
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, content, { mode: item.mode ?? source.defaultMode ?? 0o644 });
  }
}

/**
 * The readiness probe: the process is alive (ManagedProcess checks that) and, if the container has a
 * readinessProbe.httpGet, answers it. Its port, a number or a containerPort's name, is taken to be the
 * portEnv variable's when it equals that variable's original value.
 */
function readinessProbe(c: k8s.V1Container, originals: Map<number, number>): ReadyCheck['probe'] {
  const get = c.readinessProbe?.httpGet;
  if (get === undefined) return () => Promise.resolve(true);
  const named = typeof get.port === 'string' ? c.ports?.find((p) => p.name === get.port)?.containerPort : undefined;
  const port = named ?? Number(get.port);
  if (!Number.isInteger(port)) throw new PodSpecError(`container ${c.name}: readinessProbe port ${String(get.port)} is not one of its ports`);
  const scheme = (get.scheme ?? 'HTTP').toLowerCase();
  const url = `${scheme}://127.0.0.1:${originals.get(port) ?? port}${get.path ?? '/'}`;
  const headers = Object.fromEntries((get.httpHeaders ?? []).map((h) => [h.name, h.value]));
  return async () => {
    const { status } = await httpGet(url, headers);
    return status >= 200 && status < 400;
  };
}

/**
 * What the pods of a template are made of: the template and the data of the ConfigMaps and Secrets it
 * refers to. When it changes, the pods are rolled; `kubectl rollout restart` changes it through the
 * annotation it sets on the template.
 */
function templateIdentity(template: k8s.V1PodTemplateSpec, sources: Sources): string {
  const refs: Record<string, Record<string, string> | null> = {};
  const add = (kind: 'ConfigMap' | 'Secret', name: string | undefined): void => {
    const data = (kind === 'ConfigMap' ? sources.configMaps : sources.secrets).get(name ?? '');
    refs[`${kind}/${name ?? ''}`] = data === undefined ? null : Object.fromEntries([...data].map(([k, v]) => [k, v.toString('base64')]));
  };
  for (const v of template.spec?.volumes ?? []) {
    if (v.configMap !== undefined) add('ConfigMap', v.configMap.name);
    if (v.secret !== undefined) add('Secret', v.secret.secretName);
    for (const p of v.projected?.sources ?? []) {
      if (p.configMap !== undefined) add('ConfigMap', p.configMap.name);
      if (p.secret !== undefined) add('Secret', p.secret.name);
    }
  }
  for (const c of template.spec?.containers ?? []) {
    for (const from of c.envFrom ?? []) {
      if (from.configMapRef !== undefined) add('ConfigMap', from.configMapRef.name);
      if (from.secretRef !== undefined) add('Secret', from.secretRef.name);
    }
    for (const e of c.env ?? []) {
      if (e.valueFrom?.configMapKeyRef !== undefined) add('ConfigMap', e.valueFrom.configMapKeyRef.name);
      if (e.valueFrom?.secretKeyRef !== undefined) add('Secret', e.valueFrom.secretKeyRef.name);
    }
  }
  const sorted = Object.keys(refs).sort().map((k) => [k, refs[k]]);
  return createHash('sha256').update(JSON.stringify([template, sorted])).digest('hex');
}

/** A pod-template-hash look-alike (10 characters of the same alphabet), taken from the template identity. */
function templateHash(identity: string): string {
  const alphabet = 'bcdfghjklmnpqrstvwxz2456789';
  return [...createHash('sha256').update(identity).digest().subarray(0, 10)].map((b) => alphabet[b % alphabet.length]).join('');
}

function configMapData(cm: k8s.V1ConfigMap): Data {
  const data: Data = base64Data(cm.binaryData);
  for (const [k, v] of Object.entries(cm.data ?? {})) data.set(k, Buffer.from(v, 'utf8'));
  return data;
}

function base64Data(data: Record<string, string> | undefined): Data {
  return new Map(Object.entries(data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64')]));
}
