import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { dump } from 'js-yaml';
import { requireBinary } from './binaries.ts';
import { freePort, httpGet } from './net.ts';
import { ManagedProcess } from './process.ts';
import { runDir } from './run-dir.ts';

export interface KubeControlPlane {
  /** https URL of the API server. */
  server: string;
  /** A kubeconfig file with cluster-admin rights (system:masters). */
  kubeconfig: string;
  /** The serving certificate (apiserver.crt) and the ServiceAccount signing key (sa.key). */
  certs: string;
  etcd: ManagedProcess;
  apiserver: ManagedProcess;
  stop(): Promise<void>;
}

export interface KubeOptions {
  /**
   * The address the API server binds and advertises. Given, the control plane serves a node (harness/node.ts):
   * the `kubernetes` Service's endpoints are kept and pods get ServiceAccount tokens. Default: loopback,
   * no node.
   */
  address?: string;
}

/**
 * etcd and kube-apiserver on free ports, the way envtest runs them: a real API server (CRDs, validation,
 * RBAC, watches), with no scheduler, kubelet or controller manager unless harness/node.ts adds them.
 */
export async function startKube(name = 'kube', options: KubeOptions = {}): Promise<KubeControlPlane> {
  const etcdBin = requireBinary('etcd');
  const apiserverBin = requireBinary('kubeApiserver');
  const dir = join(runDir(), name);
  const certs = join(dir, 'certs');
  mkdirSync(certs, { recursive: true });

  const [clientPort, peerPort, apiPort] = [await freePort(), await freePort(), await freePort()];
  const etcdUrl = `http://127.0.0.1:${clientPort}`;
  const etcd = new ManagedProcess({
    name: `${name}-etcd`,
    command: etcdBin,
    args: [
      '--name', 'test',
      '--data-dir', join(dir, 'etcd'),
      '--listen-client-urls', etcdUrl,
      '--advertise-client-urls', etcdUrl,
      '--listen-peer-urls', `http://127.0.0.1:${peerPort}`,
      '--initial-advertise-peer-urls', `http://127.0.0.1:${peerPort}`,
      '--initial-cluster', `test=http://127.0.0.1:${peerPort}`,
      '--unsafe-no-fsync',
      '--log-level', 'warn',
    ],
    logFile: join(dir, 'etcd.log'),
  });
  await etcd.start({
    probe: async () => (await httpGet(`${etcdUrl}/health`)).body.includes('"health":"true"'),
    timeoutMs: 30_000,
  });

  // The service-account signing key pair and an admin token: generated per run, never reused.
  const { publicKey, privateKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  writeFileSync(join(certs, 'sa.pub'), publicKey);
  writeFileSync(join(certs, 'sa.key'), privateKey, { mode: 0o600 });
  const token = randomBytes(24).toString('base64url');
  writeFileSync(join(certs, 'tokens.csv'), `${token},admin,admin-uid,"system:masters"\n`, { mode: 0o600 });

  const address = options.address ?? '127.0.0.1';
  const server = `https://${address}:${apiPort}`;
  const forNode = options.address === undefined
    ? // With no kubelet or cluster network, the `kubernetes` Service endpoints cannot be reconciled, and no
      // controller manager creates the ServiceAccounts that admission would require.
      ['--disable-admission-plugins=ServiceAccount', '--endpoint-reconciler-type=none']
    : ['--kubelet-preferred-address-types=InternalIP'];
  const apiserver = new ManagedProcess({
    name: `${name}-apiserver`,
    command: apiserverBin,
    args: [
      `--etcd-servers=${etcdUrl}`,
      `--etcd-prefix=/${name}`,
      `--cert-dir=${certs}`,
      `--bind-address=${address}`,
      `--advertise-address=${address}`,
      `--secure-port=${apiPort}`,
      '--service-cluster-ip-range=10.0.0.0/24',
      `--service-account-issuer=${server}`,
      `--service-account-key-file=${join(certs, 'sa.pub')}`,
      `--service-account-signing-key-file=${join(certs, 'sa.key')}`,
      '--authorization-mode=RBAC',
      `--token-auth-file=${join(certs, 'tokens.csv')}`,
      '--allow-privileged=true',
      ...forNode,
      '--v=0',
    ],
    logFile: join(dir, 'apiserver.log'),
  });
  await apiserver.start({
    probe: async () => (await httpGet(`${server}/readyz`, { authorization: `Bearer ${token}` })).status === 200,
    timeoutMs: 120_000,
    intervalMs: 500,
  });

  const kubeconfig = join(dir, 'kubeconfig');
  writeFileSync(
    kubeconfig,
    dump({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name, cluster: { server, 'certificate-authority': join(certs, 'apiserver.crt') } }],
      users: [{ name: 'admin', user: { token } }],
      contexts: [{ name, context: { cluster: name, user: 'admin' } }],
      'current-context': name,
    }),
    { mode: 0o600 },
  );
  return {
    server,
    kubeconfig,
    certs,
    etcd,
    apiserver,
    async stop() {
      await apiserver.stop();
      await etcd.stop();
    },
  };
}
