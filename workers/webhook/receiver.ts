import { createHash, timingSafeEqual } from 'node:crypto';
import { once } from 'node:events';
import type { IncomingMessage, RequestListener, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { BodyTooLarge, readBody } from '../../lib/http/body.ts';
import type { Logger } from '../../lib/log/logger.ts';
import type { Metrics } from '../../lib/metrics.ts';
import type { Queue, QueueProducer } from '../../lib/queue/queue.ts';
import { MalformedEvent, parseNotification } from '../journal/notifications.ts';
import { createServer } from '../../lib/http/node-http.ts';

// The webhook journal: S3 event notifications POSTed over HTTP by servers that cannot publish to Kafka
// (Ceph RGW topics, MinIO webhook targets), written to the location's journal topic before the answer.
// The populator then reads them as it reads events a server published there itself.

export interface WebhookLocation {
  /** The location's journal topic (spec.journal.kafka.topic). */
  topic: string;
  /** What a sender presents (spec.journal.webhook.tokenSecretRef). */
  token: string;
}

export interface WebhookOptions {
  queue: Queue;
  logger: Logger;
  /** The locations whose events are taken, by name. */
  locations: ReadonlyMap<string, WebhookLocation>;
  metrics?: Metrics;
}

/** An event notification is a few KiB; a server may batch some. */
const MAX_BODY_BYTES = 1024 * 1024;
const PATH = /^\/v1\/journal\/([^/]+)$/;

class Answer extends Error {
  readonly code: number;
  constructor(code: number, message: string) {
    super(message);
    this.code = code;
  }
}

/** The location a request's path names (decoded); undefined for another path. Throws URIError on a bad encoding. */
const locationOf = (url: URL): string | undefined => {
  const raw = PATH.exec(url.pathname)?.[1];
  return raw === undefined ? undefined : decodeURIComponent(raw);
};

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

/** The token a request presents: `Authorization: Bearer <token>`, else the `token` query parameter. */
function presented(req: IncomingMessage, url: URL): string | undefined {
  const header = /^Bearer (.+)$/i.exec(req.headers.authorization ?? '')?.[1];
  return header ?? url.searchParams.get('token') ?? undefined;
}

const body = (req: IncomingMessage): Promise<Buffer> =>
  readBody(req, MAX_BODY_BYTES).catch((err: unknown) => {
    throw err instanceof BodyTooLarge ? new Answer(413, err.message) : err;
  });

/**
 * One journal message per event record, keyed by bucket and key as a server publishing to Kafka keys
 * them (the events of one key stay in order on one partition). Records that change nothing are dropped.
 */
function journalRecords(location: string, raw: Buffer): { key: string; value: Buffer }[] {
  try {
    // The whole body first: a request with one bad record is refused whole, and nothing is written.
    parseNotification(location, raw);
  } catch (err) {
    if (err instanceof MalformedEvent) throw new Answer(400, `malformed event: ${err.message}`);
    throw err;
  }
  const records = (JSON.parse(raw.toString('utf8')) as { Records?: unknown }).Records;
  // A configuration's test event (AWS's s3:TestEvent) carries no records.
  if (!Array.isArray(records)) return [];
  return records.flatMap((record: unknown) => {
    const value = Buffer.from(JSON.stringify({ Records: [record] }));
    return parseNotification(location, value).map((change) => ({ key: `${change.bucket}/${change.key}`, value }));
  });
}

/** The HTTP receiver of the webhook journal: POST /v1/journal/<location>, and GET /healthz on its own server. */
export class WebhookReceiver {
  private readonly options: WebhookOptions;
  private readonly tokens: Map<string, Buffer>;
  private producer: Promise<QueueProducer> | undefined;
  private server: Server | undefined;
  /** Requests being answered: their events may be on their way to Kafka. */
  private readonly inFlight = new Set<Promise<unknown>>();
  /** Events written to a journal topic, by location. */
  readonly received = new Map<string, number>();

  constructor(options: WebhookOptions) {
    this.options = options;
    this.tokens = new Map([...options.locations].map(([name, l]) => [name, digest(l.token)]));
  }

  /** Answers what the sender should know: 200 once the events are in Kafka; 4xx for a request that a retry cannot fix; 503 while Kafka cannot take them. */
  private async handle(req: IncomingMessage): Promise<{ code: number; body: unknown }> {
    const url = new URL(req.url ?? '/', 'http://receiver');
    if (url.pathname === '/healthz') return { code: 200, body: { ok: true } };
    const name = locationOf(url);
    if (name === undefined) return { code: 404, body: { error: `no such endpoint: ${url.pathname}` } };
    if (req.method !== 'POST') return { code: 405, body: { error: `${req.method ?? ''} ${url.pathname} is not served: POST events` } };
    // Compared as digests, in constant time; an unknown location is refused as a wrong token is.
    const [target, expected, token] = [this.options.locations.get(name), this.tokens.get(name), presented(req, url)];
    if (target === undefined || expected === undefined || token === undefined || !timingSafeEqual(expected, digest(token))) {
      throw new Answer(401, 'a valid token is required (Authorization: Bearer, or the token query parameter)');
    }
    const records = journalRecords(name, await body(req));
    if (records.length > 0) {
      // A producer that could not be made is asked for again by the next request.
      this.producer ??= this.options.queue.producer().catch((err: unknown) => {
        this.producer = undefined;
        throw err;
      });
      try {
        await (await this.producer).send(target.topic, records);
      } catch (err) {
        this.options.logger.warn('webhook events not written to the journal: the sender is asked to retry', { location: name, reason: (err as Error).message });
        throw new Answer(503, 'the journal cannot be written now: retry');
      }
      this.received.set(name, (this.received.get(name) ?? 0) + records.length);
    }
    return { code: 200, body: { written: records.length } };
  }

  /** Answers one request; a server of another role can pass it what it does not serve itself. */
  readonly handler: RequestListener = (req, res) => {
    const send = (code: number, body: unknown): void => {
      res.writeHead(code, { 'content-type': 'application/json', ...(code === 401 ? { 'www-authenticate': 'Bearer' } : {}), ...(code === 413 ? { connection: 'close' } : {}) });
      res.end(JSON.stringify(body));
      // Labelled only with a location of its own: a path is whatever the caller sent.
      const location = ((): string | undefined => {
        try {
          return locationOf(new URL(req.url ?? '/', 'http://receiver'));
        } catch {
          return undefined;
        }
      })();
      this.options.metrics?.webhookRequests.inc({ location: location !== undefined && this.options.locations.has(location) ? location : '', code: String(code) });
    };
    const answered = this.handle(req).then(
      ({ code, body }) => send(code, body),
      (err: unknown) => {
        if (err instanceof Answer) send(err.code, { error: err.message });
        else if (err instanceof URIError) send(400, { error: 'malformed URL encoding' });
        else send(500, { error: 'internal error' });
      },
    );
    this.inFlight.add(answered);
    void answered.finally(() => this.inFlight.delete(answered));
  };

  /** Serves the receiver on a server of its own (local mode). */
  async listen(port: number, host: string): Promise<AddressInfo> {
    const server = createServer(this.handler);
    this.server = server;
    server.listen(port, host);
    await once(server, 'listening');
    return server.address() as AddressInfo;
  }

  /**
   * Stops taking events at once (connections are cut: their senders retry). Events already answered 200
   * are in Kafka; sends under way finish before the producer closes.
   */
  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server !== undefined) {
      const closed = once(server, 'close');
      server.close();
      server.closeAllConnections();
      await closed;
    }
    await Promise.allSettled(this.inFlight);
    const producer = this.producer;
    this.producer = undefined;
    await (await producer)?.close();
  }
}
