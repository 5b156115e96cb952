import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { dump } from 'js-yaml';
import { binaries, requireBinary } from './binaries.ts';
import { startKube, type KubeControlPlane } from './kube.ts';
import { freePort, httpGet } from './net.ts';
import { ManagedProcess, type ReadyCheck } from './process.ts';
import { runDir } from './run-dir.ts';
import { eventually } from './wait.ts';

// A single-node Kubernetes cluster: its own etcd and API server, the controller manager, the scheduler,
// containerd with runc and a CNI bridge, the kubelet and kube-proxy. It runs only inside the namespaces of
// scripts/isolated.sh (BACKBEAT_NODE_IP set): pods live on the bridge cni0 there and reach the API server
// through the `kubernetes` Service, Kafka and the S3 servers at the bridge's address; nothing has a route
// out. The images come from `make node-images` (the image `make images` built, and a pause image).

const execFileP = promisify(execFile);
const NODE_NAME = 'backbeat-node';
const POD_CIDR = '10.244.0.0/24';

export interface NodeImages {
  /** The product's image, as helm values name it: repository:tag. */
  image: string;
  /** Its ID (sha256 of its configuration): what the kubelet reports as the running containers' imageID. */
  imageId: string;
  /** The sandbox image containerd starts each pod with. */
  pause: string;
  tar: string;
}

export interface KubeNode {
  ip: string;
  server: string;
  kubeconfig: string;
  images: NodeImages;
  kubelet: ManagedProcess;
  /** Restarts the kubelet on the same configuration (its pods keep running meanwhile). */
  restartKubelet(): Promise<void>;
  stop(): Promise<void>;
}

/** Why this run has no node, or undefined when it can start one. */
export function nodeUnavailable(): string | undefined {
  if (process.env['BACKBEAT_NODE_IP'] === undefined) return 'the run is not inside scripts/isolated.sh (it needs root)';
  return undefined;
}

/** The images of `make node-images`, which must have been built from the sources checked out now. */
export function nodeImages(): NodeImages {
  const file = join(binaries().nodeImages, 'images.json');
  if (!existsSync(file)) throw new Error(`no node images at ${file}: run \`make node-images\` first`);
  const images = JSON.parse(readFileSync(file, 'utf8')) as NodeImages & { sources: string };
  const now = execFileSync('bash', [new URL('../../scripts/node-images.sh', import.meta.url).pathname, '--sources'], { encoding: 'utf8' }).trim();
  if (images.sources !== now) throw new Error(`the node images were built from other sources than these (${images.sources}, now ${now}): run \`make node-images\``);
  return images;
}

