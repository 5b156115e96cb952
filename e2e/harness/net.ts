import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';

/**
 * The address of servers that pods must reach (Kafka, S3): the node's bridge when the run has a node
 * (scripts/isolated.sh sets BACKBEAT_NODE_IP), loopback otherwise.
 */
export const serviceHost = process.env['BACKBEAT_NODE_IP'] ?? '127.0.0.1';

/** A currently free TCP port on 127.0.0.1 (the OS picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => {
        if (address !== null && typeof address === 'object') resolve(address.port);
        else reject(new Error('no port assigned'));
      });
    });
  });
}

export interface HttpAnswer {
  status: number;
  body: string;
}

/** A small GET for readiness probes; https accepts the component's self-signed certificate. */
export function httpGet(url: string, headers: Record<string, string> = {}, timeoutMs = 2_000): Promise<HttpAnswer> {
  const u = new URL(url);
  const request = u.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = request(u, { method: 'GET', headers, timeout: timeoutMs, rejectUnauthorized: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => {
        resolve({ status: res.statusCode ?? 0, body });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on('error', reject);
    req.end();
  });
}
