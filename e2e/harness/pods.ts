import { createHash } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as k8s from '@kubernetes/client-node';
import { freePort, httpGet } from './net.ts';
import { ManagedProcess, type ReadyCheck } from './process.ts';
import { runDir } from './run-dir.ts';

// A stand-in kubelet (and Deployment controller) for the test control plane, which has neither: it polls
// a namespace's Deployments and runs each pod template's containers as local processes, restarts them
// when they exit, replaces them when the template changes, and reports the Deployments' status.
//
// Departures from a cluster, all of them deliberate:
// - Pods share the host's network: env vars named in `portEnv` get a fresh free port per process, and
//   `status.podIP` is 127.0.0.1.
// - The one liberty taken with the pod spec: configMap/secret/projected/emptyDir volumes are files in a per-pod
//   folder, and each volumeMount's mountPath, wherever it starts a path in the (expanded) args and env
//   values, is rewritten to that folder. Paths elsewhere (e.g. built into the program) are not mapped.
// - There are no images: `command` is required (no ENTRYPOINT to fall back on), `workingDir` is ignored
//   and every process runs in `cwd`, and inherits this process's environment under the container's.
// - A change of a referenced ConfigMap or Secret replaces the pods like a template change (a cluster
//   would update mounted files in place and leave env vars stale). Replacement is "Recreate": the old
//   pods are stopped before the new ones start.
// - Readiness is probed (readinessProbe.httpGet) until the process first answers, not afterwards.
// - Init containers, probes other than httpGet and other volume types are not supported.

export interface PodRunnerOptions {
  kubeconfig: string;
  namespace: string;
  /** cwd of every process: the repository root (the image's WORKDIR /app holds the same files). */
  cwd: string;
  /** Added to every container's environment (e.g. KUBECONFIG for the operator). */
  extraEnv?: Record<string, string>;
  /**
   * Env var names whose value is replaced by a fresh free port per process, before $(VAR) expansion:
   * the pods share one network namespace here. Default ['BACKBEAT_PORT'].
   */
  portEnv?: string[];
  /** Default 500. */
  pollMs?: number;
}

/** One container of a running pod (pods usually have one). */
export interface RunningPod {
  deployment: string;
  /** `<deployment>-<n>`. */
  name: string;
  container: string;
  /** portEnv var name → the port assigned to this process. */
  ports: Record<string, number>;
  process: ManagedProcess;
  /** Started, answered its readiness probe, and still running. */
  ready: boolean;
  /** How many times the process exited by itself (and was restarted). */
  restarts: number;
}

export interface PodRunner {
  /** The containers of the current pods (not of those being stopped), of one Deployment or of all. */
  pods(deployment?: string): RunningPod[];
  /** Stops polling and every process, and waits for them. */
  stop(): Promise<void>;
}

const READY_TIMEOUT_MS = 60_000;
const BACKOFF_MS = 1_000;
const MAX_BACKOFF_MS = 10_000;

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
  restarts: number;
}

class PodSpecError extends Error {
  override name = 'PodSpecError';
}

