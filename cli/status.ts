import type { ObjectStatus } from '../workers/status/fold.ts';

export interface StatusQuery {
  location: string;
  bucket: string;
  key: string;
  versionId?: string;
  server: string;
  json: boolean;
}

export function statusUrl(q: Omit<StatusQuery, 'json'>): string {
  const path = [q.location, q.bucket, ...q.key.split('/')].map(encodeURIComponent).join('/');
  const query = q.versionId !== undefined ? `?versionId=${encodeURIComponent(q.versionId)}` : '';
  return `${q.server.replace(/\/$/, '')}/v1/objects/${path}${query}`;
}

function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n');
}

/** `backbeat status`: asks the status API and prints one block per version, a row per destination. */
export async function printStatus(q: StatusQuery): Promise<number> {
  let res: Response;
  try {
    res = await fetch(statusUrl(q));
  } catch (err) {
    throw new Error(`cannot reach the status API at ${q.server} (is \`backbeat run\` running?): ${(err as Error).message}`, { cause: err });
  }
  const body = (await res.json()) as { versions?: ObjectStatus[]; error?: string };
  if (!res.ok || body.versions === undefined) {
    process.stderr.write(`backbeat: ${body.error ?? `status API answered HTTP ${res.status}`}\n`);
    return res.status === 404 ? 3 : 1;
  }
  if (q.json) {
    process.stdout.write(`${JSON.stringify(body.versions, null, 2)}\n`);
    return 0;
  }
  for (const v of body.versions) {
    process.stdout.write(`${v.object.location}/${v.object.bucket}/${v.object.key}  version ${v.object.versionId}  ${v.kind}  ${v.state}\n`);
    const rows = [['DESTINATION', 'STATE', 'ATTEMPTS', 'BYTES', 'REPLICA ETAG', 'REASON']];
    for (const [id, d] of Object.entries(v.destinations)) {
      rows.push([id, d.state, String(d.attempts), String(d.bytes), d.replicaEtag ?? '', d.reason ?? '']);
    }
    process.stdout.write(`${table(rows).replace(/^/gm, '  ')}\n`);
    if (v.gc !== undefined) process.stdout.write(`  transient source copy: ${v.gc.state}${v.gc.reason !== undefined ? ` (${v.gc.reason})` : ''}\n`);
  }
  return 0;
}
