import type { ObjectStatus } from '../workers/status/fold.ts';
import { type ApiServer, callApi, type Output, printJson, refused, table } from './api.ts';

export interface StatusQuery {
  location: string;
  bucket: string;
  key: string;
  versionId?: string;
  server: ApiServer;
  output: Output;
}

function objectPath(q: Omit<StatusQuery, 'output' | 'server'>): string {
  const path = [q.location, q.bucket, ...q.key.split('/')].map(encodeURIComponent).join('/');
  const query = q.versionId !== undefined ? `?versionId=${encodeURIComponent(q.versionId)}` : '';
  return `/v1/objects/${path}${query}`;
}

/** `backbeat status`: asks the status API and prints one block per version, a row per destination. */
export async function printStatus(q: StatusQuery): Promise<number> {
  const answer = await callApi(q.server, objectPath(q));
  const body = answer.body as { versions?: ObjectStatus[] };
  if (answer.status !== 200 || body.versions === undefined) return refused(answer);
  if (q.output === 'json') {
    printJson(body.versions);
    return 0;
  }
  for (const v of body.versions) {
    process.stdout.write(`${v.object.location}/${v.object.bucket}/${v.object.key}  version ${v.object.versionId}  ${v.kind}  ${v.state}\n`);
    const rows = [['DESTINATION', 'STATE', 'ATTEMPTS', 'BYTES', 'REPLICA ETAG', 'REASON']];
    for (const [id, d] of Object.entries(v.destinations)) {
      // A replica whose ETag cannot be the source's says how it was checked instead.
      const etag = `${d.replicaEtag ?? ''}${d.verifiedBy !== undefined ? ` (${d.verifiedBy} checked)` : ''}`;
      rows.push([id, d.state, String(d.attempts), String(d.bytes), etag, d.reason ?? '']);
    }
    process.stdout.write(`${table(rows).replace(/^/gm, '  ')}\n`);
    for (const f of Object.values(v.followUps ?? {})) {
      process.stdout.write(`  later ${f.kind} change to ${f.destination}: ${f.state}${f.reason !== undefined ? ` (${f.reason})` : ''}, ${String(f.attempts)} attempts\n`);
    }
    if (v.gc !== undefined) process.stdout.write(`  transient source copy: ${v.gc.state}${v.gc.reason !== undefined ? ` (${v.gc.reason})` : ''}\n`);
  }
  return 0;
}