export async function runPods(options: PodRunnerOptions): Promise<PodRunner> {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(options.kubeconfig);
  const apps = kc.makeApiClient(k8s.AppsV1Api);
  const core = kc.makeApiClient(k8s.CoreV1Api);
  const { namespace } = options;
  const portEnv = options.portEnv ?? ['BACKBEAT_PORT'];
  const pollMs = options.pollMs ?? 500;

  /** Per Deployment name: its pods by name, stopping ones included until they are gone. */
  const deployments = new Map<string, Map<string, Pod>>();
  const stopping = new Set<Promise<void>>();
  const assignedPorts = new Set<number>();
  const lastError = new Map<string, string>();
  const abort = new AbortController();

  /** Logs an error unless it is the same as the last one under that key (a poll repeats them). */
  function report(key: string, err: unknown): void {
    const message = err instanceof Error ? err.message : String(err);
    if (lastError.get(key) === message) return;
    lastError.set(key, message);
    console.error(`[pods] ${namespace}/${key}: ${message}`);
  }

  async function uniquePort(): Promise<number> {
    // freePort's answer is only free now: never hand the same port to two live processes.
    for (;;) {
      const port = await freePort();
      if (!assignedPorts.has(port)) {
        assignedPorts.add(port);
        return port;
      }
    }
  }

  function stopPod(pods: Map<string, Pod>, pod: Pod): void {
    if (pod.stopping) return;
    const done = pod.stop().finally(() => {
      pods.delete(pod.name);
      for (const c of pod.containers) for (const port of Object.values(c.ports)) assignedPorts.delete(port);
      stopping.delete(done);
    });
    stopping.add(done);
  }

  async function reconcile(d: k8s.V1Deployment, name: string, identity: string, sources: Sources): Promise<void> {
    const template = d.spec?.template ?? {};
    let pods = deployments.get(name);
    if (pods === undefined) deployments.set(name, (pods = new Map<string, Pod>()));
    const stale = [...pods.values()].filter((p) => p.identity !== identity);
    if (stale.length > 0) {
      // Recreate: the new pods start on a later poll, once every old one is gone.
      for (const p of stale) stopPod(pods, p);
      return;
    }
    const replicas = d.spec?.replicas ?? 1;
    // Scale down: the highest-numbered pods go.
    for (const p of pods.values()) if (p.index >= replicas) stopPod(pods, p);
    for (let index = 0; index < replicas; index++) {
      const podName = `${name}-${index}`;
      if (pods.has(podName)) continue; // running, starting, or its predecessor is still stopping
      const pod = await preparePod({ namespace, deployment: name, podName, index, identity, template, sources, options, portEnv, uniquePort });
      pods.set(podName, pod);
      pod.run(report);
    }
    lastError.delete(name);
  }

  async function writeStatus(d: k8s.V1Deployment, name: string, identity: string): Promise<void> {
    const current = [...(deployments.get(name)?.values() ?? [])].filter((p) => !p.stopping);
    const desired = d.spec?.replicas ?? 1;
    const ready = current.filter((p) => p.ready).length;
    const status = {
      observedGeneration: d.metadata?.generation ?? 0,
      replicas: current.length,
      updatedReplicas: current.filter((p) => p.identity === identity).length,
      readyReplicas: ready,
      availableReplicas: ready,
      unavailableReplicas: Math.max(0, desired - ready),
    };
    const old = d.status ?? {};
    const same = (Object.keys(status) as (keyof typeof status)[]).every((k) => (old[k] ?? 0) === status[k]);
    if (same) return;
    // A merge patch of the status subresource: no resourceVersion, so no conflict with spec updates.
    await apps.patchNamespacedDeploymentStatus(
      { name, namespace, body: { status } },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
    );
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
    for (const [name, pods] of deployments) {
      if (seen.has(name)) continue;
      for (const p of pods.values()) stopPod(pods, p);
      if (pods.size === 0) deployments.delete(name);
    }
    for (const d of list.items) {
      const name = d.metadata?.name;
      const identity = seen.get(name ?? '');
      if (name === undefined || identity === undefined) continue;
      try {
        await writeStatus(d, name, identity);
      } catch (err) {
        // 409: the Deployment changed meanwhile; the next poll writes again.
        if (!(err instanceof k8s.ApiException && err.code === 409)) report(`${name} status`, err);
      }
    }
  }

  await poll(); // a wrong kubeconfig or namespace fails here, not in the background
  const loop = (async () => {
    await sleep(pollMs, undefined, { signal: abort.signal }).catch(() => undefined);
    while (!abort.signal.aborted) {
      try {
        await poll();
      } catch (err) {
        report('(poll)', err);
      }
      await sleep(pollMs, undefined, { signal: abort.signal }).catch(() => undefined);
    }
  })();

  return {
    pods(deployment) {
      const out: RunningPod[] = [];
      for (const [name, pods] of deployments) {
        if (deployment !== undefined && name !== deployment) continue;
        for (const p of [...pods.values()].sort((a, b) => a.index - b.index)) {
          if (p.stopping) continue;
          for (const c of p.containers) {
            out.push({ deployment: name, name: p.name, container: c.name, ports: { ...c.ports }, process: c.process, ready: c.ready && c.process.running, restarts: c.restarts });
          }
        }
      }
      return out;
    },
    async stop() {
      abort.abort();
      await loop;
      for (const pods of deployments.values()) for (const p of pods.values()) stopPod(pods, p);
      await Promise.all([...stopping]);
    },
  };
}

/** A pod: its containers, each supervised as restartPolicy Always would. */
class Pod {
  readonly deployment: string;
  readonly namespace: string;
  readonly name: string;
  readonly index: number;
  readonly identity: string;
  readonly containers: Container[];
  stopping = false;
  private readonly abort = new AbortController();
  private supervisors: Promise<void>[] = [];

  constructor(fields: Pick<Pod, 'deployment' | 'namespace' | 'name' | 'index' | 'identity' | 'containers'>) {
    this.deployment = fields.deployment;
    this.namespace = fields.namespace;
    this.name = fields.name;
    this.index = fields.index;
    this.identity = fields.identity;
    this.containers = fields.containers;
  }

  get ready(): boolean {
    return this.containers.every((c) => c.ready && c.process.running);
  }

  run(report: (key: string, err: unknown) => void): void {
    this.supervisors = this.containers.map((c) => this.supervise(c, report));
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.abort.abort();
    await Promise.all(this.containers.map((c) => c.process.stop()));
    await Promise.all(this.supervisors);
  }

  private async supervise(c: Container, report: (key: string, err: unknown) => void): Promise<void> {
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
        while (c.process.running) await sleep(200, undefined, { signal });
      } catch (err) {
        if (!stopped()) report(`${this.name}/${c.name}`, err);
      }
      c.ready = false;
      if (stopped()) return;
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
  template: k8s.V1PodTemplateSpec;
  sources: Sources;
  options: PodRunnerOptions;
  portEnv: string[];
  uniquePort: () => Promise<number>;
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
      restarts: 0,
    });
  }
  return new Pod({ deployment: ctx.deployment, namespace: ctx.namespace, name: ctx.podName, index: ctx.index, identity: ctx.identity, containers });
}

/**
 * The container's environment: envFrom, then env in order (a `value` may refer to the variables defined
 * before it, as in Kubernetes), the portEnv variables getting a fresh port, then `extraEnv`.
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
      const port = await ctx.uniquePort();
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
  for (const [k, v] of Object.entries(ctx.options.extraEnv ?? {})) vars.set(k, v);
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
 * refers to. When it changes, the pods are replaced.
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

function configMapData(cm: k8s.V1ConfigMap): Data {
  const data: Data = base64Data(cm.binaryData);
  for (const [k, v] of Object.entries(cm.data ?? {})) data.set(k, Buffer.from(v, 'utf8'));
  return data;
}

function base64Data(data: Record<string, string> | undefined): Data {
  return new Map(Object.entries(data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64')]));
}
