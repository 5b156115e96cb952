import { once } from 'node:events';
import { createConnection, createServer, type Socket } from 'node:net';
import { serviceHost } from './net.ts';

export interface TcpProxy {
  port: number;
  /**
   * While on, what the server answers is dropped and each client connection is closed 300 ms after it
   * last sent something: requests reach the server and are acted on, and the client never learns it.
   */
  loseAnswers(on: boolean): void;
  close(): Promise<void>;
}

/** A TCP proxy on `port` in front of `target`, both on the run's service address; bytes pass untouched unless answers are lost. */
export async function tcpProxy(port: number, target: number): Promise<TcpProxy> {
  let losing = false;
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = createConnection({ host: serviceHost, port: target });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    let closing: NodeJS.Timeout | undefined;
    client.on('data', (chunk: Buffer) => {
      upstream.write(chunk);
      if (!losing) return;
      clearTimeout(closing);
      closing = setTimeout(() => {
        client.destroy();
        upstream.destroy();
      }, 300);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (!losing) client.write(chunk);
    });
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  server.listen(port, serviceHost);
  await once(server, 'listening');
  return {
    port,
    loseAnswers(on) {
      losing = on;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
