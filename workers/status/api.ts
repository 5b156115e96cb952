import type { IncomingMessage, Server } from 'node:http';
import { type HealthContext, healthRoute, requestUrl } from '../../lib/http/health.ts';
import { BodyTooLarge, readBody } from '../../lib/http/body.ts';
import { redactString } from '../../lib/log/redact.ts';
import { type Figures, type PauseState, versionKey } from '../../lib/queue/messages.ts';
import { type ApiAction, type ApiAuth, Refused } from './auth.ts';
import type { ObjectState } from './fold.ts';
import type { PeerKey } from './peers.ts';
import type { FailedEntry, StatusProcessor } from './status.ts';
import { type FailedCursor, failuresOf } from './store.ts';
import { createServer } from '../../lib/http/node-http.ts';

export interface DestinationControls {
  /** Records a pause state durably; processors of that location follow it. */
  set(state: PauseState): Promise<void>;
  /** The pause state of every destination location, as the processors apply it. */
  states(): { location: string; paused: boolean; until?: string }[];
}

/** A rule's source (`location/bucket`) and destination ids. */
export interface RuleTargets {
  source: string;
  destinations: string[];
}

export interface ApiContext extends HealthContext {
  status: StatusProcessor;
  /** Destination ids (`location/bucket`) of the configuration: selectors are checked against them. */
  destinations: string[];
  controls: DestinationControls;
  /** Queues the existing objects of a rule; undefined when no such rule exists. */
  backfill(rule: string): Promise<number> | undefined;
  /** Each rule of the configuration by name: its source (`location/bucket`) and destination ids. */
  rules: Map<string, RuleTargets>;
  /** This replica's own URL as announced to the others (so that it never forwards to itself). */
  advertiseUrl?: string;
  /** Who may call: every /v1 request is checked; probes and metrics stay open. */
  auth: ApiAuth;
  /** With it, forwards carry a signed assertion instead of the caller's token (peers.ts). */
  peerKey?: PeerKey | undefined;
}

class BadRequest extends Error {
  readonly code: number;
  constructor(code: number, message: string) {
    super(message);
    this.code = code;
  }
}

/** The largest request body read: the largest the API takes is an object reference of a few hundred bytes. */
const MAX_BODY_BYTES = 16 * 1024;

async function jsonBody(req: IncomingMessage): Promise<{ value: Record<string, unknown>; raw: string }> {
  const body = await readBody(req, MAX_BODY_BYTES).catch((err: unknown) => {
    throw err instanceof BodyTooLarge ? new BadRequest(413, err.message) : err;
  });
  if (body.length === 0) return { value: {}, raw: '' };
  const raw = body.toString('utf8');
  try {
    const value: unknown = JSON.parse(raw);
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) return { value: value as Record<string, unknown>, raw };
  } catch {
    // reported below
  }
  throw new BadRequest(400, 'the request body must be a JSON object');
}

/** A destination selector: a destination id (`location/bucket`) or a location (all its buckets). */
function destinationFilter(ctx: ApiContext, selector: string): (id: string) => boolean {
  const matches = (id: string): boolean => id === selector || id.startsWith(`${selector}/`);
  if (!ctx.destinations.some(matches)) {
    throw new BadRequest(404, `unknown destination "${selector}" (known: ${ctx.destinations.join(', ') || 'none'})`);
  }
  return matches;
}

function pauseRequest(ctx: ApiContext, location: string, action: string, body: Record<string, unknown>): PauseState {
  const locations = [...new Set(ctx.destinations.map((d) => d.split('/')[0] ?? ''))];
  if (!locations.includes(location)) throw new BadRequest(404, `unknown destination location "${location}" (known: ${locations.join(', ') || 'none'})`);
  const at = new Date().toISOString();
  if (action === 'resume') return { location, paused: false, at };
  const { until } = body;
  if (until === undefined) return { location, paused: true, at };
  if (typeof until !== 'string' || Number.isNaN(Date.parse(until))) throw new BadRequest(400, `"until" must be a time (ISO 8601), got ${JSON.stringify(until)}`);
  if (Date.parse(until) <= Date.now()) throw new BadRequest(400, `"until" must be in the future, got ${until}`);
  return { location, paused: true, until: new Date(until).toISOString(), at };
}

/** The header that marks a request one replica forwarded to another: answered locally, never forwarded again. */
const FORWARDED = 'x-backbeat-forwarded';
const PAGE_DEFAULT = 100;
const PAGE_MAX = 10_000;