export async function startNode(): Promise<KubeNode> {
  const ip = process.env['BACKBEAT_NODE_IP'];
  const cgroupRoot = process.env['BACKBEAT_NODE_CGROUP'];
  if (ip === undefined || cgroupRoot === undefined) throw new Error(`cannot start a node: ${String(nodeUnavailable())}`);
  const bin = (name: string): string => join(requireBinary('kubenode'), name);
  const images = nodeImages();
  const dir = join(runDir(), 'node');
  mkdirSync(join(dir, 'net.d'), { recursive: true });
  const started: { stop(): Promise<void> }[] = [];
  const stop = async (): Promise<void> => {
    while (started.length > 0) await started.pop()?.stop();
    removeContainers(dir, cgroupRoot);
  };
  try {
    const kube = await startKube('node-kube', { address: ip });
    started.push(kube);
    const containerd = await startContainerd(dir, images, ip);
    started.push(containerd);
    const socket = `unix://${join(dir, 'containerd.sock')}`;
    for (const [name, args] of Object.entries(controllers(kube))) {
      const port = await freePort();
      const p = component(dir, name, bin(name), [...args, `--secure-port=${String(port)}`, '--bind-address=127.0.0.1']);
      await p.start(healthz(`https://127.0.0.1:${String(port)}/healthz`));
      started.push(p);
    }
    const [kubeletHealthz, proxyHealthz] = [await freePort(), await freePort()];
    const kubelet = component(dir, 'kubelet', bin('kubelet'), kubeletArgs(dir, kube, ip, cgroupRoot, socket, await freePort(), kubeletHealthz));
    const kubeletReady = healthz(`http://127.0.0.1:${String(kubeletHealthz)}/healthz`);
    await kubelet.start(kubeletReady);
    started.push(kubelet);
    const proxy = component(dir, 'kube-proxy', bin('kube-proxy'), ['--config', kubeProxyConfig(dir, kube, proxyHealthz, await freePort())]);
    await proxy.start(healthz(`http://127.0.0.1:${String(proxyHealthz)}/healthz`));
    started.push(proxy);
    await eventually(async () => {
      const { stdout } = await execFileP(requireBinary('kubectl'), ['--kubeconfig', kube.kubeconfig, 'get', 'node', NODE_NAME, '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")].status}']);
      if (stdout !== 'True') throw new Error(`node ${NODE_NAME} not Ready (${stdout})`);
    }, 60_000, 500);
    return {
      ip,
      server: kube.server,
      kubeconfig: kube.kubeconfig,
      images,
      kubelet,
      async restartKubelet() {
        await kubelet.stop();
        await kubelet.start(kubeletReady);
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * What outlives the kubelet and containerd once they are stopped: the containers' processes (in the pods'
 * cgroups), their shims (which left containerd's process group), and the mounts of their root
 * filesystems, volumes and sandboxes under the node's folder.
 */
function removeContainers(dir: string, cgroupRoot: string): void {
  const pods = `/sys/fs/cgroup/pids${cgroupRoot}`;
  const procs = existsSync(pods) ? readdirSync(pods, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('cgroup.procs')) : [];
  const pids = procs.flatMap((f) => readFileSync(join(pods, f), 'utf8').split('\n').filter((l) => l !== ''));
  const shims = readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(`${dir}/containerd.sock`);
      } catch {
        return false;
      }
    });
  for (const pid of [...pids, ...shims]) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      // already gone
    }
  }
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m.startsWith(`${dir}/`))
    .sort((x, y) => y.length - x.length);
  for (const m of mounts) {
    try {
      execFileSync('umount', ['--lazy', m], { stdio: 'ignore' });
    } catch {
      // stacked on one path: gone with the one before
    }
  }
}

function component(dir: string, name: string, command: string, args: string[]): ManagedProcess {
  return new ManagedProcess({ name: `node-${name}`, command, args, logFile: join(dir, `${name}.log`) });
}

const healthz = (url: string): ReadyCheck => ({
  probe: async () => (await httpGet(url)).status === 200,
  timeoutMs: 60_000,
  intervalMs: 250,
});

async function startContainerd(dir: string, images: NodeImages, ip: string): Promise<ManagedProcess> {
  const socket = join(dir, 'containerd.sock');
  const cri = 'plugins."io.containerd.grpc.v1.cri"';
  const config = join(dir, 'containerd.toml');
  writeFileSync(
    config,
    [
      'version = 2',
      `root = "${join(dir, 'containerd')}"`,
      `state = "${join(dir, 'containerd-state')}"`,
      `[grpc]\naddress = "${socket}"`,
      `[ttrpc]\naddress = "${socket}.ttrpc"`,
      `[plugins."io.containerd.internal.v1.opt"]\npath = "${join(dir, 'containerd-opt')}"`,
      `[${cri}]`,
      `sandbox_image = "${images.pause}"`,
      // Root here lacks CAP_SYS_RESOURCE: runc may not lower a container's OOM score below its own.
      'restrict_oom_score_adj = true',
      `[${cri}.containerd]\nsnapshotter = "overlayfs"\ndefault_runtime_name = "runc"`,
      `[${cri}.containerd.runtimes.runc]\nruntime_type = "io.containerd.runc.v2"`,
      `[${cri}.containerd.runtimes.runc.options]\nSystemdCgroup = false`,
      `[${cri}.cni]\nbin_dir = "/usr/lib/cni"\nconf_dir = "${join(dir, 'net.d')}"`,
      '',
    ].join('\n'),
  );
  writeFileSync(
    join(dir, 'net.d', '10-backbeat.conflist'),
    JSON.stringify({
      cniVersion: '1.0.0',
      name: 'backbeat',
      plugins: [
        {
          type: 'bridge',
          bridge: 'cni0',
          isGateway: true,
          ipMasq: false,
          hairpinMode: true,
          // The default route leads to the bridge, where the Services' addresses are translated; the
          // namespace itself has no route further.
          ipam: { type: 'host-local', ranges: [[{ subnet: POD_CIDR, gateway: ip }]], routes: [{ dst: '0.0.0.0/0' }], dataDir: join(dir, 'ipam') },
        },
      ],
    }),
  );
  const ctr = (args: string[]) => execFileP('ctr', ['--address', socket, '--namespace', 'k8s.io', ...args], { maxBuffer: 16 << 20 });
  const p = component(dir, 'containerd', 'containerd', ['--config', config]);
  await p.start({ probe: async () => (await ctr(['version'])).stdout.includes('Server'), timeoutMs: 30_000 });
  await ctr(['images', 'import', images.tar]);
  return p;
}

