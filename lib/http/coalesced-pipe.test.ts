import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, request, type ClientRequest, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { COALESCE_BYTES, pipeCoalesced } from './coalesced-pipe.ts';

// pipeCoalesced against a real HTTP server on loopback: what arrives, how many writes it took, and
// what happens when the server reads slowly or hangs up.

/** `count` chunks of `size` random bytes, each handed out when read (so what was pulled can be counted). */
function source(count: number, size: number, chunks: (size: number, n: number) => Buffer = (size) => randomBytes(size)): { body: Readable; pulled: () => number; digest: () => string; handed: Buffer[] } {
  const hash = createHash('md5');
  const handed: Buffer[] = [];
  let pulled = 0;
  const body = new Readable({
    read() {
      if (pulled === count) {
        this.push(null);
        return;
      }
      const chunk = chunks(size, pulled);
      hash.update(chunk);
      handed.push(chunk);
      pulled++;
      this.push(chunk);
    },
  });
  return { body, pulled: () => pulled, digest: () => hash.copy().digest('hex'), handed };
}

/** Counts the write and writev calls a request's socket makes. */
function countWrites(req: ClientRequest): () => number {
  let writes = 0;
  req.once('socket', (socket: Socket & Record<'_write' | '_writev', (this: Socket, ...args: unknown[]) => void>) => {
    for (const name of ['_write', '_writev'] as const) {
      const original = socket[name].bind(socket);
      socket[name] = (...args: unknown[]) => {
        writes++;
        original(...args);
      };
    }
  });
  return () => writes;
}

describe('pipeCoalesced: a streamed request body written a megabyte at a time (real HTTP server)', () => {
  let server: Server;
  let port: number;
  /** What the server does with each request; by default it hashes the body and answers with the hash. */
  let handle: (req: IncomingMessage, answer: (text: string) => void) => void;

  before(async () => {
    server = createServer((req, res) => {
      handle(req, (text) => res.end(text));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    port = (server.address() as AddressInfo).port;
  });
  beforeEach(() => {
    handle = (req, answer) => {
      const hash = createHash('md5');
      req.on('data', (chunk: Buffer) => hash.update(chunk));
      req.on('end', () => answer(hash.digest('hex')));
    };
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });

  const put = (length: number): ClientRequest => request({ host: '127.0.0.1', port, method: 'PUT', path: '/', headers: { 'content-length': String(length) } });
  const answerOf = async (req: ClientRequest): Promise<string> => {
    const [res] = (await once(req, 'response')) as [IncomingMessage];
    return Buffer.concat(await res.toArray()).toString();
  };

  it('sends every byte, in order, with a tenth of the writes of pipe', async () => {
    const writes: Record<string, number> = {};
    for (const how of ['pipe', 'coalesced'] as const) {
      // 5.5 MiB in 64 KiB reads: the last half megabyte is under the limit, sent at the end.
      const { body, digest } = source(88, 64 * 1024);
      const req = put(88 * 64 * 1024);
      const counted = countWrites(req);
      if (how === 'pipe') body.pipe(req);
      else pipeCoalesced(body, req);
      assert.equal(await answerOf(req), digest(), how);
      writes[how] = counted();
    }
    assert.ok((writes['pipe'] ?? 0) >= 80, `pipe: ${JSON.stringify(writes)}`);
    // Six holds of a megabyte (the last one part), each a writev, partly taken by the socket perhaps.
    assert.ok((writes['coalesced'] ?? Infinity) <= 12, `coalesced: ${JSON.stringify(writes)}`);
  });

  it('frees each chunk of a body it owns once the socket took it, and no buffer it does not own', async () => {
    // Every other read is a slice of one buffer kept here, as Node's pool hands out small ones.
    const kept = randomBytes(32 * 64 * 1024);
    const { body, digest, handed } = source(64, 64 * 1024, (size, n) => (n % 2 === 0 ? randomBytes(size) : kept.subarray(((n - 1) / 2) * size, ((n + 1) / 2) * size)));
    const keptDigest = createHash('md5').update(kept).digest('hex');
    const req = put(64 * 64 * 1024);
    pipeCoalesced(body, req, true);
    assert.equal(await answerOf(req), digest(), 'the server got every byte');
    assert.deepEqual(handed.map((c, n) => [n, c.byteLength]), handed.map((_c, n) => [n, n % 2 === 0 ? 0 : 64 * 1024]), 'its own reads freed (detached), the slices left');
    assert.equal(createHash('md5').update(kept).digest('hex'), keptDigest, 'the buffer the slices were of is untouched');
    // Not owned: nothing freed.
    const other = source(24, 64 * 1024);
    const req2 = put(24 * 64 * 1024);
    pipeCoalesced(other.body, req2);
    assert.equal(await answerOf(req2), other.digest());
    assert.ok(other.handed.every((c) => c.byteLength === 64 * 1024));
  });

  it('holds the source back while the server does not read', async () => {
    let resume = (): void => undefined;
    handle = (req, answer) => {
      let received = 0;
      req.on('data', (chunk: Buffer) => {
        received += chunk.length;
        // After the first megabytes, the server stops reading for a while.
        if (received >= 4 * COALESCE_BYTES && resume === noop) {
          req.pause();
          resume = () => req.resume();
        }
      });
      req.on('end', () => answer(String(received)));
    };
    const noop = resume;
    const total = 256 * COALESCE_BYTES;
    const { body, pulled } = source(total / (64 * 1024), 64 * 1024);
    const req = put(total);
    const answer = answerOf(req);
    pipeCoalesced(body, req);
    while (resume === noop) await sleep(20);
    await sleep(300);
    // The kernel's buffers take some megabytes on loopback; the rest of the 256 stays unread.
    const held = (pulled() * 64 * 1024) / COALESCE_BYTES;
    assert.ok(held < 64, `${held.toFixed(1)} MiB read from the source while the server read nothing`);
    resume();
    assert.equal(await answer, String(total));
  });

  it('stops reading the source when the request is destroyed, and leaves it to its owner', async () => {
    handle = (req) => {
      let received = 0;
      req.on('data', (chunk: Buffer) => {
        received += chunk.length;
        if (received >= 2 * COALESCE_BYTES) req.socket.destroy();
      });
    };
    const { body, pulled } = source(1024, 64 * 1024);
    const req = put(1024 * 64 * 1024);
    // ('close' is awaited by a listener of its own: `once` would reject at the 'error' before it.)
    const ended = Promise.all([once(req, 'error'), new Promise((resolve) => req.once('close', resolve))]);
    pipeCoalesced(body, req);
    await ended;
    const atClose = pulled();
    await sleep(200);
    assert.equal(pulled(), atClose, 'the source is read on after the request closed');
    assert.ok(atClose < 1024, 'the whole source was read');
    assert.equal(body.destroyed, false);
    assert.equal(body.listenerCount('data'), 0);
    body.destroy();
  });
});
