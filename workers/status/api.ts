import { createServer, type Server } from 'node:http';
import type { StatusProcessor } from './status.ts';

/**
 * HTTP API of the status processor (what `backbeat status` asks):
 *   GET /v1/objects/<location>/<bucket>/<key>[?versionId=V]  → { versions: ObjectStatus[] } or 404
 *   GET /v1/summary                                          → object versions per state
 *   GET /healthz                                             → 200 while the process serves
 */
export function statusServer(status: StatusProcessor): Server {
  return createServer((req, res) => {
    const send = (code: number, body: unknown): void => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (req.method !== 'GET') {
      send(405, { error: 'only GET is served' });
      return;
    }
    if (url.pathname === '/healthz') {
      send(200, { ok: true });
      return;
    }
    if (url.pathname === '/v1/summary') {
      send(200, status.summary());
      return;
    }
    const prefix = '/v1/objects/';
    if (url.pathname.startsWith(prefix)) {
      // Segments are percent-encoded by the client, so keys with '/', '%', '+' or spaces arrive intact.
      const [location, bucket, ...rest] = url.pathname.slice(prefix.length).split('/');
      if (location === undefined || bucket === undefined || rest.length === 0) {
        send(400, { error: 'expected /v1/objects/<location>/<bucket>/<key>' });
        return;
      }
      const key = rest.map(decodeURIComponent).join('/');
      const versionId = url.searchParams.get('versionId') ?? undefined;
      const versions = status.lookup(decodeURIComponent(location), decodeURIComponent(bucket), key, versionId);
      if (versions.length === 0) send(404, { error: `no replication status for ${location}/${bucket}/${key}${versionId !== undefined ? ` version ${versionId}` : ''}` });
      else send(200, { versions });
      return;
    }
    send(404, { error: `no such endpoint: ${url.pathname}` });
  });
}