/** An answer, and which replica gave it when another one did (sent as x-backbeat-answered-by). */
type Answer = { code: number; body: unknown; by?: string };

/** The header of a forwarded request that says a replica authorized it (PeerKey.assert). */
const PEER_ASSERTION = 'x-backbeat-peer';

/**
 * Asks another replica. With a peer key, the request carries an assertion that this replica authorized
 * it, and no caller token (an owner URL is trusted only when signed, and the assertion is good for this
 * request alone); without one, the caller's credentials, which the other replica checks again.
 */
async function ask(ctx: ApiContext, req: IncomingMessage, url: string, path: string, init?: { method: 'POST'; body: unknown }): Promise<Answer> {
  const method = init?.method ?? 'GET';
  const body = init !== undefined ? JSON.stringify(init.body) : '';
  const authorization = req.headers.authorization;
  const credentials = ctx.peerKey !== undefined ? { [PEER_ASSERTION]: ctx.peerKey.assert(method, path, body) } : authorization !== undefined ? { authorization } : {};
  const res = await fetch(`${url}${path}`, {
    method,
    headers: { [FORWARDED]: '1', ...credentials, ...(init !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(init !== undefined ? { body } : {}),
    signal: AbortSignal.timeout(30_000),
  });
  return { code: res.status, body: await res.json(), by: url };
}

/** The same request asked of every other replica that owns partitions; a replica that does not answer fails it. */
async function fanOut(ctx: ApiContext, req: IncomingMessage, path: string, init?: { method: 'POST'; body: unknown }): Promise<unknown[]> {
  return Promise.all(
    ctx.status.peers().map(async (url) => {
      let answer: Answer;
      try {
        answer = await ask(ctx, req, url, path, init);
      } catch (err) {
        throw new BadRequest(503, `the status replica at ${url} did not answer (${(err as Error).message}); try again`);
      }
      if (answer.code !== 200) throw new BadRequest(answer.code, (answer.body as { error?: string }).error ?? `the status replica at ${url} answered HTTP ${String(answer.code)}`);
      return answer.body;
    }),
  );
}

/** Answers for an object from the replica that owns its partition: here, or forwarded once. */
async function atOwner(ctx: ApiContext, req: IncomingMessage, location: string, bucket: string, key: string, path: string, local: () => Promise<Answer> | Answer, init?: { method: 'POST'; body: unknown }): Promise<Answer> {
  const partition = await ctx.status.partitionOf(location, bucket, key);
  if (ctx.status.ownsPartition(partition)) return local();
  const owner = ctx.status.ownerOf(partition);
  if (req.headers[FORWARDED] !== undefined || owner === undefined || owner === ctx.advertiseUrl) {
    return { code: 503, body: { error: `status partition ${String(partition)} is being handed over between replicas; try again` } };
  }
  try {
    return await ask(ctx, req, owner, path, init);
  } catch (err) {
    return { code: 503, body: { error: `the status replica at ${owner} did not answer (${(err as Error).message}); try again` } };
  }
}

/** The sort key of a failed entry: what the store orders pages by, and what a cursor names. */
function cursorOf(e: FailedEntry): FailedCursor {
  return { at: e.lastFailureAt ?? e.updatedAt, vk: versionKey(e.object), id: `${e.kind} ${e.destination}` };
}
const before = (a: FailedCursor, b: FailedCursor): number => (a.at < b.at ? -1 : a.at > b.at ? 1 : a.vk < b.vk ? -1 : a.vk > b.vk ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
const encodeCursor = (c: FailedCursor): string => Buffer.from(JSON.stringify([c.at, c.vk, c.id])).toString('base64url');
function decodeCursor(text: string): FailedCursor {
  try {
    const [at, vk, id] = JSON.parse(Buffer.from(text, 'base64url').toString('utf8')) as unknown[];
    if (typeof at === 'string' && typeof vk === 'string' && typeof id === 'string') return { at, vk, id };
  } catch {
    // reported below
  }
  throw new BadRequest(400, 'the cursor is not one this API gave');
}

/** GET /v1/failed: one page over every replica's partitions, merged in the order of the cursor. */
async function failedPage(ctx: ApiContext, req: IncomingMessage, url: URL): Promise<Answer> {
  const d = url.searchParams.get('destination');
  if (d !== null) destinationFilter(ctx, d);
  const limitText = url.searchParams.get('limit') ?? String(PAGE_DEFAULT);
  const limit = Number(limitText);
  if (!Number.isInteger(limit) || limit < 1 || limit > PAGE_MAX) throw new BadRequest(400, `limit must be a whole number from 1 to ${String(PAGE_MAX)}, got "${limitText}"`);
  const cursorText = url.searchParams.get('cursor');
  const after = cursorText === null ? undefined : decodeCursor(cursorText);
  const page = ctx.status.failed({ limit, ...(d !== null ? { destination: d } : {}), ...(after !== undefined ? { after } : {}) });
  const pages = [{ failed: page.entries, more: page.next !== undefined }];
  if (req.headers[FORWARDED] === undefined) pages.push(...((await fanOut(ctx, req, `${url.pathname}${url.search}`)) as { failed: FailedEntry[]; more: boolean }[]));
  const merged = pages.flatMap((p) => p.failed).sort((a, b) => before(cursorOf(a), cursorOf(b)));
  const entries = merged.slice(0, limit);
  const more = merged.length > limit || pages.some((p) => p.more);
  const last = entries.at(-1);
  return { code: 200, body: { failed: entries, more, ...(more && last !== undefined ? { next: encodeCursor(cursorOf(last)) } : {}) } };
}

/** POST /v1/failed/retry: { all: true } | { destination } | { object, versionId? }, each by the replicas owning the entries. */
async function retry(ctx: ApiContext, req: IncomingMessage, body: Record<string, unknown>): Promise<Answer> {
  const { all, destination, object, versionId } = body;
  const given = [all === true, typeof destination === 'string', typeof object === 'string'].filter(Boolean).length;
  if (given !== 1) throw new BadRequest(400, 'select exactly one of: all, a destination, an object');
  if (typeof object === 'string') {
    const m = /^([^/]+)\/([^/]+)\/(.+)$/s.exec(object);
    if (m === null) throw new BadRequest(400, `an object is <location>/<bucket>/<key>, got "${object}"`);
    const [, location = '', bucket = '', key = ''] = m;
    return atOwner(ctx, req, location, bucket, key, '/v1/failed/retry', async () => {
      const selected = ctx.status.lookup(location, bucket, key, typeof versionId === 'string' ? versionId : undefined).flatMap(failuresOf);
      if (selected.length === 0) throw new BadRequest(404, `no failed replication for ${object}${typeof versionId === 'string' ? ` version ${versionId}` : ''}`);
      return { code: 200, body: { retried: await ctx.status.retry(selected) } };
    }, { method: 'POST', body });
  }
  if (typeof destination === 'string') destinationFilter(ctx, destination);
  let retried = await ctx.status.retry(ctx.status.allFailed(typeof destination === 'string' ? destination : undefined));
  if (req.headers[FORWARDED] === undefined) {
    for (const answer of (await fanOut(ctx, req, '/v1/failed/retry', { method: 'POST', body })) as { retried: number }[]) retried += answer.retried;
  }
  return { code: 200, body: { retried } };
}

/** GET /v1/summary: versions per state, over every replica's partitions. */
async function summary(ctx: ApiContext, req: IncomingMessage): Promise<Answer> {
  const total = ctx.status.summary();
  if (req.headers[FORWARDED] === undefined) {
    for (const s of (await fanOut(ctx, req, '/v1/summary')) as Record<ObjectState, number>[]) {
      for (const k of Object.keys(total) as ObjectState[]) total[k] += s[k];
    }
  }
  return { code: 200, body: total };
}

const unknownRule = (ctx: ApiContext, rule: string): Answer => ({ code: 404, body: { error: `unknown rule "${rule}" (known: ${[...ctx.rules.keys()].sort().join(', ') || 'none'})` } });

/** GET /v1/rules/<rule>: the rule's versions replicated, pending and failed per destination, over every replica's partitions. */
async function ruleFigures(ctx: ApiContext, req: IncomingMessage, rule: string, path: string): Promise<Answer> {
  const targets = ctx.rules.get(rule);
  if (targets === undefined) return unknownRule(ctx, rule);
  const counts = new Map(targets.destinations.map((destination) => [destination, { destination, replicated: 0, pending: 0, failed: 0 }]));
  const add = (figures: Iterable<Omit<Figures, 'at'>>): void => {
    for (const f of figures) {
      const c = f.source === targets.source ? counts.get(f.destination) : undefined;
      if (c === undefined) continue;
      c.replicated += f.replicated;
      c.pending += f.pending;
      c.failed += f.failed;
    }
  };
  // Read first: figures read after it count at least what had been written when it was read.
  const unfolded = req.headers[FORWARDED] === undefined ? await ctx.status.unfolded() : 0;
  add(ctx.status.figures().values());
  if (req.headers[FORWARDED] === undefined) for (const answer of (await fanOut(ctx, req, path)) as { destinations: Omit<Figures, 'at' | 'source'>[] }[]) add(answer.destinations.map((d) => ({ ...d, source: targets.source })));
  return { code: 200, body: { rule, source: targets.source, destinations: [...counts.values()], unfolded } };
}

/** GET /v1/objects/<location>/<bucket>/<key>[?versionId=V], answered by the replica that owns the key. */
function objectStatus(ctx: ApiContext, req: IncomingMessage, url: URL): Promise<Answer> | Answer {
  // Segments are percent-encoded by the client, so keys with '/', '%', '+' or spaces arrive intact.
  const [location, bucket, ...rest] = url.pathname.slice('/v1/objects/'.length).split('/');
  if (location === undefined || bucket === undefined || rest.length === 0) return { code: 400, body: { error: 'expected /v1/objects/<location>/<bucket>/<key>' } };
  const [loc, b, key] = [decodeURIComponent(location), decodeURIComponent(bucket), rest.map(decodeURIComponent).join('/')];
  const versionId = url.searchParams.get('versionId') ?? undefined;
  return atOwner(ctx, req, loc, b, key, `${url.pathname}${url.search}`, () => {
    const versions = ctx.status.lookup(loc, b, key, versionId);
    if (versions.length === 0) return { code: 404, body: { error: `no replication status for ${loc}/${b}/${key}${versionId !== undefined ? ` version ${versionId}` : ''}` } };
    return { code: 200, body: { versions } };
  });
}

/**
 * HTTP API of the status processor (what the CLI asks). Any replica answers: what it does not own it
 * forwards to the owner (an object) or asks of every replica (lists, totals, retries).
 *   GET  /v1/objects/<location>/<bucket>/<key>[?versionId=V]  → { versions: ObjectStatus[] } or 404
 *   GET  /v1/failed[?destination=D][&limit=N][&cursor=C]      → { failed: FailedEntry[], more, next? } (next: the cursor of the next page)
 *   POST /v1/failed/retry  { all: true } | { destination } | { object, versionId? }  → { retried: n }
 *   GET  /v1/destinations                                     → pause state of each destination location
 *   POST /v1/destinations/<location>/pause  { until? }  and  /resume
 *   POST /v1/rules/<rule>/backfill                            → { queued: n } object versions
 *   GET  /v1/rules/<rule>                                     → { source, destinations: [{ destination, replicated, pending, failed }], unfolded }
 *                                                                (unfolded: status events of any rule not counted yet)
 *   GET  /v1/summary                                          → object versions per state
 *   GET  /metrics                                             → Prometheus metrics
 *   GET  /healthz                                             → 200 while the process serves
 *   GET  /readyz                                              → 200 once every role runs and the status partitions are restored
 */
export function statusServer(ctx: ApiContext): Server {
  return createServer((req, res) => {
    const send = (code: number, body: unknown): void => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    const fail = (err: unknown): void => {
      // e.g. a malformed percent-encoding: the request is bad, the process goes on.
      // A body too large is not read to its end: the connection closes after the answer.
      if (err instanceof BadRequest && err.code === 413) res.setHeader('connection', 'close');
      if (err instanceof Refused && err.code === 401) res.setHeader('www-authenticate', 'Bearer');
      if (err instanceof BadRequest || err instanceof Refused) send(err.code, { error: err.message });
      else if (err instanceof URIError) send(400, { error: 'malformed URL encoding' });
      else send(500, { error: err instanceof Error ? redactString(err.message) : 'internal error' });
    };
    const url = requestUrl(req);
    if (url === undefined) {
      send(400, { error: 'the request target must be a path' });
      return;
    }
    try {
      if (healthRoute(ctx, req, url, res, send, fail)) return;
    } catch (err) {
      fail(err);
      return;
    }
    route(ctx, req, url).then(({ code, body, by }) => {
      const from = by ?? ctx.advertiseUrl;
      if (from !== undefined) res.setHeader('x-backbeat-answered-by', from);
      send(code, body);
    }, fail);
  });
}

/** What a route is given: the request, its URL, the path's captures (decoded), and the caller check. */
interface RouteCall {
  ctx: ApiContext;
  req: IncomingMessage;
  url: URL;
  params: string[];
  /** Refuses the caller unless allowed `action` (a forwarded request a replica authorized passes). */
  allow: (action: ApiAction, body?: string) => Promise<void>;
}

/**
 * The API's routes. A table of patterns rather than a router library: an object's key comes in
 * percent-encoded segments (a '/' inside a key is %2F) that objectStatus decodes one by one, which
 * routers that decode the path first would merge.
 */
const ROUTES: { method: 'GET' | 'POST'; path: RegExp; serve: (call: RouteCall) => Promise<Answer> | Answer }[] = [
  {
    method: 'POST',
    path: /^\/v1\/destinations\/([^/]+)\/(pause|resume)$/,
    serve: async ({ ctx, req, params: [location = '', action = ''], allow }) => {
      await allow({ verb: 'create', resource: 'locations', subresource: 'pause', name: location });
      const state = pauseRequest(ctx, location, action, (await jsonBody(req)).value);
      await ctx.controls.set(state);
      return { code: 200, body: state };
    },
  },
  {
    method: 'POST',
    path: /^\/v1\/rules\/([^/]+)\/backfill$/,
    serve: async ({ ctx, params: [rule = ''], allow }) => {
      await allow({ verb: 'create', resource: 'replicationrules', subresource: 'backfill', name: rule });
      const queued = ctx.backfill(rule);
      if (queued === undefined) return unknownRule(ctx, rule);
      return { code: 200, body: { rule, queued: await queued } };
    },
  },
  {
    method: 'POST',
    path: /^\/v1\/failed\/retry$/,
    serve: async ({ ctx, req, allow }) => {
      // What may be retried depends on the body (capped, so reading it first costs little).
      const { value: body, raw } = await jsonBody(req);
      const location = typeof body['destination'] === 'string' ? body['destination'].split('/')[0] : undefined;
      await allow({ verb: 'create', resource: 'locations', subresource: 'retry', ...(location !== undefined ? { name: location } : {}) }, raw);
      return retry(ctx, req, body);
    },
  },
  { method: 'GET', path: /^\/v1\/destinations$/, serve: ({ ctx }) => ({ code: 200, body: { destinations: ctx.controls.states() } }) },
  { method: 'GET', path: /^\/v1\/failed$/, serve: ({ ctx, req, url }) => failedPage(ctx, req, url) },
  { method: 'GET', path: /^\/v1\/summary$/, serve: ({ ctx, req }) => summary(ctx, req) },
  { method: 'GET', path: /^\/v1\/objects\//, serve: ({ ctx, req, url }) => objectStatus(ctx, req, url) },
  { method: 'GET', path: /^\/v1\/rules\/([^/]+)$/, serve: ({ ctx, req, url, params: [rule = ''] }) => ruleFigures(ctx, req, rule, url.pathname) },
];

async function route(ctx: ApiContext, req: IncomingMessage, url: URL): Promise<Answer> {
  // A request another replica forwarded after authorizing it is not checked again (peers.ts).
  const allow = async (action: ApiAction, body = ''): Promise<void> => {
    const assertion = req.headers[PEER_ASSERTION];
    if (req.headers[FORWARDED] !== undefined && typeof assertion === 'string' && ctx.peerKey?.asserted(assertion, req.method ?? '', `${url.pathname}${url.search}`, body) === true) return;
    await ctx.auth.check(req.headers.authorization, action);
  };
  const matching = ROUTES.filter((r) => r.path.test(url.pathname));
  const found = matching.find((r) => r.method === req.method);
  if (found === undefined) {
    // Reading anything needs the right to read; a path served for another method is a 405.
    if (req.method === 'GET') await allow({ verb: 'get', resource: 'replicationrules' });
    return matching.length > 0 || req.method !== 'GET' ? { code: 405, body: { error: `${req.method ?? ''} ${url.pathname} is not served` } } : { code: 404, body: { error: `no such endpoint: ${url.pathname}` } };
  }
  if (found.method === 'GET') await allow({ verb: 'get', resource: 'replicationrules' });
  const params = (found.path.exec(url.pathname) ?? []).slice(1).map((p) => decodeURIComponent(p));
  return found.serve({ ctx, req, url, params, allow });
}