function controllers(kube: KubeControlPlane): Record<string, string[]> {
  const common = ['--kubeconfig', kube.kubeconfig, '--leader-elect=false', '--v=0'];
  return {
    'kube-controller-manager': [
      ...common,
      `--service-account-private-key-file=${join(kube.certs, 'sa.key')}`,
      // Published to every namespace as kube-root-ca.crt, which pods' ServiceAccount volumes carry.
      `--root-ca-file=${join(kube.certs, 'apiserver.crt')}`,
      // The node's pod range is configured in CNI; nothing to allocate, no cloud.
      '--controllers=*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle-controller',
    ],
    'kube-scheduler': common,
  };
}

function kubeletArgs(dir: string, kube: KubeControlPlane, ip: string, cgroupRoot: string, runtime: string, port: number, healthzPort: number): string[] {
  const config = join(dir, 'kubelet.yaml');
  writeFileSync(
    config,
    dump({
      apiVersion: 'kubelet.config.k8s.io/v1beta1',
      kind: 'KubeletConfiguration',
      // This machine has cgroup v1, and no systemd.
      failCgroupV1: false,
      cgroupDriver: 'cgroupfs',
      // Prepared by scripts/isolated.sh and removed by it: the pods' cgroups never outlive the run.
      cgroupRoot,
      failSwapOn: false,
      containerRuntimeEndpoint: runtime,
      address: ip,
      port,
      readOnlyPort: 0,
      healthzBindAddress: '127.0.0.1',
      healthzPort,
      authentication: { anonymous: { enabled: true }, webhook: { enabled: false } },
      authorization: { mode: 'AlwaysAllow' },
      // No cluster DNS: every endpoint the tests use is an address.
      resolvConf: '',
      podLogsDir: join(dir, 'pod-logs'),
      // The images exist only here, imported once: never collected, and no eviction on a full-ish disk.
      imageGCHighThresholdPercent: 100,
      imageGCLowThresholdPercent: 99,
      evictionHard: { 'memory.available': '100Mi', 'nodefs.available': '0%', 'imagefs.available': '0%', 'nodefs.inodesFree': '0%' },
      serializeImagePulls: false,
    }),
  );
  return ['--config', config, '--kubeconfig', kube.kubeconfig, '--root-dir', join(dir, 'kubelet'), '--node-ip', ip, '--hostname-override', NODE_NAME, '--v=0'];
}

function kubeProxyConfig(dir: string, kube: KubeControlPlane, healthzPort: number, metricsPort: number): string {
  const file = join(dir, 'kube-proxy.yaml');
  writeFileSync(
    file,
    dump({
      apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
      kind: 'KubeProxyConfiguration',
      clientConnection: { kubeconfig: kube.kubeconfig },
      hostnameOverride: NODE_NAME,
      mode: 'iptables',
      clusterCIDR: POD_CIDR,
      healthzBindAddress: `127.0.0.1:${String(healthzPort)}`,
      metricsBindAddress: `127.0.0.1:${String(metricsPort)}`,
      // The connection-tracking table's size is the machine's, not the namespace's: left alone.
      conntrack: { maxPerCore: 0, min: 0, tcpEstablishedTimeout: '0s', tcpCloseWaitTimeout: '0s' },
    }),
  );
  return file;
}
