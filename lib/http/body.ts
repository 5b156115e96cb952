import type { IncomingMessage } from 'node:http';

/** A request body over the limit: it is not read to its end (the answer should close the connection). */
export class BodyTooLarge extends Error {
  override name = 'BodyTooLarge';
  constructor(limit: number) {
    super(`the request body is over ${String(limit)} bytes`);
  }
}

/** The whole body of a request, refused (BodyTooLarge) once over `limit` bytes, announced or sent. */
export async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  if (Number(req.headers['content-length'] ?? 0) > limit) throw new BodyTooLarge(limit);
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of req) {
    bytes += (chunk as Buffer).length;
    if (bytes > limit) throw new BodyTooLarge(limit);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}
