import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import * as k8s from '@kubernetes/client-node';
import { kubeClients, loadKubeConfig, type KubeClients } from '../../lib/kube/client.ts';
import { requireBinary } from '../harness/binaries.ts';
import { sharedKube } from '../harness/env.ts';
import { eventually } from '../harness/wait.ts';

const run = promisify(execFile);
const GROUP = 'components.test.backbeat.io';

const crd: k8s.V1CustomResourceDefinition = {
  apiVersion: 'apiextensions.k8s.io/v1',
  kind: 'CustomResourceDefinition',
  metadata: { name: `widgets.${GROUP}` },
  spec: {
    group: GROUP,
    scope: 'Namespaced',
    names: { plural: 'widgets', singular: 'widget', kind: 'Widget' },
    versions: [
      {
        name: 'v1',
        served: true,
        storage: true,
        subresources: { status: {} },
        schema: {
          openAPIV3Schema: {
            type: 'object',
            properties: {
              spec: {
                type: 'object',
                required: ['size'],
                properties: { size: { type: 'integer', minimum: 1, maximum: 10 } },
              },
              status: { type: 'object', properties: { seen: { type: 'integer' } } },
            },
          },
        },
      },
    ],
  },
};

describe('Kubernetes API server (etcd + kube-apiserver)', function () {
  this.timeout(180_000);
  let kube: KubeClients;
  let kubeconfig: string;

  before(async () => {
    kubeconfig = (await sharedKube()).kubeconfig;
    kube = kubeClients(loadKubeConfig(kubeconfig));
  });

  it('registers a CRD, validates, stores and watches its custom resources', async () => {
    const base = { group: GROUP, version: 'v1', namespace: 'default', plural: 'widgets' };
    await kube.apiextensions.createCustomResourceDefinition({ body: crd });
    await eventually(async () => {
      const got = await kube.apiextensions.readCustomResourceDefinition({ name: `widgets.${GROUP}` });
      assert.ok(got.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True'));
      // Established comes a moment before the new resource path is served.
      await kube.custom.listNamespacedCustomObject(base);
    });

    const events: string[] = [];
    const watching = await new k8s.Watch(kube.config).watch(
      `/apis/${GROUP}/v1/namespaces/default/widgets`,
      {},
      (phase, obj: { metadata?: { name?: string }; spec?: { size?: number } }) => {
        events.push(`${phase} ${obj.metadata?.name ?? ''} ${String(obj.spec?.size)}`);
      },
      (err: unknown) => {
        if (err !== null && !(err instanceof Error && err.name === 'AbortError')) events.push(`watch ended: ${err instanceof Error ? err.message : JSON.stringify(err)}`);
      },
    );
    try {
      // The structural schema is enforced by the API server itself.
      await assert.rejects(
        kube.custom.createNamespacedCustomObject({ ...base, body: { apiVersion: `${GROUP}/v1`, kind: 'Widget', metadata: { name: 'huge' }, spec: { size: 99 } } }),
        /spec\.size|should be less than or equal to 10/,
      );
      await kube.custom.createNamespacedCustomObject({ ...base, body: { apiVersion: `${GROUP}/v1`, kind: 'Widget', metadata: { name: 'w1' }, spec: { size: 3 } } });
      await kube.custom.patchNamespacedCustomObject(
        { ...base, name: 'w1', body: { spec: { size: 4 } } },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
      );
      await eventually(() => assert.deepEqual(events, ['ADDED w1 3', 'MODIFIED w1 4']));
    } finally {
      watching.abort();
    }

    // kubectl from the component cache talks to the same server.
    const { stdout } = await run(requireBinary('kubectl'), ['--kubeconfig', kubeconfig, 'get', 'widgets', '-o', 'jsonpath={.items[*].spec.size}']);
    assert.equal(stdout, '4');
  });
});
