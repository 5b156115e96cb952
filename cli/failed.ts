import type { FailedEntry } from '../workers/status/status.ts';
import { type ApiServer, callApi, type Output, printJson, refused, table } from './api.ts';

/** `backbeat failed list`: one row per failed destination of an object version, a page at a time. */
export async function listFailed(server: ApiServer, page: { destination?: string; limit?: string; cursor?: string }, output: Output): Promise<number> {
  const query = new URLSearchParams(Object.entries(page)).toString();
  const answer = await callApi(server, `/v1/failed${query === '' ? '' : `?${query}`}`);
  const body = answer.body as { failed?: FailedEntry[]; next?: string };
  if (answer.status !== 200 || body.failed === undefined) return refused(answer);
  const more = body.next === undefined ? '' : `more: backbeat failed list --cursor ${body.next}${page.limit !== undefined ? ` --limit ${page.limit}` : ''}${page.destination !== undefined ? ` --destination ${page.destination}` : ''}`;
  if (output === 'json') {
    // stdout stays a JSON array for scripts; where the next page starts goes to stderr.
    printJson(body.failed);
    if (more !== '') process.stderr.write(`${more}\n`);
    return 0;
  }
  // CHANGE tells a failed copy from a failed later change of a copied version (its tags, say).
  const change = { object: 'object', tags: 'tags', deleteMarker: 'delete marker', versionDelete: 'version delete', gc: 'GC deletion' };
  const rows = [['OBJECT', 'VERSION', 'DESTINATION', 'CHANGE', 'ATTEMPTS', 'FIRST FAILURE', 'LAST FAILURE', 'REASON']];
  for (const e of body.failed) {
    rows.push([`${e.object.location}/${e.object.bucket}/${e.object.key}`, e.object.versionId, e.destination, change[e.kind], String(e.attempts), e.firstFailureAt ?? '', e.lastFailureAt ?? '', e.reason ?? '']);
  }
  process.stdout.write(`${table(rows)}\n${String(body.failed.length)} failed${more === '' ? '' : `; ${more}`}\n`);
  return 0;
}

export type RetrySelector = { all: true } | { destination: string } | { object: string; versionId?: string };

/** `backbeat failed retry`: re-queues the selected failed entries. */
export async function retryFailed(server: ApiServer, selector: RetrySelector, output: Output): Promise<number> {
  const answer = await callApi(server, '/v1/failed/retry', { method: 'POST', body: selector });
  const body = answer.body as { retried?: number };
  if (answer.status !== 200 || body.retried === undefined) return refused(answer);
  if (output === 'json') printJson(body);
  else process.stdout.write(`re-queued ${body.retried} failed destination${body.retried === 1 ? '' : 's'}\n`);
  return 0;
}
