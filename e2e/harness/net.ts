import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';

/**
 * The address of servers that pods must reach (Kafka, S3): the node's bridge when the run has a node
 * (scripts/isolated.sh sets BACKBEAT_NODE_IP), loopback otherwise.
 */
export const serviceHost = process.env['BACKBEAT_NODE_IP'] ?? '127.0.0.1';

/**
 * Ports for the run's servers come from a range of their own: above the test node's fixed ports
 * (10248–10259) and below the kernel's ephemeral range (32768 and up), where every outgoing connection
 * takes its source port, so one of those cannot take a port between its choice and the server's bind.
 * Each test stream (BACKBEAT_PORT_BLOCK, set by scripts/test-streams.ts) counts up through its own part
 * of the range, so that two streams never choose the same port (with the OS choosing, they did).
 */
const PORTS_PER_BLOCK = 9_500;
const firstPort = 11_000 + Number(process.env['BACKBEAT_PORT_BLOCK'] ?? '0') * PORTS_PER_BLOCK;
let nextPort = firstPort;

function bindableOn(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once('error', () => {
      resolve(false);
    });
    server.listen(port, host, () => {
      server.close(() => {
        resolve(true);
      });
    });
  });
}

/**
 * Free on loopback and on the address servers listen on for pods: another process of the run (the
 * harness's own fixtures count from the same first port) may hold it on only one of them.
 */
async function bindable(port: number): Promise<boolean> {
  return (await bindableOn(port, '127.0.0.1')) && (serviceHost === '127.0.0.1' || (await bindableOn(port, serviceHost)));
}

/** A TCP port no server of this run was given yet, and free now. */
export async function freePort(): Promise<number> {
  for (let tried = 0; tried < PORTS_PER_BLOCK; tried++) {
    const port = nextPort;
    nextPort = port + 1 < firstPort + PORTS_PER_BLOCK ? port + 1 : firstPort;
    if (await bindable(port)) return port;
  }
  throw new Error(`no free port in ${String(firstPort)}–${String(firstPort + PORTS_PER_BLOCK - 1)}`);
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
