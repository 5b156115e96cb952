import { once } from 'node:events';
import { createServer, request, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FaultProxy {
  endpoint: string;
  /** How many requests were answered with the injected error. */
  injected: number;
  close(): Promise<void>;
}

/**
 * An HTTP proxy in front of a real S3 server that answers chosen requests with an S3 error instead of
 * forwarding them: a real server with an injected fault (a 5xx cannot be provoked from MinIO at will).
 * Everything else is forwarded untouched, Host header included, so signatures still verify.
 */
export async function faultProxy(
  target: string,
  fail: (req: IncomingMessage) => boolean,
  status = 503,
  code = 'ServiceUnavailable',
  { delayMs }: { delayMs?: (req: IncomingMessage) => number } = {},
): Promise<FaultProxy> {
  const upstream = new URL(target);
  const state = { injected: 0 };
  const server = createServer((req, res) => {
    if (fail(req)) {
      state.injected++;
      req.resume();
      req.on('end', () => {
        res.writeHead(status, { 'content-type': 'application/xml' });
        res.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>injected by the test proxy</Message></Error>`);
      });
      return;
    }
    // A slow link: the request is held before it is forwarded (its body waits in the socket).
    setTimeout(() => {
      const forward = request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      });
      forward.on('error', () => res.destroy());
      req.pipe(forward);
    }, delayMs?.(req) ?? 0);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    get injected() {
      return state.injected;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
