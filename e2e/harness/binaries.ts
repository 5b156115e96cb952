import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';

// Where `make deps` cached each component. scripts/deps.sh is the one place that knows versions and paths.

const REPO = new URL('../../', import.meta.url).pathname;

export interface Binaries {
  kafkaLibs: string;
  minio: string;
  /** MinIO's client, for its bucket replication in `make bench`. */
  mc: string;
  /** SeaweedFS (`weed`), the second S3 implementation of the data-plane suites. */
  weed: string;
  etcd: string;
  kubeApiserver: string;
  kubectl: string;
  /** A folder: kubelet, kube-proxy, kube-controller-manager, kube-scheduler, pause. */
  kubenode: string;
  helm: string;
  /** A folder: images.json and the image archive of `make node-images`. */
  nodeImages: string;
  rclone: string;
  /** A folder: Ceph's monitor, OSD and RADOS gateway unpacked from Debian's packages (usr/bin, usr/lib). */
  rgwRoot: string;
  promcheck: string;
}

let cached: Binaries | undefined;

function fromDepsScript(): Record<string, string> {
  const out = execFileSync('bash', [`${REPO}scripts/deps.sh`, '--env'], { encoding: 'utf8' });
  return Object.fromEntries(
    out
      .trim()
      .split('\n')
      .map((line) => {
        const i = line.indexOf('=');
        return [line.slice(0, i), line.slice(i + 1)];
      }),
  );
}

export function binaries(): Binaries {
  if (cached !== undefined) return cached;
  const env = fromDepsScript();
  const get = (key: string): string => process.env[key] ?? env[key] ?? '';
  cached = {
    kafkaLibs: get('BACKBEAT_KAFKA_LIBS'),
    minio: get('BACKBEAT_MINIO'),
    mc: get('BACKBEAT_MC'),
    weed: get('BACKBEAT_WEED'),
    etcd: get('BACKBEAT_ETCD'),
    kubeApiserver: get('BACKBEAT_KUBE_APISERVER'),
    kubectl: get('BACKBEAT_KUBECTL'),
    kubenode: get('BACKBEAT_KUBENODE'),
    helm: get('BACKBEAT_HELM'),
    nodeImages: get('BACKBEAT_NODE_IMAGES'),
    rclone: get('BACKBEAT_RCLONE'),
    rgwRoot: get('BACKBEAT_RGW_ROOT'),
    promcheck: get('BACKBEAT_PROMCHECK'),
  };
  return cached;
}

/** The path of a cached component, or an error that says how to get it. */
export function requireBinary(name: keyof Binaries): string {
  const path = binaries()[name];
  if (path === '' || !existsSync(path)) {
    throw new Error(`${name} is not installed (looked at ${path || 'nothing'}): run \`make deps\` first`);
  }
  return path;
}
