import { readSecretFile } from '../lib/config/secret-file.ts';
import { apiExit, Unreachable } from './exit.ts';

/** Where the status API is, and the credentials sent to it. */
export interface ApiServer {
  url: string;
  authorization?: string;
}

/**
 * The server from --server, with a bearer token from --token-file ($BACKBEAT_TOKEN_FILE), else from
 * the current user of --kubeconfig ($KUBECONFIG) when one is given: its token, token file or exec plugin.
 */
export async function apiServer(values: { server?: unknown; 'token-file'?: unknown; kubeconfig?: unknown }): Promise<ApiServer> {
  const url = typeof values.server === 'string' ? values.server : 'http://127.0.0.1:8900';
  const tokenFile = typeof values['token-file'] === 'string' ? values['token-file'] : process.env['BACKBEAT_TOKEN_FILE'];
  if (tokenFile !== undefined && tokenFile !== '') {
    const token = readSecretFile(tokenFile, 'the token file').trim();
    if (token === '') throw new Error(`the token file ${tokenFile} is empty`);
    return { url, authorization: `Bearer ${token}` };
  }
  const kubeconfig = typeof values.kubeconfig === 'string' ? values.kubeconfig : process.env['KUBECONFIG'];
  if (kubeconfig === undefined || kubeconfig === '') return { url };
  // The kubeconfig's own logic gives the header (token, token file, exec plugin); a client certificate gives none.
  const options: { headers: Record<string, string> } = { headers: {} };
  // Loaded here only: the Kubernetes client costs 0.25 s and 90 MiB to load, which no other verb needs.
  const { loadKubeConfig } = await import('../lib/kube/client.ts');
  await loadKubeConfig(kubeconfig).applyToHTTPSOptions(options);
  const authorization = options.headers['Authorization'] ?? options.headers['authorization'];
  return authorization !== undefined ? { url, authorization } : { url };
}

/** A call to the status API; answers the parsed JSON body and the HTTP status. */
export async function callApi(server: ApiServer, path: string, init?: { method: 'POST'; body: unknown }): Promise<{ status: number; body: unknown }> {
  const headers: Record<string, string> = {
    ...(server.authorization !== undefined ? { authorization: server.authorization } : {}),
    ...(init !== undefined ? { 'content-type': 'application/json' } : {}),
  };
  let res: Response;
  try {
    res = await fetch(`${server.url.replace(/\/$/, '')}${path}`, { method: init?.method ?? 'GET', headers, ...(init !== undefined ? { body: JSON.stringify(init.body) } : {}) });
  } catch (err) {
    throw new Unreachable(`cannot reach the status API at ${server.url} (is \`backbeat run\` running, or a port-forward to the status Service?): ${(err as Error).message}`, { cause: err });
  }
  const text = await res.text();
  try {
    return { status: res.status, body: JSON.parse(text) as unknown };
  } catch {
    // Not the status API: a proxy's error page, another service on that port.
    const type = res.headers.get('content-type') ?? 'no content type';
    throw new Error(`${server.url} answered HTTP ${String(res.status)} with ${type}, not the status API's JSON: is --server the status API's address?`);
  }
}

export function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n');
}

/** An answer that is not a success: its error on stderr, and the exit code it calls for. */
export function refused(answer: { status: number; body: unknown }): number {
  const error = (answer.body as { error?: unknown }).error;
  process.stderr.write(`backbeat: ${typeof error === 'string' ? error : `the status API answered HTTP ${String(answer.status)}`}\n`);
  return apiExit(answer.status);
}

/** How a verb prints what it got: a table or lines for people, or the API's JSON for scripts (-o json). */
export type Output = 'text' | 'json';

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}
