import * as k8s from '@kubernetes/client-node';

export interface KubeClients {
  config: k8s.KubeConfig;
  core: k8s.CoreV1Api;
  apps: k8s.AppsV1Api;
  apiextensions: k8s.ApiextensionsV1Api;
  custom: k8s.CustomObjectsApi;
  coordination: k8s.CoordinationV1Api;
  objects: k8s.KubernetesObjectApi;
}

/**
 * A KubeConfig from an explicit file, else from the usual places: $KUBECONFIG, ~/.kube/config, or the
 * in-cluster service account.
 */
export function loadKubeConfig(file?: string): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  if (file !== undefined) kc.loadFromFile(file);
  else kc.loadFromDefault();
  if (kc.getCurrentCluster() === null) {
    throw new Error(`no Kubernetes cluster in ${file ?? 'the default kubeconfig'}`);
  }
  return kc;
}

export function kubeClients(config: k8s.KubeConfig): KubeClients {
  return {
    config,
    core: config.makeApiClient(k8s.CoreV1Api),
    apps: config.makeApiClient(k8s.AppsV1Api),
    apiextensions: config.makeApiClient(k8s.ApiextensionsV1Api),
    custom: config.makeApiClient(k8s.CustomObjectsApi),
    coordination: config.makeApiClient(k8s.CoordinationV1Api),
    objects: k8s.KubernetesObjectApi.makeApiClient(config),
  };
}
