import type { FailedEntry } from '../workers/status/status.ts';
import { callApi, table } from './api.ts';

/** `backbeat failed list`: one row per failed destination of an object version. */
export async function listFailed(server: string, destination: string | undefined, json: boolean): Promise<number> {
  const query = destination !== undefined ? `?destination=${encodeURIComponent(destination)}` : '';
  const answer = await callApi(server, `/v1/failed${query}`);
  const { status } = answer;
  const body = answer.body as { failed?: FailedEntry[]; error?: string };
  if (status !== 200 || body.failed === undefined) {
    process.stderr.write(`backbeat: ${body.error ?? `status API answered HTTP ${status}`}\n`);
    return 2;
  }
  if (json) {
    process.stdout.write(`${JSON.stringify(body.failed, null, 2)}\n`);
    return 0;
  }
  // CHANGE tells a failed copy from a failed later change of a copied version (its tags, say).
  const change = { object: 'object', tags: 'tags', deleteMarker: 'delete marker', versionDelete: 'version delete' };
  const rows = [['OBJECT', 'VERSION', 'DESTINATION', 'CHANGE', 'ATTEMPTS', 'FIRST FAILURE', 'LAST FAILURE', 'REASON']];
  for (const e of body.failed) {
    rows.push([`${e.object.location}/${e.object.bucket}/${e.object.key}`, e.object.versionId, e.destination, change[e.kind], String(e.attempts), e.firstFailureAt ?? '', e.lastFailureAt ?? '', e.reason ?? '']);
  }
  process.stdout.write(`${table(rows)}\n${body.failed.length} failed\n`);
  return 0;
}

export type RetrySelector = { all: true } | { destination: string } | { object: string; versionId?: string };

/** `backbeat failed retry`: re-queues the selected failed entries. */
export async function retryFailed(server: string, selector: RetrySelector): Promise<number> {
  const answer = await callApi(server, '/v1/failed/retry', { method: 'POST', body: selector });
  const { status } = answer;
  const body = answer.body as { retried?: number; error?: string };
  if (status !== 200 || body.retried === undefined) {
    process.stderr.write(`backbeat: ${body.error ?? `status API answered HTTP ${status}`}\n`);
    return 2;
  }
  process.stdout.write(`re-queued ${body.retried} failed destination${body.retried === 1 ? '' : 's'}\n`);
  return 0;
}
