import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { loadKubeConfig } from '../../lib/kube/client.ts';
import { kubeRest } from '../../lib/kube/rest.ts';
import { requireBinary } from '../harness/binaries.ts';
import { sharedNode } from '../harness/env.ts';
import { nodeUnavailable, type KubeNode } from '../harness/node.ts';
import { eventually } from '../harness/wait.ts';

const run = promisify(execFile);

interface Pod {
  metadata: { name: string };
  status: { phase: string; podIP: string; containerStatuses?: { ready: boolean; imageID: string }[] };
}

// What a pod of the product's image must be able to do on the node: run as a non-root user on a read-only
// root, reach the API server through the `kubernetes` Service and prove who it is with its projected
// ServiceAccount token, verified against the kube-root-ca.crt the controller manager published.
const WHOAMI = `
const fs = require('node:fs');
const d = '/var/run/secrets/kubernetes.io/serviceaccount/';
const body = JSON.stringify({ apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' });
const req = require('node:https').request({
  host: process.env.KUBERNETES_SERVICE_HOST, port: process.env.KUBERNETES_SERVICE_PORT, method: 'POST',
  path: '/apis/authentication.k8s.io/v1/selfsubjectreviews', ca: fs.readFileSync(d + 'ca.crt'),
  headers: { authorization: 'Bearer ' + fs.readFileSync(d + 'token', 'utf8'), 'content-type': 'application/json' },
}, (res) => {
  let b = '';
  res.on('data', (c) => (b += c));
  res.on('end', () => { console.log('whoami ' + res.statusCode + ' ' + JSON.parse(b).status.userInfo.username + ' uid=' + process.getuid()); setInterval(() => {}, 1e9); });
});
req.on('error', (e) => { console.log('error ' + e.message); process.exit(1); });
req.end(body);
`;

describe('a Kubernetes node inside the test namespace (kubelet, containerd, kube-proxy)', function () {
  this.timeout(240_000);
  let node: KubeNode;
  const kubectl = async (...args: string[]): Promise<string> => (await run(requireBinary('kubectl'), ['--kubeconfig', node.kubeconfig, ...args])).stdout;

  before(async function () {
    const why = nodeUnavailable();
    if (why !== undefined) {
      console.log(`      no node: ${why}`);
      this.skip();
    }
    node = await sharedNode();
  });

  it('runs pods of the image make images built, which reach the API server with their ServiceAccount token', async () => {
    await kubectl('create', 'namespace', 'node-test');
    const deployment = {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'whoami', namespace: 'node-test' },
      spec: {
        replicas: 2,
        selector: { matchLabels: { app: 'whoami' } },
        template: {
          metadata: { labels: { app: 'whoami' } },
          spec: {
            securityContext: { runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } },
            containers: [
              {
                name: 'whoami',
                image: node.images.image,
                imagePullPolicy: 'Never',
                command: ['node', '-e', WHOAMI],
                securityContext: { readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } },
                resources: { limits: { memory: '128Mi' } },
              },
            ],
          },
        },
      },
    };
    const rest = kubeRest(loadKubeConfig(node.kubeconfig));
    await rest.create('/apis/apps/v1/namespaces/node-test/deployments', deployment);
    const pods = await eventually(async () => {
      const list = JSON.parse(await kubectl('-n', 'node-test', 'get', 'pods', '-l', 'app=whoami', '-o', 'json')) as { items: Pod[] };
      const ready = list.items.filter((p) => p.status.containerStatuses?.[0]?.ready === true);
      if (ready.length !== 2) throw new Error(`${String(ready.length)} of 2 pods ready: ${list.items.map((p) => p.status.phase).join(', ')}`);
      return ready;
    }, 120_000, 1_000);
    for (const pod of pods) {
      // The kubelet reports the ID of the image it runs: the one `make images` built.
      assert.equal(pod.status.containerStatuses?.[0]?.imageID, node.images.imageId);
      assert.match(pod.status.podIP, /^10\.244\.0\.\d+$/);
      const log = await eventually(async () => {
        const out = await kubectl('-n', 'node-test', 'logs', pod.metadata.name);
        if (out === '') throw new Error(`no output yet from ${pod.metadata.name}`);
        return out.trim();
      }, 30_000, 500);
      assert.equal(log, 'whoami 201 system:serviceaccount:node-test:default uid=10001');
    }
    const ids = await kubectl('-n', 'node-test', 'get', 'pods', '-o', 'jsonpath={.items[*].status.containerStatuses[0].imageID}');
    console.log(`      pods run ${ids} (${node.images.image} is ${node.images.imageId})`);
    await kubectl('delete', 'namespace', 'node-test', '--wait=true', '--timeout=120s');
  });
});
